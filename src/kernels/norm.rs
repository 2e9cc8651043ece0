//! RMSNorm over rows, and Qwen3's per-head RMSNorm + NEOX RoPE of q and k: one cube per row
//! (per token and head for the second), [`THREADS`] threads striding over it. Written for the
//! decode step, where each is one launch instead of Burn's several.

use cubecl::prelude::*;

use super::prefill_mma::f16_quad;

/// Threads per cube of the kernels of this module.
pub const THREADS: u32 = 128;

/// The sum (or, with `max`, the maximum) of `v` over the cube's `threads` threads (a power of
/// two), returned to every thread: a shared-memory tree, no assumption on the plane width.
#[cube]
pub fn cube_reduce(v: f32, #[comptime] max: bool, #[comptime] threads: u32) -> f32 {
    let tid = UNIT_POS;
    let mut red = Shared::<[f32]>::new_slice(threads as usize);
    red[tid as usize] = v;
    sync_cube();
    let levels = comptime!(threads.trailing_zeros());
    #[unroll]
    for level in 1..levels + 1 {
        let stride = threads >> level;
        if tid < stride {
            let (a, b) = (red[tid as usize], red[(tid + stride) as usize]);
            red[tid as usize] = if comptime!(max) { f32::max(a, b) } else { a + b };
        }
        sync_cube();
    }
    let s = red[0];
    sync_cube();
    s
}

/// `1 / √(mean(x[base .. base + n]²) + eps)` over the cube of `threads` threads, each taking
/// `width` consecutive values per step.
#[cube]
fn inv_rms(x: &[f32], base: u32, n: u32, eps: f32, #[comptime] threads: u32, #[comptime] width: u32) -> f32 {
    let mut s = 0.0f32;
    let mut i = UNIT_POS * width;
    while i < n {
        #[unroll]
        for e in 0..width {
            let j = u32::min(i + e, n - 1);
            let v = select(i + e < n, x[(base + j) as usize], 0.0f32);
            s += v * v;
        }
        i += threads * width;
    }
    let total = cube_reduce(s, false, threads);
    1.0f32 / f32::sqrt(total / f32::cast_from(n) + eps)
}

/// Threads per cube of [`rms_norm`].
pub const RMS_THREADS: u32 = 256;

/// `y = x / √(mean(x²) + eps) · gamma` for each row of `n` (one cube of [`RMS_THREADS`] per row).
/// Each thread takes 4 consecutive values per step, so a row of up to 1,024 values is one step
/// of independent loads per pass (the 128-thread one-value loop before took 5–6 µs on a
/// 1,024-value row of the H100, for a kernel whose launch alone is ~2.5).
#[cube(launch_unchecked)]
pub fn rms_norm(x: &[f32], gamma: &[f32], y: &mut [f32], n: u32, eps: f32) {
    let base = CUBE_POS as u32 * n;
    let inv = inv_rms(x, base, n, eps, RMS_THREADS, 4u32);
    let mut i = UNIT_POS * 4;
    while i < n {
        #[unroll]
        for e in 0..4u32 {
            if i + e < n {
                y[(base + i + e) as usize] = x[(base + i + e) as usize] * inv * gamma[(i + e) as usize];
            }
        }
        i += RMS_THREADS * 4;
    }
}

/// Most 4-float vectors a thread of [`rms_norm_held`] keeps (rows of up to 4 · 1,024 · 4 =
/// 16,384 values; longer rows take [`rms_norm`]).
pub const HELD_STEPS: u32 = 4;

/// The sum of `v` over the cube's `threads` threads (a multiple of 32, at most 1,024) on a device
/// whose planes are 32 lanes wide, returned to every thread: `plane_sum`, one shared slot per
/// plane, then every thread adds the slots (one barrier, against [`cube_reduce`]'s one per level).
#[cube]
fn sum_planes(v: f32, #[comptime] threads: u32) -> f32 {
    let planes = comptime!(threads / 32);
    let mut red = Shared::<[f32]>::new_slice(planes as usize);
    let s = plane_sum(v);
    if UNIT_POS % 32 == 0 {
        red[(UNIT_POS / 32) as usize] = s;
    }
    sync_cube();
    let mut t = 0.0f32;
    #[unroll]
    for p in 0..planes {
        t += red[p as usize];
    }
    t
}

