//! Reference quantizers (f32 → blocks) that reproduce ggml's `quantize_row_*_ref` bit for bit:
//! the same search, the same f32 operation order, the same rounding (`nearest_int` is
//! round-half-to-even through the 1.5·2²³ trick), no fused multiply-adds. Also a round-to-nearest
//! quantizer for burn-quant's int4 groups ([`quantize_i4`]), the starting point GPTQ and AWQ
//! refine, for benchmarks and tests that need int4 weights without a checkpoint.

use super::kquants::{K_SCALE_SIZE, scale_min_k4};
use super::{BlockI4_32, BlockI4_64, BlockI4_128, BlockQ4_0, BlockQ4K, BlockQ6K, BlockQ8_0, GgmlType, QK_K, QK4_0, QK8_0};
use crate::error::{Error, Result};

/// ggml's threshold below which a group is treated as all zeros.
const GROUP_MAX_EPS: f32 = 1e-15;

/// Rounds to the nearest integer, ties to even, exactly as ggml's `nearest_int` (valid for
/// |x| ≤ 4194303).
#[inline(always)]
fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12582912.0;
    (val.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

fn f16_bytes(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}

/// Quantizes `src` (a whole number of blocks) to `kind`; supported: Q4_0, Q8_0, Q4_K, Q6_K and
/// the int4 groups I4_32, I4_64, I4_128 ([`quantize_i4`]).
pub fn quantize(kind: GgmlType, src: &[f32]) -> Result<Vec<u8>> {
    let block = kind.block_elems();
    if !src.len().is_multiple_of(block) {
        return Err(Error::NotBlockAligned { kind, cols: src.len(), block });
    }
    let chunks = src.chunks_exact(block);
    let bytes: Vec<u8> = match kind {
        GgmlType::Q4_0 => chunks.flat_map(|c| bytemuck::bytes_of(&quantize_q4_0(c)).to_vec()).collect(),
        GgmlType::Q8_0 => chunks.flat_map(|c| bytemuck::bytes_of(&quantize_q8_0(c)).to_vec()).collect(),
        GgmlType::Q4_K => chunks.flat_map(|c| bytemuck::bytes_of(&quantize_q4_k(c)).to_vec()).collect(),
        GgmlType::Q6_K => chunks.flat_map(|c| bytemuck::bytes_of(&quantize_q6_k(c)).to_vec()).collect(),
        GgmlType::I4_32 => chunks.flat_map(|c| quantize_i4(c, BlockI4_32::encode)).collect(),
        GgmlType::I4_64 => chunks.flat_map(|c| quantize_i4(c, BlockI4_64::encode)).collect(),
        GgmlType::I4_128 => chunks.flat_map(|c| quantize_i4(c, BlockI4_128::encode)).collect(),
        other => return Err(Error::UnsupportedType(other)),
    };
    Ok(bytes)
}

/// One int4 group, asymmetric round-to-nearest (AutoGPTQ's `Quantizer` with `sym=False` before
/// its error feedback): the range `[min(x, 0), max(x, 0)]` over 15 steps, `d` that step as f16,
/// zero `z = round(−min / d)`, codes `clamp(round(x / d) + z, 0, 15)`; `encode` packs them
/// (`BlockI4_<G>::encode`). An all-zero group gets `d = 0`. Returns the block's bytes.
pub fn quantize_i4<B: bytemuck::Pod>(x: &[f32], encode: fn(half::f16, u8, &[u8]) -> B) -> Vec<u8> {
    let lo = x.iter().fold(0f32, |m, &v| m.min(v));
    let hi = x.iter().fold(0f32, |m, &v| m.max(v));
    let d = half::f16::from_f32((hi - lo) / 15.0);
    let df = d.to_f32();
    let (z, codes): (u8, Vec<u8>) = if df > 0.0 {
        let z = (-lo / df).round().clamp(0.0, 15.0);
        (z as u8, x.iter().map(|&v| ((v / df).round() + z).clamp(0.0, 15.0) as u8).collect())
    } else {
        (0, vec![0; x.len()])
    };
    bytemuck::bytes_of(&encode(d, z, &codes)).to_vec()
}

/// `quantize_row_q4_0_ref` for one block of 32.
pub fn quantize_q4_0(x: &[f32]) -> BlockQ4_0 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in &x[..QK4_0] {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0u8; QK4_0 / 2];
    for j in 0..QK4_0 / 2 {
        let x0 = x[j] * id;
        let x1 = x[QK4_0 / 2 + j] * id;
        // C's (int8_t) conversion truncates toward zero.
        let xi0 = ((x0 + 8.5) as i8).min(15) as u8;
        let xi1 = ((x1 + 8.5) as i8).min(15) as u8;
        qs[j] = xi0 | (xi1 << 4);
    }
    BlockQ4_0 { d: f16_bytes(d), qs }
}

/// `quantize_row_q8_0_ref` for one block of 32.
pub fn quantize_q8_0(x: &[f32]) -> BlockQ8_0 {
    let amax = x[..QK8_0].iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; QK8_0];
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = (v * id).round() as i8;
    }
    BlockQ8_0 { d: f16_bytes(d), qs }
}

