//! Byte layouts of the GGUF tensor types and their CPU reference decode (and, for some, encode).
//!
//! Every block layout is defined exactly once, as a `#[repr(C)]` struct of bytes (alignment 1, so
//! any byte slice of the right length can be viewed as blocks) with its size asserted at compile
//! time against ggml's formula. [`BlockFormat`] is the one trait all of them implement;
//! [`GgmlType::visit`] is the one place that maps a runtime type id onto a block type.
//!
//! This module holds no Burn types.

pub mod act_q8k;
mod floats;
pub mod awq;
pub mod gptq;
pub mod int4;
mod kquants;
mod legacy;
pub mod quantize;

pub use floats::{BlockBF16, BlockF16, BlockF32};
pub use int4::{BlockI4_32, BlockI4_64, BlockI4_128, Int4Matrix};
pub use kquants::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ6Kx4, Q6KFields, QK_K, regroup_q6k, scale_min_k4, scales_mins_k4};
pub use legacy::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, QK4_0, QK8_0};

use crate::error::{Error, Result};

/// A ggml tensor type, with the numeric id GGUF stores.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GgmlType {
    /// 32-bit float.
    F32 = 0,
    /// IEEE half.
    F16 = 1,
    /// 4-bit, one f16 scale per 32.
    Q4_0 = 2,
    /// 4-bit, f16 scale and min per 32.
    Q4_1 = 3,
    /// 5-bit, one f16 scale per 32.
    Q5_0 = 6,
    /// 5-bit, f16 scale and min per 32.
    Q5_1 = 7,
    /// 8-bit, one f16 scale per 32.
    Q8_0 = 8,
    /// 8-bit with a precomputed sum (activation type; not decoded here).
    Q8_1 = 9,
    /// 2-bit k-quant.
    Q2_K = 10,
    /// 3-bit k-quant.
    Q3_K = 11,
    /// 4-bit k-quant.
    Q4_K = 12,
    /// 5-bit k-quant.
    Q5_K = 13,
    /// 6-bit k-quant.
    Q6_K = 14,
    /// 8-bit k-quant (activation type; not decoded here).
    Q8_K = 15,
    /// i-quant (not decoded here).
    IQ2_XXS = 16,
    /// i-quant (not decoded here).
    IQ2_XS = 17,
    /// i-quant (not decoded here).
    IQ3_XXS = 18,
    /// i-quant (not decoded here).
    IQ1_S = 19,
    /// i-quant (not decoded here).
    IQ4_NL = 20,
    /// i-quant (not decoded here).
    IQ3_S = 21,
    /// i-quant (not decoded here).
    IQ2_S = 22,
    /// i-quant (not decoded here).
    IQ4_XS = 23,
    /// 8-bit integer.
    I8 = 24,
    /// 16-bit integer.
    I16 = 25,
    /// 32-bit integer.
    I32 = 26,
    /// 64-bit integer.
    I64 = 27,
    /// 64-bit float.
    F64 = 28,
    /// i-quant (not decoded here).
    IQ1_M = 29,
    /// bfloat16.
    BF16 = 30,
    /// ternary (not decoded here).
    TQ1_0 = 34,
    /// ternary (not decoded here).
    TQ2_0 = 35,
    /// microscaling fp4 (not decoded here).
    MXFP4 = 39,
    /// burn-quant's 4-bit groups of 32 (GPTQ/AWQ repacked; never in a GGUF file).
    I4_32 = INTERNAL | 32,
    /// burn-quant's 4-bit groups of 64 (GPTQ/AWQ repacked; never in a GGUF file).
    I4_64 = INTERNAL | 64,
    /// burn-quant's 4-bit groups of 128 (GPTQ/AWQ repacked; never in a GGUF file).
    I4_128 = INTERNAL | 128,
    /// burn-quant's Q6_K with four blocks' fields side by side ([`BlockQ6Kx4`]; never in a GGUF file).
    Q6_Kx4 = INTERNAL | 0x1000 | 14,
}

/// Ids at or above this are burn-quant's own layouts, which a GGUF file cannot name.
const INTERNAL: u32 = 1 << 16;

