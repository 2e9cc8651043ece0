//! AVX2 + FMA versions of [`super::x86`]'s one-token-row dots, for x86 CPUs without AVX-512
//! (AMD Zen 2/3, older Intel cores), chosen at run time; exact f32 like the portable path.
//!
//! - **Q6_K** (and Q6_Kx4): the 6-bit codes minus 32 are assembled in byte lanes (32 weights per
//!   instruction) into a stack buffer, then per 8 weights a sign-extending load, a conversion, a
//!   multiply by x (or an FMA into the sub-block's partial sum) and one FMA by the sub-block
//!   scale per 16.
//! - **Q4_K**: `Σ (d·sc·q − dmin·m)·x` is taken as `d·sc·Σ q·x − dmin·m·Σ x` per 32-weight
//!   sub-block, the sums of x per sub-block computed once per call for every row; per 8 weights a
//!   zero-extension of masked nibbles, a conversion and an FMA with x.
//!
//! - **Q8_0**: per 8 weights a sign-extending load, a conversion and an FMA with x; one FMA by
//!   the block's scale per 32.
//!
//! All prefetch the weight ahead: the hardware prefetcher alone left the loads waiting.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::x86::{Q6KBlocks, by_groups, q4k_head, q4k_scales_mins};
use crate::format::act_q8k::ActQ8K;
use crate::format::{BlockQ4K, BlockQ8_0, Q6KFields, f16_le};

/// Whether this CPU runs the AVX2 kernels (AVX2, FMA and F16C), checked once.
pub fn has_avx2() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c"))
}

/// The sums of `x` over each run of 32 values (a Q4_K sub-block's inputs), for [`q4k_rows`].
pub fn sub_block_sums(x: &[f32]) -> Vec<f32> {
    x.chunks_exact(32).map(|c| c.iter().sum()).collect()
}

/// The dots of `out.len()` consecutive Q4_K rows of `per_row` blocks (`rows`) with `x`
/// (natural order), given `xsum` = [`sub_block_sums`]`(x)`.
///
/// # Safety
/// The CPU must have the features [`has_avx2`] checks.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q4k_rows(rows: &[BlockQ4K], per_row: usize, x: &[f32], xsum: &[f32], out: &mut [f32]) {
    assert!(x.len() >= per_row * 256 && xsum.len() >= per_row * 8 && rows.len() >= out.len() * per_row);
    by_groups(rows, per_row, out, |g| q4k_group(g, x, xsum), |r| q4k_group([r], x, xsum)[0]);
}

/// `Σ q·x` over 16 codes (`q`'s low 16 bytes, one code per byte) and `x[o .. o + 16]`, as 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn dot16(q: __m128i, x: &[f32], o: usize, acc: __m256) -> __m256 {
    // SAFETY: callers pass o + 16 ≤ x.len().
    unsafe {
        let a = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(q));
        let b = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128::<8>(q)));
        _mm256_fmadd_ps(b, _mm256_loadu_ps(x.as_ptr().add(o + 8)), _mm256_fmadd_ps(a, _mm256_loadu_ps(x.as_ptr().add(o)), acc))
    }
}

