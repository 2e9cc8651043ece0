//! What the one-pass decode kernels do to their input as they read it ([`PLAIN`], [`SWIGLU`],
//! [`RMS_NORM`]), so the op before a quantized product (Qwen3's SwiGLU before `ffn_down`, the
//! RMSNorm before the q/k/v and gate/up projections) is not a launch of its own.
//!
//! The kernels read their input as 4-float vectors: vector `c` of token row `t`, through
//! [`input`]. With [`RMS_NORM`] each cube first computes the `m` rows' `1 / √(mean(x²) + eps)`
//! ([`row_scales`]; every cube the same, from L2), then scales each vector by it and by `gamma`.

use cubecl::prelude::*;

use super::norm::cube_reduce;
use super::reduce::{LANES, PLANES};

/// The input as it is.
pub const PLAIN: u32 = 0;
/// `silu(gate) ⊙ up` of an input twice as wide, `[m, 2k]` with `gate` in the first `k` columns of
/// each row and `up` in the last `k` (`silu(g) = g / (1 + e^-g)`).
pub const SWIGLU: u32 = 1;
/// `x / √(mean(x²) + eps) · gamma`, over each row of `k`.
pub const RMS_NORM: u32 = 2;

/// With [`RMS_NORM`], writes `1 / √(mean(x_t²) + eps)` of each of the `m` rows of `k4` vectors
/// into `inv[t]`; otherwise nothing. Every thread of the cube (`LANES × PLANES`) must call it.
#[cube]
pub fn row_scales<N: Size>(x: &[Vector<f32, N>], k4: u32, eps: f32, inv: &mut Array<f32>, #[comptime] m: u32, #[comptime] pre: u32) {
    if comptime!(pre == RMS_NORM) {
        let threads = comptime!(LANES * PLANES);
        #[unroll]
        for t in 0..m {
            let mut s = 0.0f32;
            let mut c = UNIT_POS;
            while c < k4 {
                let v = x[(t * k4 + c) as usize];
                s += v.extract(0usize) * v.extract(0usize)
                    + v.extract(1usize) * v.extract(1usize)
                    + v.extract(2usize) * v.extract(2usize)
                    + v.extract(3usize) * v.extract(3usize);
                c += threads;
            }
            let total = cube_reduce(s, false, threads);
            inv[t as usize] = 1.0f32 / f32::sqrt(total / f32::cast_from(4 * k4) + eps);
        }
    }
}

/// Vector `c` (of `k4` per row) of token row `t` of the product's input, after `pre`: `x` is the
/// op's input (`[m, 2k]` for [`SWIGLU`], else `[m, k]`), `gamma` the norm's scale and `inv` what
/// [`row_scales`] wrote.
#[cube]
pub fn input<N: Size>(x: &[Vector<f32, N>], gamma: &[Vector<f32, N>], t: u32, c: u32, k4: u32, inv: &Array<f32>, #[comptime] pre: u32) -> Vector<f32, N> {
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
        x[(t * k4 + c) as usize] * gamma[c as usize] * Vector::<f32, N>::new(inv[t as usize])
    } else {
        x[(t * k4 + c) as usize]
    }
}
