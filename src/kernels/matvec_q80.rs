//! The decode path for Q8_0 (34-byte blocks: `d` f16, 32 × i8). Blocks are only 2-byte aligned:
//! where a block starts on a 4-byte boundary its codes do not ([`lane_words`] funnels them out of
//! aligned words), where it starts 2 bytes past one they do. Lane unit: 8 codes (two words) of a
//! block — 4 lanes per block, 8 blocks (256 weights) per plane step. Each thread handles `r`
//! weight rows with the same input columns and all `m ≤ 8` token rows; `split` planes share a
//! row group. Codes become floats through their bits, with no conversion instruction: the sign
//! bit flipped and the byte or-ed into the mantissa of 2²³ in one logic instruction.
//!
//! With one token row the weights are never stored: each code is masked in place (bytes 0 and 1
//! of a word, then of the word shifted by 16) against inputs prescaled by the power of two of its
//! bit position, and `d` multiplies the row's sum once ([`dot_word8`]): per code one logic
//! instruction, one subtraction and one FMA.
//!
//! The kernel, [`matvec_q80_q50`], also runs Q5_0 (`five`): the same lanes over 22-byte blocks,
//! with [`crate::kernels::matvec_q50`]'s code words (one byte a 5-bit code) in place of Q8_0's.

use cubecl::prelude::*;

use super::decode::f16_pair;
use super::matvec_q4k::dot4;
use super::input::{RMS_NORM, input};
use super::matvec_q50::{decode_word5, dot_word5, lane_codes5};
use super::reduce::{group_row0, reduce_groups};

/// Byte `e` of `word` (an i8 code whose sign bit has been flipped) as the exact f32 code.
#[cube]
fn code8(word: u32, #[comptime] e: u32) -> f32 {
    f32::reinterpret(((word >> (8 * e)) & 0xFF) | 0x4B00_0000u32) - 8388736.0
}

/// Decodes the 4 codes of `word` times `d` into `out[o .. o + 4]`.
#[cube]
fn decode_word8(word: u32, d: f32, out: &mut Array<f32>, o: usize) {
    let f = word ^ 0x8080_8080u32;
    out[o] = d * code8(f, 0u32);
    out[o + 1] = d * code8(f, 1u32);
    out[o + 2] = d * code8(f, 2u32);
    out[o + 3] = d * code8(f, 3u32);
}

/// The two code words (codes `8u .. 8u + 8`) and the scale of lane `u` of the block at even byte
/// `blk`: three aligned words from the codes' first, funnelled by 16 bits where the block starts
/// on a 4-byte boundary (its codes then start 2 bytes into a word); where it starts 2 bytes past
/// one, the codes are aligned and the third word is not needed (the second is read again, so
/// nothing past the block is read). `d` is the low half of the block's first word, or the high
/// half of the word before its codes. This is [`word_at`](crate::kernels::decode::word_at)
/// twice with the middle word read once: two `word_at` calls took 33.1 µs against 29.0 (H100,
/// 4,096 × 14,336, one token row; 19.0 M instructions against 17.0 M).
#[cube]
pub fn lane_words(w: &[u32], blk: u32, u: u32, #[comptime] f16hw: bool) -> (u32, u32, f32) {
    let q = (blk + 2 + 8 * u) / 4;
    let shifted = (blk & 3) == 0;
    let w0 = w[q as usize];
    let w1 = w[(q + 1) as usize];
    let w2 = w[select(shifted, q + 2, q + 1) as usize];
    let c0 = select(shifted, (w0 >> 16) | (w1 << 16), w0);
    let c1 = select(shifted, (w1 >> 16) | (w2 << 16), w1);
    let (lo, hi) = f16_pair(w[(blk / 4) as usize], f16hw);
    (c0, c1, select(shifted, lo, hi))
}

/// Lane `u`'s two code words and `d` of the block at even byte `blk`: Q8_0's ([`lane_words`]) or,
/// where `five`, Q5_0's ([`lane_codes5`]).
#[cube]
fn lane_codes(w: &[u32], blk: u32, u: u32, #[comptime] f16hw: bool, #[comptime] five: bool) -> (u32, u32, f32) {
    if comptime!(five) { lane_codes5(w, blk, u, f16hw) } else { lane_words(w, blk, u, f16hw) }
}

