//! Fused ops of a decode step (Burn's `#[backend_extension]`, like [`QuantMatmulBackend`](super::QuantMatmulBackend)):
//! RMSNorm, Qwen3's per-head RMSNorm + NEOX RoPE, one token's attention over a KV cache, all of
//! a token's attention step at once (norm + RoPE, the cache writes, attention), and the same
//! for a prompt's tokens (`attention_prompt`).
//!
//! Each is one kernel on the cube backends (`crate::kernels::norm`, `crate::kernels::attention`;
//! two for a prompt, `crate::kernels::attention_prompt`) where Burn runs several (its attention
//! alone is ~20 launches a layer at decode). The CPU backends have their own RMSNorm and prompt
//! attention (`super::cpu`). Elsewhere (`Autodiff`, and the other ops on the CPU backends) the
//! default bodies compose Burn's own primitives: the same results, differentiable under
//! `Autodiff`.

use burn::backend::Backend;
use burn::backend::backend_extension;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Scalar, Slice, TensorMetadata, get_or_init_device_settings};
use burn::backend::Dispatch;
use burn::tensor::{IndexingUpdateOp, Int, Shape, Tensor};

/// Fused decode-step ops.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    Cube: cfg(feature = "cube"),
    Fusion: cfg(feature = "cube"),
    Autodiff
)]
pub trait DecodeOpsBackend: Backend {
    /// RMSNorm over the last dim: `x / √(mean(x²) + eps) · gamma`, `gamma` of the last dim's
    /// length.
    #[fusion(dtype = x, shape = x)]
    fn rms_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, eps: f32) -> FloatTensor<Self> {
        rms_norm_composed::<Self>(x, gamma, eps)
    }

    /// Qwen3's q/k prologue on `x [.., tokens, heads, d]`: RMSNorm of each head over `d` (scale
    /// `gamma [d]` for heads below `first`, `gamma2 [d]` for the others: q and k heads side by
    /// side in one call), then NEOX RoPE (pairs `(j, j + d/2)`) with row `pos[t]` of the tables
    /// `cos`/`sin` `[positions, d/2]` for token `t` (`pos` `[tokens]`, on the device).
    #[fusion(dtype = x, shape = x)]
    #[allow(clippy::too_many_arguments)]
    fn norm_rope(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        gamma2: FloatTensor<Self>,
        first: usize,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        pos: IntTensor<Self>,
        eps: f32,
    ) -> FloatTensor<Self> {
        let shape = x.shape();
        let r = shape.num_dims();
        let heads = shape[r - 2];
        if first >= heads {
            return norm_rope_one::<Self>(x, gamma, cos, sin, pos, eps);
        }
        let part = |x: FloatTensor<Self>, range: std::ops::Range<usize>| {
            let mut s: Vec<Slice> = shape.iter().map(|&n| Slice::from(0..n)).collect();
            s[r - 2] = Slice::from(range);
            Self::float_slice(x, &s)
        };
        let a = norm_rope_one::<Self>(part(x.clone(), 0..first), gamma, cos.clone(), sin.clone(), pos.clone(), eps);
        let b = norm_rope_one::<Self>(part(x, first..heads), gamma2, cos, sin, pos, eps);
        Self::float_cat(vec![a, b], r - 2)
    }

    /// One token's attention over a KV cache: `q [b, kv_heads, g, d]` (the `g` query heads that
    /// share a KV head), `k`/`v` `[b, kv_heads, capacity, d]`; each query row attends the
    /// positions `0..=pos[0]` (`pos` `[1]`, on the device) with scores `scale · q·k`. Returns
    /// `[b, kv_heads, g, d]`.
    #[fusion(dtype = q, shape = q)]
    fn attention_decode(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, pos: IntTensor<Self>, scale: f32) -> FloatTensor<Self> {
        attention_decode_composed::<Self>(q, k, v, pos, scale)
    }

    /// One token's whole attention step in Qwen3, after the q/k/v projection:
    /// `qkv [b, 1, (heads + 2·kv_heads)·d]` (query heads, key heads, value heads) at the device-held position `pos`
    /// (`[1]`); q's and k's heads get their RMSNorm (`q_gamma`, `k_gamma` `[d]`, `eps`) and NEOX
    /// RoPE (row `pos` of `cos`/`sin` `[positions, d/2]`) as in
    /// [`norm_rope`](DecodeOpsBackend::norm_rope), the new key and value are written into the
    /// caches `k_cache`/`v_cache` `[b, kv_heads, capacity, d]` at `pos`, and each query head
    /// attends positions `0..=pos` of its key head as in
    /// [`attention_decode`](DecodeOpsBackend::attention_decode) with scores `scale · q·k`.
    /// Returns the attention output `[b, 1, heads·d]` and the written caches (in place where the
    /// backend can).
    #[fusion(meta = |qkv, _q_gamma, _k_gamma, _cos, _sin, _pos, k_cache, v_cache, heads, _kv_heads, _eps, _scale| (step_output(qkv, k_cache, *heads), k_cache.clone(), v_cache.clone()))]
    #[allow(clippy::too_many_arguments)]
    fn attention_step(
        qkv: FloatTensor<Self>,
        q_gamma: FloatTensor<Self>,
        k_gamma: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        pos: IntTensor<Self>,
        k_cache: FloatTensor<Self>,
        v_cache: FloatTensor<Self>,
        heads: usize,
        kv_heads: usize,
        eps: f32,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        attention_step_composed::<Self>(qkv, [q_gamma, k_gamma], [cos, sin], pos, [k_cache, v_cache], [heads, kv_heads], eps, scale)
    }

    /// Greedy decoding's feed: the argmax of `logits [1, vocab]` (the lowest index on ties) as
    /// the next token, and the next position: returns `token [1]` holding that id and `pos [1]`
    /// advanced by one. The cube backends write both into `token`'s and `pos`'s own buffers,
    /// whatever else holds them (a recorded decode graph relies on it: its next replay reads
    /// them there), when they are 4- or 8-byte integers; the default body returns new tensors.
    #[fusion(meta = |_logits, token, pos| (token.clone(), pos.clone()))]
    fn greedy_feed(logits: FloatTensor<Self>, token: IntTensor<Self>, pos: IntTensor<Self>) -> (IntTensor<Self>, IntTensor<Self>) {
        greedy_feed_composed::<Self>(logits, token, pos)
    }

    /// A prompt's whole attention in Qwen3, after the q/k/v projection: `qkv [b, s, (heads +
    /// 2·kv_heads)·d]` (query heads, key heads, value heads of each token) at positions `start..
    /// start + s`; q's and k's heads get their RMSNorm (`q_gamma`, `k_gamma` `[d]`, `eps`) and NEOX
    /// RoPE with row `t` of `cos`/`sin` `[s, d/2]` (the rows' own tables) for token `t`, the keys
    /// and values are written into the caches `k_cache`/`v_cache` `[b, kv_heads, capacity, d]`
    /// at `start + t` (`start + s` ≤ capacity), and token `t`'s query heads attend positions
    /// `0..=start + t` of their key head with scores `scale · q·k`. Returns the attention output
    /// `[b, s, heads·d]` and the written caches (in place where the backend can).
    #[fusion(meta = |qkv, _q_gamma, _k_gamma, _cos, _sin, k_cache, v_cache, _start, heads, _kv_heads, _eps, _scale| (prompt_output(qkv, k_cache, *heads), k_cache.clone(), v_cache.clone()))]
    #[allow(clippy::too_many_arguments)]
    fn attention_prompt(
        qkv: FloatTensor<Self>,
        q_gamma: FloatTensor<Self>,
        k_gamma: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        k_cache: FloatTensor<Self>,
        v_cache: FloatTensor<Self>,
        start: usize,
        heads: usize,
        kv_heads: usize,
        eps: f32,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        attention_prompt_composed::<Self>(qkv, [q_gamma, k_gamma], [cos, sin], [k_cache, v_cache], start, [heads, kv_heads], eps, scale)
    }
}

