//! Q4_K and Q6_Kx4 prefill on the tensor cores (CUDA `mma.m16n8k16`, f16 × f16 → f32) with the
//! weight decoded straight from its blocks into the A fragments (no shared memory and no f16
//! copy of the weight) and the token tile staged once per cube in shared memory (the B
//! fragments).
//!
//! `yᵀ = W · xᵀ`: A is 16 weight rows × 16 inputs, B 16 inputs × 8 tokens. A warp owns
//! `mtiles` 16-row tiles and every token of the cube's tile (`ntiles` B tiles), so each decoded
//! A fragment serves `ntiles` products and each B fragment `mtiles`; the `planes` warps of a
//! cube share the staged tokens.
//!
//! - **Weights.** Lane `(g, t) = (lane / 4, lane % 4)` reads the 8 bytes `8t..8t + 8` of a
//!   32-byte code chunk (inputs `64j..64j + 64` of a block) of rows `g`, `g + 8` of a tile: one 8-byte
//!   load per row, the lane quad covering the chunk. Step `s` (0..4) of the chunk takes word
//!   `s % 2` of it, low nibbles (sub-block `2j`) for `s < 2`, high (`2j + 1`) after: its four
//!   bytes (inputs `32(s / 2) + 8t + 4(s % 2) + 0..4` of the chunk) are the lane's values
//!   `(a0, a1)` and `(a4, a5)` of the m16n8k16 A layout. A nibble moved to bit 15 (low) or 19
//!   (high) and or-ed into the bits of 1.0f is `1 + q·2⁻⁸` (or `1 + q·2⁻⁴`), exactly, so one
//!   multiply-add gives `d·sc·q − dmin·m` with constants made once per chunk (`S = 256·d·sc`,
//!   `C = −(S + dmin·m)`; the constant's rounding is `2⁻¹⁶·d·sc`, far under the f16 rounding of
//!   the weight that follows).
//! - **Tokens.** [`prefill_input_f16`] rounds the input to f16 once. A lane's B fragments of
//!   steps `s` and `s + 1` (inputs `32(s / 2) + 8t .. + 8`) are one 16-byte shared-memory load;
//!   the 16-byte units of odd token rows are stored with their halves swapped (unit `u ^ 4`), so
//!   the two token rows of a load phase fall on distinct banks.
//! - **Pipeline.** While a 64-input chunk is multiplied, the next chunk's code words and its
//!   share of the token tile are loaded into registers (and, in a block's last chunk, the next
//!   block's header); the tile then goes to the other half of a double-buffered shared tile,
//!   one barrier per chunk. (Burn's CUDA runtime compiles through LLVM, which offers no
//!   `cp.async`.)
//! - **Q6_Kx4** ([`prefill_q6kx4_mma`]) walks the same 64-input chunks with the same lane and
//!   step order, so the token side is shared: chunk `j` of a block is half `h = j / 2`, runs
//!   `s = 2(j % 2) + 0..2`. Lane `t` reads, per row, the 8 bytes `8t..` of the half's two `ql`
//!   runs and of its `qh` (once per half: the odd chunk reuses them), which hold the codes of
//!   inputs `l = 8t..8t + 8` of all four runs; the 6-bit code moved to bit 17 gives
//!   `1 + q·2⁻⁶`, and `S = 64·d·sc`, `C = −96·d·sc` give `d·sc·(q − 32)`; the lane's scale for
//!   run `s` is byte `2s + t / 2` of the half's eight.
//!
//! Precision: the weight and the input are rounded to f16 (relative error ≤ 2⁻¹¹ each), the
//! sums are f32, as on the other f16 prefill routes (tests hold them to 2e-3).

use cubecl::cmma::MmaDefinition;
use cubecl::prelude::*;
use half::f16;

use super::decode::f16_pair;
use super::matvec_mma::f16_bits;
use super::matvec_q4k::scales_mins;
use super::matvec_q6k::{codes6, scale};

