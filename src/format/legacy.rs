//! ggml's legacy block formats: 32 weights per block, one f16 scale (and for the `_1` types a
//! min). Formulas and field order follow ggml's `ggml-common.h` / `dequantize_row_*`.

use super::{BlockFormat, GgmlType, finite_f16, LANES, f16_le};

/// Weights per legacy 4/5-bit block.
pub const QK4_0: usize = 32;
/// Weights per Q8_0 block.
pub const QK8_0: usize = 32;

/// Q4_0: `x = d * (q - 8)`, q in 0..16; 4.5 bits per weight.
/// Byte `j` of `qs` holds weight `j` (low nibble) and weight `j + 16` (high nibble).
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ4_0 {
    /// Scale (f16).
    pub d: [u8; 2],
    /// Nibbles.
    pub qs: [u8; QK4_0 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 2 + QK4_0 / 2, "wrong q4_0 block size/padding");

/// Q4_1: `x = d * q + m`, q in 0..16; 5 bits per weight. Nibble order as Q4_0.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ4_1 {
    /// Scale (f16).
    pub d: [u8; 2],
    /// Min (f16).
    pub m: [u8; 2],
    /// Nibbles.
    pub qs: [u8; QK4_0 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 2 * 2 + QK4_0 / 2, "wrong q4_1 block size/padding");

/// Q5_0: `x = d * (q - 16)`, q in 0..32; 5.5 bits per weight. The fifth bit of weight `j` is
/// bit `j` of the little-endian u32 `qh`.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ5_0 {
    /// Scale (f16).
    pub d: [u8; 2],
    /// Fifth bits, a little-endian u32.
    pub qh: [u8; 4],
    /// Low nibbles.
    pub qs: [u8; QK4_0 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 2 + 4 + QK4_0 / 2, "wrong q5_0 block size/padding");

/// Q5_1: `x = d * q + m`, q in 0..32; 6 bits per weight. Bit layout as Q5_0.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ5_1 {
    /// Scale (f16).
    pub d: [u8; 2],
    /// Min (f16).
    pub m: [u8; 2],
    /// Fifth bits, a little-endian u32.
    pub qh: [u8; 4],
    /// Low nibbles.
    pub qs: [u8; QK4_0 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 2 * 2 + 4 + QK4_0 / 2, "wrong q5_1 block size/padding");

/// Q8_0: `x = d * q`, q an i8; 8.5 bits per weight.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ8_0 {
    /// Scale (f16).
    pub d: [u8; 2],
    /// Signed quants.
    pub qs: [i8; QK8_0],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 2 + QK8_0, "wrong q8_0 block size/padding");

impl BlockFormat for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const ELEMS: usize = QK4_0;
    #[inline]
    fn is_finite(&self) -> bool {
        finite_f16(self.d)
    }
    #[inline(always)]
    fn decode(&self, out: &mut [f32]) {
        let d = f16_le(self.d);
        let (lo, hi) = out[..QK4_0].split_at_mut(QK4_0 / 2);
        for j in 0..QK4_0 / 2 {
            lo[j] = ((self.qs[j] & 0x0F) as i32 - 8) as f32 * d;
            hi[j] = ((self.qs[j] >> 4) as i32 - 8) as f32 * d;
        }
    }

    #[inline(always)]
    fn dot_acc(&self, x: &[f32], acc: &mut [f32; LANES]) {
        let d = f16_le(self.d);
        let (xl, xh) = (&x[..16], &x[16..32]);
        for i in 0..LANES {
            let lo = ((self.qs[i] & 0x0F) as i32 - 8) as f32 * d;
            let hi = ((self.qs[i] >> 4) as i32 - 8) as f32 * d;
            acc[i] = hi.mul_add(xh[i], lo.mul_add(xl[i], acc[i]));
        }
    }
}