/// [`q4k_rows`] for `R` rows of equal length.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q4k_group<const R: usize>(rows: [&[BlockQ4K]; R], x: &[f32], xsum: &[f32]) -> [f32; R] {
    let low4 = _mm_set1_epi8(0x0F);
    // d·sc·Σ q·x and dmin·m·Σ x, 8 lanes each.
    let mut acc = [_mm256_setzero_ps(); R];
    let mut mins = [_mm256_setzero_ps(); R];
    let mut dsc = [[0f32; 8]; R];
    for b in 0..rows[0].len() {
        // SAFETY: xsum has 8 sums per block (checked in `q4k_rows`).
        let sx = unsafe { _mm256_loadu_ps(xsum.as_ptr().add(8 * b)) };
        for i in 0..R {
            let blk = &rows[i][b];
            prefetch_ahead(blk);
            // SAFETY: the first 16 bytes of a block are d, dmin and the 12 scale bytes.
            let head = unsafe { _mm_loadu_si128((blk as *const BlockQ4K).cast()) };
            let sm = q4k_scales_mins(head);
            let dd = _mm_cvtph_ps(head);
            let sc = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(sm));
            let mn = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128::<8>(sm)));
            let d = _mm256_broadcastss_ps(dd);
            let dmin = _mm256_broadcastss_ps(_mm_movehdup_ps(dd));
            // SAFETY: dsc[i] holds 8 floats.
            unsafe { _mm256_storeu_ps(dsc[i].as_mut_ptr(), _mm256_mul_ps(sc, d)) };
            mins[i] = _mm256_fmadd_ps(_mm256_mul_ps(mn, dmin), sx, mins[i]);
        }
        let xb = &x[b * 256..b * 256 + 256];
        for j in 0..4 {
            for i in 0..R {
                // Bytes 32j..32j + 32 of the codes: low nibbles are elements 64j + 0..32 (sub-block
                // 2j), high nibbles 64j + 32..64 (sub-block 2j + 1).
                // SAFETY: qs has 128 bytes; 32j + 32 ≤ 128.
                let (q0, q1) = unsafe {
                    let p = rows[i][b].qs.as_ptr().add(32 * j);
                    (_mm_loadu_si128(p.cast()), _mm_loadu_si128(p.add(16).cast()))
                };
                let lo = dot16(_mm_and_si128(q1, low4), xb, 64 * j + 16, dot16(_mm_and_si128(q0, low4), xb, 64 * j, _mm256_setzero_ps()));
                let hi = dot16(
                    _mm_and_si128(_mm_srli_epi16::<4>(q1), low4),
                    xb,
                    64 * j + 48,
                    dot16(_mm_and_si128(_mm_srli_epi16::<4>(q0), low4), xb, 64 * j + 32, _mm256_setzero_ps()),
                );
                acc[i] = _mm256_fmadd_ps(hi, _mm256_set1_ps(dsc[i][2 * j + 1]), _mm256_fmadd_ps(lo, _mm256_set1_ps(dsc[i][2 * j]), acc[i]));
            }
        }
    }
    std::array::from_fn(|i| hsum(acc[i]) - hsum(mins[i]))
}

/// The dots of `out.len()` consecutive Q6_K rows of `per_row` structs `B` (`rows`) with `x`
/// (natural order): `out[r] = Σ_k W[r, k]·x[k]`.
///
/// # Safety
/// The CPU must have the features [`has_avx2`] checks.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn q6k_rows<B: Q6KBlocks>(rows: &[B], per_row: usize, x: &[f32], out: &mut [f32]) {
    assert!(x.len() >= per_row * B::PER * 256 && rows.len() >= out.len() * per_row);
    by_groups(rows, per_row, out, |g| q6k_group(g, x), |r| q6k_group([r], x)[0]);
}

/// How far ahead (bytes) the kernels prefetch the weight.
const PREFETCH: usize = 4096;

/// Prefetches the bytes of `*blk` [`PREFETCH`] bytes on (a few row groups on, for short rows;
/// further along the row for long ones): the hardware prefetcher alone left the loads waiting on
/// memory. A hint only: an address past the weight is never dereferenced.
#[inline]
#[target_feature(enable = "avx2")]
fn prefetch_ahead<T>(blk: &T) {
    let p = (blk as *const T).cast::<i8>().wrapping_add(PREFETCH);
    for l in 0..std::mem::size_of::<T>().div_ceil(64) {
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64 * l));
    }
}

/// One Q6_K block's 256 codes minus 32, in element order, on a 32-byte boundary.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Codes([i8; 256]);