/// 8-byte units per Q4_K block (144 bytes).
const BLOCK8: u32 = 18;
/// 8-byte units per Q6_Kx4 group (840 bytes, 1024 inputs).
const GROUP8: u32 = 105;
/// The bits of 1.0f, the launch's `magic` (a run-time argument, so `(w & mask) | magic` is one
/// logic instruction).
pub const ONE_BITS: u32 = 0x3F80_0000;

/// One thread per 4 values: `x` (`[m, k]` f32, 16-byte vectors) rounded to f16, two halves per
/// word, 8 bytes per unit of `out`.
#[cube(launch_unchecked)]
pub fn prefill_input_f16<N4: Size, N2: Size>(x: &[Vector<f32, N4>], out: &mut [Vector<u32, N2>], units: u32) {
    let u = ABSOLUTE_POS as u32;
    if u >= units {
        terminate!();
    }
    let v = x[u as usize];
    let mut o = Vector::<u32, N2>::empty();
    o.insert(0usize, f16_bits(v.extract(0usize)) | (f16_bits(v.extract(1usize)) << 16));
    o.insert(1usize, f16_bits(v.extract(2usize)) | (f16_bits(v.extract(3usize)) << 16));
    out[u as usize] = o;
}

/// The four weights of `word` in step order: its bytes' low nibbles (`high` false) or high
/// nibbles, each through `1 + q·2⁻ᵉ` and the chunk's `(sc, cc)`, as the two f16 pairs
/// `(byte 0, byte 1)` and `(byte 2, byte 3)` of an A fragment.
#[cube]
fn decode4<NA: Size>(word: u32, #[comptime] high: bool, sc: f32, cc: f32, magic: u32) -> (Vector<f16, NA>, Vector<f16, NA>) {
    let mask = comptime!(if high { 0x0078_0000u32 } else { 0x0007_8000u32 });
    let w0 = f32::reinterpret(((word << 15) & mask) | magic) * sc + cc;
    let w1 = f32::reinterpret(((word << 7) & mask) | magic) * sc + cc;
    let w2 = f32::reinterpret(((word >> 1) & mask) | magic) * sc + cc;
    let w3 = f32::reinterpret(((word >> 9) & mask) | magic) * sc + cc;
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

/// Loads this thread's share of the token tile of the chunk at input `c0` (tokens `tok0..`,
/// clamped to `m`) into `xr`: `per` 16-byte units.
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_tokens<X4: Size>(
    x: &[Vector<u32, X4>],
    xr: &mut Array<Vector<u32, X4>>,
    tok0: u32,
    c0: u32,
    m: u32,
    k: u32,
    tid: u32,
    #[comptime] per: u32,
    #[comptime] threads: u32,
) {
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
    xs: &[Vector<u32, X4>],
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

/// Fills the A fragments of one 16-row tile for steps `2sp` (`e`, word 0 of each row's 8 bytes)
/// and `2sp + 1` (`o`, word 1) from the Q4_K code bytes `wa` (row `g`) and `wb` (row `g + 8`):
/// registers 0 and 2 are row `g`, 1 and 3 row `g + 8`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn fill_q4k<NA: Size, W2: Size>(
    e: &mut Array<Vector<f16, NA>>,
    o: &mut Array<Vector<f16, NA>>,
    wa: Vector<u32, W2>,
    wb: Vector<u32, W2>,
    sa: f32,
    ca: f32,
    sb: f32,
    cb: f32,
    #[comptime] high: bool,
    magic: u32,
) {
    let (p0, p1) = decode4::<NA>(wa.extract(0usize), high, sa, ca, magic);
    e[0] = p0;
    e[2] = p1;
    let (p0, p1) = decode4::<NA>(wb.extract(0usize), high, sb, cb, magic);
    e[1] = p0;
    e[3] = p1;
    let (p0, p1) = decode4::<NA>(wa.extract(1usize), high, sa, ca, magic);
    o[0] = p0;
    o[2] = p1;
    let (p0, p1) = decode4::<NA>(wb.extract(1usize), high, sb, cb, magic);
    o[1] = p0;
    o[3] = p1;
}

/// Writes the warp's D tiles to `y[z, tok, col0 + row]` (rows `r0..r0 + 16·mtiles`, tokens
/// `tok0..tok0 + 8·ntiles`, those past `rows` and `m` dropped): register 0 of tile `nt` of row
/// tile `mt` is row `16mt + g`, register 1 row `16mt + g + 8`; a lane holds tokens `2t`, `2t + 1`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn store_acc<NC: Size>(
    acc: &Array<Vector<f32, NC>>,
    y: &mut [f32],
    r0: u32,
    tok0: u32,
    g: u32,
    t: u32,
    rows: u32,
    m: u32,
    n: u32,
    col0: u32,
    z: u32,
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
                    y[((z * m + tok) * n + col0 + row) as usize] = v.extract(e as usize);
                }
            }
        }
    }
}

