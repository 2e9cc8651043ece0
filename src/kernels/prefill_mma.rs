//! Prefill on the tensor cores (CUDA `mma.m16n8k16`, f16 × f16 → f32) for Q4_K, Q6_Kx4 and
//! burn-quant's int4 groups (`I4_64`, `I4_128`: GPTQ and AWQ), with the weight decoded straight
//! from its blocks into the A fragments (no shared memory and no f16 copy of the weight) and the
//! token tile staged once per cube in shared memory (the B fragments). One kernel,
//! [`prefill_mma`], serves the three with a compile-time `kind`: they share the token side, the
//! pipeline and the tiles, and differ in which code words a lane loads ([`load_chunk`]) and how
//! it turns them into weights ([`fill`]).
//!
//! `yᵀ = W · xᵀ`: A is 16 weight rows × 16 inputs, B 16 inputs × 8 tokens. A warp owns
//! `mtiles` 16-row tiles and every token of the cube's tile (`ntiles` B tiles), so each decoded
//! A fragment serves `ntiles` products and each B fragment `mtiles`; the `planes` warps of a
//! cube share the staged tokens.
//!
//! - **Chunks.** The reduction walks 256-input spans of 4 chunks; a chunk is 32 code bytes per
//!   row, 64 inputs in two runs of 32, the low nibbles' run (`lo`) and the high nibbles' (`hi`).
//!   Lane `(g, t) = (lane / 4, lane % 4)` takes bytes `8t..8t + 8` of the chunk of rows `g`,
//!   `g + 8` of a tile. Step `s` (0..4) of the chunk takes word `s % 2` of them, low nibbles for
//!   `s < 2`, high after: its four bytes (inputs `8t + 4(s % 2) + 0..4` of the run) are the
//!   lane's values `(a0, a1)` and `(a4, a5)` of the m16n8k16 A layout.
//! - **Codes to f16.** A nibble moved to bit 15 (low) or 19 (high) and or-ed into the bits of
//!   1.0f is `1 + q·2⁻⁸` (or `1 + q·2⁻⁴`), exactly, so one multiply-add gives the weight with
//!   constants made once per chunk and row. Q4_K: `S = 256·d·sc` (or `16·d·sc`),
//!   `C = −(S + dmin·m)`, so `d·sc·q − dmin·m`; int4: `S = 256·d`, `C = −(S + d·z)`, so
//!   `d·(q − z)`. The constant's rounding (`2⁻¹⁶·d·sc`) is far under the f16 rounding of the
//!   weight that follows.
//! - **Q4_K.** Chunk `j` of a block is its code bytes `32j..32j + 32`, runs at inputs `64j` and
//!   `64j + 32`; each lane loads one 8-byte unit per row, the 12-byte header once per block.
//! - **Q6_Kx4.** Chunk `j` of a block is half `h = j / 2`, runs `s = 2(j % 2) + 0..2` (inputs
//!   `64j`, `64j + 32`). Lane `t` reads, per row, the 8 bytes `8t..` of the half's two `ql` runs
//!   and of its `qh` (once per half: the odd chunk reuses them), which hold the codes of inputs
//!   `l = 8t..8t + 8` of all four runs; the 6-bit code moved to bit 17 gives `1 + q·2⁻⁶`, and
//!   `S = 64·d·sc`, `C = −96·d·sc` give `d·sc·(q − 32)`; the lane's scale for run `s` is byte
//!   `2s + t / 2` of the half's eight.
//! - **int4** (`I4_<G>`, 68 or 36 bytes per group, so 4-byte loads). Byte `i` of a group holds
//!   weights `i` (low nibble) and `i + G/2` (high), so chunk `c` of a group (its bytes
//!   `32c..32c + 32`) has runs at inputs `32c` and `G/2 + 32c` of the group: for `G = 128` the
//!   runs of a chunk are not adjacent, and the token tile is staged in the same order. A lane
//!   loads two words per row per chunk and the group's `d`/`z` word once per group.
//! - **Tokens.** [`prefill_input_f16`] rounds the input to f16 once. A lane's B fragments of
//!   steps `s` and `s + 1` (inputs `32(s / 2) + 8t .. + 8` of the staged chunk) are one 16-byte
//!   shared-memory load; the 16-byte units of odd token rows are stored with their halves
//!   swapped (unit `u ^ 4`), so the two token rows of a load phase fall on distinct banks.
//! - **Pipeline.** While a chunk is multiplied, the next chunk's code words (and headers where
//!   a block, half or group begins) and its share of the token tile are loaded into registers;
//!   the tile then goes to the other half of a double-buffered shared tile, one barrier per
//!   chunk. (Burn's CUDA runtime compiles through LLVM, which offers no `cp.async`.)
//! - **Launches and split-K.** One launch covers up to two segments of rows, each a run of
//!   parts of one type (q and k in Q4_K and v in Q6_Kx4 of a fused projection are one launch,
//!   where three small launches each left most of the GPU idle). Where the reduction is split
//!   across cubes, the tile's last cube to finish adds the slices (and the residual) itself,
//!   counted through an atomic, instead of a second launch reading them all back.
//!
//! Precision: the weight and the input are rounded to f16 (relative error ≤ 2⁻¹¹ each), the
//! sums are f32, as on the other f16 prefill routes (tests hold them to 2e-3).