/// ggml's `make_qkx2_quants`: an asymmetric (scale, min) search for `x` with importance
/// `weights`, writing levels 0..=nmax to `l`; returns (scale, -min).
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(nmax: i32, x: &[f32], weights: &[f32], l: &mut [u8], rmin: f32, rdelta: f32, nstep: i32) -> (f32, f32) {
    let n = x.len();
    let mut laux = [0u8; 32];
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        min = min.min_c(x[i]);
        max = max.max_c(x[i]);
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l[..n].fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let li = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = li as u8;
        let diff = scale * l[i] as f32 + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let li = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = li as u8;
            let w = weights[i];
            let lf = li as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if cur_error < best_error {
                l[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// C's `if (a < b) a = b`-style comparisons (NaN never replaces), kept explicit for fidelity.
trait CMinMax {
    fn min_c(self, other: Self) -> Self;
    fn max_c(self, other: Self) -> Self;
}
impl CMinMax for f32 {
    #[inline(always)]
    fn min_c(self, other: f32) -> f32 {
        if other < self { other } else { self }
    }
    #[inline(always)]
    fn max_c(self, other: f32) -> f32 {
        if other > self { other } else { self }
    }
}

/// `quantize_row_q4_K_ref` for one block of 256.
pub fn quantize_q4_k(x: &[f32]) -> BlockQ4K {
    let x = &x[..QK_K];
    let mut l = [0u8; QK_K];
    let mut weights = [0f32; 32];
    let mut mins = [0f32; 8];
    let mut scales = [0f32; 8];
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let sum_x2: f32 = xs.iter().fold(0.0, |s, v| s + v * v);
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (scale, min) = make_qkx2_quants(15, xs, &weights, &mut l[32 * j..32 * j + 32], -1.0, 0.1, 20);
        scales[j] = scale;
        mins[j] = min;
        if scale > max_scale {
            max_scale = scale;
        }
        if min > max_min {
            max_min = min;
        }
    }
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut packed = [0u8; K_SCALE_SIZE];
    for j in 0..8 {
        let ls = nearest_int(inv_scale * scales[j]).min(63) as u8;
        let lm = nearest_int(inv_min * mins[j]).min(63) as u8;
        if j < 4 {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (ls & 0x0F) | ((lm & 0x0F) << 4);
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
    let d_bytes = f16_bytes(max_scale / 63.0);
    let dmin_bytes = f16_bytes(max_min / 63.0);
    let (d16, dmin16) = (super::f16_le(d_bytes), super::f16_le(dmin_bytes));
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &packed);
        let d = d16 * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin16 * m as f32;
        for ii in 0..32 {
            l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / d).clamp(0, 15) as u8;
        }
    }
    let mut qs = [0u8; QK_K / 2];
    for j in 0..4 {
        for i in 0..32 {
            qs[32 * j + i] = l[64 * j + i] | (l[64 * j + i + 32] << 4);
        }
    }
    BlockQ4K { d: d_bytes, dmin: dmin_bytes, scales: packed, qs }
}

/// ggml's `make_qx_quants` with `rmse_type = 1` and no importance weights: a symmetric scale
/// search writing `level + nmax` to `l`; returns the scale.
fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [u8]) -> f32 {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let quant = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for (li, &v) in l.iter_mut().zip(x) {
        let q = quant(iscale, v);
        *li = (q + nmax) as u8;
        let w = v * v;
        sumlx += w * v * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        let iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for &v in x {
            let q = quant(iscale, v);
            let w = v * v;
            sumlx += w * v * q as f32;
            suml2 += w * q as f32 * q as f32;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (li, &v) in l.iter_mut().zip(x) {
                *li = (nmax + quant(iscale, v)) as u8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// `quantize_row_q6_K_ref` for one block of 256.
pub fn quantize_q6_k(x: &[f32]) -> BlockQ6K {
    let x = &x[..QK_K];
    let mut l = [0u8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
    for ib in 0..QK_K / 16 {
        let scale = make_qx_quants(32, &x[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16]);
        scales[ib] = scale;
        if scale.abs() > max_abs_scale {
            max_abs_scale = scale.abs();
            max_scale = scale;
        }
    }
    let mut y = BlockQ6K { ql: [0; QK_K / 2], qh: [0; QK_K / 4], scales: [0; QK_K / 16], d: f16_bytes(0.0) };
    if max_abs_scale < GROUP_MAX_EPS {
        return y;
    }
    let iscale = -128.0 / max_scale;
    y.d = f16_bytes(1.0 / iscale);
    for ib in 0..QK_K / 16 {
        y.scales[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
    }
    let d16 = super::f16_le(y.d);
    for j in 0..QK_K / 16 {
        let d = d16 * y.scales[j] as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            l[16 * j + ii] = (nearest_int(x[16 * j + ii] / d).clamp(-32, 31) + 32) as u8;
        }
    }
    for n in 0..2 {
        let (j, ql, qh) = (128 * n, &mut y.ql[64 * n..64 * n + 64], &mut y.qh[32 * n..32 * n + 32]);
        for i in 0..32 {
            let q = [l[j + i], l[j + i + 32], l[j + i + 64], l[j + i + 96]];
            ql[i] = (q[0] & 0x0F) | ((q[2] & 0x0F) << 4);
            ql[i + 32] = (q[1] & 0x0F) | ((q[3] & 0x0F) << 4);
            qh[i] = (q[0] >> 4) | ((q[1] >> 4) << 2) | ((q[2] >> 4) << 4) | ((q[3] >> 4) << 6);
        }
    }
    y
}