/// See the module docs. `w` is the weight in 8-byte units from unit `off8` (the part's rows of
/// `k / 256` blocks), `x` [`prefill_input_f16`]'s output (`[m, k]` halves in 16-byte vectors),
/// `y` is `[splits, m, n]`; this launch writes columns `col0..col0 + rows` of slice `CUBE_POS_Z`,
/// which reduces inputs `CUBE_POS_Z · kslice ..` (`kslice` a multiple of 256). A cube is
/// `32 × planes` threads over `16 · planes` weight rows and `8 · ntiles` tokens.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn prefill_q4k_mma<W2: Size, X4: Size>(
    w: &[Vector<u32, W2>],
    x: &[Vector<u32, X4>],
    y: &mut [f32],
    off8: u32,
    rows: u32,
    m: u32,
    k: u32,
    n: u32,
    col0: u32,
    kslice: u32,
    magic: u32,
    #[comptime] planes: u32,
    #[comptime] ntiles: u32,
    #[comptime] mtiles: u32,
) {
    let lane = UNIT_POS_X;
    let plane = UNIT_POS_Y;
    let tid = plane * 32 + lane;
    let g = lane / 4;
    let t = lane % 4;
    let tok0 = CUBE_POS_Y * ntiles * 8;
    let r0 = (CUBE_POS_X * planes + plane) * 16 * mtiles;
    let z = CUBE_POS_Z;
    let blocks = k / 256;
    let tn = comptime!(ntiles * 8);
    let threads = comptime!(planes * 32);
    // 16-byte token units staged per thread per chunk.
    let per = comptime!(tn * 8 / (planes * 32));
    let nr = comptime!(2 * mtiles);

    // The lane's weight rows 16mt + g + 8h (index 2mt + h), clamped for the reads.
    let mut wrow = Array::<u32>::new(nr as usize);
    #[unroll]
    for r in 0..nr {
        let row = r0 + 16 * (r / 2) + 8 * (r % 2) + g;
        wrow[r as usize] = off8 + select(row < rows, row, rows - 1) * blocks * BLOCK8;
    }

    let def = MmaDefinition::<f16, f16, f32>::new(16usize, 8usize, 16usize);
    let size!(NA) = def.vector_size(cubecl::cmma::MatrixIdent::A);
    let size!(NB) = def.vector_size(cubecl::cmma::MatrixIdent::B);
    let size!(NC) = def.vector_size(cubecl::cmma::MatrixIdent::Accumulator);
    let mut a0 = Array::<Vector<f16, NA>>::new(4usize);
    let mut a1 = Array::<Vector<f16, NA>>::new(4usize);
    let mut b0 = Array::<Vector<f16, NA>>::new(4usize);
    let mut b1 = Array::<Vector<f16, NA>>::new(4usize);
    let mut acc = Array::<Vector<f32, NC>>::new(comptime!(2 * ntiles * mtiles) as usize);
    #[unroll]
    for i in 0..2 * ntiles * mtiles {
        acc[i as usize] = Vector::cast_from(0.0f32);
    }

    let mut xs = Shared::<[Vector<u32, X4>]>::new_slice(comptime!(2 * tn * 8) as usize);
    let mut xr = Array::<Vector<u32, X4>>::new(per as usize);

    let bs = z * (kslice / 256);
    let b_end = select(bs + kslice / 256 < blocks, bs + kslice / 256, blocks);

    // Chunk 0 of block bs, and its code words and headers (d/dmin + scales, 2 units per row).
    load_tokens::<X4>(x, &mut xr, tok0, bs * 256, m, k, tid, per, threads);
    store_tokens::<X4>(&xr, &mut xs, 0u32, tid, per, threads);
    let mut hd = Array::<Vector<u32, W2>>::new(comptime!(2 * nr) as usize);
    let mut hn = Array::<Vector<u32, W2>>::new(comptime!(2 * nr) as usize);
    let mut wc = Array::<Vector<u32, W2>>::new(nr as usize);
    let mut wn = Array::<Vector<u32, W2>>::new(nr as usize);
    #[unroll]
    for r in 0..nr {
        let at = wrow[r as usize] + bs * BLOCK8;
        hd[(2 * r) as usize] = w[at as usize];
        hd[(2 * r + 1) as usize] = w[(at + 1) as usize];
        wc[r as usize] = w[(at + 2 + t) as usize];
    }
    sync_cube();

    let mut b = bs;
    while b < b_end {
        #[unroll]
        for j in 0..4u32 {
            // Prefetch the next chunk: (b, j + 1), or (b + 1, 0) (clamped at the end) with the
            // next block's headers.
            let bn = if comptime!(j < 3) { b } else { select(b + 1 < b_end, b + 1, b) };
            let jn = comptime!((j + 1) % 4);
            #[unroll]
            for r in 0..nr {
                wn[r as usize] = w[(wrow[r as usize] + bn * BLOCK8 + 2 + 4 * jn + t) as usize];
                if comptime!(j == 3) {
                    hn[(2 * r) as usize] = w[(wrow[r as usize] + bn * BLOCK8) as usize];
                    hn[(2 * r + 1) as usize] = w[(wrow[r as usize] + bn * BLOCK8 + 1) as usize];
                }
            }
            load_tokens::<X4>(x, &mut xr, tok0, bn * 256 + 64 * jn, m, k, tid, per, threads);
            let buf = comptime!((j % 2) * tn * 8);
            #[unroll]
            for sp in 0..2u32 {
                let high = comptime!(sp == 1);
                let mut sc = Array::<f32>::new(nr as usize);
                let mut cc = Array::<f32>::new(nr as usize);
                #[unroll]
                for r in 0..nr {
                    let h0 = hd[(2 * r) as usize];
                    let h1 = hd[(2 * r + 1) as usize];
                    let (sv, cv) = chunk_consts(h0.extract(0usize), h0.extract(1usize), h1.extract(0usize), h1.extract(1usize), j, high);
                    sc[r as usize] = sv;
                    cc[r as usize] = cv;
                }
                fill_q4k::<NA, W2>(&mut a0, &mut a1, wc[0], wc[1], sc[0], cc[0], sc[1], cc[1], high, magic);
                if comptime!(mtiles == 2) {
                    fill_q4k::<NA, W2>(&mut b0, &mut b1, wc[2], wc[3], sc[2], cc[2], sc[3], cc[3], high, magic);
                }
                mma_steps::<NA, NB, NC, X4>(&def, &a0, &a1, &b0, &b1, &xs, buf, (4 * sp + t) ^ (4 * (g % 2)), g, &mut acc, ntiles, mtiles);
            }
            #[unroll]
            for r in 0..nr {
                wc[r as usize] = wn[r as usize];
                if comptime!(j == 3) {
                    hd[(2 * r) as usize] = hn[(2 * r) as usize];
                    hd[(2 * r + 1) as usize] = hn[(2 * r + 1) as usize];
                }
            }
            // The next chunk's tokens into the other half of the tile (last read a chunk ago).
            let nbuf = comptime!(((j + 1) % 2) * tn * 8);
            store_tokens::<X4>(&xr, &mut xs, nbuf, tid, per, threads);
            sync_cube();
        }
        b += 1;
    }

    store_acc::<NC>(&acc, y, r0, tok0, g, t, rows, m, n, col0, z, ntiles, mtiles);
}