use cubecl::cmma::MmaDefinition;
use cubecl::prelude::*;
use half::f16;

use super::decode::f16_pair;
use super::matvec_mma::f16_pair_bits;
use super::matvec_q4k::scales_mins;
use super::matvec_q6k::{codes6, scale};
use super::reduce::last_of_slices;

/// [`prefill_mma`]'s `kind`: Q4_K, in 8-byte units.
pub const KIND_Q4K: u32 = 0;
/// [`prefill_mma`]'s `kind`: Q6_Kx4, in 8-byte units.
pub const KIND_Q6KX4: u32 = 1;
/// [`prefill_mma`]'s `kind`: burn-quant's int4 groups of `group` (64 or 128) weights, in 4-byte
/// units.
pub const KIND_I4: u32 = 2;

/// 8-byte units per Q4_K block (144 bytes).
const BLOCK8: u32 = 18;
/// 8-byte units per Q6_Kx4 group (840 bytes, 1024 inputs).
const GROUP8: u32 = 105;
/// The bits of 1.0f, the launch's `magic` (a run-time argument, so `(w & mask) | magic` is one
/// logic instruction).
pub const ONE_BITS: u32 = 0x3F80_0000;

/// Load units a lane keeps per weight row: Q4_K its block header (2) and the chunk's code
/// unit; Q6_Kx4 [`load_q6_half`]'s 5; int4 the group's `d`/`z` word and the chunk's two code
/// words.
const fn row_units(kind: u32) -> u32 {
    if kind == KIND_Q6KX4 { 5 } else { 3 }
}

/// Whether chunk `j` of a span loads unit `u` of a row afresh (the others are still those of
/// the chunk before): Q4_K its header where a block begins, Q6_Kx4 everything where a half
/// begins, int4 the `d`/`z` word where a group begins.
const fn fresh(kind: u32, group: u32, j: u32, u: u32) -> bool {
    match kind {
        KIND_Q4K => u == 2 || j == 0,
        KIND_Q6KX4 => j.is_multiple_of(2),
        _ => u > 0 || (64 * j).is_multiple_of(group),
    }
}

/// One thread per 4 values: `x` (`[m, k]` f32, 16-byte vectors) rounded to f16, two halves per
/// word, 8 bytes per unit of `out`.
#[cube(launch_unchecked)]
pub fn prefill_input_f16<N4: Size, N2: Size>(x: &[Vector<f32, N4>], out: &mut [Vector<u32, N2>], units: u32) {
    let u = ABSOLUTE_POS as u32;
    if u >= units {
        terminate!();
    }
    out[u as usize] = f16_quad::<N4, N2>(x[u as usize]);
}

/// A 4-float vector as the two words (f16 pairs, low half first) of the token tile
/// [`prefill_mma`] reads: the input's rounding, wherever it is done ([`prefill_input_f16`], or
/// the RMSNorm and SwiGLU kernels writing straight for a prefill).
#[cube]
pub fn f16_quad<N4: Size, N2: Size>(v: Vector<f32, N4>) -> Vector<u32, N2> {
    let mut o = Vector::<u32, N2>::empty();
    o.insert(0usize, f16_pair_bits(v.extract(0usize), v.extract(1usize)));
    o.insert(1usize, f16_pair_bits(v.extract(2usize), v.extract(3usize)));
    o
}

/// `word` shifted so that bit `from` lands on bit `to`.
#[cube]
fn at_bit(word: u32, #[comptime] from: u32, #[comptime] to: u32) -> u32 {
    if comptime!(to >= from) { word << comptime!(to - from) } else { word >> comptime!(from - to) }
}

/// The four weights of `word` in step order: the code of each byte (its bits under `mask` once
/// the byte's bit 0 is moved to bit `shift`), or-ed into the bits of 1.0f (`magic`) to give
/// `1 + q·2⁻ᵉ`, then through `(sc, cc)`; as the two f16 pairs `(byte 0, byte 1)` and
/// `(byte 2, byte 3)` of an A fragment. 4-bit codes: `shift` 15, the low nibbles' mask
/// `0x0007_8000` or the high nibbles' `0x0078_0000`; 6-bit codes (from [`codes6`]): `shift` 17,
/// mask `0x007E_0000`.
#[cube]
fn decode4<NA: Size>(word: u32, #[comptime] shift: u32, #[comptime] mask: u32, sc: f32, cc: f32, magic: u32) -> (Vector<f16, NA>, Vector<f16, NA>) {
    let w0 = f32::reinterpret((at_bit(word, 0u32, shift) & mask) | magic) * sc + cc;
    let w1 = f32::reinterpret((at_bit(word, 8u32, shift) & mask) | magic) * sc + cc;
    let w2 = f32::reinterpret((at_bit(word, 16u32, shift) & mask) | magic) * sc + cc;
    let w3 = f32::reinterpret((at_bit(word, 24u32, shift) & mask) | magic) * sc + cc;
    let mut p0 = Vector::<f16, NA>::empty();
    p0.insert(0usize, f16::cast_from(w0));
    p0.insert(1usize, f16::cast_from(w1));
    let mut p1 = Vector::<f16, NA>::empty();
    p1.insert(0usize, f16::cast_from(w2));
    p1.insert(1usize, f16::cast_from(w3));
    (p0, p1)
}