/// Writes the codes of `blk` minus 32 into `out` (byte lanes, 32 weights per instruction).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn q6k_codes(blk: Q6KFields<'_>, out: *mut Codes) {
    let (low4, bits45, c32) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x30), _mm256_set1_epi8(32));
    let merge = |lo: __m256i, hi: __m256i| _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(lo, low4), _mm256_and_si256(hi, bits45)), c32);
    for n in 0..2 {
        // SAFETY: ql has 128 bytes (64n + 64 ≤ 128), qh 64 (32n + 32 ≤ 64); `out` points to a
        // `Codes` (256 bytes, aligned to 32), and 128n + 96 + 32 ≤ 256.
        unsafe {
            let qa = _mm256_loadu_si256(blk.ql.as_ptr().add(64 * n).cast());
            let qb = _mm256_loadu_si256(blk.ql.as_ptr().add(64 * n + 32).cast());
            let qh = _mm256_loadu_si256(blk.qh.as_ptr().add(32 * n).cast());
            let o = out.cast::<i8>().add(128 * n);
            // Elements 128n + 32s + l: a nibble of ql[64n + l] (s = 0, 2) or ql[64n + 32 + l]
            // (s = 1, 3), low for s < 2, beside bits 2s..2s + 2 of qh[32n + l] moved to bits 4–5.
            _mm256_store_si256(o.cast(), merge(qa, _mm256_slli_epi16::<4>(qh)));
            _mm256_store_si256(o.add(32).cast(), merge(qb, _mm256_slli_epi16::<2>(qh)));
            _mm256_store_si256(o.add(64).cast(), merge(_mm256_srli_epi16::<4>(qa), qh));
            _mm256_store_si256(o.add(96).cast(), merge(_mm256_srli_epi16::<4>(qb), _mm256_srli_epi16::<2>(qh)));
        }
    }
}

/// Codes `o .. o + 8` of `c` as floats.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn codes8(c: &Codes, o: usize) -> __m256 {
    // SAFETY: callers pass o + 8 ≤ 256.
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(unsafe { _mm_loadl_epi64(c.0.as_ptr().add(o).cast()) }))
}

/// [`q6k_rows`] for `R` rows of equal length.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn q6k_group<B: Q6KBlocks, const R: usize>(rows: [&[B]; R], x: &[f32]) -> [f32; R] {
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    // Every block's codes are written before they are read, so the buffer is not zeroed (a
    // kilobyte per call of four rows, which with one-block rows is as much as the weights).
    let mut codes = [const { std::mem::MaybeUninit::<Codes>::uninit() }; R];
    let mut ds = [[0f32; 16]; R];
    for b in 0..rows[0].len() * B::PER {
        for i in 0..R {
            if b % B::PER == 0 {
                prefetch_ahead(&rows[i][b / B::PER]);
            }
            let blk = rows[i][b / B::PER].q6k(b % B::PER);
            q6k_codes(blk, codes[i].as_mut_ptr());
            // d·scale[s]: the scale of elements 16s..16s + 16.
            // SAFETY: scales has 16 bytes; ds[i] holds 16 floats.
            unsafe {
                let sc = _mm_loadu_si128(blk.scales.as_ptr().cast());
                let d = _mm256_set1_ps(f16_le(blk.d));
                let lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc));
                let hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(sc, sc)));
                _mm256_storeu_ps(ds[i].as_mut_ptr(), _mm256_mul_ps(lo, d));
                _mm256_storeu_ps(ds[i].as_mut_ptr().add(8), _mm256_mul_ps(hi, d));
            }
        }
        let xb = &x[b * 256..b * 256 + 256];
        // Sub-blocks in pairs, the even one into `acc[i][0]` and the odd one into `acc[i][1]`
        // (fixed indices keep the accumulators in registers).
        for p in 0..8 {
            // SAFETY: 32p + 32 ≤ 256 values of this block's x.
            let xs: [__m256; 4] = std::array::from_fn(|h| unsafe { _mm256_loadu_ps(xb.as_ptr().add(32 * p + 8 * h)) });
            for i in 0..R {
                // SAFETY: `q6k_codes` wrote all 256 codes of this block above.
                let c = unsafe { codes[i].assume_init_ref() };
                let even = _mm256_fmadd_ps(codes8(c, 32 * p + 8), xs[1], _mm256_mul_ps(codes8(c, 32 * p), xs[0]));
                let odd = _mm256_fmadd_ps(codes8(c, 32 * p + 24), xs[3], _mm256_mul_ps(codes8(c, 32 * p + 16), xs[2]));
                acc[i][0] = _mm256_fmadd_ps(even, _mm256_set1_ps(ds[i][2 * p]), acc[i][0]);
                acc[i][1] = _mm256_fmadd_ps(odd, _mm256_set1_ps(ds[i][2 * p + 1]), acc[i][1]);
            }
        }
    }
    std::array::from_fn(|i| hsum(_mm256_add_ps(acc[i][0], acc[i][1])))
}

