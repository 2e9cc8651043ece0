//! AutoGPTQ's 4-bit checkpoint layout ("gptq" format v1, and v2) and its conversion to
//! [`Int4Matrix`], with act-order (`desc_act`) handled by a one-time column reorder.
//!
//! - `qweight` i32 `[in/8, out]`: `q[k, n] = (qweight[k/8, n] >> 4·(k%8)) & 0xF`
//! - `qzeros` i32 `[groups, out/8]`: `z[g, n] = ((qzeros[g, n/8] >> 4·(n%8)) & 0xF) + 1` in v1
//!   (it stores zero − 1), `+ 0` in v2
//! - `scales` f16 `[groups, out]`, `g_idx` i32 `[in]` (group of each input channel)
//! - `W[n, k] = scales[g_idx[k], n] · (q[k, n] − z[g_idx[k], n])`

use half::f16;

use super::int4::Int4Matrix;
use crate::error::{Error, Result};

/// Which zero convention a GPTQ checkpoint uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GptqZeros {
    /// AutoGPTQ v1 ("gptq"): the stored value is zero − 1.
    V1,
    /// "gptq_v2": the stored value is the zero.
    V2,
}

/// One GPTQ linear as stored (the tensors' values, already read as numbers).
#[derive(Clone, Copy, Debug)]
pub struct GptqTensors<'a> {
    /// `[in/8, out]` packed codes.
    pub qweight: &'a [i32],
    /// `[groups, out/8]` packed zeros.
    pub qzeros: &'a [i32],
    /// `[groups, out]` scales.
    pub scales: &'a [f16],
    /// `[in]` group index per input channel; `None` means `k / group`.
    pub g_idx: Option<&'a [i32]>,
}

/// A GPTQ linear unpacked: the weight with its columns in group order, and the input permutation
/// (`x'[j] = x[perm[j]]`) when act-order shuffled them (`None` when the order is unchanged).
#[derive(Clone, Debug, PartialEq)]
pub struct Unpacked {
    /// The weight, columns reordered so every group is contiguous.
    pub matrix: Int4Matrix,
    /// Input column permutation, if any.
    pub perm: Option<Vec<u32>>,
}

/// Unpacks a 4-bit GPTQ linear of `out × in` with groups of `group` (`in` for group size −1).
pub fn unpack(t: GptqTensors<'_>, out: usize, inp: usize, group: usize, zeros: GptqZeros) -> Result<Unpacked> {
    if out == 0 || inp == 0 {
        return Err(Error::Shape(format!("GPTQ linear of {out} x {inp} is empty")));
    }
    if group == 0 || !inp.is_multiple_of(group) {
        return Err(Error::Shape(format!("group size {group} does not divide in_features {inp}")));
    }
    if !inp.is_multiple_of(8) || !out.is_multiple_of(8) {
        return Err(Error::Shape(format!("GPTQ 4-bit needs in ({inp}) and out ({out}) to be multiples of 8")));
    }
    let groups = inp / group;
    let check = |what: &str, got: usize, want: usize| {
        if got == want { Ok(()) } else { Err(Error::Shape(format!("GPTQ {what} has {got} values, expected {want}"))) }
    };
    check("qweight", t.qweight.len(), inp / 8 * out)?;
    check("qzeros", t.qzeros.len(), groups * out / 8)?;
    check("scales", t.scales.len(), groups * out)?;
    let g_idx: Vec<usize> = match t.g_idx {
        Some(g) => {
            check("g_idx", g.len(), inp)?;
            g.iter()
                .enumerate()
                .map(|(k, &v)| {
                    usize::try_from(v).ok().filter(|&v| v < groups).ok_or_else(|| {
                        Error::Invalid(format!("GPTQ g_idx[{k}] = {v} is out of range for {groups} groups"))
                    })
                })
                .collect::<Result<_>>()?
        }
        None => (0..inp).map(|k| k / group).collect(),
    };
    // Columns in group order (stable, so a trivial g_idx keeps the identity).
    let mut perm: Vec<usize> = (0..inp).collect();
    perm.sort_by_key(|&k| g_idx[k]);
    for (j, &k) in perm.iter().enumerate() {
        if g_idx[k] != j / group {
            return Err(Error::Invalid(format!(
                "GPTQ g_idx gives group {} a number of channels other than {group}",
                g_idx[k].min(j / group)
            )));
        }
    }
    let identity = perm.iter().enumerate().all(|(j, &k)| j == k);
    let zero_add = match zeros {
        GptqZeros::V1 => 1,
        GptqZeros::V2 => 0,
    };
    let mut codes = vec![0u8; out * inp];
    for (j, &k) in perm.iter().enumerate() {
        let words = &t.qweight[(k / 8) * out..(k / 8 + 1) * out];
        let shift = 4 * (k % 8);
        for (n, &w) in words.iter().enumerate() {
            codes[n * inp + j] = ((w as u32 >> shift) & 0xF) as u8;
        }
    }
    let mut scales = vec![f16::ZERO; out * groups];
    let mut zs = vec![0u8; out * groups];
    for g in 0..groups {
        for n in 0..out {
            scales[n * groups + g] = t.scales[g * out + n];
            let word = t.qzeros[g * (out / 8) + n / 8] as u32;
            zs[n * groups + g] = ((word >> (4 * (n % 8))) & 0xF) as u8 + zero_add;
        }
    }
    let matrix = Int4Matrix { out_features: out, in_features: inp, group, codes, scales, zeros: zs };
    Ok(Unpacked { matrix, perm: (!identity).then(|| perm.iter().map(|&k| k as u32).collect()) })
}
