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

use super::decode::f16_pair;
use super::input::{RMS_NORM, input};
use super::reduce::{group_row0, reduce_groups};

/// Byte `sh / 8` of `w` as an exact f32 (through the bits of `2²³ + byte`).
#[cube]
fn byte_f32(w: u32, sh: u32) -> f32 {
    f32::reinterpret(((w >> sh) & 0xFF) | 0x4B00_0000u32) - 8388608.0
}

/// The 6-bit scales and mins of sub-blocks `2j` and `2j + 1` of a Q4_K block, from its scale
/// words `s0, s1, s2`, as `(sc_2j, sc_2j+1, m_2j, m_2j+1)`: ggml's `get_scale_min_k4` on whole
/// words (`sc[0..4] = s0 & 63`, `sc[4..8] = (s2 & 15) | (s0 >> 6) << 4`, `m[0..4] = s1 & 63`,
/// `m[4..8] = (s2 >> 4) | (s1 >> 6) << 4`, byte-wise), no branch on `j`.
#[cube]
pub fn scales_mins(s0: u32, s1: u32, s2: u32, j: u32) -> (f32, f32, f32, f32) {
    let low = j < 2;
    let scw = select(low, s0 & 0x3F3F_3F3F, (s2 & 0x0F0F_0F0F) | ((s0 >> 2) & 0x3030_3030));
    let mnw = select(low, s1 & 0x3F3F_3F3F, ((s2 >> 4) & 0x0F0F_0F0F) | ((s1 >> 2) & 0x3030_3030));
    let sh = (j % 2) * 16;
    (byte_f32(scw, sh), byte_f32(scw, sh + 8), byte_f32(mnw, sh), byte_f32(mnw, sh + 8))
}

/// The bits of 2²³ as f32, [`FLOAT_MAGIC`], which the kernels that turn codes into floats in
/// place take as a run-time argument: a compile-time constant would be folded into a second
/// immediate, costing a second logic instruction per code (`(w & mask) | magic` is one `LOP3`
/// only when one of its constants sits in a register).
pub const FLOAT_MAGIC: u32 = 0x4B00_0000;

