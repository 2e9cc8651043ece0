//! The decode path for burn-quant's int4 groups (`I4_<G>`, the layout GPTQ and AWQ checkpoints
//! are repacked into: per group `d` f16, zero `z` u8, pad, `G/2` code bytes where byte `j` holds
//! weight `j` in its low nibble and weight `j + G/2` in its high nibble).
//!
//! Lane unit: 4 code words (16 bytes) of one group, i.e. weights `16u .. 16u + 16` and
//! `G/2 + 16u ..` — `G/32` lanes per group, so a plane reads `32 / (G/32)` whole groups per
//! step. Each thread handles `r` weight rows with the same input columns and all `m ≤ 8` token
//! rows; `split` planes share a row group. Weights are `d·q − d·z` (exact in f32, as
//! `d·(q − z)`), the nibble turned into a float through its bits.

use cubecl::prelude::*;

use super::decode::f16_pair;
use super::matvec_q4k::{decode_word, dot_word_in_place, dot4, hsum, prescale_inputs};
use super::input::{RMS_NORM, input};
use super::reduce::{group_row0, reduce_groups};

/// Decodes the 32 weights of unit `u` of the group at word `blk`: `out[o + 8v .. + 4]` are
/// weights `16u + 4v + 0..4`, `out[o + 8v + 4 .. + 8]` weights `G/2 + 16u + 4v + 0..4`.
#[cube]
pub fn decode_unit_i4(w: &[u32], blk: u32, u: u32, out: &mut Array<f32>, o: usize, #[comptime] f16hw: bool) {
    let hd = w[blk as usize];
    let (d, _) = f16_pair(hd, f16hw);
    let dz = d * f32::cast_from((hd >> 16) & 0xFF);
    let q = blk + 1 + 4 * u;
    decode_word(w[q as usize], out, o, d, dz, d, dz);
    decode_word(w[(q + 1) as usize], out, o + 8, d, dz, d, dz);
    decode_word(w[(q + 2) as usize], out, o + 16, d, dz, d, dz);
    decode_word(w[(q + 3) as usize], out, o + 24, d, dz, d, dz);
}

/// Writes the 32 inputs of token row 0 that unit `u` of group `b` multiplies (inputs `16u ..
/// 16u + 16` and `G/2 + 16u ..` of the group, after `pre`) into `xs`, prescaled for
/// [`dot_word_in_place`], and returns their sum.
#[cube]
#[allow(clippy::too_many_arguments)]
pub fn lane_inputs<N: Size>(
    x: &[Vector<f32, N>],
    gamma: &[Vector<f32, N>],
    b: u32,
    u: u32,
    k4: u32,
    ssq: &mut Array<f32>,
    xs: &mut Array<f32>,
    #[comptime] group: u32,
    #[comptime] pre: u32,
) -> f32 {
    let xb = (b * group + 16 * u) / 4;
    let mut sx = 0.0f32;
    #[unroll]
    for v in 0..4u32 {
        let xl = input(x, gamma, 0, xb + v, k4, ssq, pre);
        let xh = input(x, gamma, 0, xb + group / 8 + v, k4, ssq, pre);
        sx += hsum(xl) + hsum(xh);
        prescale_inputs(xl, xh, xs, (8 * v) as usize);
    }
    sx
}

/// Loads the 5 words of row `row` that lane-unit `u` of group `gi` reads into `qw[5·s ..]`: the
/// group's header then the unit's 4 code words.
#[cube]
#[allow(clippy::too_many_arguments)]
pub fn load_row(w: &[u32], qw: &mut Array<u32>, off: u32, row: u32, groups: u32, gi: u32, u: u32, #[comptime] s: u32, #[comptime] words: u32) {
    let blk = off + (row * groups + gi) * words;
    let q = blk + 1 + 4 * u;
    let o = comptime!(5 * s) as usize;
    qw[o] = w[blk as usize];
    qw[o + 1] = w[q as usize];
    qw[o + 2] = w[(q + 1) as usize];
    qw[o + 3] = w[(q + 2) as usize];
    qw[o + 4] = w[(q + 3) as usize];
}

