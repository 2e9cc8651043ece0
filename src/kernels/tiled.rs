//! The prefill path: `y = x · Wᵀ` (and the input gradient `g · W`) for many token rows, tiled
//! through shared memory with the weight tile decoded straight from the blocks — no f32 copy of
//! the weight, f32 multiply-adds throughout (no TF32), so results stay within f32 rounding of a
//! float64 reference.
//!
//! A cube of `T × T` threads computes a `BM × BN` output tile, each thread `R × R` outputs; the
//! reduction dimension is walked `BK` at a time: the token tile and the weight tile (decoded once
//! per cube with [`elem`]) are staged in shared memory.

use cubecl::prelude::*;

use super::decode::elem;

/// Threads per cube side.
pub const T: u32 = 16;
/// Outputs per thread side.
pub const R: u32 = 4;
/// Output tile side (`T · R`).
pub const B: u32 = 64;
/// Reduction chunk.
pub const BK: u32 = 32;

/// `y[z, i, col0 + j] = Σ_{c in slice z} x[i, c] · W[j, c]` for the part at byte `off` (`rows`
/// rows of `k`): the reduction is split into `CUBE_COUNT_Z` slices of `kslice` columns (split-K,
/// so a few token rows still fill the device); the caller sums the slices.
#[cube(launch_unchecked)]
pub fn matmul_tiled(
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
    let tx = UNIT_POS_X;
    let ty = UNIT_POS_Y;
    let tid = ty * T + tx;
    let i0 = CUBE_POS_Y * B;
    let j0 = CUBE_POS_X * B;
    let mut xs = Shared::<[f32]>::new_slice((B * BK) as usize);
    let mut ws = Shared::<[f32]>::new_slice((B * BK) as usize);
    let mut acc = Array::<f32>::new((R * R) as usize);
    #[unroll]
    for a in 0..R * R {
        acc[a as usize] = 0.0;
    }
    let z = CUBE_POS_Z;
    let mut c0 = z * kslice;
    let c_end = select(c0 + kslice < k, c0 + kslice, k);
    while c0 < c_end {
        // Stage x[i0.., c0..] and W[j0.., c0..] (B × BK each; 8 values per thread).
        #[unroll]
        for s in 0..(B * BK) / (T * T) {
            let idx = s * T * T + tid;
            let rr = idx / BK;
            let cc = idx % BK;
            let c = c0 + cc;
            let i = i0 + rr;
            let mut xv = 0.0f32;
            if i < m && c < c_end {
                xv = x[(i * k + c) as usize];
            }
            xs[idx as usize] = xv;
            let j = j0 + rr;
            let mut wv = 0.0f32;
            if j < rows && c < c_end {
                wv = elem(w, off + j * row_bytes + (c / elems) * bytes, c % elems, kind);
            }
            ws[idx as usize] = wv;
        }
        sync_cube();
        for cc in 0..BK {
            #[unroll]
            for a in 0..R {
                let xv = xs[((ty * R + a) * BK + cc) as usize];
                #[unroll]
                for b in 0..R {
                    acc[(a * R + b) as usize] += xv * ws[((tx * R + b) * BK + cc) as usize];
                }
            }
        }
        sync_cube();
        c0 += BK;
    }
    #[unroll]
    for a in 0..R {
        let i = i0 + ty * R + a;
        #[unroll]
        for b in 0..R {
            let j = j0 + tx * R + b;
            if i < m && j < rows {
                y[((z * m + i) * n + col0 + j) as usize] = acc[(a * R + b) as usize];
            }
        }
    }
}

/// `dx[i, c] += Σ_j g[i, row0 + j] · W[j, c]` over the `rows` rows of the part at byte `off`
/// (`g` is `[m, n]`, `dx` is `[m, k]`; parts are launched one after another).
#[cube(launch_unchecked)]
pub fn matmul_tiled_transposed(
    w: &[u32],
    g: &[f32],
    dx: &mut [f32],
    off: u32,
    rows: u32,
    m: u32,
    k: u32,
    row_bytes: u32,
    n: u32,
    row0: u32,
    #[comptime] kind: u32,
    #[comptime] elems: u32,
    #[comptime] bytes: u32,
) {
    let tx = UNIT_POS_X;
    let ty = UNIT_POS_Y;
    let tid = ty * T + tx;
    let i0 = CUBE_POS_Y * B;
    let c0 = CUBE_POS_X * B;
    let mut gs = Shared::<[f32]>::new_slice((B * BK) as usize);
    let mut ws = Shared::<[f32]>::new_slice((B * BK) as usize);
    let mut acc = Array::<f32>::new((R * R) as usize);
    #[unroll]
    for a in 0..R * R {
        acc[a as usize] = 0.0;
    }
    let mut j0 = 0u32;
    while j0 < rows {
        #[unroll]
        for s in 0..(B * BK) / (T * T) {
            let idx = s * T * T + tid;
            // g tile: [B token rows][BK weight rows]
            let rr = idx / BK;
            let jj = idx % BK;
            let i = i0 + rr;
            let j = j0 + jj;
            let mut gv = 0.0f32;
            if i < m && j < rows {
                gv = g[(i * n + row0 + j) as usize];
            }
            gs[idx as usize] = gv;
            // W tile: [BK weight rows][B columns]
            let wj = idx / B;
            let wc = idx % B;
            let jw = j0 + wj;
            let c = c0 + wc;
            let mut wv = 0.0f32;
            if jw < rows && c < k {
                wv = elem(w, off + jw * row_bytes + (c / elems) * bytes, c % elems, kind);
            }
            ws[idx as usize] = wv;
        }
        sync_cube();
        for jj in 0..BK {
            #[unroll]
            for a in 0..R {
                let gv = gs[((ty * R + a) * BK + jj) as usize];
                #[unroll]
                for b in 0..R {
                    acc[(a * R + b) as usize] += gv * ws[(jj * B + tx * R + b) as usize];
                }
            }
        }
        sync_cube();
        j0 += BK;
    }
    #[unroll]
    for a in 0..R {
        let i = i0 + ty * R + a;
        #[unroll]
        for b in 0..R {
            let c = c0 + tx * R + b;
            if i < m && c < k {
                let o = (i * k + c) as usize;
                dx[o] += acc[(a * R + b) as usize];
            }
        }
    }
}
