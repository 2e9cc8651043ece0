//! The launch of the Q4_K and Q6_Kx4 decode kernels ([`matvec_q4k_body`](fn@matvec_q4k_body),
//! [`matvec_q6kx4_body`](fn@matvec_q6kx4_body)): one part of either type, or a Q4_K part and a Q6_Kx4 part together
//! (Qwen3's fused q/k/v in a Q4_K_M file: q and k in Q4_K, v in Q6_K). Together, the first cubes
//! run the Q4_K body over its rows and the others the Q6_Kx4 body, so the two parts' cubes share
//! the device instead of the second launch waiting for the first: at a decode step both parts are
//! small (one or two waves of cubes each), which makes each launch mostly latency. Which bodies
//! a launch holds is a compile-time choice, so a one-part launch keeps that kernel's registers.

use cubecl::prelude::*;

use super::matvec_q4k::matvec_q4k_body;
use super::matvec_q6kx4::matvec_q6kx4_body;

/// [`matvec_q4k_q6kx4`](fn@matvec_q4k_q6kx4) holds the Q4_K body.
pub const HOLDS_Q4K: u32 = 1;
/// [`matvec_q4k_q6kx4`](fn@matvec_q4k_q6kx4) holds the Q6_Kx4 body.
pub const HOLDS_Q6KX4: u32 = 2;

/// `y [m, ny]`: with [`HOLDS_Q4K`] in `holds`, columns `col_a..col_a + rows_a` from the Q4_K part
/// at 16-byte unit `off16` of `w4` (cubes `0..cubes_a`, `r_a` rows per thread, `split_a` planes
/// per row group); with [`HOLDS_Q6KX4`], columns `col_b..col_b + rows_b` from the Q6_Kx4 part at
/// 8-byte word `off8` of `w8` (the same buffer read in 8-byte vectors; the cubes after `cubes_a`,
/// `r_b`, `split_b`). The other arguments are the two bodies' own.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn matvec_q4k_q6kx4<N: Size, Wv: Size>(
    w4: &[Vector<u32, N>],
    w8: &[Vector<u32, Wv>],
    x: &[Vector<f32, N>],
    y: &mut [f32],
    res: &[f32],
    gamma: &[Vector<f32, N>],
    off16: u32,
    rows_a: u32,
    col_a: u32,
    off8: u32,
    rows_b: u32,
    col_b: u32,
    cubes_a: u32,
    k: u32,
    ny: u32,
    magic: u32,
    #[comptime] f16hw: bool,
    eps: f32,
    #[comptime] m: u32,
    #[comptime] r_a: u32,
    #[comptime] split_a: u32,
    #[comptime] r_b: u32,
    #[comptime] split_b: u32,
    #[comptime] plane32: bool,
    #[comptime] add: bool,
    #[comptime] pre: u32,
    #[comptime] holds: u32,
) {
    let cube = CUBE_POS as u32;
    let a = comptime!(holds & HOLDS_Q4K != 0);
    let b = comptime!(holds & HOLDS_Q6KX4 != 0);
    if comptime!(a && b) {
        if cube < cubes_a {
            matvec_q4k_body(cube, w4, x, y, res, gamma, off16, rows_a, k, ny, col_a, magic, f16hw, eps, m, r_a, split_a, plane32, add, pre);
        } else {
            matvec_q6kx4_body(cube - cubes_a, w8, x, y, res, gamma, off8, rows_b, k, ny, col_b, magic, f16hw, eps, m, r_b, split_b, plane32, add, pre);
        }
    } else if comptime!(a) {
        matvec_q4k_body(cube, w4, x, y, res, gamma, off16, rows_a, k, ny, col_a, magic, f16hw, eps, m, r_a, split_a, plane32, add, pre);
    } else {
        matvec_q6kx4_body(cube, w8, x, y, res, gamma, off8, rows_b, k, ny, col_b, magic, f16hw, eps, m, r_b, split_b, plane32, add, pre);
    }
}
