//! Greedy decoding's last step on the device: the argmax of a row of logits, written straight
//! into the token buffer the next decode step reads, and that step's position advanced by one
//! (what [`DecodeOpsBackend::greedy_feed`](crate::ops::DecodeOpsBackend::greedy_feed) launches).
//!
//! Two launches: [`argmax_parts`] spreads the row over many cubes (a vocabulary of 151,936
//! logits is 149 cubes of [`THREADS`]), [`argmax_feed`] reduces their winners in one cube and
//! writes. Burn's own argmax reduced the row in a single 32-thread cube: 232 µs on the H100 for
//! Qwen3's vocabulary, 7% of an 8B decode step.
//!
//! The lowest index of the largest value that is not NaN (0 where every value is NaN), as
//! `crate::models::qwen3::sampling::argmax` picks.

use cubecl::prelude::*;

/// Threads per cube of both kernels.
pub const THREADS: u32 = 256;

/// Values each thread of [`argmax_parts`] takes: a cube covers `THREADS · PER_THREAD` values.
pub const PER_THREAD: u32 = 4;

/// Whether `(v, i)` beats the best so far `(bv, bi)`: a larger value, or an equal one at a lower
/// index. A NaN never wins; an unset pair (index `u32::MAX`, its value unused) never wins and
/// loses to any other (no infinity literal is needed: WGSL has none).
#[cube]
fn beats(v: f32, i: u32, bv: f32, bi: u32) -> bool {
    i != u32::MAX && !IsNan::is_nan(v) && (bi == u32::MAX || v > bv || (v == bv && i < bi))
}

/// The best `(value, index)` over the cube's [`THREADS`] threads (each offering `(v, i)`), by
/// a shared-memory tree, returned to every thread.
#[cube]
fn cube_best(v: f32, i: u32) -> (f32, u32) {
    let mut sv = Shared::<[f32]>::new_slice(THREADS as usize);
    let mut si = Shared::<[u32]>::new_slice(THREADS as usize);
    let tid = UNIT_POS as usize;
    sv[tid] = v;
    si[tid] = i;
    sync_cube();
    let levels = comptime!(THREADS.trailing_zeros());
    #[unroll]
    for level in 1..levels + 1 {
        let stride = (THREADS >> level) as usize;
        if tid < stride {
            let (ov, oi) = (sv[tid + stride], si[tid + stride]);
            if beats(ov, oi, sv[tid], si[tid]) {
                sv[tid] = ov;
                si[tid] = oi;
            }
        }
        sync_cube();
    }
    (sv[0], si[0])
}

/// Cube `c` finds the best of `x[c · chunk .. min((c + 1) · chunk, n)]` and writes its value and
/// index to `part_v[c]`, `part_i[c]` (index `u32::MAX` where every value was NaN).
#[cube(launch_unchecked)]
pub fn argmax_parts(x: &[f32], part_v: &mut [f32], part_i: &mut [u32], n: u32, chunk: u32) {
    let start = CUBE_POS_X * chunk;
    let end = u32::min(start + chunk, n);
    let mut bv = f32::new(0.0);
    let mut bi = u32::new(u32::MAX as i64);
    let mut i = start + UNIT_POS;
    while i < end {
        let v = x[i as usize];
        if beats(v, i, bv, bi) {
            bv = v;
            bi = i;
        }
        i += THREADS;
    }
    let (best_v, best_i) = cube_best(bv, bi);
    if UNIT_POS == 0 {
        part_v[CUBE_POS_X as usize] = best_v;
        part_i[CUBE_POS_X as usize] = best_i;
    }
}

/// One cube: the best of the `parts` winners of [`argmax_parts`], written to `token[0]` (0 where
/// every logit was NaN), and `pos[0]` advanced by one. With `wide` both are 8-byte integers:
/// `token[1]`, the id's high word, is zeroed, and a position below 2³² has no carry to make.
#[cube(launch_unchecked)]
pub fn argmax_feed(part_v: &[f32], part_i: &[u32], token: &mut [u32], pos: &mut [u32], parts: u32, #[comptime] wide: bool) {
    let mut bv = f32::new(0.0);
    let mut bi = u32::new(u32::MAX as i64);
    let mut p = UNIT_POS;
    while p < parts {
        let (v, i) = (part_v[p as usize], part_i[p as usize]);
        if beats(v, i, bv, bi) {
            bv = v;
            bi = i;
        }
        p += THREADS;
    }
    let (_, best) = cube_best(bv, bi);
    if UNIT_POS == 0 {
        token[0] = select(best == u32::MAX, 0u32, best);
        if comptime!(wide) {
            token[1] = 0u32;
        }
        pos[0] += 1;
    }
}
