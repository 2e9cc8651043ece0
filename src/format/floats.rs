//! Unquantized element types (F32, F16, BF16), as one-element "blocks" so they share the
//! [`BlockFormat`] machinery with the quantized types.

use super::{BlockFormat, GgmlType, finite_f16};

/// One little-endian f32.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockF32(pub [u8; 4]);
const _: () = assert!(std::mem::size_of::<BlockF32>() == 4, "wrong f32 block size");

/// One little-endian IEEE half.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockF16(pub [u8; 2]);
const _: () = assert!(std::mem::size_of::<BlockF16>() == 2, "wrong f16 block size");

/// One little-endian bfloat16 (the top half of an f32).
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockBF16(pub [u8; 2]);
const _: () = assert!(std::mem::size_of::<BlockBF16>() == 2, "wrong bf16 block size");

impl BlockFormat for BlockF32 {
    const TYPE: GgmlType = GgmlType::F32;
    const ELEMS: usize = 1;
    #[inline]
    fn is_finite(&self) -> bool {
        f32::from_le_bytes(self.0).is_finite()
    }
    #[inline(always)]
    fn decode(&self, out: &mut [f32]) {
        out[0] = f32::from_le_bytes(self.0);
    }
}

impl BlockFormat for BlockF16 {
    const TYPE: GgmlType = GgmlType::F16;
    const ELEMS: usize = 1;
    #[inline]
    fn is_finite(&self) -> bool {
        finite_f16(self.0)
    }
    #[inline(always)]
    fn decode(&self, out: &mut [f32]) {
        out[0] = super::f16_le(self.0);
    }
}

impl BlockFormat for BlockBF16 {
    const TYPE: GgmlType = GgmlType::BF16;
    const ELEMS: usize = 1;
    #[inline]
    fn is_finite(&self) -> bool {
        half::bf16::from_le_bytes(self.0).is_finite()
    }
    #[inline(always)]
    fn decode(&self, out: &mut [f32]) {
        out[0] = f32::from_bits((u16::from_le_bytes(self.0) as u32) << 16);
    }
}
