//! One token row of burn-quant's int4 groups (`I4_<G>`, see [`matvec_i4`](super::matvec_i4)) with
//! the input held in registers: a cube spans the whole reduction, each warp 1,024 inputs of it
//! (`1024 / G` groups, `G / 32` lanes a group, 32 inputs a lane), and walks the cube's `rows`
//! weight rows reading only their code words. [`matvec_i4`](super::matvec_i4) at one row reads
//! the lane's 32 inputs again for every 4 weight rows, 128 bytes of input per 80 bytes of weight;
//! here a lane loads its inputs once per cube, so the loads are the weight's 5 words a row and
//! lane (its group's `d | z << 16` word and the lane's 4 code words), `2 · depth` rows in flight.
//!
//! A lane's partial of a row (`d·Σq·x − d·z·Σx` over its 32 inputs) goes to shared memory; at the
//! end the cube sums each row's `32 · planes` partials, lanes first then warps, in a fixed order
//! (deterministic), and applies the RMSNorm's scale and the residual. The arithmetic per code is
//! [`unit_partial`]'s (exact in f32, as in [`matvec_i4`](super::matvec_i4)).

use cubecl::prelude::*;

use super::input::RMS_NORM;
use super::matvec_i4::{lane_inputs, load_row, unit_partial};

/// Inputs a warp spans: 32 lanes × 32 inputs.
pub const SPAN: u32 = 1024;

/// Most warps a cube of [`matvec_i4_cols`] holds, so `k ≤ MAX_PLANES · SPAN`.
pub const MAX_PLANES: u32 = 16;

/// Bytes of shared memory a cube of [`matvec_i4_cols`] takes with `rows` weight rows and
/// `planes` warps: each lane's partial of each row, each (row, warp) pair's sum, and the RMSNorm
/// squares per lane and per warp (the kernel's four allocations).
pub const fn shared_bytes(rows: u32, planes: u32) -> usize {
    4 * (rows * planes * 32 + rows * planes + planes * 32 + planes) as usize
}

/// See the module docs. `x` is `[1, k]` (`[1, 2k]` for SwiGLU) in 16-byte vectors; `off` the
/// part's first word; cube `c` of `32 × planes` threads (`planes = ⌈k / SPAN⌉ ≤ MAX_PLANES`)
/// computes rows `c·rows ..` (rows past `nrows` read clamped and are never written) into
/// `y[col0 + row]`, plus `res` at the same index with `add`. `rows` is a multiple of `depth`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn matvec_i4_cols<N: Size>(
    w: &[u32],
    x: &[Vector<f32, N>],
    y: &mut [f32],
    res: &[f32],
    gamma: &[Vector<f32, N>],
    off: u32,
    nrows: u32,
    k: u32,
    col0: u32,
    magic: u32,
    eps: f32,
    #[comptime] group: u32,
    #[comptime] f16hw: bool,
    #[comptime] planes: u32,
    #[comptime] rows: u32,
    #[comptime] depth: u32,
    #[comptime] add: bool,
    #[comptime] pre: u32,
) {
    let lane = UNIT_POS_X;
    let plane = UNIT_POS_Y;
    let tid = plane * 32 + lane;
    let lpg = comptime!(group / 32);
    let words = comptime!(1 + group / 8);
    let groups = k / group;
    let k4 = k / 4;
    // The lane's group and unit (inputs `16u .. 16u + 16` and `G/2 + 16u ..` of the group).
    let gi = plane * comptime!(SPAN / group) + lane / lpg;
    let u = lane % lpg;
    let live = gi < groups;
    let r0 = CUBE_POS as u32 * rows;

    let mut part = Shared::<[f32]>::new_slice(comptime!(rows * planes * 32) as usize);
    let mut red = Shared::<[f32]>::new_slice(comptime!(rows * planes) as usize);
    let mut ss = Shared::<[f32]>::new_slice(comptime!(planes * 32) as usize);
    let mut sq = Shared::<[f32]>::new_slice(planes as usize);

    // The lane's 32 inputs, prescaled for `dot_word_in_place`, their sum and (RMSNorm) squares.
    let mut xs = Array::<f32>::new(32usize);
    let mut ssq = Array::<f32>::new(1usize);
    ssq[0] = 0.0;
    let mut sx = 0.0f32;
    #[unroll]
    for i in 0..32u32 {
        xs[i as usize] = 0.0;
    }
    let gl = select(live, gi, 0u32);
    if live {
        sx = lane_inputs(x, gamma, gl, u, k4, &mut ssq, &mut xs, group, pre);
    }
    ss[tid as usize] = ssq[0];

    // Rows in batches of `depth`, two batches in flight (stages indexed at compile time).
    let mut qw = Array::<u32>::new(comptime!(10 * depth) as usize);
    #[unroll]
    for s in 0..depth {
        let row = u32::min(r0 + s, nrows - 1);
        if live {
            load_row(w, &mut qw, off, row, groups, gl, u, s, words);
        }
    }
    #[unroll]
    for b in 0..rows / depth {
        let cur = comptime!((b % 2) * depth);
        let nxt = comptime!(((b + 1) % 2) * depth);
        if comptime!(b + 1 < rows / depth) {
            #[unroll]
            for s in 0..depth {
                let row = u32::min(r0 + comptime!((b + 1) * depth + s), nrows - 1);
                if live {
                    load_row(w, &mut qw, off, row, groups, gl, u, comptime!(nxt + s), words);
                }
            }
        }
        #[unroll]
        for s in 0..depth {
            let o = comptime!(5 * (cur + s)) as usize;
            let p = unit_partial(qw[o], &qw, o + 1, &xs, sx, magic, f16hw);
            part[((comptime!(b * depth + s) * planes + plane) * 32 + lane) as usize] = select(live, p, 0.0f32);
        }
    }
    sync_cube();
    // Each (row, warp) pair's 32 lanes, then (RMSNorm) each warp's squares.
    let pairs = comptime!(rows * planes);
    let mut i = tid;
    while i < pairs {
        let mut s = 0.0f32;
        #[unroll]
        for l in 0..32u32 {
            s += part[(i * 32 + l) as usize];
        }
        red[i as usize] = s;
        i += comptime!(32 * planes);
    }
    if comptime!(pre == RMS_NORM) && tid < planes {
        let mut s = 0.0f32;
        #[unroll]
        for l in 0..32u32 {
            s += ss[(tid * 32 + l) as usize];
        }
        sq[tid as usize] = s;
    }
    sync_cube();
    if tid < rows {
        let row = r0 + tid;
        if row < nrows {
            let mut s = 0.0f32;
            #[unroll]
            for p in 0..planes {
                s += red[(tid * planes + p) as usize];
            }
            if comptime!(pre == RMS_NORM) {
                let mut q = 0.0f32;
                #[unroll]
                for p in 0..planes {
                    q += sq[p as usize];
                }
                s *= 1.0f32 / f32::sqrt(q / f32::cast_from(k) + eps);
            }
            let at = col0 + row;
            y[at as usize] = if comptime!(add) { s + res[at as usize] } else { s };
        }
    }
}
