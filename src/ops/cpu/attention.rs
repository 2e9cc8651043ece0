//! A prompt's attention in Qwen3 on the CPU backends (`DecodeOpsBackend::attention_prompt`), in
//! one pass over plain slices where Burn's ops take about fifteen (views, the q/k norms, RoPE,
//! transposes, two cache writes, the mask, attention, the output's transpose), each allocating
//! its result: the q and k heads' RMSNorm + NEOX RoPE and the cache writes, then causal
//! attention as rayon tasks of (sequence, query head, block of 32 tokens), each two `gemm`
//! products (scores, then weights × values) around a vectorised softmax that zeroes the
//! positions a token may not see.

use rayon::prelude::*;

use super::kernel::SyncPtr;
use crate::ops::decode::PromptDims;

/// `x / √(mean(x²) + eps) · gamma` then rotated by `cos`/`sin` (`d/2` each; pairs `(j, j + d/2)`),
/// written to `out`.
#[inline(always)]
fn norm_rope(x: &[f32], gamma: &[f32], cos: &[f32], sin: &[f32], eps: f32, out: &mut [f32]) {
    let (d, half) = (x.len(), x.len() / 2);
    let inv = 1.0 / (super::elementwise::sum_squares(x) / d as f32 + eps).sqrt();
    for j in 0..half {
        let a = x[j] * inv * gamma[j];
        let b = x[j + half] * inv * gamma[j + half];
        out[j] = a * cos[j] - b * sin[j];
        out[j + half] = b * cos[j] + a * sin[j];
    }
}

/// `qkv [batch, seq, (heads + 2·kv_heads)·d]` at positions `start..start + seq`: the query and
/// key heads get their RMSNorm (`q_gamma`, `k_gamma` `[d]`, `eps`) and RoPE with row `t` of
/// `cos`/`sin` `[seq, d/2]`; the keys and values are written into `kc`/`vc` `[batch, kv_heads,
/// cap, d]` at `start + t`, and token `t`'s query heads attend positions `0..=start + t` of
/// their KV head with scores `scale · q·k`. Returns `[batch, seq, heads·d]`. The callers check
/// the slices' lengths against `dims` (`PromptDims::of`).
#[allow(clippy::too_many_arguments)]
pub fn attention_prompt(
    qkv: &[f32],
    [q_gamma, k_gamma]: [&[f32]; 2],
    [cos, sin]: [&[f32]; 2],
    [kc, vc]: [&mut [f32]; 2],
    dims: PromptDims,
    eps: f32,
    scale: f32,
) -> Vec<f32> {
    let PromptDims { batch, seq, heads, kv_heads, d, cap, start } = dims;
    let (half, width) = (d / 2, (heads + 2 * kv_heads) * d);
    // The loops run under pulp's dispatch: compiled for the CPU's widest float instructions.
    let arch = pulp::Arch::new();
    // Rotated queries, a token row (`heads · d`) per task.
    let mut q = vec![0f32; batch * seq * heads * d];
    q.par_chunks_mut(heads * d).enumerate().for_each(|(row, out)| {
        let t = row % seq;
        let x = &qkv[row * width..][..heads * d];
        arch.dispatch(Rotate { x, gamma: q_gamma, cos: &cos[t * half..][..half], sin: &sin[t * half..][..half], eps, out, d });
    });
    // Keys and values into the caches.
    for bi in 0..batch {
        for t in 0..seq {
            let x = &qkv[(bi * seq + t) * width..][..width];
            let (c, s) = (&cos[t * half..][..half], &sin[t * half..][..half]);
            for kh in 0..kv_heads {
                let at = ((bi * kv_heads + kh) * cap + start + t) * d;
                arch.dispatch(Rotate { x: &x[(heads + kh) * d..][..d], gamma: k_gamma, cos: c, sin: s, eps, out: &mut kc[at..at + d], d });
                vc[at..at + d].copy_from_slice(&x[(heads + kv_heads + kh) * d..][..d]);
            }
        }
    }
    let (kc, vc) = (&*kc, &*vc);
    let mut out = vec![0f32; batch * seq * heads * d];
    let g = heads / kv_heads;
    let outp = SyncPtr(out.as_mut_ptr());
    // A task per (sequence, query head, block of tokens): the block's scores are one product of
    // its queries with the keys its last token sees, and its outputs one product of the
    // weights with the values, both through `gemm`.
    let blocks = seq.div_ceil(ROWS);
    (0..batch * heads * blocks).into_par_iter().for_each_init(Vec::new, |scores: &mut Vec<f32>, task| {
        let (bh, blk) = (task / blocks, task % blocks);
        let (bi, hq) = (bh / heads, bh % heads);
        let (t0, t1) = (blk * ROWS, ((blk + 1) * ROWS).min(seq));
        let (m, n) = (t1 - t0, start + t1);
        scores.clear();
        scores.resize(m * n, 0.0);
        let kv = (bi * kv_heads + hq / g) * cap * d;
        let q0 = ((bi * seq + t0) * heads + hq) * d;
        // SAFETY: `q` holds rows `(bi·seq + t)·heads + hq` of `d` for `t < seq`, read at stride
        // `heads·d`; the cache head from `kv` holds `cap ≥ n` rows of `d`; `scores` is `m × n`.
        unsafe {
            gemm::gemm(
                m, n, d,
                scores.as_mut_ptr(), 1, n as isize, false,
                q.as_ptr().add(q0), 1, (heads * d) as isize,
                kc.as_ptr().add(kv), d as isize, 1,
                0.0, scale, false, false, false,
                gemm::Parallelism::None,
            );
        }
        arch.dispatch(Softmax { scores, n, first: start + t0 + 1 });
        // SAFETY: this task alone writes rows `t0..t1` of query head `hq` of sequence `bi` in
        // `out` (`[batch, seq, heads, d]`, stride `heads·d`); `scores` is `m × n`, the value head
        // `cap ≥ n` rows of `d`.
        unsafe {
            gemm::gemm(
                m, d, n,
                outp.get().add(q0), 1, (heads * d) as isize, false,
                scores.as_ptr(), 1, n as isize,
                vc.as_ptr().add(kv), 1, d as isize,
                0.0, 1.0, false, false, false,
                gemm::Parallelism::None,
            );
        }
    });
    out
}