/// `(S, C)` of the low (`high` false) or high nibbles of chunk `j` of a block whose header is
/// `h0` (d, dmin) and `s0..s2` (the packed 6-bit scales and mins): see the module docs.
#[cube]
fn chunk_consts(h0: u32, s0: u32, s1: u32, s2: u32, j: u32, #[comptime] high: bool) -> (f32, f32) {
    let (d, dmin) = f16_pair(h0, true);
    let (sl, sh, ml, mh) = scales_mins(s0, s1, s2, j);
    if comptime!(high) {
        let b = d * sh * 16.0;
        (b, -(b + dmin * mh))
    } else {
        let a = d * sl * 256.0;
        (a, -(a + dmin * ml))
    }
}

/// The first inputs of the two runs (low nibbles, high nibbles) of chunk `j` of the span at
/// input `256·b` (see the module docs).
#[cube]
fn chunk_inputs(b: u32, #[comptime] j: u32, #[comptime] kind: u32, #[comptime] group: u32) -> (u32, u32) {
    if comptime!(kind == KIND_I4 && group > 64) {
        let lo = 256 * b + comptime!(group * (64 * j / group) + 32 * ((64 * j % group) / 64));
        (lo, lo + comptime!(group / 2))
    } else {
        let lo = 256 * b + comptime!(64 * j);
        (lo, lo + 32)
    }
}

/// Loads this thread's share of the token tile of the chunk whose runs start at inputs `lo`
/// and `hi` (tokens `tok0..`, clamped to `m`) into `xr`: `per` 16-byte units, units 0–3 of a
/// token row from the first run, 4–7 from the second.
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_tokens<X4: Size>(
    x: &[Vector<u32, X4>],
    xr: &mut Array<Vector<u32, X4>>,
    tok0: u32,
    lo: u32,
    hi: u32,
    m: u32,
    k: u32,
    tid: u32,
    #[comptime] per: u32,
    #[comptime] threads: u32,
) {
    // A thread's unit within its token rows is the same for each `s` (`threads` is a multiple
    // of 8).
    let c0 = select(tid % 8 < 4, lo, hi - 32);
    #[unroll]
    for s in 0..per {
        let idx = s * threads + tid;
        let tk = select(tok0 + idx / 8 < m, tok0 + idx / 8, m - 1);
        xr[s as usize] = x[((tk * k + c0) / 8 + idx % 8) as usize];
    }
}

/// Stores [`load_tokens`]' units into the half of `xs` at `buf`, those of odd token rows with
/// their halves swapped (unit `u ^ 4`).
#[cube]
fn store_tokens<X4: Size>(xr: &Array<Vector<u32, X4>>, xs: &mut [Vector<u32, X4>], buf: u32, tid: u32, #[comptime] per: u32, #[comptime] threads: u32) {
    #[unroll]
    for s in 0..per {
        let idx = s * threads + tid;
        let row = idx / 8;
        xs[(buf + row * 8 + ((idx % 8) ^ (4 * (row % 2)))) as usize] = xr[s as usize];
    }
}

/// Two m16n8k16 steps for every token tile and each of the warp's `mtiles` 16-row tiles: A
/// fragments `a0` (step `2sp`) and `a1` (`2sp + 1`) of rows `0..16`, `b0` and `b1` of rows
/// `16..32`, against the B fragments of the staged tile at `buf` (16-byte unit `unit` of token
/// row `8nt + g`: words 0–1 for step `2sp`, 2–3 for `2sp + 1`), into `acc` (tile `nt` of row
/// tile `mt` at `2(mt·ntiles + nt)`).
#[cube]
#[allow(clippy::too_many_arguments)]
fn mma_steps<NA: Size, NB: Size, NC: Size, X4: Size>(
    def: &MmaDefinition<f16, f16, f32>,
    a0: &Array<Vector<f16, NA>>,
    a1: &Array<Vector<f16, NA>>,
    b0: &Array<Vector<f16, NA>>,
    b1: &Array<Vector<f16, NA>>,
    xs: &mut [Vector<u32, X4>],
    buf: u32,
    unit: u32,
    g: u32,
    acc: &mut Array<Vector<f32, NC>>,
    #[comptime] ntiles: u32,
    #[comptime] mtiles: u32,
) {
    let mut bf0 = Array::<Vector<f16, NB>>::new(2usize);
    let mut bf1 = Array::<Vector<f16, NB>>::new(2usize);
    let mut c = Array::<Vector<f32, NC>>::new(2usize);
    #[unroll]
    for nt in 0..ntiles {
        let v = xs[(buf + (nt * 8 + g) * 8 + unit) as usize];
        bf0[0] = Vector::reinterpret(v.extract(0usize));
        bf0[1] = Vector::reinterpret(v.extract(1usize));
        bf1[0] = Vector::reinterpret(v.extract(2usize));
        bf1[1] = Vector::reinterpret(v.extract(3usize));
        let ia = comptime!(2 * nt);
        c[0] = acc[ia as usize];
        c[1] = acc[(ia + 1) as usize];
        def.execute_inplace(a0, &bf0, &mut c);
        def.execute_inplace(a1, &bf1, &mut c);
        acc[ia as usize] = c[0];
        acc[(ia + 1) as usize] = c[1];
        if comptime!(mtiles == 2) {
            let ib = comptime!(2 * (ntiles + nt));
            c[0] = acc[ib as usize];
            c[1] = acc[(ib + 1) as usize];
            def.execute_inplace(b0, &bf0, &mut c);
            def.execute_inplace(b1, &bf1, &mut c);
            acc[ib as usize] = c[0];
            acc[(ib + 1) as usize] = c[1];
        }
    }
}

