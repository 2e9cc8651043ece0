//! The streamed one-row Q4_K decode for CUDA: the weight reaches shared memory through async
//! copies (`cp.async`, no registers held while in flight), [`STAGES`] stages deep, and the math
//! reads it from there.
//!
//! The register kernel ([`matvec_q4k_body`](super::matvec_q4k::matvec_q4k_body)) issues its
//! loads and math in whatever order the compiler picks, and each warp lives for about two steps
//! of a row, so at every cube's start and end the SM's loads drain (BENCHMARKS.md, sessions 7
//! and 18). Here the order is stated: a cube of [`THREADS`] threads walks its row groups
//! ([`ROWS`] rows each, the cube's `CUBE_POS`-th, then every `cubes`-th after it), a stage being
//! [`COLS`] blocks of each of the group's rows, and the copies of the stage [`STAGES`]` − 1` ahead
//! are issued before the current stage's math. Thread `t` takes code unit `t % 8` of block
//! `t / 8` of the stage in every row, with its 32 inputs in registers (read once a stage, used
//! for all [`ROWS`] rows), the same arithmetic as the register kernel (exact in f32 up to the
//! order of the sums).
//!
//! CUDA only: the copies' groups are committed and waited on in inline PTX
//! (`cp.async.commit_group`, `cp.async.wait_group`).

use cubecl::prelude::*;
use cubecl::frontend::barrier::copy_async;

use super::decode::f16_pair;
use super::matvec_q4k::{dot_word_in_place, hsum, prescale_inputs, scales_mins};

/// Weight rows per row group.
pub const ROWS: u32 = 8;
/// Q4_K blocks of each row per stage.
pub const COLS: u32 = 8;
/// Stages in the shared-memory ring.
pub const STAGES: u32 = 4;
/// Threads per cube: one per code unit of a stage's blocks.
pub const THREADS: u32 = 8 * COLS;
/// 16-byte units of one stage (`ROWS · COLS` blocks of 9 units).
const STAGE_UNITS: u32 = ROWS * COLS * 9;
/// 16-byte units of a stage's row.
const ROW_UNITS: u32 = COLS * 9;

/// Commits the async copies issued so far by this thread as one group.
#[cube]
fn commit_group() {
    gpu_asm!("cp.async.commit_group;");
}

/// Waits until at most `STAGES − 1` of this thread's copy groups are still in flight.
#[cube]
fn wait_stage() {
    // STAGES − 1 = 3.
    gpu_asm!("cp.async.wait_group 3;");
}

/// Issues the copies of stage `s` (row group `grp`, blocks `chunk·COLS ..`) into ring slot `slot`:
/// unit `t, t + THREADS, …` of the stage, rows and blocks past the weight's end left uncopied.
#[cube]
#[allow(clippy::too_many_arguments)]
fn issue<N: Size>(w: &[Vector<u32, N>], ring: &mut [Vector<u32, N>], slot: u32, grp: u32, chunk: u32, off: u32, rows: u32, blocks: u32) {
    let t = UNIT_POS;
    #[unroll]
    for e in 0..comptime!(STAGE_UNITS / THREADS) {
        let i = t + e * THREADS;
        let ri = i / ROW_UNITS;
        let cu = i % ROW_UNITS;
        let row = grp * ROWS + ri;
        let b = chunk * COLS + cu / 9;
        if row < rows && b < blocks {
            let src = (off + (row * blocks + chunk * COLS) * 9 + cu) as usize;
            let dst = (slot * STAGE_UNITS + i) as usize;
            copy_async(&w[src..src + 1], &mut ring[dst..dst + 1], 4u32);
        }
    }
}

