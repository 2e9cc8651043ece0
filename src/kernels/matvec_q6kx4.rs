//! The decode path for Q6_Kx4 (`format::BlockQ6Kx4`: four Q6_K blocks, 840 bytes, with the
//! `ql` of the four, then their `qh`, `scales` and `d` side by side), read in aligned 8-byte
//! words: a group is 105 of them, `ql` of block `i` at words `16i..`, `qh` at `64 + 8i..`, its
//! 16 scales at `96 + 2i..` and the four `d` in word 104.
//!
//! Lane `u` (0..8) of block `i` takes, for half `h = u / 4` and `a = u % 4`, the bytes
//! `ql[64h + 8a ..+8]`, `ql[64h + 32 + 8a ..+8]` and `qh[32h + 8a ..+8]`: the 32 weights
//! `128h + 32s + 8a + 4e + 0..4` (`s` 0..4, `e` 0..2), whose scales are bytes `a/2 + 2s` of the
//! half's eight (one 8-byte word). A plane covers one group (1024 columns) per step with three
//! code loads per lane, against eleven 2-byte-aligned word reads per 16 weights for the plain
//! 210-byte blocks ([`super::matvec_q6k`]). Each thread handles `r` weight rows with the same
//! input columns and all `m ≤ 8` token rows; `split` planes share a row group.

use cubecl::prelude::*;

use super::decode::f16_pair;
use super::input::{RMS_NORM, input};
use super::matvec_q4k::dot4;
use super::matvec_q6k::{codes6, decode4, dot_codes_in_place, prescale_inputs6, scale};
use super::reduce::{group_row0, reduce_groups};

/// 8-byte words per group of four blocks.
pub const GROUP_WORDS: u32 = 105;

/// The code words of lane `u` of block `i` of the group at 8-byte word `g8`, into
/// `q[o .. o + 8]` (byte `j` of `q[o + 4e + s]` is the 6-bit code of element
/// `128h + 32s + 8a + 4e + j`), and the block's scale words for the lane's half and its `d`
/// bits: `(s0, s1, d)`.
#[cube]
pub fn lane_codes<Wv: Size>(w: &[Vector<u32, Wv>], g8: u32, i: u32, u: u32, q: &mut Array<u32>, o: usize) -> (u32, u32, u32) {
    let h = u / 4;
    let a = u % 4;
    let lo = w[(g8 + 16 * i + 8 * h + a) as usize];
    let hi = w[(g8 + 16 * i + 8 * h + 4 + a) as usize];
    let hb = w[(g8 + 64 + 8 * i + 4 * h + a) as usize];
    let sc = w[(g8 + 96 + 2 * i + h) as usize];
    let dw = w[(g8 + 104) as usize];
    #[unroll]
    for e in 0..2u32 {
        let (q0, q1, q2, q3) = codes6(lo.extract(e as usize), hi.extract(e as usize), hb.extract(e as usize));
        let b = o + (4 * e) as usize;
        q[b] = q0;
        q[b + 1] = q1;
        q[b + 2] = q2;
        q[b + 3] = q3;
    }
    let dpair = select(i < 2, dw.extract(0usize), dw.extract(1usize));
    (sc.extract(0usize), sc.extract(1usize), (dpair >> (16 * (i % 2))) & 0xFFFF)
}

/// Decodes the 32 weights of lane `u` of block `i` of the group at word `g8` into
/// `out[o + 4(4e + s) + j]` (element `128h + 32s + 8a + 4e + j`).
#[cube]
pub fn decode_lane<Wv: Size>(w: &[Vector<u32, Wv>], g8: u32, i: u32, u: u32, out: &mut Array<f32>, o: usize, #[comptime] f16hw: bool) {
    let mut q = Array::<u32>::new(8usize);
    let (s0, s1, db) = lane_codes(w, g8, i, u, &mut q, 0usize);
    let (d, _) = f16_pair(db, f16hw);
    let is = (u % 4) / 2;
    #[unroll]
    for s in 0..4u32 {
        let ds = d * scale(s0, s1, is + 2 * s);
        #[unroll]
        for e in 0..2u32 {
            decode4(q[(4 * e + s) as usize], ds, out, o + (4 * (4 * e + s)) as usize);
        }
    }
}

