//! A prompt's causal attention on the tensor cores (CUDA `mma.m16n8k16`, f16 × f16 → f32), the
//! flash-attention-2 scheme with the registers managed by the kernel: the second launch of a
//! prompt's attention where the device has the f16 `mma` (the f32 SIMT
//! [`attention_prompt`](fn@crate::kernels::attention_prompt::attention_prompt) elsewhere).
//!
//! A cube of `warps` warps ([`WARPS`] by default) takes `16·warps` query rows of one KV head
//! (row `i` = token `i / g`, query head `i % g` of the KV head's group, as in the SIMT kernel);
//! warp `w` owns rows `16w..16w + 16`. Lane `(gl, t) = (lane / 4, lane % 4)` holds rows `gl` and `gl + 8` of its
//! warp's, in the m16n8k16 register layouts:
//!
//! - **Queries** are the A fragments of `S = Q·Kᵀ`, read once (scaled by `scale`, rounded to f16)
//!   and kept in registers: `d / 16` fragments of four f16 pairs.
//! - **Keys and values** are staged [`KEYS`] at a time in shared memory as f16 pairs: keys as
//!   `[key][d / 2]` words (a B fragment of `Kᵀ` is a key's two consecutive `d` values), values
//!   transposed, `[d][KEYS / 2]` words (a B fragment of `V` is one column's two consecutive
//!   keys). Rows are padded by 4 words, so the 32 lanes of a fragment load hit 32 banks.
//! - **Scores** are `KEYS / 8` accumulators a lane: row `gl`'s and row `gl + 8`'s keys `2t, 2t + 1`
//!   of each 8-key tile. Causal masking, the running maximum (over the quad of lanes that share
//!   a row: two `xor` shuffles), `exp` and the running sum stay in registers, and the accumulators
//!   of two adjacent 8-key tiles, rounded to f16, are exactly the A fragment of `P·V` for their
//!   16 keys — the probabilities never leave the registers.
//! - **Output**: `d / 8` accumulators a lane, rescaled by `exp(m_old − m_new)` per tile, divided
//!   by the quad's summed denominators at the end, written as `[b, s, heads·d]`.
//!
//! Cubes take their blocks longest first (a block's key count grows with its last token), and a
//! warp skips the tiles past its own last token. The products walk their reduction step
//! outermost, so consecutive `mma`s are independent.
//!
//! Measured on the H100 (ncu, pp512, session 16): 57 µs a layer at the 8B shape where the f32
//! SIMT kernel takes 224. What bounds it is issue latency: Burn's CUDA compiler gives the
//! kernel 234–255 registers (it sets no register limit CubeCL exposes), so an SM holds 8 warps,
//! each stalled ~8 cycles per instruction, a third of them on the f32 → f16 conversion of the
//! staged tiles (the caches are f32).
//!
//! Precision: queries (after `scale`), keys, probabilities and values are rounded to f16
//! (relative error ≤ 2⁻¹¹ each; llama.cpp keeps its KV cache in f16 too); the sums, the softmax
//! and the output are f32. A key or value beyond f16's range (65504) would overflow: Qwen3's
//! keys are RMS-normalised, and for its values this is the assumption llama.cpp's default f16
//! KV cache makes too. The check holds this path to the issues' f16 bound, 2e-3.

use cubecl::cmma::MmaDefinition;
use cubecl::prelude::*;
use half::f16;

use super::matvec_mma::f16_pair_bits;

/// Warps per cube by default (each owns 16 query rows), where [`supports`] allows; else 4.
/// `BURN_QUANT_ATTN_WARPS` picks 2, 4 or 8 for comparisons. On the H100 at `d` = 128, 8 warps
/// took the 8B prompt's attention (pp512) from 69 to 57 µs a layer against 4: the staging of a
/// tile is shared by twice the rows (BENCHMARKS.md, session 16).
pub const WARPS: u32 = 8;
/// Keys per staged tile.
pub const KEYS: u32 = 64;

/// Query rows per cube of `warps` warps.
pub const fn rows(warps: u32) -> u32 {
    16 * warps
}

/// Bytes of shared memory for heads of `d` values: a tile's keys and its values (transposed).
pub const fn shared_bytes(d: u32) -> u32 {
    4 * (KEYS * (d / 2 + 4) + d * (KEYS / 2 + 4))
}

/// Whether the kernel takes heads of `d` values with `warps` warps within `shared` bytes of
/// shared memory: `d` a multiple of 16 (the fragments' reduction) and at most 128 (its output
/// accumulators are `d / 2` registers a lane), and a tile's staging an even share a thread.
pub fn supports(d: usize, warps: u32, shared: usize) -> bool {
    d.is_multiple_of(16)
        && (16..=128).contains(&d)
        && matches!(warps, 2 | 4 | 8)
        && (KEYS as usize * d / 8).is_multiple_of(32 * warps as usize)
        && shared_bytes(d as u32) as usize <= shared
}

