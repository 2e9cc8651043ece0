//! [`DecodeOpsBackend`] on the CubeCL backends: one launch per op (`crate::kernels::norm`,
//! `crate::kernels::attention`), two for a prompt's attention (`crate::kernels::attention_prompt`,
//! whose attention is `crate::kernels::attention_mma` on the tensor cores).
//! Inputs are made contiguous f32 first; the output is f32.

use burn::backend::ops::IntTensorOps;
use burn::tensor::{DType, IntDType};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::DecodeOpsBackend;
use super::decode::PromptDims;
use super::cube::{buffer, empty_f32, f32_contiguous, grid_1d, has_manual_mma, planes_are_32};
use crate::kernels::{argmax, attention, attention_mma, attention_prompt, norm};

/// Positions as 4-byte words the kernels read as `u32`: an `I32` or `U32` tensor as it is (a
/// position is never negative, so its bits are the same), any other dtype cast (one launch more
/// per op; Burn's cube backends default to `I32`).
fn positions(pos: CubeTensor) -> CubeTensor {
    let pos = match pos.dtype {
        DType::I32 | DType::U32 => pos,
        _ => CubeBackend::int_cast(pos, IntDType::U32),
    };
    into_contiguous(pos)
}

impl DecodeOpsBackend for CubeBackend {
    fn rms_norm(x: CubeTensor, gamma: CubeTensor, eps: f32) -> CubeTensor {
        let x = f32_contiguous(x);
        let gamma = f32_contiguous(gamma);
        let shape: Vec<usize> = x.meta.shape().iter().copied().collect();
        let n = shape.last().copied().unwrap_or(1);
        let rows = x.meta.shape().num_elements() / n.max(1);
        let y = empty_f32(&x, shape);
        if launch_norm_held(&x, &gamma, &y, eps, false) {
            return y;
        }
        // SAFETY: `x` and `y` are contiguous `[rows, n]`, `gamma` holds `n`; each cube reads and
        // writes its own row.
        unsafe {
            norm::rms_norm::launch_unchecked(
                &x.client,
                grid_1d(rows),
                CubeDim::new_1d(norm::RMS_THREADS),
                buffer(&x, rows * n),
                buffer(&gamma, n),
                buffer(&y, rows * n),
                n as u32,
                eps,
            )
        };
        y
    }

    fn norm_rope(x: CubeTensor, gamma: CubeTensor, gamma2: CubeTensor, first: usize, cos: CubeTensor, sin: CubeTensor, pos: CubeTensor, eps: f32) -> CubeTensor {
        let x = f32_contiguous(x);
        let (gamma, gamma2) = (f32_contiguous(gamma), f32_contiguous(gamma2));
        let (cos, sin) = (f32_contiguous(cos), f32_contiguous(sin));
        let pos = positions(pos);
        let shape: Vec<usize> = x.meta.shape().iter().copied().collect();
        let r = shape.len();
        let (tokens, heads, d) = (if r >= 3 { shape[r - 3] } else { 1 }, shape[r - 2], shape[r - 1]);
        let rows = x.meta.shape().num_elements() / d.max(1);
        let y = empty_f32(&x, shape);
        let table = cos.meta.shape().num_elements();
        // SAFETY: `x`, `y` are contiguous `[rows, d]` (`rows` = tokens · heads), `gamma` and
        // `gamma2` hold `d`, `pos` one entry per token (`tokens`, shared by any leading dims); the callers' positions index rows of
        // the `[positions, d/2]` tables.
        unsafe {
            norm::norm_rope::launch_unchecked(
                &x.client,
                grid_1d(rows),
                CubeDim::new_1d(norm::THREADS),
                buffer(&x, rows * d),
                buffer(&gamma, d),
                buffer(&gamma2, d),
                buffer(&cos, table),
                buffer(&sin, table),
                buffer(&pos, tokens),
                buffer(&y, rows * d),
                heads as u32,
                tokens.max(1) as u32,
                first.min(heads) as u32,
                d as u32,
                eps,
            )
        };
        y
    }