/// See the module docs. `w` is read in 8-byte vectors (`Wv` = 2) from word `off8`, `x` in 16-byte
/// vectors (`N` = 4); `y` is `[m, ny]`, this part writing columns `col0..col0 + rows`.
/// Run as cube `cube` of a [`crate::kernels::matvec_pair`] launch.
#[cube]
#[allow(clippy::too_many_arguments)]
pub fn matvec_q6kx4_body<N: Size, Wv: Size>(
    cube: u32,
    w: &[Vector<u32, Wv>],
    x: &[Vector<f32, N>],
    y: &mut [f32],
    res: &[f32],
    gamma: &[Vector<f32, N>],
    off8: u32,
    rows: u32,
    k: u32,
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
    let row0 = group_row0(cube, slot / split, r, split);
    let part = slot % split;
    let groups = k / 1024;
    let i = lane / 8;
    let u = lane % 8;
    let is = (u % 4) / 2;
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
    if row0 < rows {
        while g < groups {
            // Input vector of element `128h + 32s + 8a + 4e` of block `i` of group `g`: `xb + 8s + e`.
            let xb = (g * 1024 + 256 * i + 128 * (u / 4) + 8 * (u % 4)) / 4;
            if comptime!(m == 1) {
                // One token row: every row's code, scale and `d` words are loaded first (all in
                // flight together); the lane's 32 inputs stay in registers, prescaled for
                // `dot_codes_in_place`, shared by the `r` rows.
                let mut q = Array::<u32>::new((r * 8) as usize);
                let mut sw = Array::<u32>::new((r * 3) as usize);
                #[unroll]
                for t in 0..r {
                    // Rows past the end re-read the last row; their sums are never written.
                    let row = select(row0 + t < rows, row0 + t, rows - 1);
                    let (s0, s1, db) = lane_codes(w, off8 + (row * groups + g) * GROUP_WORDS, i, u, &mut q, (8 * t) as usize);
                    sw[(3 * t) as usize] = s0;
                    sw[(3 * t + 1) as usize] = s1;
                    sw[(3 * t + 2) as usize] = db;
                }
                let mut xs = Array::<f32>::new(32usize);
                #[unroll]
                for s in 0..4u32 {
                    #[unroll]
                    for e in 0..2u32 {
                        prescale_inputs6(input(x, gamma, 0, xb + 8 * s + e, k4, &mut ssq, pre), &mut xs, (4 * (4 * e + s)) as usize);
                    }
                }
                #[unroll]
                for t in 0..r {
                    let (s0, s1) = (sw[(3 * t) as usize], sw[(3 * t + 1) as usize]);
                    let (d, _) = f16_pair(sw[(3 * t + 2) as usize], f16hw);
                    let mut sum = 0.0f32;
                    #[unroll]
                    for s in 0..4u32 {
                        let b = (8 * t + s) as usize;
                        sum += scale(s0, s1, is + 2 * s)
                            * (dot_codes_in_place(q[b], &xs, (4 * s) as usize, magic)
                                + dot_codes_in_place(q[b + 4], &xs, (4 * (4 + s)) as usize, magic));
                    }
                    acc[t as usize] += d * sum;
                }
            } else {
                #[unroll]
                for t in 0..r {
                    let row = select(row0 + t < rows, row0 + t, rows - 1);
                    decode_lane(w, off8 + (row * groups + g) * GROUP_WORDS, i, u, &mut wt, (32 * t) as usize, f16hw);
                }
                #[unroll]
                for tok in 0..m {
                    #[unroll]
                    for s in 0..4u32 {
                        #[unroll]
                        for e in 0..2u32 {
                            let xv = input(x, gamma, tok, xb + 8 * s + e, k4, &mut ssq, pre);
                            #[unroll]
                            for t in 0..r {
                                acc[(t * m + tok) as usize] += dot4(&wt, (32 * t + 4 * (4 * e + s)) as usize, xv);
                            }
                        }
                    }
                }
            }
            g += split;
        }
    }
    reduce_groups(cube, &acc, &ssq, y, res, rows, ny, col0, k, eps, m, r, split, plane32, add, comptime!(pre == RMS_NORM));
}
