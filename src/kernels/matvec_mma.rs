//! 4-bit weights (Q4_K, and burn-quant's int4 groups from GPTQ/AWQ) at a few token rows on the
//! tensor cores (CUDA `mma.m16n8k16`, f16 × f16 → f32), exact.
//!
//! - **Weights**: a nibble masked in place in a 16-bit half is the f16 subnormal `q·2⁻²⁴` (low
//!   nibble, mask `0x000F000F`) or `16q·2⁻²⁴` (high nibble, `0x00F000F0`), so one `AND` turns two
//!   codes of a word into an exact f16 pair — the A fragment's register, with no conversion.
//!   Both layouts store 32-byte chunks whose low nibbles are one run of 32 inputs and whose high
//!   nibbles are another (Q4_K: sub-blocks `2j`, `2j + 1`; int4: weights `32j..` and
//!   `G/2 + 32j..` of the group). Word `v` of a chunk holds elements `4v..4v+4` of both runs;
//!   `w & mask` pairs elements `4v, 4v+2` and `(w >> 8) & mask` elements `4v+1, 4v+3`.
//!   Lane `(g = lane / 4, t = lane % 4)` holds rows `g` and `g + 8` of the warp's 16 and words
//!   `2t + h` of each chunk, which is exactly the m16n8k16 A layout with the run's k order
//!   permuted (the input is permuted the same way).
//! - **Input**: [`mma_input`] splits each 32-value run of x, scaled by a power of two so its
//!   largest magnitude is in [2¹⁴, 2¹⁵), into `hi = f16(x)` and `lo = f16(x − hi)` (22+ bits),
//!   packed in the B layout; each token row takes two columns of B (`hi`, `lo`), so an `n8` tile
//!   holds four token rows. Products of f16 values are exact in the f32 accumulators, so
//!   `D[:, 2r] + D[:, 2r + 1]` is the run's `Σ q·x` for token `r` to f32 accuracy after undoing
//!   the scales (powers of two).
//! - Per run the D fragment is scaled by `d·sc` and the min term `dmin·m·Σx` subtracted (int4:
//!   `d` and `d·z`; Σx from [`mma_input`]). A cube of `planes` warps covers 16 rows, the warps
//!   splitting the blocks; their sums meet in shared memory.

use cubecl::cmma::MmaDefinition;
use cubecl::prelude::*;
use half::f16;

use super::decode::f16_pair;
use super::matvec_q4k::scales_mins;

/// Warps per cube by default (they split a 16-row group's blocks); the launch passes `planes`.
pub const PLANES: u32 = 8;
/// Weight rows per cube (one m16n8k16 tile).
pub const ROWS: u32 = 16;

/// The f16 bits of `v` (round to nearest).
#[cube]
pub fn f16_bits(v: f32) -> u32 {
    u32::cast_from(u16::reinterpret(f16::cast_from(v)))
}

/// Two f32 values as an f16 pair in one word (`a` in the low half, round to nearest).
#[cube]
pub fn f16_pair_bits(a: f32, b: f32) -> u32 {
    f16_bits(a) | (f16_bits(b) << 16)
}

/// One thread per quad `qd` (4 values) of `x` (`k / 4` of them): writes the quad's scaled input
/// split into `hi` / `lo` f16 halves as B-fragment words — for quad `q` of sub-block `sb` and part
/// `p` (0 = hi, 1 = lo), `xq[((8·sb + q)·2 + p)·2 + 0]` packs values `4q, 4q+2` and `… + 1`
/// packs `4q+1, 4q+3` — and, from each sub-block's first quad, the sub-block's `Σx` to
/// `xsum[sb]` and the inverse of its scale (a power of two that puts its largest magnitude in
/// [2¹⁴, 2¹⁵)) to `xinv[sb]`.
#[cube(launch_unchecked)]
pub fn mma_input(x: &[f32], xq: &mut [u32], xsum: &mut [f32], xinv: &mut [f32], quads: u32) {
    let qd = ABSOLUTE_POS as u32;
    if qd < quads {
        let sb = qd / 8;
        let q = qd % 8;
        let base = sb * 32;
        let mut mx = 0.0f32;
        let mut s = 0.0f32;
        for e in 0..32u32 {
            let v = x[(base + e) as usize];
            s += v;
            mx = f32::max(mx, f32::abs(v));
        }
        // The exponent field of 2^(14 − E) for the largest magnitude 2^E·1.m: 127 + 14 − E =
        // 268 − field(mx); 1 for an all-zero (or subnormal) block, 2^127 below 2^-113.
        let ex = (u32::reinterpret(mx) >> 23) & 0xFF;
        let se = select(ex == 0, 127u32, select(ex < 14, 254u32, 268 - ex));
        let scale = f32::reinterpret(se << 23);
        if q == 0 {
            xsum[sb as usize] = s;
            xinv[sb as usize] = 1.0 / scale;
        }
        let mut hi = Array::<u32>::new(4usize);
        let mut lo = Array::<u32>::new(4usize);
        #[unroll]
        for e in 0..4u32 {
            let v = x[(base + 4 * q + e) as usize] * scale;
            let h = f16::cast_from(v);
            hi[e as usize] = u32::cast_from(u16::reinterpret(h));
            lo[e as usize] = f16_bits(v - f32::cast_from(h));
        }
        let o = ((8 * sb + q) * 2) * 2;
        xq[o as usize] = hi[0] | (hi[2] << 16);
        xq[(o + 1) as usize] = hi[1] | (hi[3] << 16);
        xq[(o + 2) as usize] = lo[0] | (lo[2] << 16);
        xq[(o + 3) as usize] = lo[1] | (lo[3] << 16);
    }
}