/// The dots of `out.len()` consecutive Q6_K rows of `per_row` structs (`rows`) with the int8
/// activations `xq` (one row, [`ActQ8K`]): the opt-in int8 input mode, llama.cpp's arithmetic.
/// Per block `d6 · dx · Σ_s sc_s · (Σ_{j∈s} c_j q_j − 32 · Σ_{j∈s} q_j)` over its 16 sub-blocks,
/// with the unsigned 6-bit codes `c` (0..63): per 32 weights one `maddubs` (`c · q` in pairs, at
/// most 2 · 63 · 127 — no saturation), one `madd` by the sub-blocks' scales, an add.
///
/// # Safety
/// The CPU must have AVX2 ([`has_avx2`]); `xq` must hold `per_row · B::PER` blocks.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn q6k_rows_q8<B: Q6KBlocks>(rows: &[B], per_row: usize, xq: &ActQ8K, out: &mut [f32]) {
    assert!(xq.d.len() >= per_row * B::PER && rows.len() >= out.len() * per_row);
    by_groups(rows, per_row, out, |g| q6k_group_q8(g, xq), |r| q6k_group_q8([r], xq)[0]);
}

/// The dots of `out.len()` consecutive Q4_K rows of `per_row` blocks (`rows`) with the int8
/// activations `xq` ([`ActQ8K`]), as [`q6k_rows_q8`]: per block
/// `d·dx·Σ_s sc_s·Σ_{j∈s} c_j q_j − dmin·dx·Σ_s m_s·Σ_{j∈s} q_j` over its 8 sub-blocks of 32,
/// with the nibbles `c` (0..15): per 32 weights one `maddubs`, one `madd` by the sub-block's
/// scale, an add; the mins from the input's sums of 16 codes, per block.
///
/// # Safety
/// The CPU must have the features [`has_avx2`] checks; `xq` must hold `per_row` blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q4k_rows_q8(rows: &[BlockQ4K], per_row: usize, xq: &ActQ8K, out: &mut [f32]) {
    assert!(xq.d.len() >= per_row && rows.len() >= out.len() * per_row);
    by_groups(rows, per_row, out, |g| q4k_group_q8(g, xq), |r| q4k_group_q8([r], xq)[0]);
}

