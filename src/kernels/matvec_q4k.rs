//! The decode path for Q4_K, memory-bound: 16-byte loads of the blocks and of the input.
//!
//! A Q4_K block (144 bytes = 9 units of 16 bytes) is the unit `d|dmin|scales[12]` followed by 8
//! units of codes. Code unit `u` of a block holds bytes `16·(u % 2) ..` of the 32-byte chunk
//! `j = u / 2`, whose low nibbles are elements `64j + ..` (sub-block `2j`) and whose high nibbles
//! are elements `64j + 32 + ..` (sub-block `2j + 1`).
//!
//! Lane `l` of a plane takes code unit `l % 8` of block `4g + l / 8`, so a plane reads four whole
//! blocks (576 contiguous bytes) per step. Each thread handles `r` weight rows with the same
//! input columns (the input's 16-byte loads serve `r` rows) and all `m ≤ 8` token rows; `split`
//! planes share a row group, each taking every `split`-th step. Weights are decoded once per
//! thread (`d·sc·q − dmin·m`, the nibble turned into a float through its bits, not a conversion
//! instruction) and multiplied with each token row in f32. With one token row the kernel keeps
//! the input in registers instead and takes more rows per thread (the input's loads through L1
//! were the limit: ncu measured L1/TEX at 72% against DRAM at 32%).

use cubecl::prelude::*;

use super::decode::f16_to_f32;
use super::reduce::{group_row0, reduce_groups};

/// Byte `i` (0..12) of the three scale words of a Q4_K block.
#[cube]
pub fn scale_byte(s0: u32, s1: u32, s2: u32, i: u32) -> u32 {
    let word = select(i < 4, s0, select(i < 8, s1, s2));
    (word >> ((i % 4) * 8)) & 0xFF
}

/// The 6-bit (scale, min) pair of sub-block `i` (0..8), ggml's `get_scale_min_k4`.
#[cube]
pub fn scale_min(s0: u32, s1: u32, s2: u32, i: u32) -> (u32, u32) {
    let mut sc = scale_byte(s0, s1, s2, i) & 63;
    let mut mn = scale_byte(s0, s1, s2, i + 4) & 63;
    if i >= 4 {
        let b = scale_byte(s0, s1, s2, i + 4);
        sc = (b & 0x0F) | ((scale_byte(s0, s1, s2, i - 4) >> 6) << 4);
        mn = (b >> 4) | ((scale_byte(s0, s1, s2, i) >> 6) << 4);
    }
    (sc, mn)
}

/// Nibble `shift / 4` of `word` as an exact f32 (through the bits of `2²³ + q`).
#[cube]
pub fn nib(word: u32, #[comptime] shift: u32) -> f32 {
    f32::reinterpret(((word >> shift) & 0xF) | 0x4B00_0000u32) - 8388608.0
}

/// Decodes the 8 weights of code word `word` (elements `4v + 0..4` of the unit's low half into
/// `out[o .. o + 4]`, of its high half into `out[o + 4 .. o + 8]`).
#[cube]
pub fn decode_word(word: u32, out: &mut Array<f32>, o: usize, dl: f32, ml: f32, dh: f32, mh: f32) {
    out[o] = dl * nib(word, 0u32) - ml;
    out[o + 1] = dl * nib(word, 8u32) - ml;
    out[o + 2] = dl * nib(word, 16u32) - ml;
    out[o + 3] = dl * nib(word, 24u32) - ml;
    out[o + 4] = dh * nib(word, 4u32) - mh;
    out[o + 5] = dh * nib(word, 12u32) - mh;
    out[o + 6] = dh * nib(word, 20u32) - mh;
    out[o + 7] = dh * nib(word, 28u32) - mh;
}

