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
//!   `d` and `d·z`; Σx from [`mma_input`]). A cube of `planes` warps covers `16 · mt` rows
//!   (`mt` A tiles a warp, sharing each B fragment read), the warps splitting the blocks; their
//!   sums meet in shared memory.

use cubecl::cmma::MmaDefinition;
use cubecl::prelude::*;
use half::f16;

use super::decode::f16_pair;
use super::matvec_q4k::scales_mins;

/// Warps per cube with one A tile a warp (they split the blocks of the cube's rows); the launch
/// passes `planes` (16 with two tiles: `ops::cube::mma_shape`).
pub const PLANES: u32 = 8;
/// Weight rows of one A tile (m16n8k16); a cube covers `ROWS · mt` rows.
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

/// One thread per quad `qd` (4 values) of `x` (`k / 4` of them, 256 threads a cube, warps of 32
/// lanes): writes the quad's scaled input split into `hi` / `lo` f16 halves as B-fragment words,
/// each lane's four words of a 32-value sub-block together (one 16-byte load): for quad `q` of
/// sub-block `sb` and part `p` (0 = hi, 1 = lo), word `32·sb + 16·p + 4·(q / 2) + 2·(q % 2)`
/// packs values `4q, 4q+2` and the next word `4q+1, 4q+3`. Also writes each sub-block's `Σx` to
/// `xsum[sb]` and the inverse of the scale to `xinv[sb]`: a power of two that puts the largest
/// magnitude of the sub-block's `run` (32, 64 or 128 values, `k` a multiple of it) in
/// [2¹⁴, 2¹⁵), so every sub-block of a run shares one scale; and per run, `xrun[2r]` its `Σx` and
/// `xrun[2r + 1]` its unit `2²⁴ / scale` (one f16 subnormal step of a code, unscaled). Threads
/// below `counters` zero `cnt` (the split-K counters of the kernel that reads this input).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments, clippy::manual_is_multiple_of)]
pub fn mma_input(x: &[f32], xq: &mut [u32], xsum: &mut [f32], xinv: &mut [f32], xrun: &mut [f32], cnt: &mut [u32], quads: u32, counters: u32, #[comptime] run: u32) {
    let qd = ABSOLUTE_POS as u32;
    if qd < counters {
        cnt[qd as usize] = 0;
    }
    // Threads past the last quad read it again (their lanes still take part in the shuffles
    // below, in runs of their own) and write nothing.
    let live = qd < quads;
    let at = select(live, qd, quads - 1) * 4;
    let mut mx = 0.0f32;
    let mut s = 0.0f32;
    #[unroll]
    for e in 0..4u32 {
        let v = x[(at + e) as usize];
        s += v;
        mx = f32::max(mx, f32::abs(v));
    }
    // The sub-block's sum over its 8 quads, the run's largest magnitude over its `run / 4`.
    #[unroll]
    for i in 0..3u32 {
        s += plane_shuffle_xor(s, 1u32 << i);
    }
    let mut rs = s;
    #[unroll]
    for i in 3..comptime!((run / 4).trailing_zeros()) {
        rs += plane_shuffle_xor(rs, 1u32 << i);
    }
    #[unroll]
    for i in 0..comptime!((run / 4).trailing_zeros()) {
        mx = f32::max(mx, plane_shuffle_xor(mx, 1u32 << i));
    }
    // The exponent field of 2^(14 − E) for the largest magnitude 2^E·1.m: 127 + 14 − E =
    // 268 − field(mx); 1 for an all-zero (or subnormal) run, 2^127 below 2^-113.
    let ex = (u32::reinterpret(mx) >> 23) & 0xFF;
    let se = select(ex == 0, 127u32, select(ex < 14, 254u32, 268 - ex));
    let scale = f32::reinterpret(se << 23);
    if live {
        let sb = qd / 8;
        let q = qd % 8;
        if q == 0 {
            xsum[sb as usize] = s;
            xinv[sb as usize] = 1.0 / scale;
        }
        if qd % comptime!(run / 4) == 0 {
            let r = qd / comptime!(run / 4);
            xrun[(2 * r) as usize] = rs;
            xrun[(2 * r + 1) as usize] = 16777216.0f32 / scale;
        }
        let mut hi = Array::<u32>::new(4usize);
        let mut lo = Array::<u32>::new(4usize);
        #[unroll]
        for e in 0..4u32 {
            let v = x[(at + e) as usize] * scale;
            let h = f16::cast_from(v);
            hi[e as usize] = u32::cast_from(u16::reinterpret(h));
            lo[e as usize] = f16_bits(v - f32::cast_from(h));
        }
        let o = 32 * sb + 4 * (q / 2) + 2 * (q % 2);
        xq[o as usize] = hi[0] | (hi[2] << 16);
        xq[(o + 1) as usize] = hi[1] | (hi[3] << 16);
        xq[(o + 16) as usize] = lo[0] | (lo[2] << 16);
        xq[(o + 17) as usize] = lo[1] | (lo[3] << 16);
    }
}