/// The attention output of [`DecodeOpsBackend::attention_step`]: `[b, 1, heads·d]` of `qkv`'s
/// dtype, `b` and `d` from the cache `[b, kv_heads, capacity, d]`.
#[cfg(feature = "cube")]
fn step_output(qkv: &burn::backend::fusion::custom::TensorSpec, cache: &burn::backend::fusion::custom::TensorSpec, heads: usize) -> burn::backend::fusion::custom::TensorSpec {
    let (b, d) = (cache.shape[0], cache.shape[3]);
    burn::backend::fusion::custom::TensorSpec::new(Shape::new([b, 1, heads * d]), qkv.dtype)
}

/// The attention output of [`DecodeOpsBackend::attention_prompt`]: `[b, s, heads·d]` of
/// `qkv`'s dtype, `b` and `s` from `qkv` `[b, s, _]`, `d` from the cache.
#[cfg(feature = "cube")]
fn prompt_output(qkv: &burn::backend::fusion::custom::TensorSpec, cache: &burn::backend::fusion::custom::TensorSpec, heads: usize) -> burn::backend::fusion::custom::TensorSpec {
    let (b, s, d) = (qkv.shape[0], qkv.shape[1], cache.shape[3]);
    burn::backend::fusion::custom::TensorSpec::new(Shape::new([b, s, heads * d]), qkv.dtype)
}