/// Every type, with its name, elements per block and bytes per block: the one table of ids.
const TYPES: &[(GgmlType, &str, usize, usize)] = &[
    (GgmlType::F32, "F32", 1, 4),
    (GgmlType::F16, "F16", 1, 2),
    (GgmlType::Q4_0, "Q4_0", 32, 18),
    (GgmlType::Q4_1, "Q4_1", 32, 20),
    (GgmlType::Q5_0, "Q5_0", 32, 22),
    (GgmlType::Q5_1, "Q5_1", 32, 24),
    (GgmlType::Q8_0, "Q8_0", 32, 34),
    (GgmlType::Q8_1, "Q8_1", 32, 36),
    (GgmlType::Q2_K, "Q2_K", 256, 84),
    (GgmlType::Q3_K, "Q3_K", 256, 110),
    (GgmlType::Q4_K, "Q4_K", 256, 144),
    (GgmlType::Q5_K, "Q5_K", 256, 176),
    (GgmlType::Q6_K, "Q6_K", 256, 210),
    (GgmlType::Q8_K, "Q8_K", 256, 292),
    (GgmlType::IQ2_XXS, "IQ2_XXS", 256, 66),
    (GgmlType::IQ2_XS, "IQ2_XS", 256, 74),
    (GgmlType::IQ3_XXS, "IQ3_XXS", 256, 98),
    (GgmlType::IQ1_S, "IQ1_S", 256, 50),
    (GgmlType::IQ4_NL, "IQ4_NL", 32, 18),
    (GgmlType::IQ3_S, "IQ3_S", 256, 110),
    (GgmlType::IQ2_S, "IQ2_S", 256, 82),
    (GgmlType::IQ4_XS, "IQ4_XS", 256, 136),
    (GgmlType::I8, "I8", 1, 1),
    (GgmlType::I16, "I16", 1, 2),
    (GgmlType::I32, "I32", 1, 4),
    (GgmlType::I64, "I64", 1, 8),
    (GgmlType::F64, "F64", 1, 8),
    (GgmlType::IQ1_M, "IQ1_M", 256, 56),
    (GgmlType::BF16, "BF16", 1, 2),
    (GgmlType::TQ1_0, "TQ1_0", 256, 54),
    (GgmlType::TQ2_0, "TQ2_0", 256, 66),
    (GgmlType::MXFP4, "MXFP4", 32, 17),
    (GgmlType::I4_32, "I4_32", 32, 20),
    (GgmlType::I4_64, "I4_64", 64, 36),
    (GgmlType::I4_128, "I4_128", 128, 68),
    (GgmlType::Q6_Kx4, "Q6_Kx4", 1024, 840),
];

