//! The decode path for Q8_0 (34-byte blocks: `d` f16, 32 × i8). Blocks are only 2-byte aligned,
//! so the codes are read as 32-bit words that may straddle two (as in the Q6_K kernel). Lane unit:
//! 8 codes (two words) of a block — 4 lanes per block, 8 blocks (256 weights) per plane step. Each
//! thread handles `r` weight rows with the same input columns and all `m ≤ 8` token rows; `split`
//! planes share a row group. Codes become floats through their bits (`(q ^ 0x80) = q + 128` in the
//! mantissa of 2²³), with no conversion instruction.

use cubecl::prelude::*;

use super::decode::{f16_to_f32, half_bits, word_at};
use super::matvec_q4k::dot4;
use super::input::{RMS_NORM, input};
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

/// See the module docs. `x` is read in 16-byte vectors (`N` = 4); `off` is the part's byte
/// offset and `row_bytes` its row length; `y` is `[m, ny]`, this launch writing columns
/// `col0..col0 + rows`.
#[cube(launch_unchecked)]
pub fn matvec_q80<N: Size>(
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
            #[unroll]
            for i in 0..r {
                // Rows past the end re-read the last row; their sums are never written.
                let row = select(row0 + i < rows, row0 + i, rows - 1);
                let blk = off + row * row_bytes + b * 34;
                let d = f16_to_f32(half_bits(w, blk));
                decode_word8(word_at(w, blk + 2 + 8 * u), d, &mut wt, (i * 8) as usize);
                decode_word8(word_at(w, blk + 6 + 8 * u), d, &mut wt, (i * 8 + 4) as usize);
            }
            #[unroll]
            for t in 0..m {
                let xb = (b * 32 + 8 * u) / 4;
                let x0 = input(x, gamma, t, xb, k4, &mut ssq, pre);
                let x1 = input(x, gamma, t, xb + 1, k4, &mut ssq, pre);
                #[unroll]
                for i in 0..r {
                    acc[(i * m + t) as usize] += dot4(&wt, (i * 8) as usize, x0) + dot4(&wt, (i * 8 + 4) as usize, x1);
                }
            }
        }
        g += split;
    }
    reduce_groups(CUBE_POS as u32, &acc, &ssq, y, res, rows, ny, col0, k, eps, m, r, split, plane32, add, comptime!(pre == RMS_NORM));
}