    fn attention_decode(q: CubeTensor, k: CubeTensor, v: CubeTensor, pos: CubeTensor, scale: f32) -> CubeTensor {
        let d = q.meta.shape().dims::<4>()[3];
        if !attention::supports(d) {
            return super::decode::attention_decode_composed::<Self>(q, k, v, pos, scale);
        }
        let (q, k, v) = (f32_contiguous(q), f32_contiguous(k), f32_contiguous(v));
        let pos = positions(pos);
        let [b, kvh, g, d] = q.meta.shape().dims::<4>();
        let out = empty_f32(&q, vec![b, kvh, g, d]);
        launch_attention(&q, None, [&k, &v], &pos, &out, [b, kvh, g, d], scale, 0.0);
        out
    }

    fn attention_step(
        qkv: CubeTensor,
        q_gamma: CubeTensor,
        k_gamma: CubeTensor,
        cos: CubeTensor,
        sin: CubeTensor,
        pos: CubeTensor,
        k_cache: CubeTensor,
        v_cache: CubeTensor,
        heads: usize,
        kv_heads: usize,
        eps: f32,
        scale: f32,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let [b, _, cap, d] = k_cache.meta.shape().dims::<4>();
        // The caches are written in place: only when this op holds the only reference to
        // contiguous f32 buffers, else the composed ops (which copy as they must).
        let writable = |c: &CubeTensor| c.dtype == DType::F32 && c.is_contiguous() && c.can_mut();
        let elems = |t: &CubeTensor| t.meta.shape().num_elements();
        // The kernel's reads unchecked: one token per sequence, `d`-long scales, a table row for
        // every cache position.
        let fits = attention::supports(d)
            && kv_heads > 0
            && heads.is_multiple_of(kv_heads)
            && elems(&qkv) == b * (heads + 2 * kv_heads) * d
            && v_cache.meta.shape() == k_cache.meta.shape()
            && elems(&q_gamma) == d
            && elems(&k_gamma) == d
            && elems(&cos) >= cap * (d / 2)
            && elems(&sin) >= cap * (d / 2);
        if !step_kernel_on() || !fits || !writable(&k_cache) || !writable(&v_cache) {
            return super::decode::attention_step_composed::<Self>(qkv, [q_gamma, k_gamma], [cos, sin], pos, [k_cache, v_cache], [heads, kv_heads], eps, scale);
        }
        let qkv = f32_contiguous(qkv);
        let (q_gamma, k_gamma) = (f32_contiguous(q_gamma), f32_contiguous(k_gamma));
        let (cos, sin) = (f32_contiguous(cos), f32_contiguous(sin));
        let pos = positions(pos);
        let out = empty_f32(&qkv, vec![b, 1, heads * d]);
        let shape = [b, kv_heads, heads / kv_heads, d];
        launch_attention(&qkv, Some([&q_gamma, &k_gamma, &cos, &sin]), [&k_cache, &v_cache], &pos, &out, shape, scale, eps);
        (out, k_cache, v_cache)
    }

