//! Element decoders for every supported block format, on `u32` words.
//!
//! `elem(w, blk, i, kind)` returns element `i` of the block starting at byte `blk` of `w`, with
//! ggml's formula evaluated in ggml's order. Every product that ggml rounds is rounded here in the
//! same order, and every product ggml computes exactly (f16 scale × small integer) stays exact,
//! so a fused multiply-add chosen by the GPU compiler cannot change a bit.

use cubecl::prelude::*;

/// Format codes (the `GgmlType` ids of `crate::format`) usable as comptime kernel parameters.
pub mod kind {
    /// F32.
    pub const F32: u32 = 0;
    /// F16.
    pub const F16: u32 = 1;
    /// Q4_0.
    pub const Q4_0: u32 = 2;
    /// Q4_1.
    pub const Q4_1: u32 = 3;
    /// Q5_0.
    pub const Q5_0: u32 = 6;
    /// Q5_1.
    pub const Q5_1: u32 = 7;
    /// Q8_0.
    pub const Q8_0: u32 = 8;
    /// Q2_K.
    pub const Q2_K: u32 = 10;
    /// Q3_K.
    pub const Q3_K: u32 = 11;
    /// Q4_K.
    pub const Q4_K: u32 = 12;
    /// Q5_K.
    pub const Q5_K: u32 = 13;
    /// Q6_K.
    pub const Q6_K: u32 = 14;
    /// BF16.
    pub const BF16: u32 = 30;
    /// burn-quant int4, groups of 32.
    pub const I4_32: u32 = (1 << 16) | 32;
    /// burn-quant int4, groups of 64.
    pub const I4_64: u32 = (1 << 16) | 64;
    /// burn-quant int4, groups of 128.
    pub const I4_128: u32 = (1 << 16) | 128;
    /// burn-quant Q6_K, four blocks' fields side by side (`format::BlockQ6Kx4`).
    pub const Q6_KX4: u32 = (1 << 16) | 0x1000 | 14;
}

/// Byte `b` of the word buffer.
#[cube]
pub fn byte(w: &[u32], b: u32) -> u32 {
    (w[(b / 4) as usize] >> ((b % 4) * 8)) & 0xFF
}

/// The 16-bit little-endian value at even byte `b`.
#[cube]
pub fn half_bits(w: &[u32], b: u32) -> u32 {
    (w[(b / 4) as usize] >> ((b % 4) * 8)) & 0xFFFF
}

/// The 32-bit little-endian value at even byte `b`: the aligned word, or where `b` is 2 bytes past
/// a word boundary the two words around it funnelled by 16 bits (the second read only then, so
/// nothing past the word holding byte `b + 3` is read).
#[cube]
pub fn word_at(w: &[u32], b: u32) -> u32 {
    let q = b / 4;
    let shifted = (b & 3) != 0;
    let lo = w[q as usize];
    let hi = w[select(shifted, q + 1, q) as usize];
    select(shifted, (lo >> 16) | (hi << 16), lo)
}

/// IEEE half bits → f32 (exact, subnormals and infinities included), with integer ops only so
/// it runs where the device has no f16 type.
#[cube]
pub fn f16_to_f32(h: u32) -> f32 {
    let exp = (h >> 10) & 0x1F;
    let mant = h & 0x3FF;
    let mut out = f32::reinterpret(((exp + 112) << 23) | (mant << 13));
    if exp == 0 {
        out = f32::cast_from(mant) * 0.000000059604645;
    }
    if exp == 31 {
        out = f32::reinterpret(0x7F80_0000u32 | (mant << 13));
    }
    if (h >> 15) == 1 {
        out = -out;
    }
    out
}

/// The two IEEE halves of `h` (low, high) as f32, exact: through the device's own f16 type
/// where it has one (`native`, one conversion instruction each on CUDA), else [`f16_to_f32`].
#[cube]
pub fn f16_pair(h: u32, #[comptime] native: bool) -> (f32, f32) {
    if comptime!(native) {
        (
            f32::cast_from(half::f16::reinterpret(u16::cast_from(h & 0xFFFF))),
            f32::cast_from(half::f16::reinterpret(u16::cast_from(h >> 16))),
        )
    } else {
        (f16_to_f32(h & 0xFFFF), f16_to_f32(h >> 16))
    }
}