/// The sizes of a [`DecodeOpsBackend::attention_prompt`] call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PromptDims {
    /// Sequences.
    pub batch: usize,
    /// New tokens per sequence.
    pub seq: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (dividing `heads`).
    pub kv_heads: usize,
    /// Head width (even).
    pub d: usize,
    /// Positions the caches hold room for (at least `start + seq`).
    pub cap: usize,
    /// The new tokens' first position.
    pub start: usize,
}

impl PromptDims {
    /// The sizes of a call whose `qkv` is shaped `qkv`, whose caches are shaped `k` and `v`, and
    /// whose two scales and two tables hold `[q_gamma, k_gamma, cos, sin]` values, where they
    /// agree with each other and with `start`, `heads`, `kv_heads`: `qkv [b, s, (heads +
    /// 2·kv_heads)·d]`, both caches `[b, kv_heads, cap, d]` with `start + s ≤ cap`, `d`-long
    /// scales, tables of at least `s` rows of `d/2`. What a backend may then read unchecked.
    pub(crate) fn of(qkv: &[usize], [k, v]: [&[usize]; 2], [q_gamma, k_gamma, cos, sin]: [usize; 4], start: usize, [heads, kv_heads]: [usize; 2]) -> Option<Self> {
        let (&[batch, seq, width], &[cb, ckv, cap, d]) = (qkv, k) else {
            return None;
        };
        let row = kv_heads.checked_mul(2)?.checked_add(heads)?.checked_mul(d)?;
        let fits = k == v
            && cb == batch
            && ckv == kv_heads
            && kv_heads > 0
            && heads.is_multiple_of(kv_heads)
            && d > 0
            && d.is_multiple_of(2)
            && seq > 0
            && start.checked_add(seq).is_some_and(|e| e <= cap)
            && width == row
            && q_gamma == d
            && k_gamma == d
            && seq.checked_mul(d / 2).is_some_and(|t| cos >= t && sin >= t);
        fits.then_some(Self { batch, seq, heads, kv_heads, d, cap, start })
    }
}

