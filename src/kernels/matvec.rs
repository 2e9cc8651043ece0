//! The decode path: `y[t, col0 + r] = Σ_c W[r, c] · x[t, c]` for `m ≤ 8` token rows, in one pass
//! over the weight. A cube holds `ROWS` planes of `LANES` threads; `SPLIT` planes share a weight
//! row (each takes every `SPLIT`-th stretch of it, so more loads are in flight); a thread decodes
//! each of its weights once and multiplies it with every token row; the partial sums are reduced
//! through shared memory (no assumption on the device's plane width).

use cubecl::prelude::*;

use super::decode::{byte, elem, f16_to_f32, half_bits};

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
/// `y[t, col0 + r]` for `t < m`.
#[cube]
fn reduce_rows(acc: &Array<f32>, y: &mut [f32], r: u32, rows: u32, n: u32, col0: u32, #[comptime] m: u32) {
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
        y[(t * n + col0 + r) as usize] = s;
    }
}

/// See the module docs. `x` is `[m, k]`, `y` is `[m, n]`; this launch covers `rows` rows of the
/// part at byte `off`, writing output columns `col0..col0 + rows`.
#[cube(launch_unchecked)]
pub fn matvec(
    w: &[u32],
    x: &[f32],
    y: &mut [f32],
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
    reduce_rows(&acc, y, r, rows, n, col0, m);
}

/// Byte `i` (0..12) of the three scale words of a Q4_K block.
#[cube]
fn scale_byte(s0: u32, s1: u32, s2: u32, i: u32) -> u32 {
    let word = select(i < 4, s0, select(i < 8, s1, s2));
    (word >> ((i % 4) * 8)) & 0xFF
}

/// The decode path specialised for Q4_K (144-byte blocks = 36 words: `d|dmin`, 3 words of
/// scales, 32 words of codes). Lane `l` of a row's plane reads code word `l` of every block —
/// 32 consecutive words, one coalesced 128-byte read per block — and so covers elements
/// `64j + 4(l%8) .. +4` (low nibbles) and `+32` (high nibbles) with `j = l / 8`. Per lane and
/// token it accumulates `d·sc·Σq·x − dmin·m·Σx` for its two sub-blocks.
#[cube(launch_unchecked)]
pub fn matvec_q4k(
    w: &[u32],
    x: &[f32],
    y: &mut [f32],
    off_words: u32,
    rows: u32,
    k: u32,
    n: u32,
    col0: u32,
    #[comptime] m: u32,
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
        let blocks = k / 256;
        let row = off_words + r * blocks * 36;
        let j = lane / 8;
        let e0 = 64 * j + 4 * (lane % 8);
        let mut b = part;
        while b < blocks {
            let base = row + b * 36;
            let q = w[(base + 4 + lane) as usize];
            let h = w[base as usize];
            let s0 = w[(base + 1) as usize];
            let s1 = w[(base + 2) as usize];
            let s2 = w[(base + 3) as usize];
            let d = f16_to_f32(h & 0xFFFF);
            let dmin = f16_to_f32(h >> 16);
            // (scale, min) of sub-blocks 2j (low nibbles) and 2j + 1 (high nibbles).
            let lo = 2 * j;
            let hi = 2 * j + 1;
            let mut sc_lo = 0u32;
            let mut m_lo = 0u32;
            let mut sc_hi = 0u32;
            let mut m_hi = 0u32;
            if j < 2 {
                sc_lo = scale_byte(s0, s1, s2, lo) & 63;
                m_lo = scale_byte(s0, s1, s2, lo + 4) & 63;
                sc_hi = scale_byte(s0, s1, s2, hi) & 63;
                m_hi = scale_byte(s0, s1, s2, hi + 4) & 63;
            } else {
                sc_lo = (scale_byte(s0, s1, s2, lo + 4) & 0x0F) | ((scale_byte(s0, s1, s2, lo - 4) >> 6) << 4);
                m_lo = (scale_byte(s0, s1, s2, lo + 4) >> 4) | ((scale_byte(s0, s1, s2, lo) >> 6) << 4);
                sc_hi = (scale_byte(s0, s1, s2, hi + 4) & 0x0F) | ((scale_byte(s0, s1, s2, hi - 4) >> 6) << 4);
                m_hi = (scale_byte(s0, s1, s2, hi + 4) >> 4) | ((scale_byte(s0, s1, s2, hi) >> 6) << 4);
            }
            let d_lo = d * f32::cast_from(sc_lo);
            let d_hi = d * f32::cast_from(sc_hi);
            let n_lo = dmin * f32::cast_from(m_lo);
            let n_hi = dmin * f32::cast_from(m_hi);
            let xb = b * 256 + e0;
            #[unroll]
            for t in 0..m {
                let xr = t * k + xb;
                let mut s_lo = 0.0f32;
                let mut s_hi = 0.0f32;
                let mut x_lo = 0.0f32;
                let mut x_hi = 0.0f32;
                #[unroll]
                for e in 0..4u32 {
                    let a = x[(xr + e) as usize];
                    let c = x[(xr + 32 + e) as usize];
                    s_lo += f32::cast_from((q >> (8 * e)) & 0x0F) * a;
                    s_hi += f32::cast_from((q >> (8 * e + 4)) & 0x0F) * c;
                    x_lo += a;
                    x_hi += c;
                }
                acc[t as usize] += d_lo * s_lo - n_lo * x_lo + d_hi * s_hi - n_hi * x_hi;
            }
            b += SPLIT;
        }
    }
    reduce_rows(&acc, y, r, rows, n, col0, m);
}