/// The four A-fragment registers of one 16-row tile for one half of a chunk: rows `g` (`wa*`)
/// and `g + 8` (`wb*`), word `0` of the lane's pair for the first `k16` step (`a0`) and word `1`
/// for the second (`a1`), the codes shifted right by `shift` and masked in place (`mask`) as
/// exact f16 subnormals.
#[cube]
#[allow(clippy::too_many_arguments)]
pub fn fill_a<NA: Size>(
    wa0: u32,
    wa1: u32,
    wb0: u32,
    wb1: u32,
    a0: &mut Array<Vector<f16, NA>>,
    a1: &mut Array<Vector<f16, NA>>,
    #[comptime] shift: u32,
    #[comptime] mask: u32,
) {
    a0[0] = Vector::reinterpret((wa0 >> shift) & mask);
    a0[1] = Vector::reinterpret((wb0 >> shift) & mask);
    a0[2] = Vector::reinterpret((wa0 >> (shift + 8)) & mask);
    a0[3] = Vector::reinterpret((wb0 >> (shift + 8)) & mask);
    a1[0] = Vector::reinterpret((wa1 >> shift) & mask);
    a1[1] = Vector::reinterpret((wb1 >> shift) & mask);
    a1[2] = Vector::reinterpret((wa1 >> (shift + 8)) & mask);
    a1[3] = Vector::reinterpret((wb1 >> (shift + 8)) & mask);
}