/// Fills the A fragments of one 16-row tile for steps `2sp` (`e`, word `a0`/`b0` of the rows'
/// 8 bytes) and `2sp + 1` (`o`, word `a1`/`b1`) from 4-bit code words, row `g` (`a`, constants
/// `sa`, `ca`) and row `g + 8` (`b`): registers 0 and 2 are row `g`, 1 and 3 row `g + 8`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn fill_nibbles<NA: Size>(
    e: &mut Array<Vector<f16, NA>>,
    o: &mut Array<Vector<f16, NA>>,
    a0: u32,
    a1: u32,
    b0: u32,
    b1: u32,
    sa: f32,
    ca: f32,
    sb: f32,
    cb: f32,
    #[comptime] high: bool,
    magic: u32,
) {
    let mask = comptime!(if high { 0x0078_0000u32 } else { 0x0007_8000u32 });
    let (p0, p1) = decode4::<NA>(a0, 15u32, mask, sa, ca, magic);
    e[0] = p0;
    e[2] = p1;
    let (p0, p1) = decode4::<NA>(b0, 15u32, mask, sb, cb, magic);
    e[1] = p0;
    e[3] = p1;
    let (p0, p1) = decode4::<NA>(a1, 15u32, mask, sa, ca, magic);
    o[0] = p0;
    o[2] = p1;
    let (p0, p1) = decode4::<NA>(b1, 15u32, mask, sb, cb, magic);
    o[1] = p0;
    o[3] = p1;
}

/// `(S, C)` of an int4 group whose `d`/`z` word is `hd`, low (`high` false) or high nibbles.
#[cube]
fn group_consts(hd: u32, #[comptime] high: bool) -> (f32, f32) {
    let (d, _) = f16_pair(hd, true);
    let dz = d * f32::cast_from((hd >> 16) & 0xFF);
    if comptime!(high) {
        let s = d * 16.0;
        (s, 0.0 - (s + dz))
    } else {
        let s = d * 256.0;
        (s, 0.0 - (s + dz))
    }
}

/// Writes the warp's D tiles to `y[z, tok, col0 + row]`, plus `r[tok, col0 + row]` with
/// `residual` (rows `r0..r0 + 16·mtiles`, tokens `tok0..tok0 + 8·ntiles`, those past `rows` and
/// `m` dropped): register 0 of tile `nt` of row tile `mt` is row `16mt + g`, register 1 row
/// `16mt + g + 8`; a lane holds tokens `2t`, `2t + 1`.
#[cube]
#[allow(clippy::too_many_arguments)]
// `x = x + a`, as in the kernels that run on lavapipe (see `attention_prompt`).
#[allow(clippy::assign_op_pattern)]
fn store_acc<NC: Size>(
    acc: &Array<Vector<f32, NC>>,
    y: &mut [f32],
    r: &[f32],
    r0: u32,
    tok0: u32,
    g: u32,
    t: u32,
    rows: u32,
    m: u32,
    n: u32,
    col0: u32,
    z: u32,
    #[comptime] residual: bool,
    #[comptime] ntiles: u32,
    #[comptime] mtiles: u32,
) {
    #[unroll]
    for q in 0..mtiles * ntiles {
        let mt = comptime!(q / ntiles);
        let nt = comptime!(q % ntiles);
        #[unroll]
        for i in 0..2u32 {
            let row = r0 + 16 * mt + 8 * i + g;
            let v = acc[(2 * q + i) as usize];
            #[unroll]
            for e in 0..2u32 {
                let tok = tok0 + 8 * nt + 2 * t + e;
                if row < rows && tok < m {
                    let at = tok * n + col0 + row;
                    let mut s = v.extract(e as usize);
                    if comptime!(residual) {
                        s = s + r[at as usize];
                    }
                    y[(z * m * n + at) as usize] = s;
                }
            }
        }
    }
}

/// The 6-bit code word of run `s` (0..4) for word `e` of the lane's `lo`, `hi`, `qh` bytes.
#[cube]
fn run_codes(lo: u32, hi: u32, hb: u32, #[comptime] s: u32) -> u32 {
    let (q0, q1, q2, q3) = codes6(lo, hi, hb);
    let mut q = q0;
    if comptime!(s == 1) {
        q = q1;
    } else if comptime!(s == 2) {
        q = q2;
    } else if comptime!(s == 3) {
        q = q3;
    }
    q
}

