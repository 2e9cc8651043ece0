//! The decode path for Q5_0 (22-byte blocks: `d` f16, `qh` the fifth bits as a little-endian
//! u32, then 16 bytes `qs`; weight `j < 16` is `qs[j] & 15` with bit `j` of `qh` as its bit 4,
//! weight `j + 16` is `qs[j] >> 4` with bit `j + 16`; the value is `d·(q − 16)`). Blocks are
//! only 2-byte aligned, as Q8_0's: a block starts on a 4-byte boundary or 2 bytes past one, and
//! [`word_even`] reads a word at either.
//!
//! Lane unit: the 4 bytes `qs[4u .. 4u + 4]` of a block (weights `4u ..` and `16 + 4u ..`) — 4
//! lanes per block, 8 blocks (256 weights) per plane step, as the Q8_0 kernel. The lane's fifth
//! bits are spread to bit 4 of each byte by one multiply, so each byte of its two code words is a
//! whole 5-bit code. Each thread handles `r` weight rows with the same input columns and all
//! `m ≤ 8` token rows; `split` planes share a row group. At one token row each code is masked in
//! place against inputs prescaled by the power of two of its bit position and `d` multiplies the
//! row's sum once ([`dot_word5`]).

use cubecl::prelude::*;

use super::decode::f16_pair;
use super::input::{RMS_NORM, input};
use super::matvec_q4k::dot4;
use super::matvec_q80::prescale8;
use super::reduce::{group_row0, reduce_groups};

/// The little-endian word at even byte `b`: the aligned word, or where `b` is 2 bytes past a
/// word boundary the two words around it funnelled by 16 bits (the second read only then).
#[cube]
pub fn word_even(w: &[u32], b: u32) -> u32 {
    let q = b / 4;
    let shifted = b % 4 != 0;
    let lo = w[q as usize];
    let hi = w[select(shifted, q + 1, q) as usize];
    select(shifted, (lo >> 16) | (hi << 16), lo)
}

/// Bits 0..4 of `x` moved to bit 4 of bytes 0..4 (bit `i` to bit `8i + 4`): one multiply puts
/// bit `i` at `i + 7i` without carries (the four shifted copies do not overlap).
#[cube]
pub fn spread4(x: u32) -> u32 {
    (((x & 0xF) * 0x0020_4081) & 0x0101_0101) << 4
}

/// The code words of lane `u` of the block at even byte `blk` (each byte a 5-bit code: the low
/// nibbles', weights `4u ..`, then the high nibbles', weights `16 + 4u ..`) and its `d`.
#[cube]
pub fn lane_codes5(w: &[u32], blk: u32, u: u32, #[comptime] f16hw: bool) -> (u32, u32, f32) {
    let qs = word_even(w, blk + 6 + 4 * u);
    let qh = word_even(w, blk + 2);
    let lo = (qs & 0x0F0F_0F0F) | spread4(qh >> (4 * u));
    let hi = ((qs >> 4) & 0x0F0F_0F0F) | spread4(qh >> (16 + 4 * u));
    let (d0, d1) = f16_pair(w[(blk / 4) as usize], f16hw);
    (lo, hi, select(blk % 4 == 0, d0, d1))
}

/// `Σ (q − 16)·x` of the 4 codes of `c` against `xs[o .. o + 4]` (written by
/// [`prescale8`](crate::kernels::matvec_q80::prescale8)): bytes 0 and 1 of `c`, then of
/// `c >> 16`, masked in place into the bits of `2²³ + q·2^s` (`magic`, one logic instruction),
/// less `2²³ + 16·2^s`, exactly `(q − 16)·2^s`.
#[cube]
pub fn dot_word5(c: u32, xs: &Array<f32>, o: usize, magic: u32) -> f32 {
    let h = c >> 16;
    (f32::reinterpret((c & 0xFF) | magic) - 8388624.0) * xs[o]
        + (f32::reinterpret((c & 0xFF00) | magic) - 8392704.0) * xs[o + 1]
        + (f32::reinterpret((h & 0xFF) | magic) - 8388624.0) * xs[o + 2]
        + (f32::reinterpret((h & 0xFF00) | magic) - 8392704.0) * xs[o + 3]
}