/// The warps per cube for heads of `d` values within `shared` bytes: `BURN_QUANT_ATTN_WARPS`,
/// else [`WARPS`] where [`supports`] allows, else 4.
pub fn warps(d: usize, shared: usize) -> u32 {
    let forced = std::env::var("BURN_QUANT_ATTN_WARPS").ok().and_then(|v| v.parse().ok());
    forced.unwrap_or(if supports(d, WARPS, shared) { WARPS } else { 4 })
}

/// `acc += A·B` for one warp: `steps` reduction steps of 16, step `j`'s A fragment registers
/// `a[4j..4j + 4]`, its B fragment for 8-column tile `n` the f16 pairs at `(8n + gl)·stride + 8j
/// + t` and `+ 4` of `b` (rows of 16-bit pairs along the reduction), the tile's accumulators
/// `acc[2n]`, `acc[2n + 1]`. The step is outermost, so consecutive `mma`s are independent.
#[cube]
#[allow(clippy::too_many_arguments)]
fn product<NA: Size, NB: Size, NC: Size>(
    def: &MmaDefinition<f16, f16, f32>,
    a: &Array<Vector<f16, NA>>,
    b: &[u32],
    stride: u32,
    acc: &mut Array<Vector<f32, NC>>,
    gl: u32,
    t: u32,
    #[comptime] steps: u32,
    #[comptime] tiles: u32,
) {
    let mut af = Array::<Vector<f16, NA>>::new(4usize);
    let mut bf = Array::<Vector<f16, NB>>::new(2usize);
    let mut c = Array::<Vector<f32, NC>>::new(2usize);
    #[unroll]
    for j in 0..steps {
        #[unroll]
        for r in 0..4u32 {
            af[r as usize] = a[(4 * j + r) as usize];
        }
        #[unroll]
        for n in 0..tiles {
            let base = (n * 8 + gl) * stride + 8 * j + t;
            bf[0] = Vector::reinterpret(b[base as usize]);
            bf[1] = Vector::reinterpret(b[(base + 4) as usize]);
            c[0] = acc[(2 * n) as usize];
            c[1] = acc[(2 * n + 1) as usize];
            def.execute_inplace(&af, &bf, &mut c);
            acc[(2 * n) as usize] = c[0];
            acc[(2 * n + 1) as usize] = c[1];
        }
    }
}