/// `Σ q·x` of the 4 codes of `c` against `xs[o .. o + 4]` (written by [`prescale8`]): bytes 0 and
/// 1 of `c`, then of `c >> 16`, masked in place with the sign bit flipped into the bits of
/// `2²³ + (q + 128)·2^s` (`k0` = `2²³`'s bits | `0x80`, `k1` = | `0x8000`: one logic instruction
/// each), less `2²³ + 128·2^s`, exactly `q·2^s`.
#[cube]
pub fn dot_word8(c: u32, xs: &Array<f32>, o: usize, k0: u32, k1: u32) -> f32 {
    let h = c >> 16;
    (f32::reinterpret((c & 0xFF) ^ k0) - 8388736.0) * xs[o]
        + (f32::reinterpret((c & 0xFF00) ^ k1) - 8421376.0) * xs[o + 1]
        + (f32::reinterpret((h & 0xFF) ^ k0) - 8388736.0) * xs[o + 2]
        + (f32::reinterpret((h & 0xFF00) ^ k1) - 8421376.0) * xs[o + 3]
}

/// The 4 inputs of `xv` for [`dot_word8`]: those against byte 1 of a word scaled by `2⁻⁸`
/// (exact: a power of two).
#[cube]
pub fn prescale8<N: Size>(xv: Vector<f32, N>, xs: &mut Array<f32>, o: usize) {
    xs[o] = xv.extract(0usize);
    xs[o + 1] = xv.extract(1usize) * 0.00390625;
    xs[o + 2] = xv.extract(2usize);
    xs[o + 3] = xv.extract(3usize) * 0.00390625;
}

/// See the module docs: Q8_0, or Q5_0 where `five`. `x` is read in 16-byte vectors (`N` = 4);
/// `off` is the part's byte offset (even) and `row_bytes` its row length; `y` is `[m, ny]`, this
/// launch writing columns `col0..col0 + rows`; `magic` is
/// [`FLOAT_MAGIC`](crate::kernels::matvec_q4k::FLOAT_MAGIC).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn matvec_q80_q50<N: Size>(
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
    #[comptime] five: bool,
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
    // Run-time constants, so that each `(c & mask) ^ k` is one logic instruction.
    let k0 = magic | 0x80;
    let k1 = magic | 0x8000;
    let bytes = comptime!(if five { 22u32 } else { 34u32 });
    let mut g = part;
    while g * 8 < blocks {
        let b = g * 8 + lane / 4;
        if b < blocks && row0 < rows {
            // The input vectors of the lane's two code words: Q8_0's codes `8u .. 8u + 8`, Q5_0's
            // `4u ..` and `16 + 4u ..`.
            let (xa, xb) = if comptime!(five) { (b * 8 + u, b * 8 + u + 4) } else { (b * 8 + 2 * u, b * 8 + 2 * u + 1) };
            if comptime!(m == 1) {
                // Every row's words first (all loads in flight together), then the lane's 8
                // inputs, prescaled, shared by the `r` rows.
                let mut cw = Array::<u32>::new((r * 2) as usize);
                let mut dv = Array::<f32>::new(r as usize);
                #[unroll]
                for i in 0..r {
                    // Rows past the end re-read the last row; their sums are never written.
                    let row = select(row0 + i < rows, row0 + i, rows - 1);
                    let (c0, c1, d) = lane_codes(w, off + row * row_bytes + b * bytes, u, f16hw, five);
                    cw[(2 * i) as usize] = c0;
                    cw[(2 * i + 1) as usize] = c1;
                    dv[i as usize] = d;
                }
                let mut xs = Array::<f32>::new(8usize);
                prescale8(input(x, gamma, 0, xa, k4, &mut ssq, pre), &mut xs, 0usize);
                prescale8(input(x, gamma, 0, xb, k4, &mut ssq, pre), &mut xs, 4usize);
                #[unroll]
                for i in 0..r {
                    let (c0, c1) = (cw[(2 * i) as usize], cw[(2 * i + 1) as usize]);
                    let sum = if comptime!(five) {
                        dot_word5(c0, &xs, 0usize, magic) + dot_word5(c1, &xs, 4usize, magic)
                    } else {
                        dot_word8(c0, &xs, 0usize, k0, k1) + dot_word8(c1, &xs, 4usize, k0, k1)
                    };
                    acc[i as usize] += dv[i as usize] * sum;
                }
            } else {
                #[unroll]
                for i in 0..r {
                    let row = select(row0 + i < rows, row0 + i, rows - 1);
                    let (c0, c1, d) = lane_codes(w, off + row * row_bytes + b * bytes, u, f16hw, five);
                    if comptime!(five) {
                        decode_word5(c0, d, &mut wt, (i * 8) as usize);
                        decode_word5(c1, d, &mut wt, (i * 8 + 4) as usize);
                    } else {
                        decode_word8(c0, d, &mut wt, (i * 8) as usize);
                        decode_word8(c1, d, &mut wt, (i * 8 + 4) as usize);
                    }
                }
                #[unroll]
                for t in 0..m {
                    let x0 = input(x, gamma, t, xa, k4, &mut ssq, pre);
                    let x1 = input(x, gamma, t, xb, k4, &mut ssq, pre);
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