    fn attention_prompt(
        qkv: CubeTensor,
        q_gamma: CubeTensor,
        k_gamma: CubeTensor,
        cos: CubeTensor,
        sin: CubeTensor,
        k_cache: CubeTensor,
        v_cache: CubeTensor,
        start: usize,
        heads: usize,
        kv_heads: usize,
        eps: f32,
        scale: f32,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let writable = |c: &CubeTensor| c.dtype == DType::F32 && c.is_contiguous() && c.can_mut();
        let shape = |t: &CubeTensor| t.meta.shape().iter().copied().collect::<Vec<_>>();
        let n = |t: &CubeTensor| t.meta.shape().num_elements();
        let hw = &qkv.client.properties().hardware;
        // What the kernels read unchecked (`PromptDims::of`), heads the prologue's threads cover,
        // and offsets within `u32`.
        let dims = PromptDims::of(&shape(&qkv), [&shape(&k_cache), &shape(&v_cache)], [&q_gamma, &k_gamma, &cos, &sin].map(n), start, [heads, kv_heads])
            .filter(|p| attention_prompt::prologue_supports(p.d) && u32::try_from(n(&k_cache)).is_ok() && u32::try_from(n(&qkv)).is_ok());
        // Static shared memory: at most 48 KiB on CUDA whatever the device reports.
        let shared = hw.max_shared_memory_size.min(48 * 1024);
        let tile = dims.and_then(|p| attention_prompt::pick_tile(p.d, shared, hw.max_units_per_cube as usize));
        let (Some(PromptDims { batch: b, seq: s, d, cap, .. }), Some(tile)) = (dims, tile.filter(|_| writable(&k_cache) && writable(&v_cache))) else {
            return super::decode::attention_prompt_composed::<Self>(qkv, [q_gamma, k_gamma], [cos, sin], [k_cache, v_cache], start, [heads, kv_heads], eps, scale);
        };
        let qkv = f32_contiguous(qkv);
        let (q_gamma, k_gamma) = (f32_contiguous(q_gamma), f32_contiguous(k_gamma));
        let (cos, sin) = (f32_contiguous(cos), f32_contiguous(sin));
        let q = empty_f32(&qkv, vec![b, s, heads, d]);
        let out = empty_f32(&qkv, vec![b, s, heads * d]);
        let cache = b * kv_heads * cap * d;
        let all = heads + 2 * kv_heads;
        // SAFETY: `qkv` is contiguous `[b·s, all·d]`, one cube per (token row, head) of `d/2`
        // threads (a power of two); the scales hold `d`, the tables a row of `d/2` per token;
        // `q` is `[b·s, heads, d]`; the caches `[b, kv_heads, cap, d]` are written at
        // `start + t < cap`.
        unsafe {
            attention_prompt::prompt_prologue::launch_unchecked(
                &qkv.client,
                grid_1d(b * s * all),
                CubeDim::new_1d((d / 2) as u32),
                buffer(&qkv, b * s * all * d),
                buffer(&q_gamma, d),
                buffer(&k_gamma, d),
                buffer(&cos, s * (d / 2)),
                buffer(&sin, s * (d / 2)),
                buffer(&q, b * s * heads * d),
                buffer(&k_cache, cache),
                buffer(&v_cache, cache),
                s as u32,
                heads as u32,
                kv_heads as u32,
                cap as u32,
                start as u32,
                eps,
                (b * s * all) as u32,
                d as u32,
            )
        };
        let g = heads / kv_heads;
        let warps = attention_mma::warps(d, shared);
        if prompt_mma_on() && has_manual_mma(&qkv) && planes_are_32(&qkv) && attention_mma::supports(d, warps, shared) {
            let blocks = (g * s).div_ceil(attention_mma::rows(warps) as usize);
            // SAFETY: as below, with `q`/`out` read and written as floats: cube `(b·kv_heads +
            // kv head)·blocks + i` reads query rows below `g·s` (clamped) and cache positions
            // below `start + s ≤ cap` (clamped to its block's last), writes its own rows of
            // `out`; `d` is a multiple of 16, at most 128; planes are 32 lanes.
            unsafe {
                attention_mma::attention_prompt_mma::launch_unchecked(
                    &qkv.client,
                    grid_1d(b * kv_heads * blocks),
                    CubeDim::new_2d(32, warps),
                    4,
                    buffer(&q, b * s * heads * d),
                    buffer(&k_cache, cache / 4),
                    buffer(&v_cache, cache / 4),
                    buffer(&out, b * s * heads * d),
                    s as u32,
                    g as u32,
                    kv_heads as u32,
                    cap as u32,
                    start as u32,
                    scale,
                    d as u32,
                    warps,
                )
            };
            return (out, k_cache, v_cache);
        }
        let blocks = (g * s).div_ceil(tile.rows as usize);
        // SAFETY: `q` and `out` are `[b, s, heads, d]`, the caches `[b, kv_heads, cap, d]`, all
        // read as 4-float vectors (`d` is a multiple of 4); cube `(b·kv_heads + kv head)·blocks +
        // block` reads query rows below `g·s` and cache positions below `min(start + s, cap)`
        // (clamped to `cap - 1`), and writes its own rows of `out`; `tile` fits `d`.
        unsafe {
            attention_prompt::attention_prompt::launch_unchecked(
                &qkv.client,
                grid_1d(b * kv_heads * blocks),
                CubeDim::new_1d(tile.threads()),
                4,
                buffer(&q, b * s * heads * d / 4),
                buffer(&k_cache, cache / 4),
                buffer(&v_cache, cache / 4),
                buffer(&out, b * s * heads * d / 4),
                s as u32,
                g as u32,
                kv_heads as u32,
                cap as u32,
                start as u32,
                scale,
                d as u32,
                tile.rows,
                tile.keys,
            )
        };
        (out, k_cache, v_cache)
    }

