//! One token's attention over a KV cache (the decode step): one cube per query row, attending
//! the positions `0..=pos` only, whatever the cache's capacity.
//!
//! Three passes over the row's positions, with the scores in a scratch buffer:
//! 1. the scores `scale · q·k`, a thread per position: `q` sits in shared memory and the
//!    thread's key row is read in `d / 4` independent 16-byte loads (the loop is unrolled at
//!    compile time, `d` being a kernel constant), and their maximum;
//! 2. their exponentials and sum;
//! 3. `Σ p·v / Σ p`: the cube is `THREADS / (d/4)` slices of `d / 4` threads, a thread holding 4
//!    output elements; slice `s` takes positions `s, s + slices, …`, four at a time (16-byte
//!    reads of `v`, coalesced across the slice, four in flight per thread), and the slices' sums
//!    meet in shared memory.
//!
//! The earlier version took a thread per position with scalar loads and one thread per output
//! element looping over every position: at a 640-token context its last pass was 640 dependent
//! iterations per thread.
//!
//! With `step` (comptime) the kernel also does what comes before attention in a decode step: it
//! reads the token's fused q/k/v projection, applies Qwen3's per-head RMSNorm and NEOX RoPE to its
//! query head and to the key head that head shares, writes the new key and value into the cache
//! at `pos` (the cube of the key head's first query row does) and attends the cached positions
//! below `pos` plus the new one, read from shared memory: one launch where there were four (the
//! q/k norm + RoPE, two cache writes, attention).

use cubecl::prelude::*;

use super::norm::cube_reduce;

/// Threads per cube.
pub const THREADS: u32 = 256;

/// Whether [`attention_decode`] takes rows of `d` values: `d / 4` must divide [`THREADS`].
pub fn supports(d: usize) -> bool {
    d.is_multiple_of(4) && d > 0 && (THREADS as usize).is_multiple_of(d / 4)
}

