//! The decode path of a weight made of a Q4_K part and a Q6_Kx4 part (Qwen3's fused q/k/v in a
//! Q4_K_M file: q and k in Q4_K, v in Q6_K) in one launch: the first cubes run
//! [`matvec_q4k_body`] over the Q4_K rows, the others [`matvec_q6kx4_body`] over the Q6_Kx4 rows,
//! so the two parts' cubes share the device instead of the second launch waiting for the first.
//! At a decode step both parts are small (one or two waves of cubes each), which makes each
//! launch mostly latency.

use cubecl::prelude::*;

use super::matvec_q4k::matvec_q4k_body;
use super::matvec_q6kx4::matvec_q6kx4_body;

/// `y [m, ny]`, columns `0..rows_a` from the Q4_K part at 16-byte unit `off16` of `w4` (cubes
/// `0..cubes_a`, `r_a` rows per thread, `split_a` planes per row group) and columns `rows_a..
/// rows_a + rows_b` from the Q6_Kx4 part at 8-byte word `off8` of `w8` (the same buffer read in
/// 8-byte vectors; the remaining cubes, `r_b`, `split_b`). The other arguments are the two
/// kernels' own.
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
    off8: u32,
    rows_b: u32,
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
) {
    let cube = CUBE_POS as u32;
    if cube < cubes_a {
        matvec_q4k_body(cube, w4, x, y, res, gamma, off16, rows_a, k, ny, 0u32, magic, f16hw, eps, m, r_a, split_a, plane32, add, pre);
    } else {
        matvec_q6kx4_body(cube - cubes_a, w8, x, y, res, gamma, off8, rows_b, k, ny, rows_a, magic, f16hw, eps, m, r_b, split_b, plane32, add, pre);
    }
}