/// [`DecodeOpsBackend::attention_prompt`] composed of the other decode ops and Burn's own
/// primitives (the default body, and the cube backends' fallback): the q/k norm + RoPE, two
/// cache writes, masked attention over the whole cache with the `g` query heads of a KV head
/// read as `g·s` rows, the output's transpose.
#[allow(clippy::too_many_arguments)]
pub(super) fn attention_prompt_composed<B: DecodeOpsBackend>(
    qkv: FloatTensor<B>,
    [q_gamma, k_gamma]: [FloatTensor<B>; 2],
    [cos, sin]: [FloatTensor<B>; 2],
    [k_cache, v_cache]: [FloatTensor<B>; 2],
    start: usize,
    [heads, kv_heads]: [usize; 2],
    eps: f32,
    scale: f32,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let [b, s, _] = qkv.shape().dims::<3>();
    let d = k_cache.shape()[3];
    let g = heads / kv_heads.max(1);
    let device = qkv.device();
    let settings = get_or_init_device_settings::<B>(&device);
    let qkv = B::float_reshape(qkv, Shape::new([b, s, heads + 2 * kv_heads, d]));
    let heads_of = |x: FloatTensor<B>, from: usize, n: usize| {
        let r = [Slice::from(0..b), Slice::from(0..s), Slice::from(from..from + n), Slice::from(0..d)];
        B::float_slice(x, &r)
    };
    let rows = B::int_arange(0..s as i64, &device, settings.int_dtype);
    let qk = B::norm_rope(heads_of(qkv.clone(), 0, heads + kv_heads), q_gamma, k_gamma, heads, cos, sin, rows, eps);
    let at = [Slice::from(0..b), Slice::from(0..kv_heads), Slice::from(start..start + s), Slice::from(0..d)];
    let k = B::float_swap_dims(heads_of(qk.clone(), heads, kv_heads), 1, 2);
    let v = B::float_swap_dims(heads_of(qkv, heads + kv_heads, kv_heads), 1, 2);
    let k_cache = B::float_slice_assign(k_cache, &at, k);
    let v_cache = B::float_slice_assign(v_cache, &at, v);
    // Rows `i·s + t` of a KV head: query head `i` of its group, token `t`.
    let q = B::float_reshape(B::float_swap_dims(heads_of(qk, 0, heads), 1, 2), Shape::new([b, kv_heads, g * s, d]));
    // Row `i·s + t` sees the positions up to `start + t`.
    let last = B::int_add_scalar(B::int_remainder_scalar(B::int_arange(0..(g * s) as i64, &device, settings.int_dtype), Scalar::from(s as i64)), Scalar::from(start as i64));
    let out = attention_up_to::<B>(q, k_cache.clone(), v_cache.clone(), last, scale);
    let out = B::float_reshape(out, Shape::new([b, kv_heads, g, s, d]));
    let out = B::float_reshape(B::float_permute(out, &[0, 3, 1, 2, 4]), Shape::new([b, s, heads * d]));
    (out, k_cache, v_cache)
}

/// [`DecodeOpsBackend::attention_step`] composed of the other decode ops and Burn's own
/// primitives (the default body, and the cube backends' fallback): the q/k norm + RoPE, two
/// cache writes, attention.
#[allow(clippy::too_many_arguments)]
pub(super) fn attention_step_composed<B: DecodeOpsBackend>(
    qkv: FloatTensor<B>,
    [q_gamma, k_gamma]: [FloatTensor<B>; 2],
    [cos, sin]: [FloatTensor<B>; 2],
    pos: IntTensor<B>,
    [k_cache, v_cache]: [FloatTensor<B>; 2],
    [heads, kv_heads]: [usize; 2],
    eps: f32,
    scale: f32,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let [b, _, _, d] = k_cache.shape().dims::<4>();
    let qkv = B::float_reshape(qkv, Shape::new([b, 1, heads + 2 * kv_heads, d]));
    let heads_of = |x: FloatTensor<B>, from: usize, n: usize| {
        let s = [Slice::from(0..b), Slice::from(0..1), Slice::from(from..from + n), Slice::from(0..d)];
        B::float_slice(x, &s)
    };
    let qk = B::norm_rope(heads_of(qkv.clone(), 0, heads + kv_heads), q_gamma, k_gamma, heads, cos, sin, pos.clone(), eps);
    let q = B::float_reshape(heads_of(qk.clone(), 0, heads), Shape::new([b, kv_heads, heads / kv_heads.max(1), d]));
    let k = B::float_reshape(heads_of(qk, heads, kv_heads), Shape::new([b, kv_heads, 1, d]));
    let v = B::float_reshape(heads_of(qkv, heads + kv_heads, kv_heads), Shape::new([b, kv_heads, 1, d]));
    let k_cache = B::float_select_assign(k_cache, 2, pos.clone(), k, IndexingUpdateOp::Assign);
    let v_cache = B::float_select_assign(v_cache, 2, pos.clone(), v, IndexingUpdateOp::Assign);
    let out = B::attention_decode(q, k_cache.clone(), v_cache.clone(), pos, scale);
    (B::float_reshape(out, Shape::new([b, 1, heads * d])), k_cache, v_cache)
}