/// The four weights of the 6-bit codes in the bytes of `q` (from [`codes6`]), each through
/// `1 + q·2⁻⁶` and `(sc, cc)`, as the f16 pairs `(byte 0, byte 1)` and `(byte 2, byte 3)`.
#[cube]
fn decode4_q6<NA: Size>(q: u32, sc: f32, cc: f32, magic: u32) -> (Vector<f16, NA>, Vector<f16, NA>) {
    let mask = 0x007E_0000u32;
    let w0 = f32::reinterpret(((q << 17) & mask) | magic) * sc + cc;
    let w1 = f32::reinterpret(((q << 9) & mask) | magic) * sc + cc;
    let w2 = f32::reinterpret(((q << 1) & mask) | magic) * sc + cc;
    let w3 = f32::reinterpret(((q >> 7) & mask) | magic) * sc + cc;
    let mut p0 = Vector::<f16, NA>::empty();
    p0.insert(0usize, f16::cast_from(w0));
    p0.insert(1usize, f16::cast_from(w1));
    let mut p1 = Vector::<f16, NA>::empty();
    p1.insert(0usize, f16::cast_from(w2));
    p1.insert(1usize, f16::cast_from(w3));
    (p0, p1)
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
fn load_q6_half<W2: Size>(w: &[Vector<u32, W2>], q: &mut Array<Vector<u32, W2>>, r: u32, g8: u32, i: u32, h: u32, t: u32) {
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
fn fill_q6<NA: Size, W2: Size>(
    e: &mut Array<Vector<f16, NA>>,
    o: &mut Array<Vector<f16, NA>>,
    q: &Array<Vector<u32, W2>>,
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
        let (p0, p1) = decode4_q6::<NA>(la, sa, ca, magic);
        let (p2, p3) = decode4_q6::<NA>(lb, sb, cb, magic);
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

/// [`prefill_q4k_mma`] for Q6_Kx4 weights (see the module docs): the same arguments, `w` the
/// part's rows of `k / 1024` groups in 8-byte units from unit `off8`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn prefill_q6kx4_mma<W2: Size, X4: Size>(
    w: &[Vector<u32, W2>],
    x: &[Vector<u32, X4>],
    y: &mut [f32],
    off8: u32,
    rows: u32,
    m: u32,
    k: u32,
    n: u32,
    col0: u32,
    kslice: u32,
    magic: u32,
    #[comptime] planes: u32,
    #[comptime] ntiles: u32,
    #[comptime] mtiles: u32,
) {
    let lane = UNIT_POS_X;
    let plane = UNIT_POS_Y;
    let tid = plane * 32 + lane;
    let g = lane / 4;
    let t = lane % 4;
    let tok0 = CUBE_POS_Y * ntiles * 8;
    let r0 = (CUBE_POS_X * planes + plane) * 16 * mtiles;
    let z = CUBE_POS_Z;
    let blocks = k / 256;
    let tn = comptime!(ntiles * 8);
    let threads = comptime!(planes * 32);
    let per = comptime!(tn * 8 / (planes * 32));
    let nr = comptime!(2 * mtiles);

    let mut wrow = Array::<u32>::new(nr as usize);
    #[unroll]
    for r in 0..nr {
        let row = r0 + 16 * (r / 2) + 8 * (r % 2) + g;
        wrow[r as usize] = off8 + select(row < rows, row, rows - 1) * (k / 1024) * GROUP8;
    }

    let def = MmaDefinition::<f16, f16, f32>::new(16usize, 8usize, 16usize);
    let size!(NA) = def.vector_size(cubecl::cmma::MatrixIdent::A);
    let size!(NB) = def.vector_size(cubecl::cmma::MatrixIdent::B);
    let size!(NC) = def.vector_size(cubecl::cmma::MatrixIdent::Accumulator);
    let mut a0 = Array::<Vector<f16, NA>>::new(4usize);
    let mut a1 = Array::<Vector<f16, NA>>::new(4usize);
    let mut b0 = Array::<Vector<f16, NA>>::new(4usize);
    let mut b1 = Array::<Vector<f16, NA>>::new(4usize);
    let mut acc = Array::<Vector<f32, NC>>::new(comptime!(2 * ntiles * mtiles) as usize);
    #[unroll]
    for i in 0..2 * ntiles * mtiles {
        acc[i as usize] = Vector::cast_from(0.0f32);
    }
    let mut xs = Shared::<[Vector<u32, X4>]>::new_slice(comptime!(2 * tn * 8) as usize);
    let mut xr = Array::<Vector<u32, X4>>::new(per as usize);

    let bs = z * (kslice / 256);
    let b_end = select(bs + kslice / 256 < blocks, bs + kslice / 256, blocks);

    // Per row r: the current half's units (`qc[5r..]`) and the next half's (`qn`).
    let mut qc = Array::<Vector<u32, W2>>::new(comptime!(5 * nr) as usize);
    let mut qn = Array::<Vector<u32, W2>>::new(comptime!(5 * nr) as usize);
    load_tokens::<X4>(x, &mut xr, tok0, bs * 256, m, k, tid, per, threads);
    store_tokens::<X4>(&xr, &mut xs, 0u32, tid, per, threads);
    #[unroll]
    for r in 0..nr {
        load_q6_half::<W2>(w, &mut qc, r, wrow[r as usize] + (bs / 4) * GROUP8, bs % 4, 0u32, t);
    }
    sync_cube();

    let mut b = bs;
    while b < b_end {
        let i = b % 4;
        #[unroll]
        for j in 0..4u32 {
            // After chunks 1 and 3 the next chunk starts a new half: (b, half 1), or (b + 1,
            // half 0) (clamped); chunks 0 and 2 are followed by the other runs of their half.
            let bn = if comptime!(j < 3) { b } else { select(b + 1 < b_end, b + 1, b) };
            let jn = comptime!((j + 1) % 4);
            if comptime!(j % 2 == 1) {
                #[unroll]
                for r in 0..nr {
                    load_q6_half::<W2>(w, &mut qn, r, wrow[r as usize] + (bn / 4) * GROUP8, bn % 4, comptime!(jn / 2), t);
                }
            }
            load_tokens::<X4>(x, &mut xr, tok0, bn * 256 + 64 * jn, m, k, tid, per, threads);
            let buf = comptime!((j % 2) * tn * 8);
            #[unroll]
            for sp in 0..2u32 {
                let s = comptime!(2 * (j % 2) + sp);
                fill_q6::<NA, W2>(&mut a0, &mut a1, &qc, 0u32, 1u32, i, t, s, magic);
                if comptime!(mtiles == 2) {
                    fill_q6::<NA, W2>(&mut b0, &mut b1, &qc, 2u32, 3u32, i, t, s, magic);
                }
                mma_steps::<NA, NB, NC, X4>(&def, &a0, &a1, &b0, &b1, &xs, buf, (4 * sp + t) ^ (4 * (g % 2)), g, &mut acc, ntiles, mtiles);
            }
            if comptime!(j % 2 == 1) {
                #[unroll]
                for u in 0..5 * nr {
                    qc[u as usize] = qn[u as usize];
                }
            }
            let nbuf = comptime!(((j + 1) % 2) * tn * 8);
            store_tokens::<X4>(&xr, &mut xs, nbuf, tid, per, threads);
            sync_cube();
        }
        b += 1;
    }
    store_acc::<NC>(&acc, y, r0, tok0, g, t, rows, m, n, col0, z, ntiles, mtiles);
}
