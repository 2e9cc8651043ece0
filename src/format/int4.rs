//! burn-quant's own 4-bit group format, the on-device layout GPTQ and AWQ checkpoints are
//! repacked into at load time: row-major like ggml's blocks (one block = one quantization group
//! of one output row), so the same block machinery (decode, fused dot, tiles) serves them.
//!
//! Block `I4_<G>` holds `G` weights: `x = d · (q − z)` with `d` an f16 scale, `z` a u8 zero
//! (0..=16) and `q` 4-bit codes; byte `j` of `qs` holds weight `j` (low nibble) and weight
//! `j + G/2` (high nibble), the Q4_0 order. `d · (q − z)` is exact in f32, so decoding is
//! bit-exact with AutoGPTQ's and AutoAWQ's f32 dequantization.

use super::{BlockFormat, GgmlType, finite_f16, LANES, f16_le, fma_lanes};

macro_rules! int4_block {
    ($name:ident, $kind:ident, $g:expr) => {
        #[doc = concat!("A group of ", stringify!($g), " 4-bit weights with an f16 scale and a u8 zero.")]
        #[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
        #[repr(C)]
        pub struct $name {
            /// Scale (f16).
            pub d: [u8; 2],
            /// Zero point, `0..=16`.
            pub z: u8,
            /// Padding (0), keeping blocks 4-byte sized.
            pub pad: u8,
            /// Codes: byte `j` = weight `j` (low nibble) | weight `j + G/2` (high nibble).
            pub qs: [u8; $g / 2],
        }
        const _: () = assert!(std::mem::size_of::<$name>() == 4 + $g / 2, "wrong int4 block size/padding");

        impl BlockFormat for $name {
            const TYPE: GgmlType = GgmlType::$kind;
            const ELEMS: usize = $g;
            #[inline]
            fn is_finite(&self) -> bool {
                finite_f16(self.d)
            }

            #[inline(always)]
            fn decode(&self, out: &mut [f32]) {
                let d = f16_le(self.d);
                let z = self.z as i32;
                for (j, &b) in self.qs.iter().enumerate() {
                    out[j] = d * ((b & 0x0F) as i32 - z) as f32;
                    out[j + $g / 2] = d * ((b >> 4) as i32 - z) as f32;
                }
            }

            #[inline(always)]
            fn dot_acc(&self, x: &[f32], acc: &mut [f32; LANES]) {
                let d = f16_le(self.d);
                let z = self.z as i32;
                let mut lo = [0f32; LANES];
                let mut hi = [0f32; LANES];
                for (c, qs) in self.qs.chunks_exact(LANES).enumerate() {
                    for i in 0..LANES {
                        lo[i] = d * ((qs[i] & 0x0F) as i32 - z) as f32;
                        hi[i] = d * ((qs[i] >> 4) as i32 - z) as f32;
                    }
                    fma_lanes(acc, &lo, &x[c * LANES..]);
                    fma_lanes(acc, &hi, &x[$g / 2 + c * LANES..]);
                }
            }
        }

        impl $name {
            /// Encodes `codes` (`G` values in `0..16`) with scale `d` and zero `z`.
            pub fn encode(d: half::f16, z: u8, codes: &[u8]) -> Self {
                let mut qs = [0u8; $g / 2];
                for (j, q) in qs.iter_mut().enumerate() {
                    *q = (codes[j] & 0x0F) | (codes[j + $g / 2] << 4);
                }
                Self { d: d.to_le_bytes(), z, pad: 0, qs }
            }
        }
    };
}

int4_block!(BlockI4_32, I4_32, 32);
int4_block!(BlockI4_64, I4_64, 64);
int4_block!(BlockI4_128, I4_128, 128);

/// The int4 block type for groups of `group` weights: the largest of 128, 64, 32 dividing it
/// (a group larger than a block repeats its scale and zero in each block). `None` if 32 does not
/// divide `group`.
pub fn block_for_group(group: usize) -> Option<GgmlType> {
    [(128, GgmlType::I4_128), (64, GgmlType::I4_64), (32, GgmlType::I4_32)]
        .into_iter()
        .find(|(b, _)| group.is_multiple_of(*b) && group > 0)
        .map(|(_, t)| t)
}

/// Unpacked 4-bit weights `[out, in]` with per-group scales and zeros, the common form GPTQ and
/// AWQ checkpoints are read into before repacking.
#[derive(Clone, Debug, PartialEq)]
pub struct Int4Matrix {
    /// Output features (rows).
    pub out_features: usize,
    /// Input features (columns).
    pub in_features: usize,
    /// Columns per quantization group (contiguous in `codes`' column order).
    pub group: usize,
    /// Codes `[out][in]`, each `0..16`.
    pub codes: Vec<u8>,
    /// Scales `[out][in / group]`.
    pub scales: Vec<half::f16>,
    /// Zeros `[out][in / group]`, each `0..=16`.
    pub zeros: Vec<u8>,
}

impl Int4Matrix {
    /// Repacks into int4 blocks: `(block type, bytes)` of `out` rows of `in` columns.
    pub fn to_blocks(&self) -> crate::Result<(GgmlType, Vec<u8>)> {
        let kind = block_for_group(self.group).ok_or_else(|| {
            crate::Error::Invalid(format!("group size {} is not a multiple of 32", self.group))
        })?;
        struct Pack<'a>(&'a Int4Matrix);
        impl super::FormatVisitor for Pack<'_> {
            type Output = Vec<u8>;
            fn visit<F: BlockFormat>(self) -> Vec<u8> {
                let m = self.0;
                let groups = m.in_features / m.group;
                let mut out = Vec::with_capacity(m.out_features * m.in_features / F::ELEMS * F::BYTES);
                for n in 0..m.out_features {
                    let row = &m.codes[n * m.in_features..(n + 1) * m.in_features];
                    for (b, codes) in row.chunks_exact(F::ELEMS).enumerate() {
                        let g = n * groups + b * F::ELEMS / m.group;
                        let block = match F::ELEMS {
                            32 => bytemuck::bytes_of(&BlockI4_32::encode(m.scales[g], m.zeros[g], codes)).to_vec(),
                            64 => bytemuck::bytes_of(&BlockI4_64::encode(m.scales[g], m.zeros[g], codes)).to_vec(),
                            _ => bytemuck::bytes_of(&BlockI4_128::encode(m.scales[g], m.zeros[g], codes)).to_vec(),
                        };
                        out.extend_from_slice(&block);
                    }
                }
                out
            }
        }
        Ok((kind, kind.visit(Pack(self))?))
    }
}