/// `y[col0 + row] = Σ_k W[row, k]·x[k]` (plus `res[col0 + row]` with `add`) for the `rows` rows
/// of the Q4_K part at 16-byte unit `off` of `w`, one token row (`x`: `k` values). `cubes` is the
/// launch's cube count. See the module docs.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn matvec_q4k_stream<N: Size>(
    w: &[Vector<u32, N>],
    x: &[Vector<f32, N>],
    y: &mut [f32],
    res: &[f32],
    off: u32,
    rows: u32,
    k: u32,
    col0: u32,
    cubes: u32,
    magic: u32,
    #[comptime] f16hw: bool,
    #[comptime] add: bool,
) {
    let t = UNIT_POS;
    let blocks = k / 256;
    let chunks = blocks.div_ceil(COLS);
    let groups = rows.div_ceil(ROWS);
    let me = CUBE_POS as u32;
    let mine = if me < groups { (groups - me).div_ceil(cubes) } else { 0u32 };
    let total = mine * chunks;
    let mut ring = Shared::<[Vector<u32, N>]>::new_slice(comptime!(STAGES * STAGE_UNITS) as usize);
    let mut red = Shared::<[f32]>::new_slice(comptime!(ROWS * THREADS / 32) as usize);

    let c = t / 8;
    let u = t % 8;
    let j = u / 2;
    let hh = u % 2;

    // The first STAGES − 1 stages; a group is committed for each, empty or not, so that
    // `wait_stage` always means "stage s has landed".
    #[unroll]
    for p in 0..comptime!(STAGES - 1) {
        if p < total {
            issue(w, &mut ring, p, me + (p / chunks) * cubes, p % chunks, off, rows, blocks);
        }
        commit_group();
    }

    let mut acc = Array::<f32>::new(ROWS as usize);
    #[unroll]
    for i in 0..ROWS {
        acc[i as usize] = 0.0;
    }
    let mut s = 0u32;
    while s < total {
        let ahead = s + STAGES - 1;
        if ahead < total {
            issue(w, &mut ring, ahead % STAGES, me + (ahead / chunks) * cubes, ahead % chunks, off, rows, blocks);
        }
        commit_group();
        let grp = me + (s / chunks) * cubes;
        let chunk = s % chunks;
        let b = chunk * COLS + c;
        // The inputs are read before the wait, so their latency overlaps it.
        let xb = (b * 256 + 64 * j + 16 * hh) / 4;
        let bx = select(b < blocks, xb, 0u32);
        let mut xv = Array::<Vector<f32, N>>::new(8usize);
        #[unroll]
        for v in 0..4u32 {
            xv[v as usize] = x[(bx + v) as usize];
            xv[(v + 4) as usize] = x[(bx + 8 + v) as usize];
        }
        wait_stage();
        sync_cube();
        if b < blocks {
            let mut xs = Array::<f32>::new(32usize);
            let mut sl = 0.0f32;
            let mut sh = 0.0f32;
            #[unroll]
            for v in 0..4u32 {
                let xl = xv[v as usize];
                let xh = xv[(v + 4) as usize];
                sl += hsum(xl);
                sh += hsum(xh);
                prescale_inputs(xl, xh, &mut xs, (8 * v) as usize);
            }
            let base = (s % STAGES) * STAGE_UNITS + c * 9;
            #[unroll]
            for i in 0..ROWS {
                let hd = ring[(base + i * ROW_UNITS) as usize];
                let q = ring[(base + i * ROW_UNITS + 1 + u) as usize];
                let (d, dmin) = f16_pair(hd.extract(0usize), f16hw);
                let (scl, sch, mnl, mnh) = scales_mins(hd.extract(1usize), hd.extract(2usize), hd.extract(3usize), j);
                let mut lo = 0.0f32;
                let mut hi = 0.0f32;
                #[unroll]
                for v in 0..4u32 {
                    let (l, h) = dot_word_in_place(q.extract(v as usize), &xs, (8 * v) as usize, magic);
                    lo += l;
                    hi += h;
                }
                acc[i as usize] += d * (scl * lo + sch * hi) - dmin * (mnl * sl + mnh * sh);
            }
        }
        if chunk == chunks - 1 {
            // The row group's sums: over the plane, then over the cube's planes.
            #[unroll]
            for i in 0..ROWS {
                let v = plane_sum(acc[i as usize]);
                if t % 32 == 0 {
                    red[((t / 32) * ROWS + i) as usize] = v;
                }
                acc[i as usize] = 0.0;
            }
            sync_cube();
            if t < ROWS {
                let mut v = 0.0f32;
                #[unroll]
                for p in 0..comptime!(THREADS / 32) {
                    v += red[(p * ROWS + t) as usize];
                }
                let row = grp * ROWS + t;
                if row < rows {
                    let at = (col0 + row) as usize;
                    y[at] = if comptime!(add) { v + res[at] } else { v };
                }
            }
        }
        // Every thread is done with slot s % STAGES before the next iteration refills it.
        sync_cube();
        s += 1;
    }
}
