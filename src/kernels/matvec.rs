//! The generic decode path: `y[t, col0 + r] = Σ_c W[r, c] · x[t, c]` for `m ≤ 8` token rows, in one
//! pass over the weight, for every format without a kernel of its own ([`super::matvec_q4k`],
//! [`super::matvec_q6k`]). A cube holds `ROWS` planes of `LANES` threads; `SPLIT` planes share a weight
//! row (each takes every `SPLIT`-th stretch of it, so more loads are in flight); a thread decodes
//! each of its weights once and multiplies it with every token row; the partial sums are reduced
//! through shared memory (no assumption on the device's plane width).

use cubecl::prelude::*;

use super::decode::elem;

/// Threads per weight row.
pub const LANES: u32 = 32;
/// Planes per cube.
pub const ROWS: u32 = 8;
/// Planes sharing one weight row (each takes every `SPLIT`-th block), for more loads in flight.
pub const SPLIT: u32 = 4;
/// Weight rows per cube.
pub const ROWS_PER_CUBE: u32 = ROWS / SPLIT;
/// Largest token count of the decode path.
pub const MAX_M: u32 = 8;

/// Sums the `acc` of the `SPLIT · LANES` threads of row `r` through shared memory and writes
/// `y[t, col0 + r]` for `t < m` (plus `res` at the same index with `add`).
#[cube]
#[allow(clippy::too_many_arguments)]
fn reduce_rows(acc: &Array<f32>, y: &mut [f32], res: &[f32], r: u32, rows: u32, n: u32, col0: u32, #[comptime] m: u32, #[comptime] add: bool) {
    let lane = UNIT_POS_X;
    let slot = UNIT_POS_Y;
    let mut partial = Shared::<[f32]>::new_slice((ROWS * LANES * MAX_M) as usize);
    #[unroll]
    for t in 0..m {
        partial[((slot * MAX_M + t) * LANES + lane) as usize] = acc[t as usize];
    }
    sync_cube();
    if lane < m && r < rows && slot % SPLIT == 0 {
        let t = lane;
        let mut s = 0.0f32;
        for p in 0..SPLIT {
            for l in 0..LANES {
                s += partial[(((slot + p) * MAX_M + t) * LANES + l) as usize];
            }
        }
        let at = t * n + col0 + r;
        y[at as usize] = if comptime!(add) { s + res[at as usize] } else { s };
    }
}

/// See the module docs. `x` is `[m, k]`, `y` is `[m, n]`; this launch covers `rows` rows of the
/// part at byte `off`, writing output columns `col0..col0 + rows` (plus the residual `res` with
/// `add`).
#[cube(launch_unchecked)]
pub fn matvec(
    w: &[u32],
    x: &[f32],
    y: &mut [f32],
    res: &[f32],
    off: u32,
    rows: u32,
    k: u32,
    row_bytes: u32,
    n: u32,
    col0: u32,
    #[comptime] m: u32,
    #[comptime] kind: u32,
    #[comptime] elems: u32,
    #[comptime] bytes: u32,
    #[comptime] add: bool,
) {
    let lane = UNIT_POS_X;
    let slot = UNIT_POS_Y;
    let part = slot % SPLIT;
    let r = (CUBE_POS as u32) * ROWS_PER_CUBE + slot / SPLIT;
    let mut acc = Array::<f32>::new(MAX_M as usize);
    #[unroll]
    for t in 0..m {
        acc[t as usize] = 0.0;
    }
    if r < rows {
        let base = off + r * row_bytes;
        let mut c = lane + part * LANES;
        while c < k {
            let v = elem(w, base + (c / elems) * bytes, c % elems, kind);
            #[unroll]
            for t in 0..m {
                acc[t as usize] += v * x[(t * k + c) as usize];
            }
            c += LANES * SPLIT;
        }
    }
    reduce_rows(&acc, y, res, r, rows, n, col0, m, add);
}