/// The decode path specialised for Q6_K (210-byte blocks: `ql[128]`, `qh[64]`, `scales[16]`,
/// `d`). Lane `l` of a row's plane decodes, for each 128-weight half `n` of a block, the four
/// weights ggml's reference derives from `ql[64n + l]`, `ql[64n + l + 32]` and `qh[32n + l]`:
/// consecutive lanes read consecutive bytes, and each lane reads its bytes once.
#[cube(launch_unchecked)]
pub fn matvec_q6k(
    w: &[u32],
    x: &[f32],
    y: &mut [f32],
    off: u32,
    rows: u32,
    k: u32,
    n: u32,
    col0: u32,
    #[comptime] m: u32,
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
        let blocks = k / 256;
        let row = off + r * blocks * 210;
        let mut b = part;
        while b < blocks {
            let blk = row + b * 210;
            let d = f16_to_f32(half_bits(w, blk + 208));
            #[unroll]
            for h in 0..2u32 {
                let a = byte(w, blk + 64 * h + lane);
                let c = byte(w, blk + 64 * h + lane + 32);
                let hb = byte(w, blk + 128 + 32 * h + lane);
                let s = blk + 192 + 8 * h + lane / 16;
                let q1 = i32::cast_from((a & 0x0F) | ((hb & 3) << 4)) - 32;
                let q2 = i32::cast_from((c & 0x0F) | (((hb >> 2) & 3) << 4)) - 32;
                let q3 = i32::cast_from((a >> 4) | (((hb >> 4) & 3) << 4)) - 32;
                let q4 = i32::cast_from((c >> 4) | (((hb >> 6) & 3) << 4)) - 32;
                let w1 = d * f32::cast_from(sbyte(w, s)) * f32::cast_from(q1);
                let w2 = d * f32::cast_from(sbyte(w, s + 2)) * f32::cast_from(q2);
                let w3 = d * f32::cast_from(sbyte(w, s + 4)) * f32::cast_from(q3);
                let w4 = d * f32::cast_from(sbyte(w, s + 6)) * f32::cast_from(q4);
                let e = b * 256 + 128 * h + lane;
                #[unroll]
                for t in 0..m {
                    let xr = t * k + e;
                    acc[t as usize] += w1 * x[xr as usize] + w2 * x[(xr + 32) as usize] + w3 * x[(xr + 64) as usize] + w4 * x[(xr + 96) as usize];
                }
            }
            b += SPLIT;
        }
    }
    reduce_rows(&acc, y, r, rows, n, col0, m);
}

/// A signed scale byte as i32.
#[cube]
fn sbyte(w: &[u32], b: u32) -> i32 {
    let v = byte(w, b);
    i32::cast_from(v) - i32::cast_from(v >> 7) * 256
}
