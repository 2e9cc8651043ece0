//! Dequantization of weight rows picked by id to f32 (embedding lookup, `QuantLinear::dequantize`).
//! One thread per output element.

use cubecl::prelude::*;

use super::decode::elem;

/// `out[t, c] = W[ids[t], c]` for the part starting at byte `off` whose first global row is
/// `first`; ids outside `first..first + rows` are skipped (another part writes them).
#[cube(launch_unchecked)]
pub fn dequant_ids(
    w: &[u32],
    ids: &[u32],
    out: &mut [f32],
    off: u32,
    first: u32,
    rows: u32,
    n: u32,
    k: u32,
    row_bytes: u32,
    #[comptime] kind: u32,
    #[comptime] elems: u32,
    #[comptime] bytes: u32,
) {
    let pos = ABSOLUTE_POS;
    if pos >= (n * k) as usize {
        terminate!();
    }
    let p = pos as u32;
    let t = p / k;
    let c = p % k;
    let id = ids[t as usize];
    if id >= first && id < first + rows {
        let blk = off + (id - first) * row_bytes + (c / elems) * bytes;
        out[pos] = elem(w, blk, c % elems, kind);
    }
}