impl GgmlType {
    fn entry(self) -> &'static (GgmlType, &'static str, usize, usize) {
        // Every variant is in TYPES (checked by a unit test), so the fallback is never taken.
        TYPES.iter().find(|e| e.0 == self).unwrap_or(&TYPES[0])
    }

    /// The type for a GGUF type id (burn-quant's internal layouts are not GGUF types).
    pub fn from_id(id: u32) -> Result<Self> {
        TYPES.iter().find(|e| e.0 as u32 == id && id < INTERNAL).map(|e| e.0).ok_or(Error::UnknownType(id))
    }

    /// Every type this crate names (ggml's and its own int4 layouts), supported or not.
    pub fn all() -> impl Iterator<Item = GgmlType> {
        TYPES.iter().map(|e| e.0)
    }

    /// Whether this is one of burn-quant's own layouts (not a ggml type).
    pub fn is_internal(self) -> bool {
        self as u32 >= INTERNAL
    }

    /// The group size of burn-quant's int4 layouts (`I4_<G>`), `None` for every other type.
    pub fn int4_group(self) -> Option<usize> {
        matches!(self, GgmlType::I4_32 | GgmlType::I4_64 | GgmlType::I4_128).then(|| self.block_elems())
    }

    /// The type rows of `cols` elements of `self` are stored in on every backend: Q6_K rows of a
    /// multiple of 1024 are regrouped into [`GgmlType::Q6_Kx4`] (same bytes, aligned fields for
    /// the GPU kernels; see [`regroup`]); every other type is stored as it comes.
    pub fn stored_form(self, cols: usize) -> GgmlType {
        if self == GgmlType::Q6_K && cols.is_multiple_of(GgmlType::Q6_Kx4.block_elems()) { GgmlType::Q6_Kx4 } else { self }
    }

    /// The type for a name such as `"Q4_K"` (case-insensitive).
    pub fn from_name(name: &str) -> Result<Self> {
        TYPES
            .iter()
            .find(|e| e.1.eq_ignore_ascii_case(name))
            .map(|e| e.0)
            .ok_or_else(|| Error::Invalid(format!("unknown ggml type name {name:?}")))
    }

    /// The GGUF type id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// ggml's name, e.g. `"Q4_K"`.
    pub fn name(self) -> &'static str {
        self.entry().1
    }

    /// Elements per block.
    pub fn block_elems(self) -> usize {
        self.entry().2
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        self.entry().3
    }

    /// Whether this crate can decode (and multiply by) this type.
    pub fn is_supported(self) -> bool {
        struct Yes;
        impl FormatVisitor for Yes {
            type Output = ();
            fn visit<F: BlockFormat>(self) {}
        }
        self.visit(Yes).is_ok()
    }

    /// Bytes of one row of `cols` elements; an error if `cols` is not whole blocks.
    pub fn row_bytes(self, cols: usize) -> Result<usize> {
        let block = self.block_elems();
        if !cols.is_multiple_of(block) {
            return Err(Error::NotBlockAligned { kind: self, cols, block });
        }
        (cols / block)
            .checked_mul(self.block_bytes())
            .ok_or_else(|| Error::Overflow(format!("{cols} columns of {self}")))
    }

    /// Bytes of a `rows` × `cols` matrix.
    pub fn matrix_bytes(self, rows: usize, cols: usize) -> Result<usize> {
        self.row_bytes(cols)?
            .checked_mul(rows)
            .ok_or_else(|| Error::Overflow(format!("{rows} rows of {cols} {self}")))
    }

    /// Calls `visitor.visit::<Block>()` with the block type of `self`: the one runtime → static
    /// dispatch point for formats. Types without a decoder give [`Error::UnsupportedType`].
    pub fn visit<V: FormatVisitor>(self, visitor: V) -> Result<V::Output> {
        Ok(match self {
            GgmlType::F32 => visitor.visit::<BlockF32>(),
            GgmlType::F16 => visitor.visit::<BlockF16>(),
            GgmlType::BF16 => visitor.visit::<BlockBF16>(),
            GgmlType::Q4_0 => visitor.visit::<BlockQ4_0>(),
            GgmlType::Q4_1 => visitor.visit::<BlockQ4_1>(),
            GgmlType::Q5_0 => visitor.visit::<BlockQ5_0>(),
            GgmlType::Q5_1 => visitor.visit::<BlockQ5_1>(),
            GgmlType::Q8_0 => visitor.visit::<BlockQ8_0>(),
            GgmlType::Q2_K => visitor.visit::<BlockQ2K>(),
            GgmlType::Q3_K => visitor.visit::<BlockQ3K>(),
            GgmlType::Q4_K => visitor.visit::<BlockQ4K>(),
            GgmlType::Q5_K => visitor.visit::<BlockQ5K>(),
            GgmlType::Q6_K => visitor.visit::<BlockQ6K>(),
            GgmlType::I4_32 => visitor.visit::<BlockI4_32>(),
            GgmlType::I4_64 => visitor.visit::<BlockI4_64>(),
            GgmlType::I4_128 => visitor.visit::<BlockI4_128>(),
            GgmlType::Q6_Kx4 => visitor.visit::<BlockQ6Kx4>(),
            other => return Err(Error::UnsupportedType(other)),
        })
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One block of a ggml format: a plain byte struct (alignment 1) that decodes to `ELEMS` floats.
pub trait BlockFormat: bytemuck::Pod + Send + Sync + 'static {
    /// The ggml type of this block.
    const TYPE: GgmlType;
    /// Elements per block.
    const ELEMS: usize;
    /// Bytes per block (the struct's size).
    const BYTES: usize = std::mem::size_of::<Self>();

    /// Decodes this block into `out[..ELEMS]`, evaluating ggml's formula in f32 in ggml's order,
    /// so the result is bit-identical to `dequantize_row_*`.
    fn decode(&self, out: &mut [f32]);

    /// Whether every float this block stores (scales, mins, or the value itself) is finite. A
    /// NaN or infinite scale would poison every product with its block, so layers reject them
    /// at load (as llama.cpp's `ggml_validate_row_data` does).
    fn is_finite(&self) -> bool;

    /// Whether [`dot_acc`](BlockFormat::dot_acc) is worth calling per block (false for the
    /// one-element float "blocks", which are better decoded in runs).
    const FUSED_DOT: bool = Self::ELEMS >= 32;

    /// Accumulates `w_i · x_i` over this block into 16 lanes (`acc[i % 16]`), `x` holding at
    /// least `ELEMS` values. The default decodes to a stack buffer; the hot formats override it
    /// to decode straight into registers (each 16-weight group shares one scale). The sum equals
    /// the decoded dot product up to f32 rounding (fused multiply-adds).
    #[inline(always)]
    fn dot_acc(&self, x: &[f32], acc: &mut [f32; LANES]) {
        let mut w = [0f32; 256];
        let w = &mut w[..Self::ELEMS];
        self.decode(w);
        for (wc, xc) in w.chunks_exact(LANES).zip(x.chunks_exact(LANES)) {
            fma_lanes(acc, wc, xc);
        }
    }
}