/// `q [rows, d]` with rows `(b·kv_heads + h)·g + i`; `k`, `v` `[b·kv_heads, cap, d]` read as
/// 16-byte vectors (`N` = 4); `scores` `[rows, cap]` scratch; `out [rows, d]`. `d` must satisfy
/// [`supports`]. Each row attends the positions `0..=pos[0]`.
///
/// With `step`, `q` is instead one token's fused projection `[b, (g + 2)·kv_heads·d]` (its query
/// heads, then key heads, then value heads) at position `pos[0] < cap`; `q_gamma`/`k_gamma` `[d]`
/// are the q and k norms' scales (with `eps`) and `cos`/`sin` `[positions, d/2]` the RoPE tables;
/// the new key and value are written into `k`/`v` at `pos[0]`. Without `step`, `q_gamma`,
/// `k_gamma`, `cos`, `sin` are not read (bind any buffer) and `k`/`v` are not written.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn attention_decode<N: Size>(
    q: &[f32],
    q_gamma: &[f32],
    k_gamma: &[f32],
    cos: &[f32],
    sin: &[f32],
    k: &mut [Vector<f32, N>],
    v: &mut [Vector<f32, N>],
    pos: &[u32],
    scores: &mut [f32],
    out: &mut [f32],
    g: u32,
    kv_heads: u32,
    cap: u32,
    scale: f32,
    eps: f32,
    #[comptime] d: u32,
    #[comptime] step: bool,
) {
    let dv = comptime!(d / 4);
    let slices = comptime!(THREADS / (d / 4));
    let tid = UNIT_POS;
    let row = CUBE_POS as u32;
    let kb = (row / g) * cap * dv;
    let sb = row * cap;
    let last = pos[0];

    let mut qs = Shared::<[f32]>::new_slice(d as usize);
    // `step`: the new key and value, and the new position's score.
    let mut kn = Shared::<[f32]>::new_slice(d as usize);
    let mut vn = Shared::<[f32]>::new_slice(d as usize);
    let mut s_new = f32::new(-3.0e38);
    // Cached positions attended: `0..=pos`, or `0..pos` and the new one with `step`.
    let mut n = select(last < cap, last + 1, cap);
    if comptime!(step) {
        n = select(last < cap, last, cap);
        let half = comptime!(d / 2);
        let heads = kv_heads * g;
        let width = heads * d + 2 * kv_heads * d;
        let hq = row % heads;
        let qb = (row / heads) * width + hq * d;
        let kvb = (row / heads) * width + heads * d + (hq / g) * d;
        let mut sq = 0.0f32;
        let mut sk = 0.0f32;
        let mut j = tid;
        while j < d {
            let (a, b) = (q[(qb + j) as usize], q[(kvb + j) as usize]);
            sq += a * a;
            sk += b * b;
            vn[j as usize] = q[(kvb + kv_heads * d + j) as usize];
            j += THREADS;
        }
        let dn = f32::cast_from(d);
        let inv_q = 1.0f32 / f32::sqrt(cube_reduce(sq, false, THREADS) / dn + eps);
        let inv_k = 1.0f32 / f32::sqrt(cube_reduce(sk, false, THREADS) / dn + eps);
        let p = select(last < cap, last, 0u32);
        let mut j = tid;
        while j < half {
            let (c, s) = (cos[(p * half + j) as usize], sin[(p * half + j) as usize]);
            let a = q[(qb + j) as usize] * inv_q * q_gamma[j as usize];
            let b = q[(qb + half + j) as usize] * inv_q * q_gamma[(half + j) as usize];
            qs[j as usize] = a * c - b * s;
            qs[(half + j) as usize] = b * c + a * s;
            let a = q[(kvb + j) as usize] * inv_k * k_gamma[j as usize];
            let b = q[(kvb + half + j) as usize] * inv_k * k_gamma[(half + j) as usize];
            kn[j as usize] = a * c - b * s;
            kn[(half + j) as usize] = b * c + a * s;
            j += THREADS;
        }
        sync_cube();
        if row % g == 0 && last < cap && tid < dv {
            let mut kk = Vector::<f32, N>::empty();
            let mut vv = Vector::<f32, N>::empty();
            #[unroll]
            for e in 0..4usize {
                kk.insert(e, kn[4 * tid as usize + e]);
                vv.insert(e, vn[4 * tid as usize + e]);
            }
            k[(kb + last * dv + tid) as usize] = kk;
            v[(kb + last * dv + tid) as usize] = vv;
        }
        let mut dot = 0.0f32;
        let mut j = tid;
        while j < d {
            dot += qs[j as usize] * kn[j as usize];
            j += THREADS;
        }
        s_new = cube_reduce(dot, false, THREADS) * scale;
    } else {
        let mut i = tid;
        while i < d {
            qs[i as usize] = q[(row * d + i) as usize];
            i += THREADS;
        }
        sync_cube();
    }

    let mut mx = s_new;
    let mut t = tid;
    while t < n {
        let base = kb + t * dv;
        let mut s = 0.0f32;
        #[unroll]
        for c in 0..dv {
            let kk = k[(base + c) as usize];
            s += kk.extract(0usize) * qs[(4 * c) as usize]
                + kk.extract(1usize) * qs[(4 * c + 1) as usize]
                + kk.extract(2usize) * qs[(4 * c + 2) as usize]
                + kk.extract(3usize) * qs[(4 * c + 3) as usize];
        }
        s *= scale;
        scores[(sb + t) as usize] = s;
        mx = f32::max(mx, s);
        t += THREADS;
    }
    let m = cube_reduce(mx, true, THREADS);
    // The new position's weight (`step`), counted once in the sum.
    let mut p_new = 0.0f32;
    if comptime!(step) {
        p_new = f32::exp(s_new - m);
    }
    let mut l = select(tid == 0, p_new, 0.0f32);
    let mut t = tid;
    while t < n {
        let e = f32::exp(scores[(sb + t) as usize] - m);
        scores[(sb + t) as usize] = e;
        l += e;
        t += THREADS;
    }
    // The sum's barriers also order the writes of `scores` above before the reads below.
    let total = cube_reduce(l, false, THREADS);

    let slice = tid / dv;
    let cq = tid % dv;
    let mut a = Array::<f32>::new(4usize);
    #[unroll]
    for e in 0..4u32 {
        a[e as usize] = 0.0;
    }
    if comptime!(step) {
        if slice == 0 {
            #[unroll]
            for e in 0..4u32 {
                a[e as usize] = p_new * vn[(4 * cq + e) as usize];
            }
        }
    }
    let mut t = slice;
    while t + 3 * slices < n {
        let (p0, p1) = (scores[(sb + t) as usize], scores[(sb + t + slices) as usize]);
        let (p2, p3) = (scores[(sb + t + 2 * slices) as usize], scores[(sb + t + 3 * slices) as usize]);
        let v0 = v[(kb + t * dv + cq) as usize];
        let v1 = v[(kb + (t + slices) * dv + cq) as usize];
        let v2 = v[(kb + (t + 2 * slices) * dv + cq) as usize];
        let v3 = v[(kb + (t + 3 * slices) * dv + cq) as usize];
        #[unroll]
        for e in 0..4u32 {
            a[e as usize] += p0 * v0.extract(e as usize) + p1 * v1.extract(e as usize) + p2 * v2.extract(e as usize) + p3 * v3.extract(e as usize);
        }
        t += 4 * slices;
    }
    while t < n {
        let p = scores[(sb + t) as usize];
        let vv = v[(kb + t * dv + cq) as usize];
        #[unroll]
        for e in 0..4u32 {
            a[e as usize] += p * vv.extract(e as usize);
        }
        t += slices;
    }
    let mut red = Shared::<[f32]>::new_slice((THREADS * 4) as usize);
    #[unroll]
    for e in 0..4u32 {
        red[(tid * 4 + e) as usize] = a[e as usize];
    }
    sync_cube();
    if tid < d {
        let mut o = 0.0f32;
        for s in 0..slices {
            o += red[(s * d + tid) as usize];
        }
        out[(row * d + tid) as usize] = o / total;
    }
}