/// A unit's share of a row's product, `d·Σq·x − d·z·Σx`: `hd` the group's `d | z << 16` word,
/// `qw[o .. o + 4]` the unit's code words, `xs` and `sx` [`lane_inputs`]' inputs and their sum.
#[cube]
pub fn unit_partial(hd: u32, qw: &Array<u32>, o: usize, xs: &Array<f32>, sx: f32, magic: u32, #[comptime] f16hw: bool) -> f32 {
    let (d, _) = f16_pair(hd, f16hw);
    let mut s = 0.0f32;
    #[unroll]
    for v in 0..4u32 {
        let (l, h) = dot_word_in_place(qw[o + v as usize], xs, (8 * v) as usize, magic);
        s += l + h;
    }
    d * s - d * f32::cast_from((hd >> 16) & 0xFF) * sx
}

/// See the module docs. `x` is read in 16-byte vectors (`N` = 4); `off` is the part's offset in
/// words; `y` is `[m, ny]`, this launch writing columns `col0..col0 + rows`.
#[cube(launch_unchecked)]
pub fn matvec_i4<N: Size>(
    w: &[u32],
    x: &[Vector<f32, N>],
    y: &mut [f32],
    res: &[f32],
    gamma: &[Vector<f32, N>],
    off: u32,
    rows: u32,
    k: u32,
    ny: u32,
    col0: u32,
    magic: u32,
    #[comptime] group: u32,
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
    let lpg = comptime!(group / 32);
    let gps = comptime!(32 / (group / 32));
    let words = comptime!((4 + group / 2) / 4);
    let groups = k / group;
    let u = lane % lpg;
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
    let mut wt = Array::<f32>::new((r * 32) as usize);
    let mut g = part;
    while g * gps < groups {
        let b = g * gps + lane / lpg;
        if comptime!(m == 1) {
            if b < groups && row0 < rows {
                // One token row: the `r` rows' code words and scales are loaded first, then the
                // lane's 32 inputs, prescaled for `dot_word_in_place` (see matvec_q4k); `Σ d·(q −
                // z)·x` is accumulated as `d·Σ q·x − d·z·Σ x`.
                let mut qw = Array::<u32>::new((r * 5) as usize);
                #[unroll]
                for i in 0..r {
                    let row = select(row0 + i < rows, row0 + i, rows - 1);
                    load_row(w, &mut qw, off, row, groups, b, u, i, words);
                }
                let mut xs = Array::<f32>::new(32usize);
                let sx = lane_inputs(x, gamma, b, u, k4, &mut ssq, &mut xs, group, pre);
                #[unroll]
                for i in 0..r {
                    let o = (5 * i) as usize;
                    acc[i as usize] += unit_partial(qw[o], &qw, o + 1, &xs, sx, magic, f16hw);
                }
            }
        } else {
            if b < groups && row0 < rows {
                #[unroll]
                for i in 0..r {
                    // Rows past the end re-read the last row; their sums are never written.
                    let row = select(row0 + i < rows, row0 + i, rows - 1);
                    decode_unit_i4(w, off + (row * groups + b) * words, u, &mut wt, (i * 32) as usize, f16hw);
                }
                #[unroll]
                for t in 0..m {
                    let xb = (b * group + 16 * u) / 4;
                    #[unroll]
                    for v in 0..4u32 {
                        let xl = input(x, gamma, t, xb + v, k4, &mut ssq, pre);
                        let xh = input(x, gamma, t, xb + group / 8 + v, k4, &mut ssq, pre);
                        #[unroll]
                        for i in 0..r {
                            let o = (i * 32 + v * 8) as usize;
                            acc[(i * m + t) as usize] += dot4(&wt, o, xl) + dot4(&wt, o + 4, xh);
                        }
                    }
                }
            }
        }
        g += split;
    }
    reduce_groups(CUBE_POS as u32, &acc, &ssq, y, res, rows, ny, col0, k, eps, m, r, split, plane32, add, comptime!(pre == RMS_NORM));
}