/// [`q4k_rows_q8`] for `R` rows of equal length.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
// `b` indexes the R rows and three arrays of `xq` alike.
#[allow(clippy::needless_range_loop)]
fn q4k_group_q8<const R: usize>(rows: [&[BlockQ4K]; R], xq: &ActQ8K) -> [f32; R] {
    let low4 = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut mins = [0f32; R];
    for b in 0..rows[0].len() {
        // SAFETY (loads of xq): block b has 256 codes at 256b (asserted through `xq.d.len()`).
        let q8 = unsafe { xq.q.as_ptr().add(256 * b) };
        let dx = xq.d[b];
        let s16 = &xq.sums16[16 * b..16 * b + 16];
        // The sums of the codes over each 32-value sub-block.
        let sub: [i32; 8] = std::array::from_fn(|s| i32::from(s16[2 * s]) + i32::from(s16[2 * s + 1]));
        for i in 0..R {
            let blk = &rows[i][b];
            prefetch_ahead(blk);
            // SAFETY: the first 16 bytes of a block are d, dmin and the 12 scale bytes; qs has
            // 128 bytes (32j + 32 ≤ 128); q8 + 64j + 64 ≤ 256.
            unsafe {
                let (sm, d, dmin) = q4k_head(blk);
                let m: i32 = (0..8).map(|s| i32::from(sm[8 + s]) * sub[s]).sum();
                mins[i] += dmin * dx * m as f32;
                let mut isum = _mm256_setzero_si256();
                for j in 0..4 {
                    // Bytes 32j..32j + 32: low nibbles are elements 64j + 0..32 (sub-block 2j),
                    // high nibbles 64j + 32..64 (sub-block 2j + 1).
                    let q = _mm256_loadu_si256(blk.qs.as_ptr().add(32 * j).cast());
                    let lo = _mm256_and_si256(q, low4);
                    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), low4);
                    let xl = _mm256_loadu_si256(q8.add(64 * j).cast());
                    let xh = _mm256_loadu_si256(q8.add(64 * j + 32).cast());
                    let pl = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, xl), _mm256_set1_epi16(i16::from(sm[2 * j])));
                    let ph = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, xh), _mm256_set1_epi16(i16::from(sm[2 * j + 1])));
                    isum = _mm256_add_epi32(isum, _mm256_add_epi32(pl, ph));
                }
                acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(d * dx), acc[i]);
            }
        }
    }
    std::array::from_fn(|i| hsum(acc[i]) - mins[i])
}

/// `pshufb` masks that spread the i16 scales of sub-blocks `2t` (low 128 bits) and `2t + 1`
/// (high) of a half block over their lanes, from the half's 8 scales in both 128-bit lanes.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn scale_spread(t: i8) -> __m256i {
    let (a, b) = (4 * t, 4 * t + 2);
    _mm256_setr_epi8(
        a, a + 1, a, a + 1, a, a + 1, a, a + 1, a, a + 1, a, a + 1, a, a + 1, a, a + 1,
        b, b + 1, b, b + 1, b, b + 1, b, b + 1, b, b + 1, b, b + 1, b, b + 1, b, b + 1,
    )
}

/// [`q6k_rows_q8`] for `R` rows of equal length.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn q6k_group_q8<B: Q6KBlocks, const R: usize>(rows: [&[B]; R], xq: &ActQ8K) -> [f32; R] {
    let spread = [scale_spread(0), scale_spread(1), scale_spread(2), scale_spread(3)];
    let mut acc = [_mm256_setzero_ps(); R];
    for b in 0..rows[0].len() * B::PER {
        // SAFETY (loads of xq): block b has 256 codes at 256b and 16 sums at 16b (asserted by
        // the caller through `xq.d.len()`).
        let q8 = unsafe { xq.q.as_ptr().add(256 * b) };
        let sums = unsafe { _mm256_loadu_si256(xq.sums16.as_ptr().add(16 * b).cast()) };
        let dx = xq.d[b];
        for i in 0..R {
            if b % B::PER == 0 {
                prefetch_ahead(&rows[i][b / B::PER]);
            }
            let blk = rows[i][b / B::PER].q6k(b % B::PER);
            // SAFETY: scales has 16 bytes, ql 128, qh 64; q8 + 128n + 32t + 32 ≤ 256.
            unsafe {
                let sc8 = _mm_loadu_si128(blk.scales.as_ptr().cast());
                // Σ_s sc_s · Σ_{j∈s} q_j, times 32: the codes' offset.
                let off = _mm256_slli_epi32::<5>(_mm256_madd_epi16(_mm256_cvtepi8_epi16(sc8), sums));
                let mut isum = _mm256_sub_epi32(_mm256_setzero_si256(), off);
                for n in 0..2 {
                    let sc = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(if n == 0 { sc8 } else { _mm_unpackhi_epi64(sc8, sc8) }));
                    for (t, c) in q6k_codes_u8(blk, n).into_iter().enumerate() {
                        let x8 = _mm256_loadu_si256(q8.add(128 * n + 32 * t).cast());
                        let p = _mm256_maddubs_epi16(c, x8);
                        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, _mm256_shuffle_epi8(sc, spread[t])));
                    }
                }
                acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(f16_le(blk.d) * dx), acc[i]);
            }
        }
    }
    std::array::from_fn(|i| hsum(acc[i]))
}