/// The 8-byte units one lane needs of half `h` of block `i` of a Q6_Kx4 group at `g8`: its two
/// `ql` runs, its `qh`, the half's scale unit and the group's `d` unit, into `q[5r .. 5r + 5]`.
#[cube]
fn load_q6_half<WS: Size>(w: &[Vector<u32, WS>], q: &mut Array<Vector<u32, WS>>, r: u32, g8: u32, i: u32, h: u32, t: u32) {
    let o = (5 * r) as usize;
    q[o] = w[(g8 + 16 * i + 8 * h + t) as usize];
    q[o + 1] = w[(g8 + 16 * i + 8 * h + 4 + t) as usize];
    q[o + 2] = w[(g8 + 64 + 8 * i + 4 * h + t) as usize];
    q[o + 3] = w[(g8 + 96 + 2 * i + h) as usize];
    q[o + 4] = w[(g8 + 104) as usize];
}

/// Fills the A fragments of one 16-row tile for run `s` of the current half (steps `2sp`, `e`,
/// and `2sp + 1`, `o`) from the units of rows `g` (`q[5ra..]`) and `g + 8` (`q[5rb..]`) of
/// block `i` (see [`load_q6_half`]).
#[cube]
#[allow(clippy::too_many_arguments)]
fn fill_q6<NA: Size, WS: Size>(
    e: &mut Array<Vector<f16, NA>>,
    o: &mut Array<Vector<f16, NA>>,
    q: &Array<Vector<u32, WS>>,
    #[comptime] ra: u32,
    #[comptime] rb: u32,
    i: u32,
    t: u32,
    #[comptime] s: u32,
    magic: u32,
) {
    let mut sv = Array::<f32>::new(2usize);
    #[unroll]
    for h in 0..2u32 {
        let r = comptime!(if h == 0 { ra } else { rb });
        let dw = q[(5 * r + 4) as usize];
        let (d, _) = f16_pair((select(i < 2, dw.extract(0usize), dw.extract(1usize)) >> (16 * (i % 2))) & 0xFFFF, true);
        let scw = q[(5 * r + 3) as usize];
        sv[h as usize] = d * scale(scw.extract(0usize), scw.extract(1usize), 2 * s + t / 2) * 64.0;
    }
    // C = −(64 + 32)·d·sc = −1.5·S.
    let (sa, sb) = (sv[0], sv[1]);
    let ca = 0.0 - sa * 1.5;
    let cb = 0.0 - sb * 1.5;
    #[unroll]
    for wd in 0..2u32 {
        let la = run_codes(q[(5 * ra) as usize].extract(wd as usize), q[(5 * ra + 1) as usize].extract(wd as usize), q[(5 * ra + 2) as usize].extract(wd as usize), s);
        let lb = run_codes(q[(5 * rb) as usize].extract(wd as usize), q[(5 * rb + 1) as usize].extract(wd as usize), q[(5 * rb + 2) as usize].extract(wd as usize), s);
        let (p0, p1) = decode4::<NA>(la, 17u32, 0x007E_0000u32, sa, ca, magic);
        let (p2, p3) = decode4::<NA>(lb, 17u32, 0x007E_0000u32, sb, cb, magic);
        if comptime!(wd == 0) {
            e[0] = p0;
            e[2] = p1;
            e[1] = p2;
            e[3] = p3;
        } else {
            o[0] = p0;
            o[2] = p1;
            o[1] = p2;
            o[3] = p3;
        }
    }
}

/// Loads the units chunk `j` of the span `b` needs afresh (see [`fresh`]) of the row whose
/// units start at `base` into `q[row_units · r ..]`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_chunk<WS: Size>(
    w: &[Vector<u32, WS>],
    q: &mut Array<Vector<u32, WS>>,
    r: u32,
    base: u32,
    b: u32,
    t: u32,
    #[comptime] j: u32,
    #[comptime] kind: u32,
    #[comptime] group: u32,
) {
    if comptime!(kind == KIND_Q4K) {
        let o = (3 * r) as usize;
        let at = base + b * BLOCK8;
        if comptime!(j == 0) {
            q[o] = w[at as usize];
            q[o + 1] = w[(at + 1) as usize];
        }
        q[o + 2] = w[(at + 2 + comptime!(4 * j) + t) as usize];
    } else if comptime!(kind == KIND_Q6KX4) {
        if comptime!(j.is_multiple_of(2)) {
            load_q6_half::<WS>(w, q, r, base + (b / 4) * GROUP8, b % 4, comptime!(j / 2), t);
        }
    } else {
        // Group `256b/G + 64j/G` (words of `G/8 + 1`), its chunk `c`.
        let o = (3 * r) as usize;
        let c = comptime!((64 * j % group) / 64);
        let at = base + (b * comptime!(256 / group) + comptime!(64 * j / group)) * comptime!(group / 8 + 1);
        if comptime!(c == 0) {
            q[o] = w[at as usize];
        }
        q[o + 1] = w[(at + comptime!(1 + 8 * c) + 2 * t) as usize];
        q[o + 2] = w[(at + comptime!(2 + 8 * c) + 2 * t) as usize];
    }
}