/// See the module docs. `w` is the packed weight in words, `off` the part's first word. `group`
/// picks the block layout: 0 for Q4_K (144-byte blocks of 256, per-sub-block scales and mins),
/// else burn-quant's int4 group of `group` weights (a multiple of 64: header word `d | z << 16`,
/// then `group / 8` code words, byte `j` holding weights `j` and `j + group/2`, so the low and
/// high nibbles of a 32-byte chunk are again two 32-value runs of the input). `m` token rows (at
/// most `4 · tiles`) are read from [`mma_input`]'s output for `m · k` values; `y` is `[m, ny]`,
/// this launch writing columns `col0..col0 + rows` (plus `res` at the same index with `add`). Each `n8` tile of B holds 4 token rows (hi
/// and lo columns of each), so the A fragment of a sub-block is decoded once for all of them.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn matvec_q4_mma(
    w: &[u32],
    xq: &[u32],
    xsum: &[f32],
    xinv: &[f32],
    y: &mut [f32],
    res: &[f32],
    off: u32,
    rows: u32,
    k: u32,
    ny: u32,
    col0: u32,
    m: u32,
    #[comptime] group: u32,
    #[comptime] tiles: u32,
    #[comptime] planes: u32,
    #[comptime] add: bool,
) {
    let lane = UNIT_POS_X;
    let plane = UNIT_POS_Y;
    let g = lane / 4;
    let t = lane % 4;
    let r0 = CUBE_POS as u32 * ROWS;
    let ra = select(r0 + g < rows, r0 + g, rows - 1);
    let rb = select(r0 + g + 8 < rows, r0 + g + 8, rows - 1);
    let elems = comptime!(if group == 0 { 256u32 } else { group });
    let bwords = comptime!(if group == 0 { 36u32 } else { 1 + group / 8 });
    let code0 = comptime!(if group == 0 { 4u32 } else { 1u32 });
    let chunks = comptime!(elems / 64);
    let blocks = k / elems;
    let subs = k / 32;
    // The B column of this lane: token `4·tile + g / 2`, part `g % 2` (hi, lo); the D columns
    // of this lane are token `4·tile + t`'s hi and lo. Tokens past `m` read the last token's
    // input (finite values) and are never written.
    let bpart = g % 2;
    let def = MmaDefinition::<f16, f16, f32>::new(16usize, 8usize, 16usize);
    let size!(NA) = def.vector_size(cubecl::cmma::MatrixIdent::A);
    let size!(NB) = def.vector_size(cubecl::cmma::MatrixIdent::B);
    let size!(NC) = def.vector_size(cubecl::cmma::MatrixIdent::Accumulator);
    let mut a0 = Array::<Vector<f16, NA>>::new(4usize);
    let mut a1 = Array::<Vector<f16, NA>>::new(4usize);
    let mut bf = Array::<Vector<f16, NB>>::new(2usize);
    let mut c = Array::<Vector<f32, NC>>::new(2usize);
    let mut acc = Array::<f32>::new(comptime!(2 * tiles) as usize);
    #[unroll]
    for i in 0..2 * tiles {
        acc[i as usize] = 0.0;
    }
    let mut b = plane;
    while b < blocks {
        let ba = off + (ra * blocks + b) * bwords;
        let bb = off + (rb * blocks + b) * bwords;
        let (da, dmina) = f16_pair(w[ba as usize], true);
        let (db, dminb) = f16_pair(w[bb as usize], true);
        // Q4_K: the scale words (int4 blocks have code words there, unused); int4: the zero
        // point (bits 16..24 of the header).
        let (a1w, a2w, a3w) = (w[(ba + 1) as usize], w[(ba + 2) as usize], w[(ba + 3) as usize]);
        let (b1w, b2w, b3w) = (w[(bb + 1) as usize], w[(bb + 2) as usize], w[(bb + 3) as usize]);
        let za = f32::cast_from((w[ba as usize] >> 16) & 0xFF);
        let zb = f32::cast_from((w[bb as usize] >> 16) & 0xFF);
        #[unroll]
        for j in 0..chunks {
            let wa0 = w[(ba + code0 + 8 * j + 2 * t) as usize];
            let wa1 = w[(ba + code0 + 1 + 8 * j + 2 * t) as usize];
            let wb0 = w[(bb + code0 + 8 * j + 2 * t) as usize];
            let wb1 = w[(bb + code0 + 1 + 8 * j + 2 * t) as usize];
            // Per half `s` of the chunk: `(scale of Σ q·x, scale of Σ x)` for rows a and b.
            let (sla, sha, mla, mha) = if comptime!(group == 0) {
                let (sl, sh, ml, mh) = scales_mins(a1w, a2w, a3w, j);
                (da * sl, da * sh, dmina * ml, dmina * mh)
            } else {
                (da, da, da * za, da * za)
            };
            let (slb, shb, mlb, mhb) = if comptime!(group == 0) {
                let (sl, sh, ml, mh) = scales_mins(b1w, b2w, b3w, j);
                (db * sl, db * sh, dminb * ml, dminb * mh)
            } else {
                (db, db, db * zb, db * zb)
            };
            #[unroll]
            for s in 0..2u32 {
                let mask = comptime!(if s == 0 { 0x000F_000Fu32 } else { 0x00F0_00F0u32 });
                let sb = if comptime!(group == 0) { b * 8 + 2 * j + s } else { b * (group / 32) + j + s * (group / 64) };
                a0[0] = Vector::reinterpret(wa0 & mask);
                a0[1] = Vector::reinterpret(wb0 & mask);
                a0[2] = Vector::reinterpret((wa0 >> 8) & mask);
                a0[3] = Vector::reinterpret((wb0 >> 8) & mask);
                a1[0] = Vector::reinterpret(wa1 & mask);
                a1[1] = Vector::reinterpret(wb1 & mask);
                a1[2] = Vector::reinterpret((wa1 >> 8) & mask);
                a1[3] = Vector::reinterpret((wb1 >> 8) & mask);
                let (sca, mna, scb, mnb) = if comptime!(s == 0) { (sla, mla, slb, mlb) } else { (sha, mha, shb, mhb) };
                let unit0 = comptime!(if s == 0 { 16777216.0f32 } else { 1048576.0f32 });
                #[unroll]
                for tile in 0..tiles {
                    let tb = u32::min(4 * tile + g / 2, m - 1);
                    let tc = u32::min(4 * tile + t, m - 1);
                    c[0] = Vector::cast_from(0.0f32);
                    c[1] = Vector::cast_from(0.0f32);
                    #[unroll]
                    for h in 0..2u32 {
                        let xo = tb * k + ((8 * sb + 2 * t + h) * 2 + bpart) * 2;
                        bf[0] = Vector::reinterpret(xq[xo as usize]);
                        bf[1] = Vector::reinterpret(xq[(xo + 1) as usize]);
                        if comptime!(h == 0) {
                            def.execute_inplace(&a0, &bf, &mut c);
                        } else {
                            def.execute_inplace(&a1, &bf, &mut c);
                        }
                    }
                    // Σ q·x of the sub-block for rows g (c[0]) and g + 8 (c[1]), token tc.
                    let xs = xsum[(tc * subs + sb) as usize];
                    let unit = unit0 * xinv[(tc * subs + sb) as usize];
                    let qa = (c[0].extract(0usize) + c[0].extract(1usize)) * unit;
                    let qb = (c[1].extract(0usize) + c[1].extract(1usize)) * unit;
                    acc[(2 * tile) as usize] += sca * qa - mna * xs;
                    acc[(2 * tile + 1) as usize] += scb * qb - mnb * xs;
                }
            }
        }
        b += planes;
    }
    // Per plane, token and row of the cube: the plane's partial sums, then one thread per
    // (token, row) adds the planes'.
    let per = comptime!(4 * tiles * ROWS);
    let mut red = Shared::<[f32]>::new_slice(comptime!(planes * 4 * tiles * ROWS) as usize);
    #[unroll]
    for tile in 0..tiles {
        let o = plane * per + (4 * tile + t) * ROWS;
        red[(o + g) as usize] = acc[(2 * tile) as usize];
        red[(o + g + 8) as usize] = acc[(2 * tile + 1) as usize];
    }
    sync_cube();
    let mut i = plane * 32 + lane;
    while i < m * ROWS {
        let row = i % ROWS;
        let mut s = 0.0f32;
        for p in 0..planes {
            s += red[(p * per + i) as usize];
        }
        if r0 + row < rows {
            let at = (i / ROWS) * ny + col0 + r0 + row;
            y[at as usize] = if comptime!(add) { s + res[at as usize] } else { s };
        }
        i += planes * 32;
    }
}