/// The f16 at even byte `b`, as f32.
#[cube]
pub fn f16_at(w: &[u32], b: u32) -> f32 {
    f16_to_f32(half_bits(w, b))
}

/// A signed byte as i32.
#[cube]
fn i8_of(v: u32) -> i32 {
    i32::cast_from(v) - i32::cast_from(v >> 7) * 256
}

/// Q4_K / Q5_K 6-bit (scale, min) of sub-block `j` (0..8) from the 12 scale bytes at `s`.
#[cube]
fn scale_min_k4(w: &[u32], s: u32, j: u32) -> (u32, u32) {
    let mut sc = 0u32;
    let mut m = 0u32;
    if j < 4 {
        sc = byte(w, s + j) & 63;
        m = byte(w, s + j + 4) & 63;
    } else {
        sc = (byte(w, s + j + 4) & 0x0F) | ((byte(w, s + j - 4) >> 6) << 4);
        m = (byte(w, s + j + 4) >> 4) | ((byte(w, s + j) >> 6) << 4);
    }
    (sc, m)
}

/// Bytes per block of format `k` (elements per block in [`block_elems`]).
pub fn block_bytes(k: u32) -> u32 {
    match k {
        kind::F32 => 4,
        kind::F16 | kind::BF16 => 2,
        kind::Q4_0 => 18,
        kind::Q4_1 => 20,
        kind::Q5_0 => 22,
        kind::Q5_1 => 24,
        kind::Q8_0 => 34,
        kind::Q2_K => 84,
        kind::Q3_K => 110,
        kind::Q4_K => 144,
        kind::Q5_K => 176,
        kind::Q6_K => 210,
        kind::Q6_KX4 => 840,
        kind::I4_32 => 20,
        kind::I4_64 => 36,
        _ => 68,
    }
}

/// Elements per block of format `k`.
pub fn block_elems(k: u32) -> u32 {
    match k {
        kind::F32 | kind::F16 | kind::BF16 => 1,
        kind::Q2_K | kind::Q3_K | kind::Q4_K | kind::Q5_K | kind::Q6_K => 256,
        kind::I4_64 => 64,
        kind::I4_128 => 128,
        kind::Q6_KX4 => 1024,
        _ => 32,
    }
}

/// Element `i` (0..256) of the Q6_K block whose `ql`, `qh`, `scales` and `d` start at bytes
/// `ql`, `qh`, `sc` and `d` (ggml's formula).
#[cube]
fn q6k_elem(w: &[u32], ql: u32, qh: u32, sc: u32, d: u32, i: u32) -> f32 {
    let n = i / 128;
    let r = i % 128;
    let quarter = r / 32;
    let l = r % 32;
    let qlb = byte(w, ql + 64 * n + l + 32 * (quarter % 2));
    let qhb = byte(w, qh + 32 * n + l);
    let q = ((qlb >> (4 * (quarter / 2))) & 0x0F) | (((qhb >> (2 * quarter)) & 3) << 4);
    let s = i8_of(byte(w, sc + 8 * n + l / 16 + 2 * quarter));
    f16_at(w, d) * f32::cast_from(s) * f32::cast_from(i32::cast_from(q) - 32)
}