    fn greedy_feed(logits: CubeTensor, token: CubeTensor, pos: CubeTensor) -> (CubeTensor, CubeTensor) {
        // 4- or 8-byte integers, written in place (an 8-byte one as its low word and a zero
        // high word: ids and positions are below 2³²).
        let words = |t: &CubeTensor| match t.dtype {
            DType::I32 | DType::U32 => Some(1),
            DType::I64 | DType::U64 => Some(2),
            _ => None,
        };
        let dims = logits.meta.shape().dims::<2>();
        let one = |t: &CubeTensor| t.is_contiguous() && t.meta.shape().num_elements() == 1;
        let row = dims[0] == 1 && dims[1] > 0 && dims[1] <= u32::MAX as usize / 2;
        let wide = match (words(&token), words(&pos)) {
            (Some(a), Some(b)) if a == b && one(&token) && one(&pos) && row => a == 2,
            _ => return super::decode::greedy_feed_composed::<Self>(logits, token, pos),
        };
        let logits = f32_contiguous(logits);
        let n = dims[1];
        let per_cube = (argmax::THREADS * argmax::PER_THREAD) as usize;
        let parts = n.div_ceil(per_cube);
        let part_v = empty_f32(&logits, vec![parts]);
        let part_i = empty_f32(&logits, vec![parts]);
        // SAFETY: `logits` is contiguous f32 holding `n` values; `part_v`/`part_i` hold `parts`
        // 4-byte words, one a cube of the first launch (each cube reads below `n` only);
        // `token` and `pos` are contiguous integers of one element, one word each or two with
        // `wide` (an id and a position are never negative and below 2³², so their low word read
        // as u32 is the value); the second launch is one cube.
        unsafe {
            argmax::argmax_parts::launch_unchecked(
                &logits.client,
                CubeCount::Static(parts as u32, 1, 1),
                CubeDim::new_1d(argmax::THREADS),
                buffer(&logits, n),
                buffer(&part_v, parts),
                buffer(&part_i, parts),
                n as u32,
                per_cube as u32,
            );
            argmax::argmax_feed::launch_unchecked(
                &logits.client,
                CubeCount::Static(1, 1, 1),
                CubeDim::new_1d(argmax::THREADS),
                buffer(&part_v, parts),
                buffer(&part_i, parts),
                buffer(&token, if wide { 2 } else { 1 }),
                buffer(&pos, if wide { 2 } else { 1 }),
                parts as u32,
                wide,
            );
        }
        (token, pos)
    }
}

/// [`norm::rms_norm_held`] over the rows of `x` (contiguous f32 `[rows, n]`, `gamma [n]`) into
/// `y` (`[rows, n]`: f32, or with `half` f16 for a tensor-core prefill), where its rows fit the
/// registers (`n` a multiple of 4, at most `HELD_STEPS` vectors a thread) and
/// `BURN_QUANT_NORM_HELD` is not `0`; false (nothing launched) otherwise.
pub(super) fn launch_norm_held(x: &CubeTensor, gamma: &CubeTensor, y: &CubeTensor, eps: f32, half: bool) -> bool {
    let n = x.meta.shape().last().copied().unwrap_or(1);
    let rows = x.meta.shape().num_elements() / n.max(1);
    // Rows of whole 4-float vectors, short enough to sit in registers: read once.
    let n4 = n / 4;
    let hw = &x.client.properties().hardware;
    // A power of two no larger than the device's cube (WebGPU guarantees only 256 units).
    let cap = 1usize << (hw.max_units_per_cube.min(hw.max_cube_dim.0).clamp(32, 1024).ilog2());
    let threads = n4.div_ceil(norm::HELD_STEPS as usize).next_power_of_two().clamp(32, cap);
    let steps = n4.div_ceil(threads);
    if !held_norm_on() || !n.is_multiple_of(4) || n4 == 0 || steps > norm::HELD_STEPS as usize {
        return false;
    }
    // SAFETY: `x` and `y` are contiguous `[rows, n]` (f32, or f16 two to a word with `half`),
    // `gamma` holds `n`, all in 4-value vectors (`n4` per row; reads past a row's end are
    // clamped to its last vector, writes dropped); `threads` is a power of two ≥ 32. The output
    // not written (`y16` without `half`, `y` with it) is bound to `gamma`, never written.
    unsafe {
        norm::rms_norm_held::launch_unchecked(
            &x.client,
            grid_1d(rows),
            CubeDim::new_1d(threads as u32),
            4,
            2,
            buffer(x, rows * n4),
            buffer(gamma, n4),
            buffer(if half { gamma } else { y }, if half { n4 } else { rows * n4 }),
            buffer(if half { y } else { gamma }, if half { rows * n4 } else { n4 }),
            n4 as u32,
            eps,
            threads as u32,
            steps as u32,
            planes_are_32(x),
            half,
        )
    };
    true
}

