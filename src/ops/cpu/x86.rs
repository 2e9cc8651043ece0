//! Hand-written AVX-512 row dots for the hottest decode case (one token row, m = 1), chosen at
//! run time. Same math as the portable `dot_acc` (exact f32, FMA), but laid out so every
//! 16-weight group costs one widen, one mask or shift, one convert and one FMA.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use crate::format::{BlockQ4K, BlockQ6K, f16_le, scales_mins_k4};

/// Whether this CPU runs the AVX-512 kernels (AVX-512F + BW), checked once.
pub fn has_avx512() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw"))
}

/// `Σ_k W[k]·x[k]` for one Q4_K row; `x` holds `row.len() · 256` values and `xsum[s]` the sum
/// of `x[32s..32s+32]` (computed once per input row, so the min term costs 8 scalar FMAs per
/// block instead of vector work per weight).
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW ([`has_avx512`]).
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn q4k_row_dot(row: &[BlockQ4K], x: &[f32], xsum: &[f32]) -> f32 {
    assert!(x.len() >= row.len() * 256 && xsum.len() >= row.len() * 8);
    let low = _mm512_set1_epi32(0x0F);
    let mut acc = _mm512_setzero_ps();
    let mut mins = 0f32;
    for (b, blk) in row.iter().enumerate() {
        let (sc, m) = scales_mins_k4(&blk.scales);
        let (d, dmin) = (f16_le(blk.d), f16_le(blk.dmin));
        let mut msum = 0f32;
        for s in 0..8 {
            msum = (m[s] as f32).mul_add(xsum[8 * b + s], msum);
        }
        mins = dmin.mul_add(msum, mins);
        // Two accumulators (even and odd 64-weight groups) to shorten FMA latency chains.
        let mut q_sum = [_mm512_setzero_ps(); 2];
        for j in 0..4 {
            // SAFETY: qs has 128 bytes (j·32 + 32 ≤ 128); x was checked to cover the block.
            let (b0, b1, x0, x1, x2, x3) = unsafe {
                let qp = blk.qs.as_ptr().add(32 * j);
                let xp = x.as_ptr().add(b * 256 + 64 * j);
                (
                    _mm512_cvtepu8_epi32(_mm_loadu_si128(qp as *const __m128i)),
                    _mm512_cvtepu8_epi32(_mm_loadu_si128(qp.add(16) as *const __m128i)),
                    _mm512_loadu_ps(xp),
                    _mm512_loadu_ps(xp.add(16)),
                    _mm512_loadu_ps(xp.add(32)),
                    _mm512_loadu_ps(xp.add(48)),
                )
            };
            // Sub-block 2j: low nibbles of bytes 0..32 against x[0..32]; 2j+1: high nibbles.
            let lo = _mm512_fmadd_ps(
                _mm512_cvtepi32_ps(_mm512_and_si512(b1, low)),
                x1,
                _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_and_si512(b0, low)), x0),
            );
            let hi = _mm512_fmadd_ps(
                _mm512_cvtepi32_ps(_mm512_srli_epi32::<4>(b1)),
                x3,
                _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32::<4>(b0)), x2),
            );
            let qs = &mut q_sum[j & 1];
            *qs = _mm512_fmadd_ps(lo, _mm512_set1_ps(sc[2 * j] as f32), *qs);
            *qs = _mm512_fmadd_ps(hi, _mm512_set1_ps(sc[2 * j + 1] as f32), *qs);
        }
        // W = d·sc·q − dmin·m: the block adds d·Σ sc·q·x here and −dmin·Σ m·xsum to `mins`.
        acc = _mm512_fmadd_ps(_mm512_add_ps(q_sum[0], q_sum[1]), _mm512_set1_ps(d), acc);
    }
    _mm512_reduce_add_ps(acc) - mins
}

/// `Σ_k W[k]·x[k]` for one Q6_K row; `x` holds `row.len() · 256` values.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW ([`has_avx512`]).
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn q6k_row_dot(row: &[BlockQ6K], x: &[f32]) -> f32 {
    assert!(x.len() >= row.len() * 256);
    let (m4, m3, off) = (_mm512_set1_epi32(0x0F), _mm512_set1_epi32(3), _mm512_set1_epi32(32));
    let mut acc = _mm512_setzero_ps();
    for (b, blk) in row.iter().enumerate() {
        let d = f16_le(blk.d);
        let mut sum = [_mm512_setzero_ps(); 2];
        for n in 0..2 {
            for c in 0..2 {
                // Lanes l = 16c..16c+16 of half n: four 16-weight sub-blocks (at l, l+32, l+64,
                // l+96) with scales sc[8n + c + 2g].
                let l = 16 * c;
                // SAFETY: ql has 128 bytes, qh 64 (64n + l + 48 ≤ 128, 32n + l + 16 ≤ 64); x was
                // checked to cover the block.
                let (qa, qb, h, xp) = unsafe {
                    let ql = blk.ql.as_ptr().add(64 * n + l);
                    (
                        _mm512_cvtepu8_epi32(_mm_loadu_si128(ql as *const __m128i)),
                        _mm512_cvtepu8_epi32(_mm_loadu_si128(ql.add(32) as *const __m128i)),
                        _mm512_cvtepu8_epi32(_mm_loadu_si128(blk.qh.as_ptr().add(32 * n + l) as *const __m128i)),
                        x.as_ptr().add(b * 256 + 128 * n + l),
                    )
                };
                let hi = |shift: u32| {
                    // ((h >> shift) & 3) << 4
                    _mm512_slli_epi32::<4>(_mm512_and_si512(_mm512_srlv_epi32(h, _mm512_set1_epi32(shift as i32)), m3))
                };
                let q = [
                    _mm512_or_si512(_mm512_and_si512(qa, m4), hi(0)),
                    _mm512_or_si512(_mm512_and_si512(qb, m4), hi(2)),
                    _mm512_or_si512(_mm512_srli_epi32::<4>(qa), hi(4)),
                    _mm512_or_si512(_mm512_srli_epi32::<4>(qb), hi(6)),
                ];
                for (g, q) in q.into_iter().enumerate() {
                    // SAFETY: xp + 32g + 16 stays inside the block's 256 values.
                    let xv = unsafe { _mm512_loadu_ps(xp.add(32 * g)) };
                    let w = _mm512_cvtepi32_ps(_mm512_sub_epi32(q, off));
                    let scale = _mm512_set1_ps(blk.scales[8 * n + c + 2 * g] as f32);
                    sum[g & 1] = _mm512_fmadd_ps(_mm512_mul_ps(w, xv), scale, sum[g & 1]);
                }
            }
        }
        acc = _mm512_fmadd_ps(_mm512_add_ps(sum[0], sum[1]), _mm512_set1_ps(d), acc);
    }
    _mm512_reduce_add_ps(acc)
}