/// SIMD width of the dot accumulators (one AVX-512 register of f32).
pub const LANES: usize = 16;

/// `acc[i] += w[i] · x[i]` for 16 lanes (compiles to one vector FMA where available).
#[inline(always)]
pub fn fma_lanes(acc: &mut [f32; LANES], w: &[f32], x: &[f32]) {
    let (w, x) = (&w[..LANES], &x[..LANES]);
    for i in 0..LANES {
        acc[i] = w[i].mul_add(x[i], acc[i]);
    }
}

/// A generic operation over block formats, run by [`GgmlType::visit`].
pub trait FormatVisitor {
    /// What the operation returns.
    type Output;
    /// Runs the operation for block type `F`.
    fn visit<F: BlockFormat>(self) -> Self::Output;
}

/// Views `bytes` as blocks of `F`; an error if the length is not whole blocks.
pub fn as_blocks<F: BlockFormat>(bytes: &[u8]) -> Result<&[F]> {
    bytemuck::try_cast_slice(bytes).map_err(|_| Error::ByteLength {
        what: format!("{} blocks", F::TYPE),
        expected: bytes.len() / F::BYTES * F::BYTES,
        got: bytes.len(),
    })
}

/// Decodes `rows` rows of `cols` elements of type `kind` from `bytes` into a row-major f32 vector.
pub fn dequantize(kind: GgmlType, bytes: &[u8], rows: usize, cols: usize) -> Result<Vec<f32>> {
    let expected = kind.matrix_bytes(rows, cols)?;
    if bytes.len() != expected {
        return Err(Error::ByteLength { what: format!("{rows}x{cols} {kind}"), expected, got: bytes.len() });
    }
    let elems = rows.checked_mul(cols).ok_or_else(|| Error::Overflow(format!("{rows}x{cols} elements")))?;
    let mut out = vec![0f32; elems];
    struct Decode<'a>(&'a [u8], &'a mut [f32]);
    impl FormatVisitor for Decode<'_> {
        type Output = Result<()>;
        fn visit<F: BlockFormat>(self) -> Result<()> {
            let blocks = as_blocks::<F>(self.0)?;
            for (b, o) in blocks.iter().zip(self.1.chunks_exact_mut(F::ELEMS)) {
                b.decode(o);
            }
            Ok(())
        }
    }
    kind.visit(Decode(bytes, &mut out))??;
    Ok(out)
}

/// Rewrites `bytes` of type `from` in place into its [`stored_form`](GgmlType::stored_form)
/// `to` (a no-op when they are the same type).
pub fn regroup(from: GgmlType, to: GgmlType, bytes: &mut [u8]) -> Result<()> {
    match (from, to) {
        (a, b) if a == b => Ok(()),
        (GgmlType::Q6_K, GgmlType::Q6_Kx4) => regroup_q6k(bytes),
        _ => Err(Error::Invalid(format!("no regrouping of {from} into {to}"))),
    }
}

