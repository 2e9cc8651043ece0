//! One token's attention over a KV cache (the decode step): one cube per query row, attending
//! the positions `0..=pos` only, whatever the cache's capacity.
//!
//! Three passes over the row's positions, with the scores in a scratch buffer: the scores
//! `scale · q·k` (a thread per position) and their maximum; their exponentials and sum; then
//! `Σ p·v / Σ p` (a thread per output element, so the reads of `v` are coalesced).

use cubecl::prelude::*;

use super::norm::{THREADS, cube_max, cube_sum};

/// `q [rows, d]` with rows `(b·kv_heads)·g + i`; `k`, `v` `[b·kv_heads, cap, d]`; `scores`
/// `[rows, cap]` scratch; `out [rows, d]`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn attention_decode(q: &[f32], k: &[f32], v: &[f32], pos: &[u32], scores: &mut [f32], out: &mut [f32], g: u32, cap: u32, d: u32, scale: f32) {
    let row = CUBE_POS as u32;
    let qb = row * d;
    let kb = (row / g) * cap * d;
    let sb = row * cap;
    let last = pos[0];
    let n = select(last < cap, last + 1, cap);
    let mut mx = f32::new(-3.0e38);
    let mut t = UNIT_POS;
    while t < n {
        let mut s = 0.0f32;
        for j in 0..d {
            s += q[(qb + j) as usize] * k[(kb + t * d + j) as usize];
        }
        s *= scale;
        scores[(sb + t) as usize] = s;
        mx = f32::max(mx, s);
        t += THREADS;
    }
    let m = cube_max(mx);
    let mut l = 0.0f32;
    let mut t = UNIT_POS;
    while t < n {
        let e = f32::exp(scores[(sb + t) as usize] - m);
        scores[(sb + t) as usize] = e;
        l += e;
        t += THREADS;
    }
    // The sum's barrier also orders the writes of `scores` above before the reads below.
    let total = cube_sum(l);
    let mut j = UNIT_POS;
    while j < d {
        let mut o = 0.0f32;
        for t in 0..n {
            o += scores[(sb + t) as usize] * v[(kb + t * d + j) as usize];
        }
        out[(qb + j) as usize] = o / total;
        j += THREADS;
    }
}