/// Causal attention of a prompt's `s` tokens at positions `start..start + s`: `q [b, s,
/// g·kv_heads, d]` (rotated queries), the caches `k`/`v` `[b, kv_heads, cap, d]` holding
/// positions `0..start + s` (read as 4-float vectors, `N4` = 4); token `t` attends positions
/// `0..=start + t` of its KV head with scores `scale · q·k`; `out [b, s, g·kv_heads, d]`. Cube
/// `(b·kv_heads + kv head)·blocks + i` takes block `blocks − 1 − i` of [`rows`]`(warps)` rows,
/// `blocks = ⌈g·s / rows⌉`; the cube is 32 × `warps` units. See the module docs.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments, clippy::manual_div_ceil, clippy::assign_op_pattern)]
pub fn attention_prompt_mma<N4: Size>(
    q: &[f32],
    k: &[Vector<f32, N4>],
    v: &[Vector<f32, N4>],
    out: &mut [f32],
    s: u32,
    g: u32,
    kv_heads: u32,
    cap: u32,
    start: u32,
    scale: f32,
    #[comptime] d: u32,
    #[comptime] warps: u32,
) {
    let lane = UNIT_POS_X;
    let warp = UNIT_POS_Y;
    let tid = warp * 32 + lane;
    let gl = lane / 4;
    let t = lane % 4;
    let dv = comptime!(d / 4);
    let kstr = comptime!(d / 2 + 4);
    let vstr = comptime!(KEYS / 2 + 4);
    let threads = comptime!(32 * warps);
    let rows = comptime!(16 * warps);

    let n_rows = g * s;
    let blocks = (n_rows + rows - 1) / rows;
    let cube = CUBE_POS as u32;
    let head_kv = cube / blocks;
    let row0 = (blocks - 1 - cube % blocks) * rows;
    let bi = head_kv / kv_heads;
    let kh = head_kv % kv_heads;
    let heads = g * kv_heads;
    let kb = head_kv * cap;

    // The lane's rows `gl` (a) and `gl + 8` (b) of its warp, their first value in `out` and the
    // last position each sees (rows past the last are computed from the last, never written).
    let ra = row0 + 16 * warp + gl;
    let rb = ra + 8;
    let ca = u32::min(ra, n_rows - 1);
    let cb = u32::min(rb, n_rows - 1);
    let lim_a = start + ca / g;
    let lim_b = start + cb / g;
    // The warp's last position, and the block's (whose tiles are staged).
    let warp_last = start + u32::min(row0 + 16 * warp + 15, n_rows - 1) / g;
    let n_keys = start + (u32::min(row0 + rows, n_rows) - 1) / g + 1;
    let tiles = (n_keys + KEYS - 1) / KEYS;

    let def = MmaDefinition::<f16, f16, f32>::new(16usize, 8usize, 16usize);
    let size!(NA) = def.vector_size(cubecl::cmma::MatrixIdent::A);
    let size!(NB) = def.vector_size(cubecl::cmma::MatrixIdent::B);
    let size!(NC) = def.vector_size(cubecl::cmma::MatrixIdent::Accumulator);

    // Query fragments, kept in registers: for reduction step `j` (values 16j..16j + 16),
    // registers 4j + 0..4 are (row a, values 2t, 2t + 1), (row b, same), (row a, 2t + 8, 2t + 9),
    // (row b, same), scaled and rounded to f16.
    let qa = ((bi * s + ca / g) * heads + kh * g + ca % g) * d + 2 * t;
    let qb = ((bi * s + cb / g) * heads + kh * g + cb % g) * d + 2 * t;
    let mut qf = Array::<Vector<f16, NA>>::new(comptime!(4 * (d / 16)) as usize);
    #[unroll]
    for j in 0..comptime!(d / 16) {
        let c = 16 * j;
        qf[(4 * j) as usize] = Vector::reinterpret(f16_pair_bits(q[(qa + c) as usize] * scale, q[(qa + c + 1) as usize] * scale));
        qf[(4 * j + 1) as usize] = Vector::reinterpret(f16_pair_bits(q[(qb + c) as usize] * scale, q[(qb + c + 1) as usize] * scale));
        qf[(4 * j + 2) as usize] = Vector::reinterpret(f16_pair_bits(q[(qa + c + 8) as usize] * scale, q[(qa + c + 9) as usize] * scale));
        qf[(4 * j + 3) as usize] = Vector::reinterpret(f16_pair_bits(q[(qb + c + 8) as usize] * scale, q[(qb + c + 9) as usize] * scale));
    }

    // A tile's keys `[key][d / 2]` and values `[d][KEYS / 2]`, as f16 pairs.
    let mut ks = Shared::<[u32]>::new_slice(comptime!(KEYS * (d / 2 + 4)) as usize);
    let mut vt = Shared::<[u32]>::new_slice(comptime!(d * (KEYS / 2 + 4)) as usize);

    // Score accumulators: 8-key tile `n` is registers 2n (row a) and 2n + 1 (row b); the output's
    // 8-column tile `n` likewise.
    let mut sc = Array::<Vector<f32, NC>>::new(comptime!(2 * (KEYS / 8)) as usize);
    let mut o = Array::<Vector<f32, NC>>::new(comptime!(2 * (d / 8)) as usize);
    #[unroll]
    for i in 0..comptime!(2 * (d / 8)) {
        o[i as usize] = Vector::cast_from(0.0f32);
    }
    let mut pf = Array::<Vector<f16, NA>>::new(comptime!(4 * (KEYS / 16)) as usize);
    let mut m_a = f32::new(-3.0e38);
    let mut m_b = f32::new(-3.0e38);
    let mut l_a = 0.0f32;
    let mut l_b = 0.0f32;

    for tile in 0..tiles {
        let kt0 = tile * KEYS;
        // The last tile has been read.
        sync_cube();
        // Keys: a 4-float vector a thread per step, as two f16 pairs; values transposed, a pair
        // of keys × 4 columns a thread per step. Positions past the block's last read that last
        // one (finite, and masked).
        #[unroll]
        for i in 0..comptime!(KEYS * (d / 4) / (32 * warps)) {
            let idx = i * threads + tid;
            let key = idx / dv;
            let c4 = idx % dv;
            let p = u32::min(kt0 + key, n_keys - 1);
            let x = k[((kb + p) * dv + c4) as usize];
            ks[(key * kstr + 2 * c4) as usize] = f16_pair_bits(x.extract(0usize), x.extract(1usize));
            ks[(key * kstr + 2 * c4 + 1) as usize] = f16_pair_bits(x.extract(2usize), x.extract(3usize));
        }
        #[unroll]
        for i in 0..comptime!((KEYS / 2) * (d / 4) / (32 * warps)) {
            let idx = i * threads + tid;
            let kp = idx % comptime!(KEYS / 2);
            let c4 = idx / comptime!(KEYS / 2);
            let p0 = u32::min(kt0 + 2 * kp, n_keys - 1);
            let p1 = u32::min(kt0 + 2 * kp + 1, n_keys - 1);
            let x0 = v[((kb + p0) * dv + c4) as usize];
            let x1 = v[((kb + p1) * dv + c4) as usize];
            #[unroll]
            for e in 0..4u32 {
                vt[((4 * c4 + e) * vstr + kp) as usize] = f16_pair_bits(x0.extract(e as usize), x1.extract(e as usize));
            }
        }
        sync_cube();
        if kt0 <= warp_last {
            // S = (scale·Q)·Kᵀ: reduction step outermost, so the 8-key tiles' products are
            // independent of each other.
            #[unroll]
            for i in 0..comptime!(2 * (KEYS / 8)) {
                sc[i as usize] = Vector::cast_from(0.0f32);
            }
            product::<NA, NB, NC>(&def, &qf, &ks, kstr, &mut sc, gl, t, comptime!(d / 16), comptime!(KEYS / 8));
            // The rows' maxima over their unmasked keys, across the quad.
            let mut mx_a = m_a;
            let mut mx_b = m_b;
            #[unroll]
            for nt in 0..comptime!(KEYS / 8) {
                #[unroll]
                for e in 0..2u32 {
                    let pos = kt0 + nt * 8 + 2 * t + e;
                    mx_a = select(pos <= lim_a, f32::max(mx_a, sc[(2 * nt) as usize].extract(e as usize)), mx_a);
                    mx_b = select(pos <= lim_b, f32::max(mx_b, sc[(2 * nt + 1) as usize].extract(e as usize)), mx_b);
                }
            }
            mx_a = f32::max(mx_a, plane_shuffle_xor(mx_a, 1));
            mx_a = f32::max(mx_a, plane_shuffle_xor(mx_a, 2));
            mx_b = f32::max(mx_b, plane_shuffle_xor(mx_b, 1));
            mx_b = f32::max(mx_b, plane_shuffle_xor(mx_b, 2));
            let alpha_a = f32::exp(m_a - mx_a);
            let alpha_b = f32::exp(m_b - mx_b);
            m_a = mx_a;
            m_b = mx_b;
            // P = exp(S − m) as the A fragments of P·V: 8-key tiles 2j (registers 4j, 4j + 1)
            // and 2j + 1 (4j + 2, 4j + 3) make the 16 keys of step j.
            let mut sum_a = 0.0f32;
            let mut sum_b = 0.0f32;
            #[unroll]
            for nt in 0..comptime!(KEYS / 8) {
                let pos = kt0 + nt * 8 + 2 * t;
                let va = sc[(2 * nt) as usize];
                let vb = sc[(2 * nt + 1) as usize];
                let a0 = select(pos <= lim_a, f32::exp(va.extract(0usize) - m_a), 0.0f32);
                let a1 = select(pos < lim_a, f32::exp(va.extract(1usize) - m_a), 0.0f32);
                let b0 = select(pos <= lim_b, f32::exp(vb.extract(0usize) - m_b), 0.0f32);
                let b1 = select(pos < lim_b, f32::exp(vb.extract(1usize) - m_b), 0.0f32);
                sum_a += a0 + a1;
                sum_b += b0 + b1;
                let r = comptime!(4 * (nt / 2) + 2 * (nt % 2));
                pf[r as usize] = Vector::reinterpret(f16_pair_bits(a0, a1));
                pf[(r + 1) as usize] = Vector::reinterpret(f16_pair_bits(b0, b1));
            }
            l_a = l_a * alpha_a + sum_a;
            l_b = l_b * alpha_b + sum_b;
            let sa = Vector::<f32, NC>::cast_from(alpha_a);
            let sb = Vector::<f32, NC>::cast_from(alpha_b);
            #[unroll]
            for n in 0..comptime!(d / 8) {
                o[(2 * n) as usize] = o[(2 * n) as usize] * sa;
                o[(2 * n + 1) as usize] = o[(2 * n + 1) as usize] * sb;
            }
            // O += P·V, reduction step outermost.
            product::<NA, NB, NC>(&def, &pf, &vt, vstr, &mut o, gl, t, comptime!(KEYS / 16), comptime!(d / 8));
        }
    }

    // The rows' denominators: the quad's four partial sums.
    l_a += plane_shuffle_xor(l_a, 1);
    l_a += plane_shuffle_xor(l_a, 2);
    l_b += plane_shuffle_xor(l_b, 1);
    l_b += plane_shuffle_xor(l_b, 2);
    let inv_a = 1.0f32 / l_a;
    let inv_b = 1.0f32 / l_b;
    #[unroll]
    for n in 0..comptime!(d / 8) {
        #[unroll]
        for e in 0..2u32 {
            if ra < n_rows {
                out[(qa + n * 8 + e) as usize] = o[(2 * n) as usize].extract(e as usize) * inv_a;
            }
            if rb < n_rows {
                out[(qb + n * 8 + e) as usize] = o[(2 * n + 1) as usize].extract(e as usize) * inv_b;
            }
        }
    }
}