/// Whether a little-endian IEEE half is finite.
#[inline(always)]
pub fn finite_f16(b: [u8; 2]) -> bool {
    half::f16::from_le_bytes(b).is_finite()
}

/// Checks that every block of a `kind` buffer stores only finite floats; the error names the
/// first bad block (row `block / blocks_per_row` of a matrix of `cols` columns).
pub fn validate(kind: GgmlType, bytes: &[u8], cols: usize) -> Result<()> {
    struct Check<'a>(&'a [u8]);
    impl FormatVisitor for Check<'_> {
        type Output = Result<Option<usize>>;
        fn visit<F: BlockFormat>(self) -> Result<Option<usize>> {
            Ok(as_blocks::<F>(self.0)?.iter().position(|b| !b.is_finite()))
        }
    }
    if let Some(block) = kind.visit(Check(bytes))?? {
        let per_row = (cols / kind.block_elems()).max(1);
        return Err(Error::NonFinite { kind, row: block / per_row, column: block % per_row * kind.block_elems() });
    }
    Ok(())
}

/// Reads a little-endian IEEE half stored as two bytes.
#[inline(always)]
pub fn f16_le(b: [u8; 2]) -> f32 {
    half::f16::from_le_bytes(b).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips_through_its_id_and_name() {
        for &(t, name, elems, bytes) in TYPES {
            if t.is_internal() {
                assert!(GgmlType::from_id(t.id()).is_err(), "{t} must not be readable from a file");
            } else {
                assert_eq!(GgmlType::from_id(t.id()).unwrap(), t);
            }
            assert_eq!(GgmlType::from_name(name).unwrap(), t);
            assert_eq!((t.block_elems(), t.block_bytes()), (elems, bytes));
        }
        assert!(matches!(GgmlType::from_id(4), Err(Error::UnknownType(4))));
    }

    #[test]
    fn block_structs_match_the_table() {
        struct Check;
        impl FormatVisitor for Check {
            type Output = ();
            fn visit<F: BlockFormat>(self) {
                assert_eq!(F::BYTES, F::TYPE.block_bytes(), "{}", F::TYPE);
                assert_eq!(F::ELEMS, F::TYPE.block_elems(), "{}", F::TYPE);
            }
        }
        let mut supported = 0;
        for &(t, ..) in TYPES {
            if t.visit(Check).is_ok() {
                supported += 1;
            }
        }
        assert_eq!(supported, 17);
    }

    /// Q6_K rows of a multiple of 1024 are stored as Q6_Kx4, whose decode is the Q6_K blocks'
    /// decode value for value; nothing else is regrouped.
    #[test]
    fn q6k_regroups_into_x4_and_decodes_the_same() {
        assert_eq!(GgmlType::Q6_K.stored_form(2048), GgmlType::Q6_Kx4);
        assert_eq!(GgmlType::Q6_K.stored_form(512), GgmlType::Q6_K);
        assert_eq!(GgmlType::Q4_K.stored_form(2048), GgmlType::Q4_K);
        let src: Vec<f32> = (0..2 * 2048).map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0).collect();
        let plain = quantize::quantize(GgmlType::Q6_K, &src).unwrap();
        let mut x4 = plain.clone();
        regroup(GgmlType::Q6_K, GgmlType::Q6_Kx4, &mut x4).unwrap();
        assert_ne!(x4, plain);
        let a = dequantize(GgmlType::Q6_K, &plain, 2, 2048).unwrap();
        let b = dequantize(GgmlType::Q6_Kx4, &x4, 2, 2048).unwrap();
        assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()));
        assert!(regroup(GgmlType::Q6_K, GgmlType::Q6_Kx4, &mut x4[..839]).is_err());
        assert!(regroup(GgmlType::Q4_K, GgmlType::Q6_Kx4, &mut x4).is_err());
    }

    #[test]
    fn row_bytes_rejects_partial_blocks() {
        assert_eq!(GgmlType::Q4_K.row_bytes(512).unwrap(), 288);
        assert!(matches!(GgmlType::Q4_K.row_bytes(100), Err(Error::NotBlockAligned { .. })));
        assert!(matches!(GgmlType::Q8_0.matrix_bytes(usize::MAX, 64), Err(Error::Overflow(_))));
    }
}