/// [`DecodeOpsBackend::rms_norm`] composed of Burn's own primitives.
pub(super) fn rms_norm_composed<B: Backend>(x: FloatTensor<B>, gamma: FloatTensor<B>, eps: f32) -> FloatTensor<B> {
    let shape = x.shape();
    let last = shape.num_dims() - 1;
    let mut gshape = vec![1; shape.num_dims()];
    gshape[last] = shape[last];
    let ms = B::float_mean_dim(B::float_mul(x.clone(), x.clone()), last);
    let rms = B::float_sqrt(B::float_add_scalar(ms, Scalar::from(eps)));
    B::float_mul(B::float_div(x, rms), B::float_reshape(gamma, Shape::from(gshape)))
}

/// `silu(gate) ⊙ up` of `gu = [gate | up]` (the last dim split in halves), composed of Burn's own
/// primitives.
pub(super) fn swiglu_composed<B: Backend>(gu: FloatTensor<B>) -> FloatTensor<B> {
    let shape = gu.shape();
    let last = shape.num_dims() - 1;
    let half = shape[last] / 2;
    let part = |from: usize| {
        let mut s: Vec<Slice> = shape.iter().map(|&n| Slice::from(0..n)).collect();
        s[last] = Slice::from(from..from + half);
        B::float_slice(gu.clone(), &s)
    };
    let gate = part(0);
    B::float_mul(B::float_mul(gate.clone(), B::sigmoid(gate)), part(half))
}

/// [`DecodeOpsBackend::norm_rope`] with one `gamma` for every head, composed of Burn's own
/// primitives.
fn norm_rope_one<B: DecodeOpsBackend>(x: FloatTensor<B>, gamma: FloatTensor<B>, cos: FloatTensor<B>, sin: FloatTensor<B>, pos: IntTensor<B>, eps: f32) -> FloatTensor<B> {
    let x = B::rms_norm(x, gamma, eps);
    let shape = x.shape();
    let r = shape.num_dims();
    let (tokens, d) = (shape[r - 3], shape[r - 1]);
    let half = d / 2;
    let mut tshape = vec![1; r];
    tshape[r - 3] = tokens;
    tshape[r - 1] = half;
    let table = |t: FloatTensor<B>| B::float_reshape(B::float_select(t, 0, pos.clone()), Shape::from(tshape.clone()));
    let (cos, sin) = (table(cos), table(sin));
    let half_of = |x: FloatTensor<B>, from: usize| {
        let mut s: Vec<Slice> = shape.iter().map(|&n| Slice::from(0..n)).collect();
        s[r - 1] = Slice::from(from..from + half);
        B::float_slice(x, &s)
    };
    let (x1, x2) = (half_of(x.clone(), 0), half_of(x, half));
    let a = B::float_sub(B::float_mul(x1.clone(), cos.clone()), B::float_mul(x2.clone(), sin.clone()));
    let b = B::float_add(B::float_mul(x2, cos), B::float_mul(x1, sin));
    B::float_cat(vec![a, b], r - 1)
}