/// Fills the A fragments of one 16-row tile for steps `2sp` (`e`) and `2sp + 1` (`o`) of chunk
/// `j` from the units of rows `g` (`q[row_units · ra ..]`) and `g + 8` (`rb`); `i` is the span's
/// block within its Q6_Kx4 group.
#[cube]
#[allow(clippy::too_many_arguments)]
fn fill<NA: Size, WS: Size>(
    e: &mut Array<Vector<f16, NA>>,
    o: &mut Array<Vector<f16, NA>>,
    q: &Array<Vector<u32, WS>>,
    #[comptime] ra: u32,
    #[comptime] rb: u32,
    i: u32,
    t: u32,
    #[comptime] j: u32,
    #[comptime] sp: u32,
    #[comptime] kind: u32,
    magic: u32,
) {
    let high = comptime!(sp == 1);
    if comptime!(kind == KIND_Q6KX4) {
        fill_q6::<NA, WS>(e, o, q, ra, rb, i, t, comptime!(2 * (j % 2) + sp), magic);
    } else {
        let (ua, ub) = (comptime!(3 * ra) as usize, comptime!(3 * rb) as usize);
        let mut sv = Array::<f32>::new(2usize);
        let mut cv = Array::<f32>::new(2usize);
        #[unroll]
        for h in 0..2u32 {
            let u = comptime!(if h == 0 { 3 * ra } else { 3 * rb }) as usize;
            if comptime!(kind == KIND_Q4K) {
                let h0 = q[u];
                let h1 = q[u + 1];
                let (s, c) = chunk_consts(h0.extract(0usize), h0.extract(1usize), h1.extract(0usize), h1.extract(1usize), j, high);
                sv[h as usize] = s;
                cv[h as usize] = c;
            } else {
                let (s, c) = group_consts(q[u].extract(0usize), high);
                sv[h as usize] = s;
                cv[h as usize] = c;
            }
        }
        if comptime!(kind == KIND_Q4K) {
            let (wa, wb) = (q[ua + 2], q[ub + 2]);
            fill_nibbles::<NA>(e, o, wa.extract(0usize), wa.extract(1usize), wb.extract(0usize), wb.extract(1usize), sv[0], cv[0], sv[1], cv[1], high, magic);
        } else {
            let (a0, a1) = (q[ua + 1].extract(0usize), q[ua + 2].extract(0usize));
            let (b0, b1) = (q[ub + 1].extract(0usize), q[ub + 2].extract(0usize));
            fill_nibbles::<NA>(e, o, a0, a1, b0, b1, sv[0], cv[0], sv[1], cv[1], high, magic);
        }
    }
}

/// Moves the units chunk `j` loaded afresh from `next` into `cur` (all `nr` rows).
#[cube]
fn advance<WS: Size>(cur: &mut Array<Vector<u32, WS>>, next: &Array<Vector<u32, WS>>, #[comptime] nr: u32, #[comptime] j: u32, #[comptime] kind: u32, #[comptime] group: u32) {
    #[unroll]
    for u in 0..comptime!(nr * row_units(kind)) {
        if comptime!(fresh(kind, group, j, u % row_units(kind))) {
            cur[u as usize] = next[u as usize];
        }
    }
}