/// Element `i` of the block of format `k` starting at byte `blk`.
#[cube]
pub fn elem(w: &[u32], blk: u32, i: u32, #[comptime] k: u32) -> f32 {
    let mut out = 0.0f32;
    if comptime!(k == kind::F32) {
        out = f32::reinterpret(w[(blk / 4) as usize]);
    } else if comptime!(k == kind::F16) {
        out = f16_at(w, blk);
    } else if comptime!(k == kind::BF16) {
        out = f32::reinterpret(half_bits(w, blk) << 16);
    } else if comptime!(k == kind::Q4_0) {
        let b = byte(w, blk + 2 + i % 16);
        let q = select(i < 16, b & 0x0F, b >> 4);
        out = f32::cast_from(i32::cast_from(q) - 8) * f16_at(w, blk);
    } else if comptime!(k == kind::Q4_1) {
        let b = byte(w, blk + 4 + i % 16);
        let q = select(i < 16, b & 0x0F, b >> 4);
        out = f32::cast_from(q) * f16_at(w, blk) + f16_at(w, blk + 2);
    } else if comptime!(k == kind::Q5_0) {
        let b = byte(w, blk + 6 + i % 16);
        let q = select(i < 16, b & 0x0F, b >> 4) | (((word_at(w, blk + 2) >> i) & 1) << 4);
        out = f32::cast_from(i32::cast_from(q) - 16) * f16_at(w, blk);
    } else if comptime!(k == kind::Q5_1) {
        let b = byte(w, blk + 8 + i % 16);
        let q = select(i < 16, b & 0x0F, b >> 4) | (((word_at(w, blk + 4) >> i) & 1) << 4);
        out = f32::cast_from(q) * f16_at(w, blk) + f16_at(w, blk + 2);
    } else if comptime!(k == kind::Q8_0) {
        out = f32::cast_from(i8_of(byte(w, blk + 2 + i))) * f16_at(w, blk);
    } else if comptime!(k == kind::Q2_K) {
        let n = i / 128;
        let r = i % 128;
        let j = r / 32;
        let l32 = r % 32;
        let sc = byte(w, blk + n * 8 + j * 2 + l32 / 16);
        let dl = f16_at(w, blk + 80) * f32::cast_from(sc & 0x0F);
        let ml = f16_at(w, blk + 82) * f32::cast_from(sc >> 4);
        let q = (byte(w, blk + 16 + 32 * n + l32) >> (2 * j)) & 3;
        out = dl * f32::cast_from(q) - ml;
    } else if comptime!(k == kind::Q3_K) {
        let half = i / 128;
        let r = i % 128;
        let j = r / 32;
        let l32 = r % 32;
        let s = half * 8 + j * 2 + l32 / 16;
        let a = s / 4;
        let low = (byte(w, blk + 96 + (a % 2) * 4 + s % 4) >> (4 * (a / 2))) & 0x0F;
        let high = (byte(w, blk + 96 + 8 + s % 4) >> (2 * a)) & 3;
        let dl = f16_at(w, blk + 108) * f32::cast_from(i32::cast_from(low | (high << 4)) - 32);
        let q = (byte(w, blk + 32 + 32 * half + l32) >> (2 * j)) & 3;
        let hi = select((byte(w, blk + l32) >> (half * 4 + j)) & 1 == 1, 0i32, 4i32);
        out = dl * f32::cast_from(i32::cast_from(q) - hi);
    } else if comptime!(k == kind::Q4_K || k == kind::Q5_K) {
        let j = i / 64;
        let r = i % 64;
        let l = r % 32;
        let (sc, m) = scale_min_k4(w, blk + 4, 2 * j + r / 32);
        let d1 = f16_at(w, blk) * f32::cast_from(sc);
        let m1 = f16_at(w, blk + 2) * f32::cast_from(m);
        let mut q = 0u32;
        if comptime!(k == kind::Q4_K) {
            let b = byte(w, blk + 16 + 32 * j + l);
            q = select(r < 32, b & 0x0F, b >> 4);
        } else {
            let b = byte(w, blk + 48 + 32 * j + l);
            let h = (byte(w, blk + 16 + l) >> (2 * j + r / 32)) & 1;
            q = select(r < 32, b & 0x0F, b >> 4) + h * 16;
        }
        out = d1 * f32::cast_from(q) - m1;
    } else if comptime!(k == kind::Q6_K) {
        out = q6k_elem(w, blk, blk + 128, blk + 192, blk + 208, i);
    } else if comptime!(k == kind::Q6_KX4) {
        // Block `i / 256` of the four: its `ql`, `qh`, `scales`, `d` in the four fields' runs.
        let s = i / 256;
        out = q6k_elem(w, blk + 128 * s, blk + 512 + 64 * s, blk + 768 + 16 * s, blk + 832 + 2 * s, i % 256);
    } else {
        // burn-quant int4: d f16 @0, zero u8 @2, codes @4 (weight j low, j + G/2 high nibble).
        let g = comptime!(k & 0xFFFF);
        let b = byte(w, blk + 4 + i % (g / 2));
        let q = select(i < g / 2, b & 0x0F, b >> 4);
        out = f16_at(w, blk) * f32::cast_from(i32::cast_from(q) - i32::cast_from(byte(w, blk + 2)));
    }
    out
}