/// Whether [`DecodeOpsBackend::rms_norm`] may take [`norm::rms_norm_held`]: yes unless the
/// environment sets `BURN_QUANT_NORM_HELD=0` (then always the two-pass kernel, for comparisons).
fn held_norm_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("BURN_QUANT_NORM_HELD").map_or(true, |v| v != "0"))
}

/// Whether [`DecodeOpsBackend::attention_prompt`]'s attention takes the tensor cores where the
/// device has the f16 `mma` ([`attention_mma`]): yes unless the environment sets
/// `BURN_QUANT_ATTN_MMA=0` (then the f32 SIMT kernel, for comparisons and for f32 precision).
/// Read at each call, so one process can compare both.
fn prompt_mma_on() -> bool {
    std::env::var("BURN_QUANT_ATTN_MMA").map_or(true, |v| v != "0")
}

/// Whether [`DecodeOpsBackend::attention_step`] is one launch: yes unless the environment sets
/// `BURN_QUANT_ATTN_STEP=0` (then its composed ops, for comparisons).
fn step_kernel_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("BURN_QUANT_ATTN_STEP").map_or(true, |v| v != "0"))
}

/// Launches [`attention::attention_decode`] over `[b, kv_heads, g, d]` query rows, the caches
/// `k`/`v` `[b, kv_heads, cap, d]` contiguous f32: with `step` (the q/k norm scales and the RoPE
/// tables), `q` is one token's fused projection and the new key and value are written into the
/// caches; without, `q` is the rotated queries `[rows, d]`.
#[allow(clippy::too_many_arguments)]
fn launch_attention(q: &CubeTensor, step: Option<[&CubeTensor; 4]>, [k, v]: [&CubeTensor; 2], pos: &CubeTensor, out: &CubeTensor, [b, kvh, g, d]: [usize; 4], scale: f32, eps: f32) {
    let cap = k.meta.shape()[2];
    let rows = b * kvh * g;
    let scores = empty_f32(q, vec![rows, cap]);
    let width = if step.is_some() { b * (g + 2) * kvh * d } else { rows * d };
    let table = step.map_or(1, |[_, _, cos, _]| cos.meta.shape().num_elements());
    // Without `step` the kernel reads none of the four: `q` stands in.
    let [gq, gk, cos, sin] = step.unwrap_or([q, q, q, q]);
    let dn = if step.is_some() { d } else { 1 };
    let tn = if step.is_some() { table } else { 1 };
    // SAFETY: `q` holds `width` floats (`[rows, d]`, or with `step` `[b, (g + 2)·kvh·d]`),
    // `out` `[rows, d]`, `scores` `[rows, cap]`, `k`/`v` `[b·kvh, cap, d]` (read and, with
    // `step`, written at `pos` < `cap` as 4-float vectors: `d` is a multiple of 4), the norm
    // scales `d` floats and the tables `table`, of which row `pos` is read; the kernel attends
    // positions below `min(pos + 1, cap)` only.
    unsafe {
        attention::attention_decode::launch_unchecked(
            &q.client,
            grid_1d(rows),
            CubeDim::new_1d(attention::THREADS),
            4,
            buffer(q, width),
            buffer(gq, dn),
            buffer(gk, dn),
            buffer(cos, tn),
            buffer(sin, tn),
            buffer(k, b * kvh * cap * d / 4),
            buffer(v, b * kvh * cap * d / 4),
            buffer(pos, 1),
            buffer(&scores, rows * cap),
            buffer(out, rows * d),
            g as u32,
            kvh as u32,
            cap as u32,
            scale,
            eps,
            d as u32,
            step.is_some(),
        )
    };
}
