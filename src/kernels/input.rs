//! What the one-pass decode kernels do to their input as they read it ([`PLAIN`], [`SWIGLU`],
//! [`RMS_NORM`]), so the op before a quantized product (Qwen3's SwiGLU before `ffn_down`, the
//! RMSNorm before the q/k/v and gate/up projections) is not a launch of its own.
//!
//! The kernels read their input as 4-float vectors: vector `c` of token row `t`, through
//! [`input`]. With [`RMS_NORM`] that is `x · gamma`, and `Σ x²` of what the thread read goes
//! into `ssq[t]`: the lanes and planes of a row group read each input once, so the epilogue
//! ([`reduce_groups`](super::reduce::reduce_groups)) sums `ssq` like the products and scales each
//! row's result by `1 / √(Σ x² / k + eps)` (the norm's scale is the same for every output of a
//! token row, so it can come last: no pass over the input before the weight's loads, and no
//! input read twice).

use cubecl::prelude::*;

use super::prefill_mma::f16_quad;

/// The input as it is.
pub const PLAIN: u32 = 0;
/// `silu(gate) ⊙ up` of an input twice as wide, `[m, 2k]` with `gate` in the first `k` columns of
/// each row and `up` in the last `k` (`silu(g) = g / (1 + e^-g)`).
pub const SWIGLU: u32 = 1;
/// `x / √(mean(x²) + eps) · gamma`, over each row of `k`.
pub const RMS_NORM: u32 = 2;

/// Vector `c` (of `k4` per row) of token row `t` of the product's input, after `pre` (for
/// [`RMS_NORM`] without the row's scale, which the epilogue applies, and adding `Σ x²` to
/// `ssq[t]`): `x` is the op's input (`[m, 2k]` for [`SWIGLU`], else `[m, k]`), `gamma` the
/// norm's scale.
#[cube]
pub fn input<N: Size>(x: &[Vector<f32, N>], gamma: &[Vector<f32, N>], t: u32, c: u32, k4: u32, ssq: &mut Array<f32>, #[comptime] pre: u32) -> Vector<f32, N> {
    if comptime!(pre == SWIGLU) {
        let g = x[(2 * t * k4 + c) as usize];
        let u = x[(2 * t * k4 + k4 + c) as usize];
        let mut v = Vector::<f32, N>::empty();
        #[unroll]
        for e in 0..4usize {
            let ge = g.extract(e);
            v.insert(e, ge / (1.0f32 + f32::exp(-ge)) * u.extract(e));
        }
        v
    } else if comptime!(pre == RMS_NORM) {
        let v = x[(t * k4 + c) as usize];
        let sq = v * v;
        ssq[t as usize] += sq.extract(0usize) + sq.extract(1usize) + sq.extract(2usize) + sq.extract(3usize);
        v * gamma[c as usize]
    } else {
        x[(t * k4 + c) as usize]
    }
}

/// [`SWIGLU`] as a launch of its own, where the product's kernels do not do it: `out [m, k]` from
/// `gu [m, 2k]`, a thread per 4-float vector of `out` (`k4 = k / 4` per row, `n4` in all); with
/// `half` written to `out16` as f16 instead (`N2` = 2, [`f16_quad`], the input of a tensor-core
/// prefill).
#[cube(launch_unchecked)]
pub fn swiglu<N: Size, N2: Size>(gu: &[Vector<f32, N>], out: &mut [Vector<f32, N>], out16: &mut [Vector<u32, N2>], k4: u32, n4: u32, #[comptime] half: bool) {
    let i = ABSOLUTE_POS as u32;
    if i < n4 {
        let mut unused = Array::<f32>::new(1usize);
        let v = input(gu, gu, i / k4, i % k4, k4, &mut unused, SWIGLU);
        if comptime!(half) {
            out16[i as usize] = f16_quad::<N, N2>(v);
        } else {
            out[i as usize] = v;
        }
    }
}