impl BlockFormat for BlockQ4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
    const ELEMS: usize = QK4_0;
    #[inline]
    fn is_finite(&self) -> bool {
        finite_f16(self.d) && finite_f16(self.m)
    }
    #[inline(always)]
    fn decode(&self, out: &mut [f32]) {
        let (d, m) = (f16_le(self.d), f16_le(self.m));
        let (lo, hi) = out[..QK4_0].split_at_mut(QK4_0 / 2);
        for j in 0..QK4_0 / 2 {
            lo[j] = (self.qs[j] & 0x0F) as f32 * d + m;
            hi[j] = (self.qs[j] >> 4) as f32 * d + m;
        }
    }
}

/// The 5-bit values of a Q5 block before the offset: `(low nibble | fifth bit << 4)`.
#[inline(always)]
fn q5_values(qh: [u8; 4], qs: &[u8; QK4_0 / 2], j: usize) -> (i32, i32) {
    let qh = u32::from_le_bytes(qh);
    let h0 = ((qh >> j) << 4) & 0x10;
    let h1 = (qh >> (j + 12)) & 0x10;
    (((qs[j] & 0x0F) as u32 | h0) as i32, ((qs[j] >> 4) as u32 | h1) as i32)
}

impl BlockFormat for BlockQ5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    const ELEMS: usize = QK4_0;
    #[inline]
    fn is_finite(&self) -> bool {
        finite_f16(self.d)
    }
    #[inline(always)]
    fn decode(&self, out: &mut [f32]) {
        let d = f16_le(self.d);
        let (lo, hi) = out[..QK4_0].split_at_mut(QK4_0 / 2);
        for j in 0..QK4_0 / 2 {
            let (x0, x1) = q5_values(self.qh, &self.qs, j);
            lo[j] = (x0 - 16) as f32 * d;
            hi[j] = (x1 - 16) as f32 * d;
        }
    }

    #[inline(always)]
    fn dot_acc(&self, x: &[f32], acc: &mut [f32; LANES]) {
        let d = f16_le(self.d);
        let (xl, xh) = (&x[..16], &x[16..32]);
        for i in 0..LANES {
            let (x0, x1) = q5_values(self.qh, &self.qs, i);
            acc[i] = ((x1 - 16) as f32 * d).mul_add(xh[i], ((x0 - 16) as f32 * d).mul_add(xl[i], acc[i]));
        }
    }
}

impl BlockFormat for BlockQ5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    const ELEMS: usize = QK4_0;
    #[inline]
    fn is_finite(&self) -> bool {
        finite_f16(self.d) && finite_f16(self.m)
    }
    #[inline(always)]
    fn decode(&self, out: &mut [f32]) {
        let (d, m) = (f16_le(self.d), f16_le(self.m));
        let (lo, hi) = out[..QK4_0].split_at_mut(QK4_0 / 2);
        for j in 0..QK4_0 / 2 {
            let (x0, x1) = q5_values(self.qh, &self.qs, j);
            lo[j] = x0 as f32 * d + m;
            hi[j] = x1 as f32 * d + m;
        }
    }
}

impl BlockFormat for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const ELEMS: usize = QK8_0;
    #[inline]
    fn is_finite(&self) -> bool {
        finite_f16(self.d)
    }
    #[inline(always)]
    fn decode(&self, out: &mut [f32]) {
        let d = f16_le(self.d);
        for (o, &q) in out[..QK8_0].iter_mut().zip(&self.qs) {
            *o = q as f32 * d;
        }
    }

    #[inline(always)]
    fn dot_acc(&self, x: &[f32], acc: &mut [f32; LANES]) {
        // d · Σ q·x: accumulate q·x per lane, then scale once per block.
        let d = f16_le(self.d);
        let mut s = [0f32; LANES];
        for h in 0..2 {
            for i in 0..LANES {
                s[i] = (self.qs[16 * h + i] as f32).mul_add(x[16 * h + i], s[i]);
            }
        }
        for i in 0..LANES {
            acc[i] = s[i].mul_add(d, acc[i]);
        }
    }
}