/// Tokens per attention task: a block sees only the positions up to its last token, so smaller
/// blocks skip more of the causal mask's hidden half (and bound a task's scores to `ROWS ×
/// positions`).
const ROWS: usize = 32;

/// Row `i` of the `n`-wide scores (a token that sees positions `0..first + i`) becomes its
/// softmax weights, the positions it may not see zero.
struct Softmax<'a> {
    scores: &'a mut [f32],
    n: usize,
    first: usize,
}

impl pulp::WithSimd for Softmax<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        for (i, row) in self.scores.chunks_exact_mut(self.n).enumerate() {
            let (seen, hidden) = row.split_at_mut((self.first + i).min(self.n));
            let mx = seen.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let mut total = 0f32;
            for sc in seen.iter_mut() {
                *sc = super::elementwise::exp(*sc - mx);
                total += *sc;
            }
            let inv = 1.0 / total;
            seen.iter_mut().for_each(|p| *p *= inv);
            hidden.fill(0.0);
        }
    }
}

/// [`norm_rope`] over the `d`-wide heads of `x` into `out`, as a [`pulp::WithSimd`] struct.
struct Rotate<'a> {
    x: &'a [f32],
    gamma: &'a [f32],
    cos: &'a [f32],
    sin: &'a [f32],
    eps: f32,
    out: &'a mut [f32],
    d: usize,
}

impl pulp::WithSimd for Rotate<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        for (xh, oh) in self.x.chunks_exact(self.d).zip(self.out.chunks_exact_mut(self.d)) {
            norm_rope(xh, self.gamma, self.cos, self.sin, self.eps, oh);
        }
    }
}
