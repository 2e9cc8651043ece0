//! The prefill path on devices with matrix units (CUDA tensor cores; any runtime whose CubeCL
//! client advertises a 16×16×16 f16·f16→f32 `cmma`): `y = x · Wᵀ` with the weight tile decoded
//! from its blocks into shared memory as f16 — no copy of the weight outside shared memory —
//! the token tile rounded to f16 beside it, and f32 accumulation in the matrix units.
//!
//! Precision: the inputs of each product are rounded to f16 (relative error ≤ 2⁻¹¹ each), the
//! sums are f32; the tests hold this path to a relative error of 2e-3 (the f16 bound of the
//! issues), where the f32 [`tiled`](super::tiled) kernel is held to 1e-5.
//!
//! A cube of `PLANES` planes computes a `BM × BN` output tile (token rows × weight rows); plane
//! `p` owns the `32 × 64` sub-tile at (`p / 2`, `p % 2`), eight 16×16 accumulators. The reduction
//! is walked `BK` columns at a time, and split into `CUBE_COUNT_Z` slices (split-K) when there
//! are too few output tiles to fill the device; the caller sums the slices.

use cubecl::cmma::{Matrix, MatrixIdent, MatrixLayout};
use cubecl::prelude::*;
use half::f16;

use super::decode::elem;

/// Token rows per cube.
pub const BM: u32 = 128;
/// Weight rows per cube.
pub const BN: u32 = 128;
/// Reduction chunk.
pub const BK: u32 = 32;
/// Planes per cube (4 along the tokens × 2 along the weight rows).
pub const PLANES: u32 = 8;
/// Threads per plane the launch assumes (the cube is `32 × PLANES`).
pub const LANES: u32 = 32;
/// The fragment side.
const F: u32 = 16;

/// An accumulator fragment set to zero.
#[cube]
fn zero_acc() -> Matrix<f32> {
    Matrix::<f32>::from_value(MatrixIdent::Accumulator, 16usize, 16usize, 16usize, MatrixLayout::Undefined, 0.0)
}

/// Stores fragment `c` (token rows `i0..i0 + 16`, weight rows `j0..j0 + 16` of the tile) into
/// `y[z, i, col0 + j]`, through the plane's 16×16 staging area `st` so that rows and columns
/// past `m` and `rows` are dropped.
#[cube]
#[allow(clippy::too_many_arguments)]
fn store_frag(
    c: &Matrix<f32>,
    st: &mut [f32],
    y: &mut [f32],
    i0: u32,
    j0: u32,
    m: u32,
    rows: u32,
    n: u32,
    col0: u32,
    z: u32,
) {
    cubecl::cmma::store(st, c, F, MatrixLayout::RowMajor);
    sync_plane();
    let lane = UNIT_POS_X;
    #[unroll]
    for s in 0..(F * F) / LANES {
        let e = s * LANES + lane;
        let i = i0 + e / F;
        let j = j0 + e % F;
        if i < m && j < rows {
            y[((z * m + i) * n + col0 + j) as usize] = st[e as usize];
        }
    }
    sync_plane();
}