/// See the module docs. `w` is the packed weight in words, `off` the part's first word. `group`
/// picks the block layout: 0 for Q4_K (144-byte blocks of 256, per-sub-block scales and mins),
/// else burn-quant's int4 group of `group` weights (a multiple of 64: header word `d | z << 16`,
/// then `group / 8` code words, byte `j` holding weights `j` and `j + group/2`, so the low and
/// high nibbles of a 32-byte chunk are again two 32-value runs of the input). `m` token rows (at
/// most `4 · tiles`) are read from [`mma_input`]'s output for `m · k` values; `y` is `[m, ny]`,
/// this launch writing columns `col0..col0 + rows` (plus `res` at the same index with `add`).
/// Each `n8` tile of B holds 4 token rows (hi and lo columns of each), so the A fragment of a
/// sub-block is decoded once for all of them; a warp takes `mt` (1 or 2) 16-row A tiles, so each
/// B fragment read serves `mt` of them (a cube covers `16 · mt` rows).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn matvec_q4_mma<X4: Size>(
    w: &[u32],
    xq: &[Vector<u32, X4>],
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
    #[comptime] mt: u32,
    #[comptime] add: bool,
) {
    let lane = UNIT_POS_X;
    let plane = UNIT_POS_Y;
    let g = lane / 4;
    let t = lane % 4;
    let cube_rows = comptime!(ROWS * mt);
    let r0 = CUBE_POS as u32 * cube_rows;
    // Rows g and g + 8 of each A tile (`2i`, `2i + 1`), clamped for reads.
    let mut row = Array::<u32>::new(comptime!(2 * mt) as usize);
    #[unroll]
    for i in 0..2 * mt {
        let r = r0 + 16 * (i / 2) + 8 * (i % 2) + g;
        row[i as usize] = select(r < rows, r, rows - 1);
    }
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
    let mut e0 = Array::<Vector<f16, NA>>::new(4usize);
    let mut e1 = Array::<Vector<f16, NA>>::new(4usize);
    let mut bf = Array::<Vector<f16, NB>>::new(2usize);
    let mut bg = Array::<Vector<f16, NB>>::new(2usize);
    let mut c = Array::<Vector<f32, NC>>::new(2usize);
    let mut ce = Array::<Vector<f32, NC>>::new(2usize);
    // Per A-tile row `i` (as `row`) and token tile: the row's sum.
    let mut acc = Array::<f32>::new(comptime!(2 * mt * tiles) as usize);
    #[unroll]
    for i in 0..2 * mt * tiles {
        acc[i as usize] = 0.0;
    }
    let mut base = Array::<u32>::new(comptime!(2 * mt) as usize);
    let mut hw = Array::<u32>::new(comptime!(8 * mt) as usize);
    let mut wd = Array::<u32>::new(comptime!(4 * mt) as usize);
    // Per row `i`: the scales of the chunk's two halves' `Σ q·x` and `Σ x`.
    let mut sc = Array::<f32>::new(comptime!(8 * mt) as usize);
    let mut b = plane;
    while b < blocks {
        #[unroll]
        for i in 0..2 * mt {
            let at = off + (row[i as usize] * blocks + b) * bwords;
            base[i as usize] = at;
            hw[(4 * i) as usize] = w[at as usize];
            if comptime!(group == 0) {
                // Q4_K: the scale words.
                hw[(4 * i + 1) as usize] = w[(at + 1) as usize];
                hw[(4 * i + 2) as usize] = w[(at + 2) as usize];
                hw[(4 * i + 3) as usize] = w[(at + 3) as usize];
            }
        }
        #[unroll]
        for j in 0..chunks {
            #[unroll]
            for i in 0..2 * mt {
                let at = base[i as usize] + code0 + 8 * j + 2 * t;
                wd[(2 * i) as usize] = w[at as usize];
                wd[(2 * i + 1) as usize] = w[(at + 1) as usize];
                let (d, dmin) = f16_pair(hw[(4 * i) as usize], true);
                if comptime!(group == 0) {
                    let (sl, sh, ml, mh) = scales_mins(hw[(4 * i + 1) as usize], hw[(4 * i + 2) as usize], hw[(4 * i + 3) as usize], j);
                    sc[(4 * i) as usize] = d * sl;
                    sc[(4 * i + 1) as usize] = d * sh;
                    sc[(4 * i + 2) as usize] = dmin * ml;
                    sc[(4 * i + 3) as usize] = dmin * mh;
                } else {
                    // int4: the zero point is bits 16..24 of the header.
                    let dz = d * f32::cast_from((hw[(4 * i) as usize] >> 16) & 0xFF);
                    sc[(4 * i) as usize] = d;
                    sc[(4 * i + 1) as usize] = d;
                    sc[(4 * i + 2) as usize] = dz;
                    sc[(4 * i + 3) as usize] = dz;
                }
            }
            #[unroll]
            for s in 0..2u32 {
                let mask = comptime!(if s == 0 { 0x000F_000Fu32 } else { 0x00F0_00F0u32 });
                let sb = if comptime!(group == 0) { b * 8 + 2 * j + s } else { b * (group / 32) + j + s * (group / 64) };
                fill_a(wd[0], wd[1], wd[2], wd[3], &mut a0, &mut a1, 0u32, mask);
                if comptime!(mt == 2) {
                    fill_a(wd[4], wd[5], wd[6], wd[7], &mut e0, &mut e1, 0u32, mask);
                }
                let unit0 = comptime!(if s == 0 { 16777216.0f32 } else { 1048576.0f32 });
                #[unroll]
                for tile in 0..tiles {
                    let tb = u32::min(4 * tile + g / 2, m - 1);
                    let tc = u32::min(4 * tile + t, m - 1);
                    c[0] = Vector::cast_from(0.0f32);
                    c[1] = Vector::cast_from(0.0f32);
                    ce[0] = Vector::cast_from(0.0f32);
                    ce[1] = Vector::cast_from(0.0f32);
                    let v = xq[((tb * k + 32 * sb + 16 * bpart) / 4 + t) as usize];
                    bf[0] = Vector::reinterpret(v.extract(0usize));
                    bf[1] = Vector::reinterpret(v.extract(1usize));
                    bg[0] = Vector::reinterpret(v.extract(2usize));
                    bg[1] = Vector::reinterpret(v.extract(3usize));
                    def.execute_inplace(&a0, &bf, &mut c);
                    def.execute_inplace(&a1, &bg, &mut c);
                    if comptime!(mt == 2) {
                        def.execute_inplace(&e0, &bf, &mut ce);
                        def.execute_inplace(&e1, &bg, &mut ce);
                    }
                    // Σ q·x of the sub-block for rows g (c[0]) and g + 8 (c[1]), token tc.
                    let xs = xsum[(tc * subs + sb) as usize];
                    let unit = unit0 * xinv[(tc * subs + sb) as usize];
                    #[unroll]
                    for i in 0..2 * mt {
                        let cv = if comptime!(i < 2) { c[(i % 2) as usize] } else { ce[(i % 2) as usize] };
                        let q = (cv.extract(0usize) + cv.extract(1usize)) * unit;
                        let a = (i * tiles + tile) as usize;
                        acc[a] += sc[(4 * i + s) as usize] * q - sc[(4 * i + 2 + s) as usize] * xs;
                    }
                }
            }
        }
        b += planes;
    }
    // Per plane, token and row of the cube: the plane's partial sums, then one thread per
    // (token, row) adds the planes'.
    let per = comptime!(4 * tiles * cube_rows);
    let mut red = Shared::<[f32]>::new_slice(comptime!(planes * 4 * tiles * cube_rows) as usize);
    #[unroll]
    for tile in 0..tiles {
        #[unroll]
        for i in 0..2 * mt {
            let o = plane * per + (4 * tile + t) * cube_rows + 16 * (i / 2) + 8 * (i % 2) + g;
            red[o as usize] = acc[(i * tiles + tile) as usize];
        }
    }
    sync_cube();
    let mut i = plane * 32 + lane;
    while i < m * cube_rows {
        let r = i % cube_rows;
        let mut s = 0.0f32;
        for p in 0..planes {
            s += red[(p * per + i) as usize];
        }
        if r0 + r < rows {
            let at = (i / cube_rows) * ny + col0 + r0 + r;
            y[at as usize] = if comptime!(add) { s + res[at as usize] } else { s };
        }
        i += planes * 32;
    }
}
