//! AutoAWQ's GEMM checkpoint layout and its conversion to [`Int4Matrix`].
//!
//! - `qweight` i32 `[in, out/8]` packed along the output dimension in the order
//!   `[0, 2, 4, 6, 1, 3, 5, 7]`: nibble `i` of `qweight[k, c]` holds column `8c + ORDER[i]`
//! - `qzeros` i32 `[groups, out/8]`, same packing, zeros stored as is
//! - `scales` f16 `[groups, out]`; `W[n, k] = scales[k/g, n] · (q[k, n] − z[k/g, n])`

use half::f16;

use super::int4::Int4Matrix;
use crate::error::{Error, Result};

/// Nibble holding column `8c + j` of a packed word: the inverse of AWQ's `[0, 2, 4, 6, 1, 3, 5, 7]`.
pub const NIBBLE_OF_COLUMN: [u32; 8] = [0, 4, 1, 5, 2, 6, 3, 7];

/// One AWQ GEMM linear as stored.
#[derive(Clone, Copy, Debug)]
pub struct AwqTensors<'a> {
    /// `[in, out/8]` packed codes.
    pub qweight: &'a [i32],
    /// `[groups, out/8]` packed zeros.
    pub qzeros: &'a [i32],
    /// `[groups, out]` scales.
    pub scales: &'a [f16],
}

fn nibble(word: i32, col: usize) -> u8 {
    ((word as u32 >> (4 * NIBBLE_OF_COLUMN[col % 8])) & 0xF) as u8
}

/// Unpacks a 4-bit AWQ GEMM linear of `out × in` with groups of `group` (`in` for −1).
pub fn unpack(t: AwqTensors<'_>, out: usize, inp: usize, group: usize) -> Result<Int4Matrix> {
    if out == 0 || inp == 0 {
        return Err(Error::Shape(format!("AWQ linear of {out} x {inp} is empty")));
    }
    if group == 0 || !inp.is_multiple_of(group) {
        return Err(Error::Shape(format!("group size {group} does not divide in_features {inp}")));
    }
    if !out.is_multiple_of(8) {
        return Err(Error::Shape(format!("AWQ 4-bit needs out ({out}) to be a multiple of 8")));
    }
    let groups = inp / group;
    let check = |what: &str, got: usize, want: usize| {
        if got == want { Ok(()) } else { Err(Error::Shape(format!("AWQ {what} has {got} values, expected {want}"))) }
    };
    check("qweight", t.qweight.len(), inp * out / 8)?;
    check("qzeros", t.qzeros.len(), groups * out / 8)?;
    check("scales", t.scales.len(), groups * out)?;
    let mut codes = vec![0u8; out * inp];
    for k in 0..inp {
        let words = &t.qweight[k * out / 8..(k + 1) * out / 8];
        for n in 0..out {
            codes[n * inp + k] = nibble(words[n / 8], n);
        }
    }
    let mut scales = vec![f16::ZERO; out * groups];
    let mut zeros = vec![0u8; out * groups];
    for g in 0..groups {
        for n in 0..out {
            scales[n * groups + g] = t.scales[g * out + n];
            zeros[n * groups + g] = nibble(t.qzeros[g * out / 8 + n / 8], n);
        }
    }
    Ok(Int4Matrix { out_features: out, in_features: inp, group, codes, scales, zeros })
}