/// The warp's products over its slice of the reduction (inputs `z · kslice ..`, `z` =
/// `CUBE_POS_Z`, `kslice` a multiple of 256) into `acc`: weight rows `r0 .. r0 + 16·mtiles` of
/// a segment whose units start at `off` (`rows` rows, `kind`/`group`), tokens `tok0 ..
/// tok0 + 8·ntiles`, the token tile staged through `xs` (see the module docs).
#[cube]
#[allow(clippy::too_many_arguments)]
fn products<WS: Size, X4: Size, NA: Size, NB: Size, NC: Size>(
    def: &MmaDefinition<f16, f16, f32>,
    w: &[Vector<u32, WS>],
    x: &[Vector<u32, X4>],
    xs: &mut [Vector<u32, X4>],
    acc: &mut Array<Vector<f32, NC>>,
    off: u32,
    rows: u32,
    r0: u32,
    tok0: u32,
    m: u32,
    k: u32,
    kslice: u32,
    magic: u32,
    #[comptime] kind: u32,
    #[comptime] group: u32,
    #[comptime] planes: u32,
    #[comptime] ntiles: u32,
    #[comptime] mtiles: u32,
) {
    let lane = UNIT_POS_X;
    let tid = UNIT_POS_Y * 32 + lane;
    let g = lane / 4;
    let t = lane % 4;
    let z = CUBE_POS_Z;
    let blocks = k / 256;
    let tn = comptime!(ntiles * 8);
    let threads = comptime!(planes * 32);
    // 16-byte token units staged per thread per chunk.
    let per = comptime!(tn * 8 / (planes * 32));
    let nr = comptime!(2 * mtiles);
    let nu = comptime!(row_units(kind));

    // The first unit of the lane's weight rows 16mt + g + 8h (index 2mt + h), clamped for the
    // reads.
    let per_row = if comptime!(kind == KIND_Q4K) {
        blocks * BLOCK8
    } else if comptime!(kind == KIND_Q6KX4) {
        (k / 1024) * GROUP8
    } else {
        (k / group) * comptime!(group / 8 + 1)
    };
    let mut wrow = Array::<u32>::new(nr as usize);
    #[unroll]
    for r in 0..nr {
        let row = r0 + 16 * (r / 2) + 8 * (r % 2) + g;
        wrow[r as usize] = off + select(row < rows, row, rows - 1) * per_row;
    }

    let mut a0 = Array::<Vector<f16, NA>>::new(4usize);
    let mut a1 = Array::<Vector<f16, NA>>::new(4usize);
    let mut b0 = Array::<Vector<f16, NA>>::new(4usize);
    let mut b1 = Array::<Vector<f16, NA>>::new(4usize);
    let mut xr = Array::<Vector<u32, X4>>::new(per as usize);

    let bs = z * (kslice / 256);
    let b_end = select(bs + kslice / 256 < blocks, bs + kslice / 256, blocks);

    // The current chunk's units per row (`qc`) and the next chunk's (`qn`); chunk 0 of span bs
    // loads every unit.
    let mut qc = Array::<Vector<u32, WS>>::new(comptime!(nu * nr) as usize);
    let mut qn = Array::<Vector<u32, WS>>::new(comptime!(nu * nr) as usize);
    let (lo, hi) = chunk_inputs(bs, 0u32, kind, group);
    load_tokens::<X4>(x, &mut xr, tok0, lo, hi, m, k, tid, per, threads);
    store_tokens::<X4>(&xr, xs, 0u32, tid, per, threads);
    #[unroll]
    for r in 0..nr {
        load_chunk::<WS>(w, &mut qc, r, wrow[r as usize], bs, t, 0u32, kind, group);
    }
    sync_cube();

    let mut b = bs;
    while b < b_end {
        let i = b % 4;
        #[unroll]
        for j in 0..4u32 {
            // Prefetch the next chunk: (b, j + 1), or (b + 1, 0) (clamped at the end).
            let bn = if comptime!(j < 3) { b } else { select(b + 1 < b_end, b + 1, b) };
            let jn = comptime!((j + 1) % 4);
            #[unroll]
            for r in 0..nr {
                load_chunk::<WS>(w, &mut qn, r, wrow[r as usize], bn, t, jn, kind, group);
            }
            let (lo, hi) = chunk_inputs(bn, jn, kind, group);
            load_tokens::<X4>(x, &mut xr, tok0, lo, hi, m, k, tid, per, threads);
            let buf = comptime!((j % 2) * tn * 8);
            #[unroll]
            for sp in 0..2u32 {
                fill::<NA, WS>(&mut a0, &mut a1, &qc, 0u32, 1u32, i, t, j, sp, kind, magic);
                if comptime!(mtiles == 2) {
                    fill::<NA, WS>(&mut b0, &mut b1, &qc, 2u32, 3u32, i, t, j, sp, kind, magic);
                }
                mma_steps::<NA, NB, NC, X4>(def, &a0, &a1, &b0, &b1, xs, buf, (4 * sp + t) ^ (4 * (g % 2)), g, acc, ntiles, mtiles);
            }
            advance::<WS>(&mut qc, &qn, nr, jn, kind, group);
            // The next chunk's tokens into the other half of the tile (last read a chunk ago).
            let nbuf = comptime!(((j + 1) % 2) * tn * 8);
            store_tokens::<X4>(&xr, xs, nbuf, tid, per, threads);
            sync_cube();
        }
        b += 1;
    }
}

/// The sum of the `splits` slices of `y` (`[splits, m, n]`, this cube's own among them) at the
/// warp's D-tile positions (those [`store_acc`] writes) into `acc`, in slice order, so the same
/// sum whichever cube of the tile is last. Each slice's loads are issued together (positions
/// unrolled inside the slice loop): a sum per position would wait on each load in turn, with the
/// SM's only cube stalled.
#[cube]
#[allow(clippy::too_many_arguments)]
fn sum_slices<NC: Size>(
    acc: &mut Array<Vector<f32, NC>>,
    y: &mut [f32],
    r0: u32,
    tok0: u32,
    g: u32,
    t: u32,
    rows: u32,
    m: u32,
    n: u32,
    col0: u32,
    splits: u32,
    #[comptime] ntiles: u32,
    #[comptime] mtiles: u32,
) {
    for zz in 0..splits {
        #[unroll]
        for q in 0..mtiles * ntiles {
            let mt = comptime!(q / ntiles);
            let nt = comptime!(q % ntiles);
            #[unroll]
            for i in 0..2u32 {
                // Clamped: what lies past `rows` or `m` is read but never written.
                let row = r0 + 16 * mt + 8 * i + g;
                let row = select(row < rows, row, rows - 1);
                let mut v = acc[(2 * q + i) as usize];
                #[unroll]
                for e in 0..2u32 {
                    let tok = tok0 + 8 * nt + 2 * t + e;
                    let tok = select(tok < m, tok, m - 1);
                    let p = y[((zz * m + tok) * n + col0 + row) as usize];
                    v.insert(e as usize, select(zz == 0, p, v.extract(e as usize) + p));
                }
                acc[(2 * q + i) as usize] = v;
            }
        }
    }
}

