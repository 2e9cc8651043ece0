//! Dequantization of weight rows picked by id to f32 (embedding lookup, `QuantLinear::dequantize`),
//! and of a whole weight to a transient f16 copy (the dequantize-then-matmul prefill path).
//! One thread per output element.

use cubecl::prelude::*;
use half::f16;

use super::decode::elem;
use super::matvec_i4::decode_unit_i4;
use super::matvec_q4k::decode_unit;
use super::matvec_q6k::decode_unit as decode_unit_q6k;
use super::matvec_q6kx4::{GROUP_WORDS, decode_lane};

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

/// `out[row0 + j, c] = W[j, c]` as f16 for every row `j < rows` of the part starting at byte
/// `off` (`out` is `[n, k]`): the transient f16 weight of the dequantize-then-matmul prefill path.
#[cube(launch_unchecked)]
pub fn dequant_f16(
    w: &[u32],
    out: &mut [f16],
    off: u32,
    row0: u32,
    rows: u32,
    k: u32,
    row_bytes: u32,
    #[comptime] kind: u32,
    #[comptime] elems: u32,
    #[comptime] bytes: u32,
) {
    let pos = ABSOLUTE_POS;
    if pos >= (rows * k) as usize {
        terminate!();
    }
    let p = pos as u32;
    let j = p / k;
    let c = p % k;
    let blk = off + j * row_bytes + (c / elems) * bytes;
    out[(row0 * k + p) as usize] = f16::cast_from(elem(w, blk, c % elems, kind));
}

/// Writes `wt[o .. o + 4]` as f16 into vector `i` of `out`.
#[cube]
fn store4<N: Size>(out: &mut [Vector<f16, N>], i: u32, wt: &Array<f32>, o: usize) {
    let mut v = Vector::<f16, N>::empty();
    v.insert(0usize, f16::cast_from(wt[o]));
    v.insert(1usize, f16::cast_from(wt[o + 1]));
    v.insert(2usize, f16::cast_from(wt[o + 2]));
    v.insert(3usize, f16::cast_from(wt[o + 3]));
    out[i as usize] = v;
}

/// [`dequant_f16`] for Q4_K, one thread per 16-byte code unit (32 weights): `w` in 16-byte
/// vectors from unit `off`, `out` (`[n, k]`) in 4-wide f16 vectors.
#[cube(launch_unchecked)]
pub fn dequant_q4k_f16<N: Size>(w: &[Vector<u32, N>], out: &mut [Vector<f16, N>], off: u32, row0: u32, rows: u32, k: u32) {
    let pos = ABSOLUTE_POS as u32;
    let blocks = k / 256;
    if pos >= rows * blocks * 8 {
        terminate!();
    }
    let u = pos % 8;
    let b = pos / 8;
    let j = u / 2;
    let mut wt = Array::<f32>::new(32usize);
    decode_unit(w[(off + b * 9) as usize], w[(off + b * 9 + 1 + u) as usize], j, &mut wt, 0usize, false);
    // Block `b` counts over all rows of the part: row `b / blocks`, column block `b % blocks`.
    let e = (row0 * k + b * 256 + 64 * j + 16 * (u % 2)) / 4;
    #[unroll]
    for v in 0..4u32 {
        store4(out, e + v, &wt, (8 * v) as usize);
        store4(out, e + 8 + v, &wt, (8 * v + 4) as usize);
    }
}

/// [`dequant_f16`] for Q6_K, one thread per 16 weights (half `h`, lanes `4c..4c + 4` of a block).
#[cube(launch_unchecked)]
pub fn dequant_q6k_f16<N: Size>(w: &[u32], out: &mut [Vector<f16, N>], off: u32, row0: u32, rows: u32, k: u32, row_bytes: u32) {
    let pos = ABSOLUTE_POS as u32;
    let blocks = k / 256;
    if pos >= rows * blocks * 16 {
        terminate!();
    }
    let unit = pos % 16;
    let b = pos / 16;
    let (row, cb) = (b / blocks, b % blocks);
    let h = unit / 8;
    let c = unit % 8;
    let mut wt = Array::<f32>::new(16usize);
    decode_unit_q6k(w, off + row * row_bytes + cb * 210, h, c, &mut wt, 0usize);
    let e = ((row0 + row) * k + cb * 256 + 128 * h + 4 * c) / 4;
    #[unroll]
    for s in 0..4u32 {
        store4(out, e + 8 * s, &wt, (4 * s) as usize);
    }
}

/// [`dequant_f16`] for the int4 groups `I4_<group>`, one thread per 32 weights.
#[cube(launch_unchecked)]
pub fn dequant_i4_f16<N: Size>(w: &[u32], out: &mut [Vector<f16, N>], off: u32, row0: u32, rows: u32, k: u32, #[comptime] group: u32) {
    let pos = ABSOLUTE_POS as u32;
    let lpg = comptime!(group / 32);
    let words = comptime!((4 + group / 2) / 4);
    let groups = k / group;
    if pos >= rows * groups * lpg {
        terminate!();
    }
    let u = pos % lpg;
    let b = pos / lpg;
    let mut wt = Array::<f32>::new(32usize);
    decode_unit_i4(w, off + b * words, u, &mut wt, 0usize, false);
    let e = (row0 * k + b * group + 16 * u) / 4;
    #[unroll]
    for v in 0..4u32 {
        store4(out, e + v, &wt, (8 * v) as usize);
        store4(out, e + group / 8 + v, &wt, (8 * v + 4) as usize);
    }
}

/// [`dequant_f16`] for Q6_Kx4, one thread per 32 weights (lane `u` of block `i` of a group, as
/// in [`crate::kernels::matvec_q6kx4`]): `w` in 8-byte vectors from word `off8`, `out` (`[n, k]`) in
/// 4-wide f16 vectors.
#[cube(launch_unchecked)]
pub fn dequant_q6kx4_f16<N: Size, Wv: Size>(w: &[Vector<u32, Wv>], out: &mut [Vector<f16, N>], off8: u32, row0: u32, rows: u32, k: u32) {
    let pos = ABSOLUTE_POS as u32;
    if pos >= rows * (k / 1024) * 32 {
        terminate!();
    }
    let (i, u) = ((pos % 32) / 8, pos % 8);
    // Group `g` counts over all rows of the part: row `g / groups`, columns from `1024 (g % groups)`.
    let g = pos / 32;
    let mut wt = Array::<f32>::new(32usize);
    decode_lane(w, off8 + g * GROUP_WORDS, i, u, &mut wt, 0usize, false);
    let e = (row0 * k + g * 1024 + 256 * i + 128 * (u / 4) + 8 * (u % 4)) / 4;
    #[unroll]
    for s in 0..4u32 {
        #[unroll]
        for h in 0..2u32 {
            store4(out, e + 8 * s + h, &wt, (4 * (4 * h + s)) as usize);
        }
    }
}