/// The nibble of `word` under `mask` (`0xF << s`, `s ≤ 12`), left in place, as the exact f32
/// `q·2^s` (through the bits of `2²³ + q·2^s`: no shift); `magic` is [`FLOAT_MAGIC`].
#[cube]
pub fn nib_in_place(word: u32, #[comptime] mask: u32, magic: u32) -> f32 {
    f32::reinterpret((word & mask) | magic) - 8388608.0
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
pub fn decode_unit<N: Size>(hd: Vector<u32, N>, q: Vector<u32, N>, j: u32, out: &mut Array<f32>, o: usize, #[comptime] f16hw: bool) {
    let (d, dmin) = f16_pair(hd.extract(0usize), f16hw);
    let (sl, sh, ml, mh) = scales_mins(hd.extract(1usize), hd.extract(2usize), hd.extract(3usize), j);
    let dl = d * sl;
    let dh = d * sh;
    let nl = dmin * ml;
    let nh = dmin * mh;
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

/// Writes the 8 inputs of one code word into `xs[o .. o + 8]`: `xl` (against the word's low
/// nibbles) then `xh` (its high nibbles), each scaled by `2^-s` for the bit position `s` at which
/// [`dot_word_in_place`] reads its nibble (exact: powers of two).
#[cube]
pub fn prescale_inputs<N: Size>(xl: Vector<f32, N>, xh: Vector<f32, N>, xs: &mut Array<f32>, o: usize) {
    // Low nibbles sit at bits 0, 8 (bytes 0, 1) and, after `>> 16`, 0, 8 (bytes 2, 3); high
    // nibbles at 4, 12 and 4, 12.
    xs[o] = xl.extract(0usize);
    xs[o + 1] = xl.extract(1usize) * 0.00390625;
    xs[o + 2] = xl.extract(2usize);
    xs[o + 3] = xl.extract(3usize) * 0.00390625;
    xs[o + 4] = xh.extract(0usize) * 0.0625;
    xs[o + 5] = xh.extract(1usize) * 0.000244140625;
    xs[o + 6] = xh.extract(2usize) * 0.0625;
    xs[o + 7] = xh.extract(3usize) * 0.000244140625;
}

/// `(Σ q_lo·x, Σ q_hi·x)` of the 8 codes of `word` against the inputs [`prescale_inputs`] wrote
/// at `xs[o ..]`: per code one mask-and-or, one subtraction and one FMA (`magic`: see
/// [`FLOAT_MAGIC`]).
#[cube]
pub fn dot_word_in_place(word: u32, xs: &Array<f32>, o: usize, magic: u32) -> (f32, f32) {
    let wb = word >> 16;
    let lo = nib_in_place(word, 0xFu32, magic) * xs[o] + nib_in_place(word, 0xF00u32, magic) * xs[o + 1]
        + nib_in_place(wb, 0xFu32, magic) * xs[o + 2] + nib_in_place(wb, 0xF00u32, magic) * xs[o + 3];
    let hi = nib_in_place(word, 0xF0u32, magic) * xs[o + 4] + nib_in_place(word, 0xF000u32, magic) * xs[o + 5]
        + nib_in_place(wb, 0xF0u32, magic) * xs[o + 6] + nib_in_place(wb, 0xF000u32, magic) * xs[o + 7];
    (lo, hi)
}

/// The sum of the 4 lanes of `v`.
#[cube]
pub fn hsum<N: Size>(v: Vector<f32, N>) -> f32 {
    v.extract(0usize) + v.extract(1usize) + v.extract(2usize) + v.extract(3usize)
}

/// See the module docs. `w` and `x` are read in 16-byte vectors (`N` = 4); `off` is the part's
/// offset in 16-byte units; `y` is `[m, ny]`, this part writing columns `col0..col0 + rows`.
/// Run as cube `cube` of a [`crate::kernels::matvec_pair`] launch.
#[cube]
#[allow(clippy::too_many_arguments)]
pub fn matvec_q4k_body<N: Size>(
    cube: u32,
    w: &[Vector<u32, N>],
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
    let blocks = k / 256;
    let u = lane % 8;
    let j = u / 2;
    let hh = u % 2;
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
    while g * 4 < blocks {
        let b = g * 4 + lane / 8;
        if comptime!(m == 1) {
            if b < blocks && row0 < rows {
                // One token row: each weight is used once, so it is never stored. The `r` rows'
                // code words and headers are loaded first (all loads in flight together). The
                // lane's 32 inputs are kept in registers, each prescaled by 2^-s for the bit
                // position `s` its nibble sits at in the code word (exact), so a nibble becomes
                // a float with one mask-and-or and one subtraction (`nib_in_place`, no shift)
                // before its FMA. `Σ (d·sc·q − dmin·mn)·x` is accumulated as
                // `d·(sc_lo·Σ q·x + sc_hi·Σ q·x) − dmin·(mn_lo·Σ x + mn_hi·Σ x)`.
                let mut qw = Array::<u32>::new((r * 4) as usize);
                let mut hw = Array::<u32>::new((r * 4) as usize);
                #[unroll]
                for i in 0..r {
                    let row = select(row0 + i < rows, row0 + i, rows - 1);
                    let base = off + (row * blocks + b) * 9;
                    let hd = w[base as usize];
                    let q = w[(base + 1 + u) as usize];
                    #[unroll]
                    for e in 0..4u32 {
                        qw[(4 * i + e) as usize] = q.extract(e as usize);
                        hw[(4 * i + e) as usize] = hd.extract(e as usize);
                    }
                }
                let xb = (b * 256 + 64 * j + 16 * hh) / 4;
                let mut xs = Array::<f32>::new(32usize);
                let mut sl = 0.0f32;
                let mut sh = 0.0f32;
                #[unroll]
                for v in 0..4u32 {
                    let xl = input(x, gamma, 0, xb + v, k4, &mut ssq, pre);
                    let xh = input(x, gamma, 0, xb + 8 + v, k4, &mut ssq, pre);
                    sl += hsum(xl);
                    sh += hsum(xh);
                    prescale_inputs(xl, xh, &mut xs, (8 * v) as usize);
                }
                #[unroll]
                for i in 0..r {
                    let (d, dmin) = f16_pair(hw[(4 * i) as usize], f16hw);
                    let (scl, sch, mnl, mnh) = scales_mins(hw[(4 * i + 1) as usize], hw[(4 * i + 2) as usize], hw[(4 * i + 3) as usize], j);
                    let mut lo = 0.0f32;
                    let mut hi = 0.0f32;
                    #[unroll]
                    for v in 0..4u32 {
                        let (l, h) = dot_word_in_place(qw[(4 * i + v) as usize], &xs, (8 * v) as usize, magic);
                        lo += l;
                        hi += h;
                    }
                    acc[i as usize] += d * (scl * lo + sch * hi) - dmin * (mnl * sl + mnh * sh);
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
                    decode_unit(hd, q, j, &mut wt, (i * 32) as usize, f16hw);
                }
                #[unroll]
                for t in 0..m {
                    let xb = (b * 256 + 64 * j + 16 * hh) / 4;
                    #[unroll]
                    for v in 0..4u32 {
                        let xl = input(x, gamma, t, xb + v, k4, &mut ssq, pre);
                        let xh = input(x, gamma, t, xb + 8 + v, k4, &mut ssq, pre);
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
    reduce_groups(cube, &acc, &ssq, y, res, rows, ny, col0, k, eps, m, r, split, plane32, add, comptime!(pre == RMS_NORM));
}
