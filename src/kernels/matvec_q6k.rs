//! The decode path for Q6_K (210-byte blocks: `ql[128]`, `qh[64]`, `scales[16]` as i8, `d`).
//!
//! Blocks are only 2-byte aligned, so the kernel reads 32-bit words (two halves where a word
//! straddles). For each 128-weight half `h` of a block, ggml derives four weights from
//! `ql[64h + l]`, `ql[64h + 32 + l]` and `qh[32h + l]` (`l` in 0..32); lane `c` of the 8 lanes
//! of a half takes `l = 4c .. 4c + 4` — three words, 16 weights, decoded four at a time with
//! byte-parallel masks (`q = (ql nibble) | (qh bits) << 4`, turned into a float through its bits).
//! A plane covers two blocks per step; each thread handles `r` weight rows with the same input
//! columns and all `m ≤ 8` token rows; `split` planes share a row group.

use cubecl::prelude::*;

use super::decode::{f16_pair, f16_to_f32, half_bits, word_at};
use super::matvec_q4k::dot4;
use super::input::{RMS_NORM, input};
use super::reduce::{group_row0, reduce_groups};

/// Byte `e` of `word` (holding a 6-bit code) as the exact f32 `code − 32`.
#[cube]
pub fn code(word: u32, #[comptime] e: u32) -> f32 {
    f32::reinterpret(((word >> (8 * e)) & 0xFF) | 0x4B00_0000u32) - 8388640.0
}

/// Signed scale byte `i` (0..8) of the two words `s0`, `s1`, as f32.
#[cube]
pub fn scale(s0: u32, s1: u32, i: u32) -> f32 {
    let v = (select(i < 4, s0, s1) >> ((i % 4) * 8)) & 0xFF;
    f32::cast_from(i32::cast_from(v) - i32::cast_from(v >> 7) * 256)
}

/// Decodes the four weights (bytes `0..4`) of `q` with scale `ds` into `out[o .. o + 4]`.
#[cube]
pub fn decode4(q: u32, ds: f32, out: &mut Array<f32>, o: usize) {
    out[o] = ds * code(q, 0u32);
    out[o + 1] = ds * code(q, 1u32);
    out[o + 2] = ds * code(q, 2u32);
    out[o + 3] = ds * code(q, 3u32);
}

/// The four code words of lanes `l = 4c .. 4c + 4` of half `h` of the block at byte `blk` (byte
/// `e` of word `s` is the 6-bit code of element `128h + 32s + 4c + e`), its two scale words for
/// the half and its `d` bits: `(q0, q1, q2, q3, s0, s1, d)`.
#[cube]
pub fn unit_codes(w: &[u32], blk: u32, h: u32, c: u32) -> (u32, u32, u32, u32, u32, u32, u32) {
    let (q0, q1, q2, q3) = codes6(
        word_at(w, blk + 64 * h + 4 * c),
        word_at(w, blk + 64 * h + 32 + 4 * c),
        word_at(w, blk + 128 + 32 * h + 4 * c),
    );
    (q0, q1, q2, q3, word_at(w, blk + 192 + 8 * h), word_at(w, blk + 196 + 8 * h), half_bits(w, blk + 208))
}

/// ggml's Q6_K codes from a word of `ql[64h + l ..]` (`lo`), one of `ql[64h + 32 + l ..]` (`hi`)
/// and one of `qh[32h + l ..]` (`hb`): byte `e` of the `s`-th word returned is the 6-bit code of
/// element `128h + 32s + l + e` (a nibble of `lo` or `hi` beside two bits of `hb`, byte-parallel).
#[cube]
pub fn codes6(lo: u32, hi: u32, hb: u32) -> (u32, u32, u32, u32) {
    (
        (lo & 0x0F0F_0F0F) | ((hb << 4) & 0x3030_3030),
        (hi & 0x0F0F_0F0F) | ((hb << 2) & 0x3030_3030),
        ((lo >> 4) & 0x0F0F_0F0F) | (hb & 0x3030_3030),
        ((hi >> 4) & 0x0F0F_0F0F) | ((hb >> 2) & 0x3030_3030),
    )
}

/// Decodes the 16 weights of lanes `l = 4c .. 4c + 4` of half `h` of the block at byte `blk`:
/// `out[o + 4s + e]` is element `128h + 32s + 4c + e`.
#[cube]
pub fn decode_unit(w: &[u32], blk: u32, h: u32, c: u32, out: &mut Array<f32>, o: usize) {
    let (q0, q1, q2, q3, s0, s1, db) = unit_codes(w, blk, h, c);
    let d = f16_to_f32(db);
    let is = c / 4;
    decode4(q0, d * scale(s0, s1, is), out, o);
    decode4(q1, d * scale(s0, s1, is + 2), out, o + 4);
    decode4(q2, d * scale(s0, s1, is + 4), out, o + 8);
    decode4(q3, d * scale(s0, s1, is + 6), out, o + 12);
}