/// [`DecodeOpsBackend::attention_decode`] composed of Burn's own primitives (the default body,
/// and what a backend's kernel falls back to for a head size it does not take).
pub(super) fn attention_decode_composed<B: Backend>(q: FloatTensor<B>, k: FloatTensor<B>, v: FloatTensor<B>, pos: IntTensor<B>, scale: f32) -> FloatTensor<B> {
    let settings = get_or_init_device_settings::<B>(&q.device());
    attention_up_to::<B>(q, k, v, B::int_cast(pos, settings.int_dtype), scale)
}

/// `softmax(scale · q·kᵀ) · v` for `q [b, kv_heads, rows, d]` over `k`/`v` `[b, kv_heads, cap,
/// d]`, row `i` seeing the positions up to `last[i]` (`last` `[rows]`, or `[1]` for every row, of
/// the device's int dtype), composed of Burn's own primitives.
fn attention_up_to<B: Backend>(q: FloatTensor<B>, k: FloatTensor<B>, v: FloatTensor<B>, last: IntTensor<B>, scale: f32) -> FloatTensor<B> {
    let [b, kvh, rows, _] = q.shape().dims::<4>();
    let (cap, n) = (k.shape()[2], last.shape().num_elements());
    let device = q.device();
    let settings = get_or_init_device_settings::<B>(&device);
    let scores = B::float_mul_scalar(B::float_matmul(q, B::float_swap_dims(k, 2, 3)), Scalar::from(scale));
    let full = Shape::new([b, kvh, rows, cap]);
    let cols = B::int_expand(B::int_reshape(B::int_arange(0..cap as i64, &device, settings.int_dtype), Shape::new([1, 1, 1, cap])), full.clone());
    let last = B::int_expand(B::int_reshape(last, Shape::new([1, 1, n, 1])), full);
    let scores = B::float_mask_fill(scores, B::int_greater(cols, last, settings.bool_dtype), Scalar::from(f32::NEG_INFINITY));
    let e = B::float_exp(B::float_sub(scores.clone(), B::float_max_dim(scores, 3)));
    let p = B::float_div(e.clone(), B::float_sum_dim(e, 3));
    B::float_matmul(p, v)
}

/// [`DecodeOpsBackend::rms_norm`] on tensors of any device.
pub fn rms_norm<const D: usize>(x: Tensor<D>, gamma: Tensor<1>, eps: f64) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as DecodeOpsBackend>::rms_norm(x.into_dispatch(), gamma.into_dispatch(), eps as f32))
}

/// [`DecodeOpsBackend::norm_rope`] on tensors of any device: `x [b, tokens, heads, d]`, every
/// head scaled by `gamma`.
pub fn norm_rope(x: Tensor<4>, gamma: Tensor<1>, cos: Tensor<2>, sin: Tensor<2>, pos: Tensor<1, Int>, eps: f64) -> Tensor<4> {
    let heads = x.dims()[2];
    qk_norm_rope(x, gamma.clone(), gamma, heads, cos, sin, pos, eps)
}

/// [`DecodeOpsBackend::norm_rope`] on tensors of any device: `x [b, tokens, heads, d]`, heads
/// below `first` scaled by `gamma_q`, the others by `gamma_k` (q and k in one launch).
#[allow(clippy::too_many_arguments)]
pub fn qk_norm_rope(x: Tensor<4>, gamma_q: Tensor<1>, gamma_k: Tensor<1>, first: usize, cos: Tensor<2>, sin: Tensor<2>, pos: Tensor<1, Int>, eps: f64) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as DecodeOpsBackend>::norm_rope(
        x.into_dispatch(),
        gamma_q.into_dispatch(),
        gamma_k.into_dispatch(),
        first,
        cos.into_dispatch(),
        sin.into_dispatch(),
        pos.into_dispatch(),
        eps as f32,
    ))
}

/// [`DecodeOpsBackend::attention_decode`] on tensors of any device.
pub fn attention_decode(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, pos: Tensor<1, Int>, scale: f32) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as DecodeOpsBackend>::attention_decode(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        pos.into_dispatch(),
        scale,
    ))
}