/// The 4 codes of `c` as `d·(q − 16)` into `out[o .. o + 4]`.
#[cube]
fn decode_word5(c: u32, d: f32, out: &mut Array<f32>, o: usize) {
    #[unroll]
    for e in 0..4u32 {
        out[o + e as usize] = d * (f32::reinterpret(((c >> (8 * e)) & 0xFF) | 0x4B00_0000u32) - 8388624.0);
    }
}

/// See the module docs. `x` is read in 16-byte vectors (`N` = 4); `off` is the part's (even)
/// byte offset and `row_bytes` its row length; `y` is `[m, ny]`, this launch writing columns
/// `col0..col0 + rows`; `magic` is [`FLOAT_MAGIC`](crate::kernels::matvec_q4k::FLOAT_MAGIC).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn matvec_q50<N: Size>(
    w: &[u32],
    x: &[Vector<f32, N>],
    y: &mut [f32],
    res: &[f32],
    gamma: &[Vector<f32, N>],
    off: u32,
    rows: u32,
    k: u32,
    row_bytes: u32,
    ny: u32,
    col0: u32,
    magic: u32,
    #[comptime] f16hw: bool,
    eps: f32,
    #[comptime] m: u32,
    #[comptime] r: u32,
    #[comptime] split: u32,
    #[comptime] plane32: bool,
    #[comptime] add: bool,
    #[comptime] pre: u32,
) {
    let lane = UNIT_POS_X;
    let slot = UNIT_POS_Y;
    let row0 = group_row0(CUBE_POS as u32, slot / split, r, split);
    let part = slot % split;
    let blocks = k / 32;
    let u = lane % 4;
    let k4 = k / 4;
    let mut ssq = Array::<f32>::new(m as usize);
    #[unroll]
    for t in 0..m {
        ssq[t as usize] = 0.0;
    }
    let mut acc = Array::<f32>::new((r * m) as usize);
    #[unroll]
    for o in 0..r * m {
        acc[o as usize] = 0.0;
    }
    let mut wt = Array::<f32>::new((r * 8) as usize);
    let mut g = part;
    while g * 8 < blocks {
        let b = g * 8 + lane / 4;
        if b < blocks && row0 < rows {
            // Input vectors of weights `4u ..` and `16 + 4u ..` of block `b`.
            let xl = b * 8 + u;
            let xh = xl + 4;
            if comptime!(m == 1) {
                let mut cw = Array::<u32>::new((r * 2) as usize);
                let mut dv = Array::<f32>::new(r as usize);
                #[unroll]
                for i in 0..r {
                    // Rows past the end re-read the last row; their sums are never written.
                    let row = select(row0 + i < rows, row0 + i, rows - 1);
                    let (lo, hi, d) = lane_codes5(w, off + row * row_bytes + b * 22, u, f16hw);
                    cw[(2 * i) as usize] = lo;
                    cw[(2 * i + 1) as usize] = hi;
                    dv[i as usize] = d;
                }
                let mut xs = Array::<f32>::new(8usize);
                prescale8(input(x, gamma, 0, xl, k4, &mut ssq, pre), &mut xs, 0usize);
                prescale8(input(x, gamma, 0, xh, k4, &mut ssq, pre), &mut xs, 4usize);
                #[unroll]
                for i in 0..r {
                    acc[i as usize] += dv[i as usize] * (dot_word5(cw[(2 * i) as usize], &xs, 0usize, magic) + dot_word5(cw[(2 * i + 1) as usize], &xs, 4usize, magic));
                }
            } else {
                #[unroll]
                for i in 0..r {
                    let row = select(row0 + i < rows, row0 + i, rows - 1);
                    let (lo, hi, d) = lane_codes5(w, off + row * row_bytes + b * 22, u, f16hw);
                    decode_word5(lo, d, &mut wt, (i * 8) as usize);
                    decode_word5(hi, d, &mut wt, (i * 8 + 4) as usize);
                }
                #[unroll]
                for t in 0..m {
                    let x0 = input(x, gamma, t, xl, k4, &mut ssq, pre);
                    let x1 = input(x, gamma, t, xh, k4, &mut ssq, pre);
                    #[unroll]
                    for i in 0..r {
                        acc[(i * m + t) as usize] += dot4(&wt, (i * 8) as usize, x0) + dot4(&wt, (i * 8 + 4) as usize, x1);
                    }
                }
            }
        }
        g += split;
    }
    reduce_groups(CUBE_POS as u32, &acc, &ssq, y, res, rows, ny, col0, k, eps, m, r, split, plane32, add, comptime!(pre == RMS_NORM));
}