/// The unsigned 6-bit codes (0..63) of half `n` (0 or 1) of a Q6_K block, 32 per vector:
/// vector `t` holds elements `128n + 32t ..+ 32` (as `q6k_codes`, without the offset of 32).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn q6k_codes_u8(blk: Q6KFields<'_>, n: usize) -> [__m256i; 4] {
    let (low4, bits45) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x30));
    // SAFETY: ql has 128 bytes and qh 64; n ≤ 1, so 64n + 64 ≤ 128 and 32n + 32 ≤ 64.
    let (qa, qb, qh) = unsafe {
        (
            _mm256_loadu_si256(blk.ql.as_ptr().add(64 * n).cast()),
            _mm256_loadu_si256(blk.ql.as_ptr().add(64 * n + 32).cast()),
            _mm256_loadu_si256(blk.qh.as_ptr().add(32 * n).cast()),
        )
    };
    [
        _mm256_or_si256(_mm256_and_si256(qa, low4), _mm256_and_si256(_mm256_slli_epi16::<4>(qh), bits45)),
        _mm256_or_si256(_mm256_and_si256(qb, low4), _mm256_and_si256(_mm256_slli_epi16::<2>(qh), bits45)),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(qa), low4), _mm256_and_si256(qh, bits45)),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(qb), low4), _mm256_and_si256(_mm256_srli_epi16::<2>(qh), bits45)),
    ]
}

/// The sum of the 8 lanes of `v`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
}

/// The dots of `out.len()` consecutive Q8_0 rows of `per_row` blocks (`rows`) with `x` (natural
/// order).
///
/// # Safety
/// The CPU must have the features [`has_avx2`] checks.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q80_rows(rows: &[BlockQ8_0], per_row: usize, x: &[f32], out: &mut [f32]) {
    assert!(x.len() >= per_row * 32 && rows.len() >= out.len() * per_row);
    by_groups(rows, per_row, out, |g| q80_group(g, x), |r| q80_group([r], x)[0]);
}

/// [`q80_rows`] for `R` rows of equal length.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // `b` walks the R rows' blocks in lockstep.
fn q80_group<const R: usize>(rows: [&[BlockQ8_0]; R], x: &[f32]) -> [f32; R] {
    let mut acc = [_mm256_setzero_ps(); R];
    for b in 0..rows[0].len() {
        // SAFETY: 32b + 32 ≤ x.len() (checked in `q80_rows`).
        let xs: [__m256; 4] = std::array::from_fn(|h| unsafe { _mm256_loadu_ps(x.as_ptr().add(32 * b + 8 * h)) });
        for i in 0..R {
            let blk = &rows[i][b];
            prefetch_ahead(blk);
            // SAFETY: qs has 32 bytes; 8h + 8 ≤ 32.
            let q = |h: usize| _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(unsafe { _mm_loadl_epi64(blk.qs.as_ptr().add(8 * h).cast()) }));
            let s = _mm256_fmadd_ps(q(3), xs[3], _mm256_fmadd_ps(q(2), xs[2], _mm256_fmadd_ps(q(1), xs[1], _mm256_mul_ps(q(0), xs[0]))));
            acc[i] = _mm256_fmadd_ps(s, _mm256_set1_ps(f16_le(blk.d)), acc[i]);
        }
    }
    std::array::from_fn(|i| hsum(acc[i]))
}