/// Decodes code unit `q` (of chunk `j`) of the block whose first unit is `hd` into 32 weights:
/// `out[o + 8v .. o + 8v + 4]` are elements `64j + 16·(u % 2) + 4v + 0..4` (low nibbles), and
/// `out[o + 8v + 4 .. o + 8v + 8]` the same plus 32 (high nibbles), for `v` in 0..4.
#[cube]
pub fn decode_unit<N: Size>(hd: Vector<u32, N>, q: Vector<u32, N>, j: u32, out: &mut Array<f32>, o: usize) {
    let h = hd.extract(0usize);
    let d = f16_to_f32(h & 0xFFFF);
    let dmin = f16_to_f32(h >> 16);
    let (sl, ml) = scale_min(hd.extract(1usize), hd.extract(2usize), hd.extract(3usize), 2 * j);
    let (sh, mh) = scale_min(hd.extract(1usize), hd.extract(2usize), hd.extract(3usize), 2 * j + 1);
    let dl = d * f32::cast_from(sl);
    let dh = d * f32::cast_from(sh);
    let nl = dmin * f32::cast_from(ml);
    let nh = dmin * f32::cast_from(mh);
    decode_word(q.extract(0usize), out, o, dl, nl, dh, nh);
    decode_word(q.extract(1usize), out, o + 8, dl, nl, dh, nh);
    decode_word(q.extract(2usize), out, o + 16, dl, nl, dh, nh);
    decode_word(q.extract(3usize), out, o + 24, dl, nl, dh, nh);
}

/// `Σ` of 4 weights `wt[o..o + 4]` times the 4 lanes of `xv`.
#[cube]
pub fn dot4<N: Size>(wt: &Array<f32>, o: usize, xv: Vector<f32, N>) -> f32 {
    wt[o] * xv.extract(0usize) + wt[o + 1] * xv.extract(1usize) + wt[o + 2] * xv.extract(2usize) + wt[o + 3] * xv.extract(3usize)
}

/// `Σ_e q_lo[e]·xl[e]` plus `Σ_e q_hi[e]·xh[e]` of the 8 codes of `word` (low nibbles against
/// `xl`, high nibbles against `xh`), each half scaled: `dl·Σ q_lo·x + dh·Σ q_hi·x`.
#[cube]
pub fn dot_word<N: Size>(word: u32, xl: Vector<f32, N>, xh: Vector<f32, N>, dl: f32, dh: f32) -> f32 {
    let lo = nib(word, 0u32) * xl.extract(0usize) + nib(word, 8u32) * xl.extract(1usize) + nib(word, 16u32) * xl.extract(2usize) + nib(word, 24u32) * xl.extract(3usize);
    let hi = nib(word, 4u32) * xh.extract(0usize) + nib(word, 12u32) * xh.extract(1usize) + nib(word, 20u32) * xh.extract(2usize) + nib(word, 28u32) * xh.extract(3usize);
    dl * lo + dh * hi
}

/// The sum of the 4 lanes of `v`.
#[cube]
pub fn hsum<N: Size>(v: Vector<f32, N>) -> f32 {
    v.extract(0usize) + v.extract(1usize) + v.extract(2usize) + v.extract(3usize)
}

