//! Q4_K at one token row on the tensor cores (CUDA `mma.m16n8k16`, f16 × f16 → f32), exact.
//!
//! - **Weights**: a nibble masked in place in a 16-bit half is the f16 subnormal `q·2⁻²⁴` (low
//!   nibble, mask `0x000F000F`) or `16q·2⁻²⁴` (high nibble, `0x00F000F0`), so one `AND` turns two
//!   codes of a word into an exact f16 pair — the A fragment's register, with no conversion.
//!   Word `v` of a 32-byte chunk holds elements `4v..4v+4` of sub-blocks `2j` (low) and `2j+1`
//!   (high); `w & mask` pairs elements `4v, 4v+2` and `(w >> 8) & mask` elements `4v+1, 4v+3`.
//!   Lane `(g = lane / 4, t = lane % 4)` holds rows `g` and `g + 8` of the warp's 16 and words
//!   `2t + h` of each chunk, which is exactly the m16n8k16 A layout with the sub-block's k
//!   order permuted (the input is permuted the same way).
//! - **Input**: [`mma_input`] splits each 32-value sub-block of x, scaled by a power of two so its
//!   largest magnitude is in [2¹⁴, 2¹⁵), into `hi = f16(x)` and `lo = f16(x − hi)` (22+ bits),
//!   packed in the B layout; column 0 of B is `hi`, column 1 `lo`, the other six zero. Products
//!   of f16 values are exact in the f32 accumulators, so `D[:, 0] + D[:, 1]` is the sub-block's
//!   `Σ q·x` to f32 accuracy after undoing the scales (powers of two).
//! - Per sub-block the D fragment is scaled by `d·sc` and the min term `dmin·m·Σx` subtracted
//!   (Σx from [`mma_input`]). A cube of `PLANES` warps covers 16 rows, the warps splitting the
//!   blocks; their sums meet in shared memory.

use cubecl::cmma::MmaDefinition;
use cubecl::prelude::*;
use half::f16;

use super::decode::f16_pair;
use super::matvec_q4k::scales_mins;

/// Warps per cube (they split a 16-row group's blocks).
pub const PLANES: u32 = 8;
/// Weight rows per cube (one m16n8k16 tile).
pub const ROWS: u32 = 16;

/// The f16 bits of `v` (round to nearest).
#[cube]
fn f16_bits(v: f32) -> u32 {
    u32::cast_from(u16::reinterpret(f16::cast_from(v)))
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

/// See the module docs. `w` is the packed weight in words, `off` the part's first word; `y` is
/// one row and this launch writes its columns `col0..col0 + rows`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn matvec_q4k_mma(
    w: &[u32],
    xq: &[u32],
    xsum: &[f32],
    xinv: &[f32],
    y: &mut [f32],
    off: u32,
    rows: u32,
    k: u32,
    col0: u32,
) {
    let lane = UNIT_POS_X;
    let plane = UNIT_POS_Y;
    let g = lane / 4;
    let t = lane % 4;
    let r0 = CUBE_POS as u32 * ROWS;
    let ra = select(r0 + g < rows, r0 + g, rows - 1);
    let rb = select(r0 + g + 8 < rows, r0 + g + 8, rows - 1);
    let blocks = k / 256;
    let def = MmaDefinition::<f16, f16, f32>::new(16usize, 8usize, 16usize);
    let size!(NA) = def.vector_size(cubecl::cmma::MatrixIdent::A);
    let size!(NB) = def.vector_size(cubecl::cmma::MatrixIdent::B);
    let size!(NC) = def.vector_size(cubecl::cmma::MatrixIdent::Accumulator);
    let mut a = Array::<Vector<f16, NA>>::new(4usize);
    let mut bf = Array::<Vector<f16, NB>>::new(2usize);
    let mut c = Array::<Vector<f32, NC>>::new(2usize);
    let mut acc_a = 0.0f32;
    let mut acc_b = 0.0f32;
    let mut b = plane;
    while b < blocks {
        let ba = off + (ra * blocks + b) * 36;
        let bb = off + (rb * blocks + b) * 36;
        let (da, dmina) = f16_pair(w[ba as usize], true);
        let (db, dminb) = f16_pair(w[bb as usize], true);
        let (a1, a2, a3) = (w[(ba + 1) as usize], w[(ba + 2) as usize], w[(ba + 3) as usize]);
        let (b1, b2, b3) = (w[(bb + 1) as usize], w[(bb + 2) as usize], w[(bb + 3) as usize]);
        #[unroll]
        for j in 0..4u32 {
            let wa0 = w[(ba + 4 + 8 * j + 2 * t) as usize];
            let wa1 = w[(ba + 5 + 8 * j + 2 * t) as usize];
            let wb0 = w[(bb + 4 + 8 * j + 2 * t) as usize];
            let wb1 = w[(bb + 5 + 8 * j + 2 * t) as usize];
            let (sla, sha, mla, mha) = scales_mins(a1, a2, a3, j);
            let (slb, shb, mlb, mhb) = scales_mins(b1, b2, b3, j);
            #[unroll]
            for s in 0..2u32 {
                let mask = comptime!(if s == 0 { 0x000F_000Fu32 } else { 0x00F0_00F0u32 });
                let sb = b * 8 + 2 * j + s;
                c[0] = Vector::cast_from(0.0f32);
                c[1] = Vector::cast_from(0.0f32);
                #[unroll]
                for h in 0..2u32 {
                    let wa = if comptime!(h == 0) { wa0 } else { wa1 };
                    let wb = if comptime!(h == 0) { wb0 } else { wb1 };
                    a[0] = Vector::reinterpret(wa & mask);
                    a[1] = Vector::reinterpret(wb & mask);
                    a[2] = Vector::reinterpret((wa >> 8) & mask);
                    a[3] = Vector::reinterpret((wb >> 8) & mask);
                    let xo = ((8 * sb + 2 * t + h) * 2 + select(g < 1, 0u32, 1u32)) * 2;
                    let live = g < 2;
                    bf[0] = Vector::reinterpret(select(live, xq[xo as usize], 0u32));
                    bf[1] = Vector::reinterpret(select(live, xq[(xo + 1) as usize], 0u32));
                    def.execute_inplace(&a, &bf, &mut c);
                }
                // Σ q·x of the sub-block for rows g (c[0]) and g + 8 (c[1]), columns hi + lo.
                let unit = comptime!(if s == 0 { 16777216.0f32 } else { 1048576.0f32 }) * xinv[sb as usize];
                let qa = (c[0].extract(0usize) + c[0].extract(1usize)) * unit;
                let qb = (c[1].extract(0usize) + c[1].extract(1usize)) * unit;
                let xs = xsum[sb as usize];
                let (sca, mna, scb, mnb) = if comptime!(s == 0) { (sla, mla, slb, mlb) } else { (sha, mha, shb, mhb) };
                acc_a += da * sca * qa - dmina * mna * xs;
                acc_b += db * scb * qb - dminb * mnb * xs;
            }
        }
        b += PLANES;
    }
    let mut red = Shared::<[f32]>::new_slice((PLANES * ROWS) as usize);
    if t == 0 {
        red[(plane * ROWS + g) as usize] = acc_a;
        red[(plane * ROWS + g + 8) as usize] = acc_b;
    }
    sync_cube();
    let tid = plane * 32 + lane;
    if tid < ROWS {
        let mut s = 0.0f32;
        for p in 0..PLANES {
            s += red[(p * ROWS + tid) as usize];
        }
        if r0 + tid < rows {
            y[(col0 + r0 + tid) as usize] = s;
        }
    }
}