/// See the module docs. `w` is the weight in units of `WS` words (8 bytes for the k-quants, 4
/// for int4), `x` [`prefill_input_f16`]'s output (`[m, k]` halves in 16-byte vectors), `out`
/// `[m, n]`. One launch covers two segments of rows, each a run of parts of one type: cubes
/// of row tile `< xb` take rows `0..rows` of the segment at unit `off` (`kind`, `group`), written to
/// columns `col0..`, the others rows `0..rows_b` of the one at `off_b` (`kind_b`, `group_b`),
/// columns `col0_b..` (a launch of one segment passes `xb` past the grid). A cube is `32 ×
/// planes` threads over `16 · mtiles · planes` weight rows and `8 · ntiles` tokens, and reduces
/// inputs `CUBE_POS_Z · kslice ..` (`kslice` a multiple of 256).
///
/// With `tokens_first` the grid is `(token tiles, row tiles, slices)`, else `(row tiles, token
/// tiles, slices)`; the segment boundary `xb` counts row tiles either way.
///
/// With `split` (more than one slice along z), each cube writes its partial sums to slice
/// `CUBE_POS_Z` of `y` (`[splits, m, n]`), publishes them, and counts itself in `cnt[cnt0 +
/// tile]` (zero before the launch); the tile's last cube to arrive adds the slices in slice order
/// (the same sum whichever cube is last), plus `r` with `residual`, into `out`. Without, the
/// cube writes its sums (plus `r`) straight to `out`, and `y` and `cnt` are not touched.

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn prefill_mma<WS: Size, X4: Size>(
    w: &[Vector<u32, WS>],
    x: &[Vector<u32, X4>],
    y: &mut [f32],
    r: &[f32],
    out: &mut [f32],
    cnt: &mut [Atomic<u32>],
    cnt0: u32,
    off: u32,
    rows: u32,
    col0: u32,
    xb: u32,
    off_b: u32,
    rows_b: u32,
    col0_b: u32,
    m: u32,
    k: u32,
    n: u32,
    kslice: u32,
    magic: u32,
    #[comptime] kind: u32,
    #[comptime] group: u32,
    #[comptime] kind_b: u32,
    #[comptime] group_b: u32,
    #[comptime] planes: u32,
    #[comptime] ntiles: u32,
    #[comptime] mtiles: u32,
    #[comptime] split: bool,
    #[comptime] residual: bool,
    #[comptime] tokens_first: bool,
) {
    let lane = UNIT_POS_X;
    let plane = UNIT_POS_Y;
    let tid = plane * 32 + lane;
    let g = lane / 4;
    let t = lane % 4;
    // With `tokens_first` the grid's x axis is the token tiles (the cubes launched together
    // share weight rows), else the row tiles (they share a token tile).
    let (cx, cy) = if comptime!(tokens_first) { (CUBE_POS_Y, CUBE_POS_X) } else { (CUBE_POS_X, CUBE_POS_Y) };
    let tok0 = cy * ntiles * 8;
    let in_b = cx >= xb;
    let lx = cx - select(in_b, xb, 0u32);
    let r0 = (lx * planes + plane) * 16 * mtiles;
    let seg_rows = select(in_b, rows_b, rows);
    let seg_col0 = select(in_b, col0_b, col0);
    let tn = comptime!(ntiles * 8);

    let def = MmaDefinition::<f16, f16, f32>::new(16usize, 8usize, 16usize);
    let size!(NA) = def.vector_size(cubecl::cmma::MatrixIdent::A);
    let size!(NB) = def.vector_size(cubecl::cmma::MatrixIdent::B);
    let size!(NC) = def.vector_size(cubecl::cmma::MatrixIdent::Accumulator);
    let mut acc = Array::<Vector<f32, NC>>::new(comptime!(2 * ntiles * mtiles) as usize);
    #[unroll]
    for i in 0..2 * ntiles * mtiles {
        acc[i as usize] = Vector::cast_from(0.0f32);
    }
    let mut xs = Shared::<[Vector<u32, X4>]>::new_slice(comptime!(2 * tn * 8) as usize);

    if comptime!(kind == kind_b && group == group_b) {
        let seg_off = select(in_b, off_b, off);
        products::<WS, X4, NA, NB, NC>(&def, w, x, &mut xs, &mut acc, seg_off, seg_rows, r0, tok0, m, k, kslice, magic, kind, group, planes, ntiles, mtiles);
    } else if in_b {
        products::<WS, X4, NA, NB, NC>(&def, w, x, &mut xs, &mut acc, off_b, rows_b, r0, tok0, m, k, kslice, magic, kind_b, group_b, planes, ntiles, mtiles);
    } else {
        products::<WS, X4, NA, NB, NC>(&def, w, x, &mut xs, &mut acc, off, rows, r0, tok0, m, k, kslice, magic, kind, group, planes, ntiles, mtiles);
    }

    if comptime!(split) {
        let splits = CUBE_COUNT_Z;
        store_acc::<NC>(&acc, y, r, r0, tok0, g, t, seg_rows, m, n, seg_col0, CUBE_POS_Z, false, ntiles, mtiles);
        // Only the tile's last arrival goes on.
        if !last_of_slices(cnt, cnt0 + CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X, splits, tid) {
            terminate!();
        }
        // What the other cubes published is visible from here.
        sync_storage();
        sum_slices::<NC>(&mut acc, y, r0, tok0, g, t, seg_rows, m, n, seg_col0, splits, ntiles, mtiles);
    }
    store_acc::<NC>(&acc, out, r, r0, tok0, g, t, seg_rows, m, n, seg_col0, 0u32, residual, ntiles, mtiles);
}
