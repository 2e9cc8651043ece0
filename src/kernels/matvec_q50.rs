//! The decode path for Q5_0 (22-byte blocks: `d` f16, `qh` the fifth bits as a little-endian
//! u32, then 16 bytes `qs`; weight `j < 16` is `qs[j] & 15` with bit `j` of `qh` as its bit 4,
//! weight `j + 16` is `qs[j] >> 4` with bit `j + 16`; the value is `d·(q − 16)`). Blocks are
//! only 2-byte aligned, as Q8_0's: a block starts on a 4-byte boundary or 2 bytes past one, and
//! [`word_at`] reads a word at either.
//!
//! Lane unit: the 4 bytes `qs[4u .. 4u + 4]` of a block (weights `4u ..` and `16 + 4u ..`) — 4
//! lanes per block, 8 blocks (256 weights) per plane step. The lane's fifth bits are spread to
//! bit 4 of each byte by one multiply, so each byte of its two code words is a whole 5-bit code.
//! The kernel is Q8_0's, [`matvec_q80_q50`](crate::kernels::matvec_q80::matvec_q80_q50), with
//! these code words in place of Q8_0's: at one token row each code is masked in place against
//! inputs prescaled by the power of two of its bit position and `d` multiplies the row's sum once
//! ([`dot_word5`]).

use cubecl::prelude::*;

use super::decode::{f16_pair, word_at};

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
    let qs = word_at(w, blk + 6 + 4 * u);
    let qh = word_at(w, blk + 2);
    let lo = (qs & 0x0F0F_0F0F) | spread4(qh >> (4 * u));
    let hi = ((qs >> 4) & 0x0F0F_0F0F) | spread4(qh >> (16 + 4 * u));
    let (d0, d1) = f16_pair(w[(blk / 4) as usize], f16hw);
    (lo, hi, select((blk & 3) == 0, d0, d1))
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
pub fn decode_word5(c: u32, d: f32, out: &mut Array<f32>, o: usize) {
    #[unroll]
    for e in 0..4u32 {
        out[o + e as usize] = d * (f32::reinterpret(((c >> (8 * e)) & 0xFF) | 0x4B00_0000u32) - 8388624.0);
    }
}
