//! The end of the decode kernels: the per-thread partial sums of a row group, summed over the
//! group's lanes and planes and written to `y`; and the split-K handshake of the tensor-core
//! kernels whose tiles' slices are summed by the tile's last cube ([`last_of_slices`]).

use cubecl::prelude::*;

use super::matvec::MAX_M;

/// Planes per cube of the decode kernels (the cube is `32 × PLANES` threads).
pub const PLANES: u32 = 8;
/// Lanes per plane the decode kernels are laid out for.
pub const LANES: u32 = 32;
/// Largest `r · m` (rows per thread × token rows) a decode kernel may accumulate.
pub const MAX_ACC: u32 = 32;

/// The first weight row of row group `grp` of cube `cube`: a cube holds `PLANES / split` groups
/// of `r` rows each.
#[cube]
pub fn group_row0(cube: u32, grp: u32, #[comptime] r: u32, #[comptime] split: u32) -> u32 {
    (cube * (PLANES / split) + grp) * r
}

/// Sums, in cube `cube` of the launch, `acc[i·m + t]` (row `i` of the thread's row group, token `t`) over the `LANES` lanes and the `split` planes
/// of each row group and writes `y[t, col0 + row]` (plus `res` at the same index with `add`, the
/// residual of [`quant_matmul_add`](crate::ops::QuantMatmulBackend::quant_matmul_add)) for rows
/// below `rows`. With `norm` each token row's sum is first scaled by `1 / √(Σ x² / k + eps)`,
/// `Σ x²` being `ssq[t]` summed the same way (the RMSNorm of [`input`](mod@crate::kernels::input)). With `plane32` (the
/// device's planes are exactly `LANES` wide) the lanes are summed with `plane_sum`; otherwise
/// everything goes through shared memory, with no assumption on the plane width.
#[cube]
#[allow(clippy::too_many_arguments)]
pub fn reduce_groups(
    cube: u32,
    acc: &Array<f32>,
    ssq: &Array<f32>,
    y: &mut [f32],
    res: &[f32],
    rows: u32,
    n: u32,
    col0: u32,
    k: u32,
    eps: f32,
    #[comptime] m: u32,
    #[comptime] r: u32,
    #[comptime] split: u32,
    #[comptime] plane32: bool,
    #[comptime] add: bool,
    #[comptime] norm: bool,
) {
    let lane = UNIT_POS_X;
    let slot = UNIT_POS_Y;
    let tid = slot * LANES + lane;
    let outs = r * m;
    // Per plane (or lane): the `outs` sums, then with `norm` the `m` sums of squares.
    let width = comptime!(if norm { r * m + m } else { r * m });
    // Outputs of the cube: (PLANES / split) groups × r rows × m tokens.
    let total = (PLANES / split) * outs;
    if plane32 {
        let mut red = Shared::<[f32]>::new_slice((PLANES * (MAX_ACC + MAX_M)) as usize);
        #[unroll]
        for o in 0..outs {
            let s = plane_sum(acc[o as usize]);
            if lane == 0 {
                red[(slot * width + o) as usize] = s;
            }
        }
        if comptime!(norm) {
            #[unroll]
            for t in 0..m {
                let s = plane_sum(ssq[t as usize]);
                if lane == 0 {
                    red[(slot * width + outs + t) as usize] = s;
                }
            }
        }
        sync_cube();
        if tid < total {
            let grp = tid / outs;
            let o = tid % outs;
            let mut s = 0.0f32;
            for p in 0..split {
                s += red[((grp * split + p) * width + o) as usize];
            }
            if comptime!(norm) {
                let mut q = 0.0f32;
                for p in 0..split {
                    q += red[((grp * split + p) * width + outs + o % m) as usize];
                }
                s *= 1.0f32 / f32::sqrt(q / f32::cast_from(k) + eps);
            }
            let row = group_row0(cube, grp, r, split) + o / m;
            if row < rows {
                let at = (o % m) * n + col0 + row;
                y[at as usize] = if comptime!(add) { s + res[at as usize] } else { s };
            }
        }
    } else {
        let mut red = Shared::<[f32]>::new_slice((PLANES * LANES * width) as usize);
        #[unroll]
        for o in 0..outs {
            red[((slot * width + o) * LANES + lane) as usize] = acc[o as usize];
        }
        if comptime!(norm) {
            #[unroll]
            for t in 0..m {
                red[((slot * width + outs + t) * LANES + lane) as usize] = ssq[t as usize];
            }
        }
        sync_cube();
        if tid < total {
            let grp = tid / outs;
            let o = tid % outs;
            let mut s = 0.0f32;
            for p in 0..split {
                for l in 0..LANES {
                    s += red[(((grp * split + p) * width + o) * LANES + l) as usize];
                }
            }
            if comptime!(norm) {
                let mut q = 0.0f32;
                for p in 0..split {
                    for l in 0..LANES {
                        q += red[(((grp * split + p) * width + outs + o % m) * LANES + l) as usize];
                    }
                }
                s *= 1.0f32 / f32::sqrt(q / f32::cast_from(k) + eps);
            }
            let row = group_row0(cube, grp, r, split) + o / m;
            if row < rows {
                let at = (o % m) * n + col0 + row;
                y[at as usize] = if comptime!(add) { s + res[at as usize] } else { s };
            }
        }
    }
}

/// Publishes the slice this cube has just written (device-scope fence) and counts the cube in
/// `cnt[at]` (zero before the launch; thread `tid == 0` counts): whether it is the last of the
/// tile's `slices` cubes to arrive. The same for every thread of the cube. The last one must
/// `sync_storage()` again before it reads the others' slices.
#[cube]
pub fn last_of_slices(cnt: &mut [Atomic<u32>], at: u32, slices: u32, tid: u32) -> bool {
    sync_storage();
    let mut arrived = Shared::<[u32]>::new_slice(1usize);
    if tid == 0 {
        arrived[0] = cnt[at as usize].fetch_add(1u32);
    }
    sync_cube();
    arrived[0] + 1 == slices
}