/// [`rms_norm`] for rows of `n4` 4-float vectors, each row read once: thread `t` of the cube's
/// `threads` (a power of two, ≥ 32) loads vectors `t + s · threads` for `s < steps` (≤
/// [`HELD_STEPS`]) all at once and keeps them in registers, the cube sums their squares
/// ([`sum_planes`] with `plane32`, the device's planes being 32 lanes; else [`cube_reduce`]),
/// and the thread writes its vectors scaled: to `y`, or with `half` to `y16` as f16 (`N2` = 2,
/// [`f16_quad`], the input of a tensor-core prefill; `y` is then not written). On the H100 a
/// 4,096-value row took 5.5–6.0 µs through [`rms_norm`] (two passes over the row, each a loop of
/// dependent steps, and a barrier per level of the sum).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_held<N: Size, N2: Size>(
    x: &[Vector<f32, N>],
    gamma: &[Vector<f32, N>],
    y: &mut [Vector<f32, N>],
    y16: &mut [Vector<u32, N2>],
    n4: u32,
    eps: f32,
    #[comptime] threads: u32,
    #[comptime] steps: u32,
    #[comptime] plane32: bool,
    #[comptime] half: bool,
) {
    let tid = UNIT_POS;
    let base = CUBE_POS as u32 * n4;
    let mut held = Array::<Vector<f32, N>>::new(steps as usize);
    let mut s = 0.0f32;
    #[unroll]
    for t in 0..steps {
        let i = tid + t * threads;
        // Past the row's end the thread re-reads its last vector and adds nothing.
        let v = x[(base + u32::min(i, n4 - 1)) as usize];
        held[t as usize] = v;
        let q = v * v;
        s += select(i < n4, q.extract(0usize) + q.extract(1usize) + q.extract(2usize) + q.extract(3usize), 0.0f32);
    }
    let total = if comptime!(plane32) { sum_planes(s, threads) } else { cube_reduce(s, false, threads) };
    let inv = Vector::<f32, N>::cast_from(1.0f32 / f32::sqrt(total / f32::cast_from(4 * n4) + eps));
    #[unroll]
    for t in 0..steps {
        let i = tid + t * threads;
        if i < n4 {
            let v = held[t as usize] * inv * gamma[i as usize];
            if comptime!(half) {
                y16[(base + i) as usize] = f16_quad::<N, N2>(v);
            } else {
                y[(base + i) as usize] = v;
            }
        }
    }
}

/// Per-head RMSNorm over `d` then NEOX RoPE, for `x [tokens, heads, d]` (one cube per token and
/// head): heads below `first` are scaled by `gamma`, the others by `gamma2` (Qwen3's q and k
/// heads in one launch); pair `(j, j + d/2)` of token `t` is rotated by row `pos[t]` of
/// `cos`/`sin` `[positions, d/2]`. Leading dims before the tokens (a batch) share `pos`: row
/// `r` is token `(r / heads) % tokens`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn norm_rope(
    x: &[f32],
    gamma: &[f32],
    gamma2: &[f32],
    cos: &[f32],
    sin: &[f32],
    pos: &[u32],
    y: &mut [f32],
    heads: u32,
    tokens: u32,
    first: u32,
    d: u32,
    eps: f32,
) {
    let row = CUBE_POS as u32;
    let base = row * d;
    let half = d / 2;
    let inv = inv_rms(x, base, d, eps, THREADS, 1u32);
    let p = pos[((row / heads) % tokens) as usize];
    let one = row % heads < first;
    let mut j = UNIT_POS;
    while j < half {
        let (g1, g2) = (select(one, gamma[j as usize], gamma2[j as usize]), select(one, gamma[(half + j) as usize], gamma2[(half + j) as usize]));
        let a = x[(base + j) as usize] * inv * g1;
        let b = x[(base + half + j) as usize] * inv * g2;
        let c = cos[(p * half + j) as usize];
        let s = sin[(p * half + j) as usize];
        y[(base + j) as usize] = a * c - b * s;
        y[(base + half + j) as usize] = b * c + a * s;
        j += THREADS;
    }
}