/// [`DecodeOpsBackend::attention_step`] on tensors of any device: returns the attention output
/// `[b, 1, heads·d]` and the written caches.
#[allow(clippy::too_many_arguments)]
pub fn attention_step(
    qkv: Tensor<3>,
    q_gamma: Tensor<1>,
    k_gamma: Tensor<1>,
    cos: Tensor<2>,
    sin: Tensor<2>,
    pos: Tensor<1, Int>,
    caches: (Tensor<4>, Tensor<4>),
    [heads, kv_heads]: [usize; 2],
    eps: f64,
    scale: f32,
) -> (Tensor<3>, Tensor<4>, Tensor<4>) {
    let (out, k, v) = <Dispatch as DecodeOpsBackend>::attention_step(
        qkv.into_dispatch(),
        q_gamma.into_dispatch(),
        k_gamma.into_dispatch(),
        cos.into_dispatch(),
        sin.into_dispatch(),
        pos.into_dispatch(),
        caches.0.into_dispatch(),
        caches.1.into_dispatch(),
        heads,
        kv_heads,
        eps as f32,
        scale,
    );
    (Tensor::from_dispatch(out), Tensor::from_dispatch(k), Tensor::from_dispatch(v))
}

/// [`DecodeOpsBackend::greedy_feed`] on tensors of any device: the argmax of `logits [1, vocab]`
/// as the next token `[1]` and `pos [1]` advanced by one (on the cube backends written into the
/// buffers of `token` and `pos`).
pub fn greedy_feed(logits: Tensor<2>, token: Tensor<1, Int>, pos: Tensor<1, Int>) -> (Tensor<1, Int>, Tensor<1, Int>) {
    let (token, pos) = <Dispatch as DecodeOpsBackend>::greedy_feed(logits.into_dispatch(), token.into_dispatch(), pos.into_dispatch());
    (Tensor::from_dispatch(token), Tensor::from_dispatch(pos))
}

/// [`DecodeOpsBackend::attention_prompt`] on tensors of any device: returns the attention output
/// `[b, s, heads·d]` and the written caches.
#[allow(clippy::too_many_arguments)]
pub fn attention_prompt(
    qkv: Tensor<3>,
    q_gamma: Tensor<1>,
    k_gamma: Tensor<1>,
    cos: Tensor<2>,
    sin: Tensor<2>,
    caches: (Tensor<4>, Tensor<4>),
    start: usize,
    [heads, kv_heads]: [usize; 2],
    eps: f64,
    scale: f32,
) -> (Tensor<3>, Tensor<4>, Tensor<4>) {
    let (out, k, v) = <Dispatch as DecodeOpsBackend>::attention_prompt(
        qkv.into_dispatch(),
        q_gamma.into_dispatch(),
        k_gamma.into_dispatch(),
        cos.into_dispatch(),
        sin.into_dispatch(),
        caches.0.into_dispatch(),
        caches.1.into_dispatch(),
        start,
        heads,
        kv_heads,
        eps as f32,
        scale,
    );
    (Tensor::from_dispatch(out), Tensor::from_dispatch(k), Tensor::from_dispatch(v))
}

/// [`DecodeOpsBackend::greedy_feed`] from Burn's own primitives (new tensors, nothing in place);
/// NaNs are masked to -inf first, so they never win.
pub(crate) fn greedy_feed_composed<B: Backend>(logits: FloatTensor<B>, token: IntTensor<B>, pos: IntTensor<B>) -> (IntTensor<B>, IntTensor<B>) {
    let settings = get_or_init_device_settings::<B>(&logits.device());
    let nan = B::float_is_nan(logits.clone(), settings.bool_dtype);
    let logits = B::float_mask_fill(logits, nan, Scalar::from(f32::NEG_INFINITY));
    let ids = B::float_argmax(logits, 1, token.dtype().into());
    (B::int_reshape(ids, Shape::new([1])), B::int_add_scalar(pos, Scalar::from(1i64)))
}