/// Writes the 4 inputs of one code word into `xs[o .. o + 4]`, scaled by `2^-s` for the bit
/// position `s` at which [`dot_codes_in_place`] reads each code (exact: powers of two).
#[cube]
pub fn prescale_inputs6<N: Size>(xv: Vector<f32, N>, xs: &mut Array<f32>, o: usize) {
    // Codes sit at bits 0, 8, 16 and, after `>> 8`, 16.
    xs[o] = xv.extract(0usize);
    xs[o + 1] = xv.extract(1usize) * 0.00390625;
    xs[o + 2] = xv.extract(2usize) * 0.0000152587890625;
    xs[o + 3] = xv.extract(3usize) * 0.0000152587890625;
}

/// `Σ_e (code_e − 32)·x_e` of the 4 codes of `q` against the inputs [`prescale_inputs6`] wrote at
/// `xs[o ..]`: each code is masked in place and turned into the exact float `(code − 32)·2^s`
/// through the bits of `2²³ + code·2^s` (no shift), then FMA'd (`magic`: see
/// [`FLOAT_MAGIC`](crate::kernels::matvec_q4k::FLOAT_MAGIC)).
#[cube]
pub fn dot_codes_in_place(q: u32, xs: &Array<f32>, o: usize, magic: u32) -> f32 {
    let q3 = q >> 8;
    (f32::reinterpret((q & 0x3F) | magic) - 8388640.0) * xs[o]
        + (f32::reinterpret((q & 0x3F00) | magic) - 8396800.0) * xs[o + 1]
        + (f32::reinterpret((q & 0x3F_0000) | magic) - 10485760.0) * xs[o + 2]
        + (f32::reinterpret((q3 & 0x3F_0000) | magic) - 10485760.0) * xs[o + 3]
}

/// See the module docs. `x` is read in 16-byte vectors (`N` = 4); `off` is the part's byte
/// offset and `row_bytes` its row length; `y` is `[m, ny]`, this launch writing columns
/// `col0..col0 + rows`.
#[cube(launch_unchecked)]
pub fn matvec_q6k<N: Size>(
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
    let blocks = k / 256;
    let h = (lane / 8) % 2;
    let c = lane % 8;
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
    let mut wt = Array::<f32>::new((r * 16) as usize);
    let mut g = part;
    while g * 2 < blocks {
        let b = g * 2 + lane / 16;
        if comptime!(m == 1) {
            if b < blocks && row0 < rows {
                // One token row: the lane's 16 inputs are loaded once, prescaled for
                // `dot_codes_in_place`, and shared by the `r` rows; each row's four code words
                // are dotted without being stored, and scaled once per word.
                let xb = (b * 256 + 128 * h + 4 * c) / 4;
                let mut xs = Array::<f32>::new(16usize);
                #[unroll]
                for s in 0..4u32 {
                    prescale_inputs6(input(x, gamma, 0, xb + 8 * s, k4, &mut ssq, pre), &mut xs, (4 * s) as usize);
                }
                let is = c / 4;
                #[unroll]
                for i in 0..r {
                    let row = select(row0 + i < rows, row0 + i, rows - 1);
                    let (q0, q1, q2, q3, s0, s1, db) = unit_codes(w, off + row * row_bytes + b * 210, h, c);
                    let (d, _) = f16_pair(db, f16hw);
                    acc[i as usize] += d
                        * (scale(s0, s1, is) * dot_codes_in_place(q0, &xs, 0usize, magic)
                            + scale(s0, s1, is + 2) * dot_codes_in_place(q1, &xs, 4usize, magic)
                            + scale(s0, s1, is + 4) * dot_codes_in_place(q2, &xs, 8usize, magic)
                            + scale(s0, s1, is + 6) * dot_codes_in_place(q3, &xs, 12usize, magic));
                }
            }
        } else {
            if b < blocks && row0 < rows {
                #[unroll]
                for i in 0..r {
                    // Rows past the end re-read the last row; their sums are never written.
                    let row = select(row0 + i < rows, row0 + i, rows - 1);
                    let blk = off + row * row_bytes + b * 210;
                    decode_unit(w, blk, h, c, &mut wt, (i * 16) as usize);
                }
                #[unroll]
                for t in 0..m {
                    let xb = (b * 256 + 128 * h + 4 * c) / 4;
                    #[unroll]
                    for s in 0..4u32 {
                        let xv = input(x, gamma, t, xb + 8 * s, k4, &mut ssq, pre);
                        #[unroll]
                        for i in 0..r {
                            acc[(i * m + t) as usize] += dot4(&wt, (i * 16 + s * 4) as usize, xv);
                        }
                    }
                }
            }
        }
        g += split;
    }
    reduce_groups(CUBE_POS as u32, &acc, &ssq, y, res, rows, ny, col0, k, eps, m, r, split, plane32, add, comptime!(pre == RMS_NORM));
}