/// See the module docs. `x` is `[m, k]`, `y` is `[splits, m, n]`; this launch covers the `rows`
/// rows of the part at byte `off` (whose rows are `row_bytes` long), output columns
/// `col0..col0 + rows`, reduction slice `CUBE_POS_Z · kslice ..` of `kslice` columns.
#[cube(launch_unchecked)]
pub fn matmul_mma(
    w: &[u32],
    x: &[f32],
    y: &mut [f32],
    off: u32,
    rows: u32,
    m: u32,
    k: u32,
    row_bytes: u32,
    n: u32,
    col0: u32,
    kslice: u32,
    #[comptime] kind: u32,
    #[comptime] elems: u32,
    #[comptime] bytes: u32,
) {
    let lane = UNIT_POS_X;
    let plane = UNIT_POS_Y;
    let tid = plane * LANES + lane;
    let i0 = CUBE_POS_Y * BM;
    let j0 = CUBE_POS_X * BN;
    let pi = (plane / 2) * 32;
    let pj = (plane % 2) * 64;
    let mut xs = Shared::<[f16]>::new_aligned_slice((BM * BK) as usize, 16usize);
    let mut ws = Shared::<[f16]>::new_aligned_slice((BN * BK) as usize, 16usize);
    let mut st = Shared::<[f32]>::new_aligned_slice((PLANES * F * F) as usize, 16usize);

    let c00 = zero_acc();
    let c01 = zero_acc();
    let c02 = zero_acc();
    let c03 = zero_acc();
    let c10 = zero_acc();
    let c11 = zero_acc();
    let c12 = zero_acc();
    let c13 = zero_acc();
    let mut a0 = unsafe { Matrix::<f16>::uninitialized(MatrixIdent::A, 16usize, 16usize, 16usize, MatrixLayout::RowMajor) };
    let mut a1 = unsafe { Matrix::<f16>::uninitialized(MatrixIdent::A, 16usize, 16usize, 16usize, MatrixLayout::RowMajor) };
    let mut b = unsafe { Matrix::<f16>::uninitialized(MatrixIdent::B, 16usize, 16usize, 16usize, MatrixLayout::ColMajor) };

    let z = CUBE_POS_Z;
    let mut c0 = z * kslice;
    let c_end = select(c0 + kslice < k, c0 + kslice, k);
    while c0 < c_end {
        // Stage the token tile x[i0.., c0..] (BM × BK) and the weight tile W[j0.., c0..]
        // (BN × BK), both row-major with stride BK, as f16.
        #[unroll]
        for s in 0..(BM * BK) / (LANES * PLANES) {
            let idx = s * LANES * PLANES + tid;
            let i = i0 + idx / BK;
            let c = c0 + idx % BK;
            let mut v = 0.0f32;
            if i < m && c < c_end {
                v = x[(i * k + c) as usize];
            }
            xs[idx as usize] = f16::cast_from(v);
        }
        #[unroll]
        for s in 0..(BN * BK) / (LANES * PLANES) {
            let idx = s * LANES * PLANES + tid;
            let j = j0 + idx / BK;
            let c = c0 + idx % BK;
            let mut v = 0.0f32;
            if j < rows && c < c_end {
                v = elem(w, off + j * row_bytes + (c / elems) * bytes, c % elems, kind);
            }
            ws[idx as usize] = f16::cast_from(v);
        }
        sync_cube();
        #[unroll]
        for kk in 0..BK / F {
            let xa = (pi * BK + kk * F) as usize;
            cubecl::cmma::load(&mut a0, &xs[xa..xa + (F * BK) as usize], BK);
            let xb = ((pi + F) * BK + kk * F) as usize;
            cubecl::cmma::load(&mut a1, &xs[xb..xb + (F * BK) as usize], BK);
            let w0 = (pj * BK + kk * F) as usize;
            cubecl::cmma::load(&mut b, &ws[w0..w0 + (F * BK) as usize], BK);
            cubecl::cmma::execute(&a0, &b, &c00, &c00);
            cubecl::cmma::execute(&a1, &b, &c10, &c10);
            let w1 = ((pj + F) * BK + kk * F) as usize;
            cubecl::cmma::load(&mut b, &ws[w1..w1 + (F * BK) as usize], BK);
            cubecl::cmma::execute(&a0, &b, &c01, &c01);
            cubecl::cmma::execute(&a1, &b, &c11, &c11);
            let w2 = ((pj + 2 * F) * BK + kk * F) as usize;
            cubecl::cmma::load(&mut b, &ws[w2..w2 + (F * BK) as usize], BK);
            cubecl::cmma::execute(&a0, &b, &c02, &c02);
            cubecl::cmma::execute(&a1, &b, &c12, &c12);
            let w3 = ((pj + 3 * F) * BK + kk * F) as usize;
            cubecl::cmma::load(&mut b, &ws[w3..w3 + (F * BK) as usize], BK);
            cubecl::cmma::execute(&a0, &b, &c03, &c03);
            cubecl::cmma::execute(&a1, &b, &c13, &c13);
        }
        sync_cube();
        c0 += BK;
    }

    let so = (plane * F * F) as usize;
    let stage = &mut st[so..so + (F * F) as usize];
    store_frag(&c00, stage, y, i0 + pi, j0 + pj, m, rows, n, col0, z);
    store_frag(&c01, stage, y, i0 + pi, j0 + pj + F, m, rows, n, col0, z);
    store_frag(&c02, stage, y, i0 + pi, j0 + pj + 2 * F, m, rows, n, col0, z);
    store_frag(&c03, stage, y, i0 + pi, j0 + pj + 3 * F, m, rows, n, col0, z);
    store_frag(&c10, stage, y, i0 + pi + F, j0 + pj, m, rows, n, col0, z);
    store_frag(&c11, stage, y, i0 + pi + F, j0 + pj + F, m, rows, n, col0, z);
    store_frag(&c12, stage, y, i0 + pi + F, j0 + pj + 2 * F, m, rows, n, col0, z);
    store_frag(&c13, stage, y, i0 + pi + F, j0 + pj + 3 * F, m, rows, n, col0, z);
}
