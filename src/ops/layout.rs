//! [`QuantLayout`]: what the packed weight words of a quantized linear hold.

use crate::error::{Error, Result};
use crate::format::GgmlType;

/// A run of weight rows stored in one GGUF type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QuantPart {
    /// Element type of these rows.
    pub kind: GgmlType,
    /// Number of rows (output features).
    pub rows: usize,
    /// Byte offset of the first row in the packed buffer (a multiple of 4).
    pub byte_offset: usize,
}

/// The layout of a packed quantized weight `[out, in]`: one or more parts stacked along `out`,
/// each with its own type (e.g. q/k in Q4_K and v in Q6_K as one fused projection). Each part
/// starts on a 4-byte boundary so the buffer can be held as u32 words.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct QuantLayout {
    /// Input features (row length in elements).
    pub in_features: usize,
    /// The parts, in output order.
    pub parts: Vec<QuantPart>,
    /// Whether the CPU kernels may round the input to int8 per 256 values (llama.cpp's
    /// arithmetic, [`ActQ8K`](crate::format::act_q8k::ActQ8K)) for integer dot products: opt-in,
    /// off by default; the GPU kernels are f32 either way. Set through
    /// [`QuantLinear::with_int8_input`](crate::QuantLinear::with_int8_input).
    pub int8_input: bool,
}

impl QuantLayout {
    /// Builds a layout for `parts` of `(kind, rows)` with rows of `in_features`; checks that every
    /// row is whole blocks and that sizes do not overflow.
    pub fn new(in_features: usize, parts: &[(GgmlType, usize)]) -> Result<Self> {
        if in_features == 0 {
            return Err(Error::Shape("in_features must be positive".into()));
        }
        if parts.is_empty() {
            return Err(Error::Shape("a quantized weight needs at least one part".into()));
        }
        let mut offset = 0usize;
        let mut out = Vec::with_capacity(parts.len());
        for &(kind, rows) in parts {
            if !kind.is_supported() {
                return Err(Error::UnsupportedType(kind));
            }
            if rows == 0 {
                return Err(Error::Shape(format!("a {kind} part has zero rows")));
            }
            let bytes = kind.matrix_bytes(rows, in_features)?;
            out.push(QuantPart { kind, rows, byte_offset: offset });
            offset = offset
                .checked_add(bytes)
                .and_then(|o| o.checked_next_multiple_of(4))
                .ok_or_else(|| Error::Overflow("packed weight size".into()))?;
        }
        Ok(Self { in_features, parts: out, int8_input: false })
    }

    /// Output features (rows over all parts).
    pub fn out_features(&self) -> usize {
        self.parts.iter().map(|p| p.rows).sum()
    }

    /// Bytes of one row of `part`.
    pub fn row_bytes(&self, part: &QuantPart) -> usize {
        part.kind.row_bytes(self.in_features).unwrap_or(0)
    }

    /// The parts with each run of adjacent parts of one type (the next starting where the
    /// previous ends, e.g. the Q4_K q and k of a fused q/k/v) merged into one, so that a kernel
    /// covers the run in one launch.
    pub fn merged_parts(&self) -> Vec<QuantPart> {
        let mut out: Vec<QuantPart> = Vec::with_capacity(self.parts.len());
        for p in &self.parts {
            match out.last_mut() {
                Some(last) if last.kind == p.kind && last.byte_offset + last.rows * self.row_bytes(last) == p.byte_offset => last.rows += p.rows,
                _ => out.push(*p),
            }
        }
        out
    }

    /// Total bytes of the packed buffer, padded to whole u32 words.
    pub fn total_bytes(&self) -> usize {
        self.parts
            .last()
            .map(|p| (p.byte_offset + p.rows * self.row_bytes(p)).next_multiple_of(4))
            .unwrap_or(0)
    }

    /// Number of u32 words of the packed buffer.
    pub fn total_words(&self) -> usize {
        self.total_bytes() / 4
    }

    /// The part holding global row `row`, with the row's index inside that part.
    pub fn locate(&self, mut row: usize) -> Option<(&QuantPart, usize)> {
        for p in &self.parts {
            if row < p.rows {
                return Some((p, row));
            }
            row -= p.rows;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// q and k (Q4_K) of a fused q/k/v are one run; v (Q6_K) and a later Q4_K part are not.
    #[test]
    fn adjacent_parts_of_one_type_merge() -> Result<()> {
        let l = QuantLayout::new(256, &[(GgmlType::Q4_K, 16), (GgmlType::Q4_K, 8), (GgmlType::Q6_K, 8), (GgmlType::Q4_K, 4)])?;
        let m = l.merged_parts();
        let rows: Vec<(GgmlType, usize, usize)> = m.iter().map(|p| (p.kind, p.rows, p.byte_offset)).collect();
        assert_eq!(rows, vec![(GgmlType::Q4_K, 24, 0), (GgmlType::Q6_K, 8, 24 * 144), (GgmlType::Q4_K, 4, 24 * 144 + 8 * 210)]);
        assert_eq!(m.iter().map(|p| p.rows).sum::<usize>(), l.out_features());
        Ok(())
    }
}