/// See the module docs. `w` and `x` are read in 16-byte vectors (`N` = 4); `off` is the part's
/// offset in 16-byte units; `y` is `[m, ny]`, this launch writing columns `col0..col0 + rows`.
#[cube(launch_unchecked)]
pub fn matvec_q4k<N: Size>(
    w: &[Vector<u32, N>],
    x: &[Vector<f32, N>],
    y: &mut [f32],
    off: u32,
    rows: u32,
    k: u32,
    ny: u32,
    col0: u32,
    #[comptime] m: u32,
    #[comptime] r: u32,
    #[comptime] split: u32,
    #[comptime] plane32: bool,
) {
    let lane = UNIT_POS_X;
    let slot = UNIT_POS_Y;
    let row0 = group_row0(slot / split, r, split);
    let part = slot % split;
    let blocks = k / 256;
    let u = lane % 8;
    let j = u / 2;
    let hh = u % 2;
    let mut acc = Array::<f32>::new((r * m) as usize);
    #[unroll]
    for o in 0..r * m {
        acc[o as usize] = 0.0;
    }
    let mut wt = Array::<f32>::new((r * 32) as usize);
    let mut g = part;
    while g * 4 < blocks {
        let b = g * 4 + lane / 8;
        if comptime!(m == 1) {
            if b < blocks && row0 < rows {
                // One token row: each weight is used once, so it is never stored. The `r` rows'
                // code words and scales are loaded first (all loads in flight together), then the
                // input is read one 16-byte pair at a time and shared by the rows;
                // `Σ (d·sc·q − dmin·mn)·x` is accumulated as `d·sc·Σ q·x − dmin·mn·Σ x`.
                let mut qw = Array::<u32>::new((r * 4) as usize);
                let mut sc = Array::<f32>::new((r * 4) as usize);
                #[unroll]
                for i in 0..r {
                    let row = select(row0 + i < rows, row0 + i, rows - 1);
                    let base = off + (row * blocks + b) * 9;
                    let hd = w[base as usize];
                    let q = w[(base + 1 + u) as usize];
                    qw[(4 * i) as usize] = q.extract(0usize);
                    qw[(4 * i + 1) as usize] = q.extract(1usize);
                    qw[(4 * i + 2) as usize] = q.extract(2usize);
                    qw[(4 * i + 3) as usize] = q.extract(3usize);
                    let h = hd.extract(0usize);
                    let d = f16_to_f32(h & 0xFFFF);
                    let dmin = f16_to_f32(h >> 16);
                    let (scl, mnl) = scale_min(hd.extract(1usize), hd.extract(2usize), hd.extract(3usize), 2 * j);
                    let (sch, mnh) = scale_min(hd.extract(1usize), hd.extract(2usize), hd.extract(3usize), 2 * j + 1);
                    sc[(4 * i) as usize] = d * f32::cast_from(scl);
                    sc[(4 * i + 1) as usize] = d * f32::cast_from(sch);
                    sc[(4 * i + 2) as usize] = dmin * f32::cast_from(mnl);
                    sc[(4 * i + 3) as usize] = dmin * f32::cast_from(mnh);
                }
                let xb = (b * 256 + 64 * j + 16 * hh) / 4;
                let mut sl = 0.0f32;
                let mut sh = 0.0f32;
                #[unroll]
                for v in 0..4u32 {
                    let xl = x[(xb + v) as usize];
                    let xh = x[(xb + 8 + v) as usize];
                    sl += hsum(xl);
                    sh += hsum(xh);
                    #[unroll]
                    for i in 0..r {
                        acc[i as usize] += dot_word(qw[(4 * i + v) as usize], xl, xh, sc[(4 * i) as usize], sc[(4 * i + 1) as usize]);
                    }
                }
                #[unroll]
                for i in 0..r {
                    acc[i as usize] -= sc[(4 * i + 2) as usize] * sl + sc[(4 * i + 3) as usize] * sh;
                }
            }
        } else {
            if b < blocks && row0 < rows {
                #[unroll]
                for i in 0..r {
                    // Rows past the end re-read the last row; their sums are never written.
                    let row = select(row0 + i < rows, row0 + i, rows - 1);
                    let base = off + (row * blocks + b) * 9;
                    let hd = w[base as usize];
                    let q = w[(base + 1 + u) as usize];
                    decode_unit(hd, q, j, &mut wt, (i * 32) as usize);
                }
                #[unroll]
                for t in 0..m {
                    let xb = (t * k + b * 256 + 64 * j + 16 * hh) / 4;
                    #[unroll]
                    for v in 0..4u32 {
                        let xl = x[(xb + v) as usize];
                        let xh = x[(xb + 8 + v) as usize];
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
    reduce_groups(&acc, y, rows, ny, col0, m, r, split, plane32);
}
