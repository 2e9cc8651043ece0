//! Hand-written AVX-512 dots for the hottest decode case (one token row, m = 1), chosen at run
//! time. Exact f32 like the portable `dot_acc`; laid out for Sapphire-Rapids-class cores, where
//! 512-bit shifts and conversions issue only on port 0 and permutes only on port 5, so each
//! kernel spreads its per-weight work over both ports and the FMA units.
//!
//! - **Q4_K** decodes through a 16-entry table per sub-block: `T[q] = d·sc·q − dmin·m` (one
//!   FMA builds it), looked up with `vpermps`, which reads only the low 4 bits of each index —
//!   so a 16-byte group of codes is broadcast to the four 128-bit lanes and one variable shift
//!   per lane brings the wanted nibble down, with no mask and no widening. Per 16 weights: a
//!   shift, a permute, an FMA with x. The lane order this gives (dword lane `4L + d` holds byte
//!   `4d + L` of the group) is undone by reading x in the same order ([`lane_order`]).
//! - **Q6_K** assembles the 6-bit codes (minus 32) in byte lanes, 64 weights per instruction,
//!   into a small stack buffer; then per 16 weights: a sign-extending load, a conversion, a
//!   multiply by the sub-block scale and an FMA with x (natural order).
//!
//! Both take [`ROWS`] weight rows at a time so that each load of x serves every row.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use crate::format::{BlockQ4K, BlockQ6K, BlockQ6Kx4, Q6KFields, f16_le};

/// Weight rows dotted side by side (each load of x serves all of them).
pub const ROWS: usize = 4;

/// Whether this CPU runs the AVX-512 kernels (AVX-512F + BW, with AVX2 and F16C), checked once.
pub fn has_avx512() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("f16c")
    })
}

/// `x` in the lane order of [`q4k_rows`]: within each group of 16 values, value `4L + d` is
/// `x[4d + L]` (a 4 × 4 transpose). A trailing partial group is copied as is.
pub fn lane_order(x: &[f32]) -> Vec<f32> {
    let mut out = x.to_vec();
    for (o, g) in out.chunks_exact_mut(16).zip(x.chunks_exact(16)) {
        for (n, v) in o.iter_mut().enumerate() {
            *v = g[4 * (n % 4) + n / 4];
        }
    }
    out
}

/// The dots of `out.len()` consecutive Q4_K rows of `per_row` blocks (`rows`) with `xl`, the
/// input in [`lane_order`]: `out[r] = Σ_k W[r, k]·x[k]`.
///
/// # Safety
/// The CPU must have the features [`has_avx512`] checks.
#[target_feature(enable = "avx512f,avx512bw,avx2,f16c")]
pub unsafe fn q4k_rows(rows: &[BlockQ4K], per_row: usize, xl: &[f32], out: &mut [f32]) {
    assert!(xl.len() >= per_row * 256 && rows.len() >= out.len() * per_row);
    by_groups(rows, per_row, out, |g| q4k_group(g, xl), |r| q4k_group([r], xl)[0]);
}

/// Writes `out[r]` for `out.len()` consecutive rows of `per_row` blocks each: [`ROWS`] rows at a
/// time through `group`, the remainder one by one through `single`.
#[inline(always)]
pub(super) fn by_groups<B>(
    rows: &[B],
    per_row: usize,
    out: &mut [f32],
    mut group: impl FnMut([&[B]; ROWS]) -> [f32; ROWS],
    mut single: impl FnMut(&[B]) -> f32,
) {
    let row = |r: usize| &rows[r * per_row..(r + 1) * per_row];
    let mut groups = out.chunks_exact_mut(ROWS);
    let mut r = 0;
    for o in &mut groups {
        o.copy_from_slice(&group(std::array::from_fn(|i| row(r + i))));
        r += ROWS;
    }
    for o in groups.into_remainder() {
        *o = single(row(r));
        r += 1;
    }
}

/// The eight 6-bit scales then the eight 6-bit mins of a Q4_K block as 16 bytes, from the
/// block's first 16 bytes (`d|dmin`, then the scale words `s0, s1, s2`), with ggml's
/// `get_scale_min_k4` done on whole words: `sc[0..4] = s0 & 63`, `sc[4..8] = (s2 & 15) |
/// (s0 >> 6) << 4`, `m[0..4] = s1 & 63`, `m[4..8] = (s2 >> 4) | (s1 >> 6) << 4`, byte-wise.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn q4k_scales_mins(head: __m128i) -> __m128i {
    // Words [s0, s2, s1, s2] shifted by [0, 0, 0, 4], masked to the low bits of each byte...
    let low = _mm_and_si128(
        _mm_srlv_epi32(_mm_shuffle_epi32::<0b11_10_11_01>(head), _mm_setr_epi32(0, 0, 0, 4)),
        _mm_setr_epi32(0x3F3F_3F3F, 0x0F0F_0F0F, 0x3F3F_3F3F, 0x0F0F_0F0F),
    );
    // ...beside words [s0, s0, s1, s1]'s top two bits of each byte, moved to bits 4–5.
    let top = _mm_and_si128(_mm_srli_epi32::<2>(_mm_shuffle_epi32::<0b10_10_01_01>(head)), _mm_setr_epi32(0, 0x3030_3030, 0, 0x3030_3030));
    _mm_or_si128(low, top)
}

/// A Q4_K block's header: its [`q4k_scales_mins`] bytes (eight scales, then eight mins), `d` and
/// `dmin`.
#[inline]
#[target_feature(enable = "avx2,f16c")]
pub(super) fn q4k_head(blk: &BlockQ4K) -> ([u8; 16], f32, f32) {
    // SAFETY: the first 16 bytes of a block are d, dmin and the 12 scale bytes.
    let head = unsafe { _mm_loadu_si128((blk as *const BlockQ4K).cast()) };
    let mut sm = [0u8; 16];
    // SAFETY: `sm` holds 16 bytes.
    unsafe { _mm_storeu_si128(sm.as_mut_ptr().cast(), q4k_scales_mins(head)) };
    let dd = _mm_cvtph_ps(head);
    (sm, _mm_cvtss_f32(dd), _mm_cvtss_f32(_mm_movehdup_ps(dd)))
}

/// [`q4k_rows`] for `R` rows of equal length.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,f16c")]
fn q4k_group<const R: usize>(rows: [&[BlockQ4K]; R], xl: &[f32]) -> [f32; R] {
    let shift_lo = _mm512_setr_epi32(0, 0, 0, 0, 8, 8, 8, 8, 16, 16, 16, 16, 24, 24, 24, 24);
    let shift_hi = _mm512_add_epi32(shift_lo, _mm512_set1_epi32(4));
    let iota = _mm512_setr_ps(0., 1., 2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12., 13., 14., 15.);
    let d_then_dmin = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    for b in 0..rows[0].len() {
        // Per row: d·sc[s] in lanes 0..8 and dmin·m[s] in lanes 8..16.
        let mut ac = [[0f32; 16]; R];
        for i in 0..R {
            // SAFETY: the first 16 bytes of a block are d, dmin and the 12 scale bytes.
            let head = unsafe { _mm_loadu_si128((&raw const rows[i][b]).cast()) };
            let v = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(q4k_scales_mins(head)));
            let dd = _mm512_permutexvar_ps(d_then_dmin, _mm512_castps128_ps512(_mm_cvtph_ps(head)));
            // SAFETY: `ac[i]` holds 16 floats.
            unsafe { _mm512_storeu_ps(ac[i].as_mut_ptr(), _mm512_mul_ps(v, dd)) };
        }
        let xb = &xl[b * 256..b * 256 + 256];
        for j in 0..4 {
            // The tables of sub-blocks 2j (low nibbles) and 2j + 1 (high nibbles).
            let t: [[__m512; 2]; R] = std::array::from_fn(|i| {
                let a = &ac[i];
                [
                    _mm512_fmsub_ps(iota, _mm512_set1_ps(a[2 * j]), _mm512_set1_ps(a[8 + 2 * j])),
                    _mm512_fmsub_ps(iota, _mm512_set1_ps(a[2 * j + 1]), _mm512_set1_ps(a[9 + 2 * j])),
                ]
            });
            for h in 0..2 {
                // SAFETY: 64j + 32 + 16h + 16 ≤ 256 values of this block's x.
                let (x_lo, x_hi) = unsafe {
                    (_mm512_loadu_ps(xb.as_ptr().add(64 * j + 16 * h)), _mm512_loadu_ps(xb.as_ptr().add(64 * j + 32 + 16 * h)))
                };
                for i in 0..R {
                    // SAFETY: qs has 128 bytes; 32j + 16h + 16 ≤ 128.
                    let codes = _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(rows[i][b].qs.as_ptr().add(32 * j + 16 * h).cast()) });
                    let w_lo = _mm512_permutexvar_ps(_mm512_srlv_epi32(codes, shift_lo), t[i][0]);
                    let w_hi = _mm512_permutexvar_ps(_mm512_srlv_epi32(codes, shift_hi), t[i][1]);
                    acc[i][0] = _mm512_fmadd_ps(w_lo, x_lo, acc[i][0]);
                    acc[i][1] = _mm512_fmadd_ps(w_hi, x_hi, acc[i][1]);
                }
            }
        }
    }
    std::array::from_fn(|i| _mm512_reduce_add_ps(_mm512_add_ps(acc[i][0], acc[i][1])))
}

/// A block type holding whole Q6_K blocks: [`BlockQ6K`] (one) or [`BlockQ6Kx4`] (four).
pub trait Q6KBlocks: Sync {
    /// Q6_K blocks per struct.
    const PER: usize;
    /// The fields of Q6_K block `i` (`< PER`).
    fn q6k(&self, i: usize) -> Q6KFields<'_>;
}

impl Q6KBlocks for BlockQ6K {
    const PER: usize = 1;
    #[inline(always)]
    fn q6k(&self, _: usize) -> Q6KFields<'_> {
        self.fields()
    }
}

impl Q6KBlocks for BlockQ6Kx4 {
    const PER: usize = 4;
    #[inline(always)]
    fn q6k(&self, i: usize) -> Q6KFields<'_> {
        self.fields(i)
    }
}

/// The dots of `out.len()` consecutive Q6_K rows of `per_row` structs `B` (`rows`) with `x`
/// (natural order): `out[r] = Σ_k W[r, k]·x[k]`.
///
/// # Safety
/// The CPU must have the features [`has_avx512`] checks.
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn q6k_rows<B: Q6KBlocks>(rows: &[B], per_row: usize, x: &[f32], out: &mut [f32]) {
    assert!(x.len() >= per_row * B::PER * 256 && rows.len() >= out.len() * per_row);
    by_groups(rows, per_row, out, |g| q6k_group(g, x), |r| q6k_group([r], x)[0]);
}

/// One Q6_K block's 256 codes minus 32, in element order, on a 64-byte boundary.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Codes([i8; 256]);

/// Writes the codes of `blk` minus 32 into `out` (byte lanes, 64 weights per instruction).
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn q6k_codes(blk: Q6KFields<'_>, out: *mut Codes) {
    let (low4, bits45, c32) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x30), _mm512_set1_epi8(32));
    // (A & C) | B: the low nibble of A beside the already-masked high bits B.
    const MERGE: i32 = 0xEC;
    for n in 0..2 {
        // SAFETY: ql has 128 bytes (64n + 64 ≤ 128), qh 64 (32n + 32 ≤ 64); `out` points to a
        // `Codes` (256 bytes, aligned to 64).
        unsafe {
            let ql = _mm512_loadu_si512(blk.ql.as_ptr().add(64 * n).cast());
            let qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(blk.qh.as_ptr().add(32 * n).cast()));
            // Elements 128n + 0..64: low nibbles of ql[64n..64n + 64]; their high bits are qh bits
            // 0–1 for the first 32 and 2–3 for the next 32, moved to bits 4–5.
            let h01 = _mm512_and_si512(_mm512_mask_blend_epi64(0xF0, _mm512_slli_epi16(qh, 4), _mm512_slli_epi16(qh, 2)), bits45);
            let q01 = _mm512_sub_epi8(_mm512_ternarylogic_epi32(ql, h01, low4, MERGE), c32);
            _mm512_store_si512(out.cast::<i8>().add(128 * n).cast(), q01);
            // Elements 128n + 64..128: high nibbles; qh bits 4–5, then 6–7.
            let h23 = _mm512_and_si512(_mm512_mask_blend_epi64(0xF0, qh, _mm512_srli_epi16(qh, 2)), bits45);
            let q23 = _mm512_sub_epi8(_mm512_ternarylogic_epi32(_mm512_srli_epi16(ql, 4), h23, low4, MERGE), c32);
            _mm512_store_si512(out.cast::<i8>().add(128 * n + 64).cast(), q23);
        }
    }
}

/// [`q6k_rows`] for `R` rows of equal length.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn q6k_group<B: Q6KBlocks, const R: usize>(rows: [&[B]; R], x: &[f32]) -> [f32; R] {
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    // Every block's codes are written before they are read, so the buffer is not zeroed.
    let mut codes = [const { std::mem::MaybeUninit::<Codes>::uninit() }; R];
    let mut ds = [[0f32; 16]; R];
    for b in 0..rows[0].len() * B::PER {
        for i in 0..R {
            let blk = rows[i][b / B::PER].q6k(b % B::PER);
            q6k_codes(blk, codes[i].as_mut_ptr());
            // d·scale[s]: the scale of elements 16s..16s + 16.
            // SAFETY: scales has 16 bytes; ds[i] holds 16 floats.
            unsafe {
                let sc = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(blk.scales.as_ptr().cast())));
                _mm512_storeu_ps(ds[i].as_mut_ptr(), _mm512_mul_ps(sc, _mm512_set1_ps(f16_le(blk.d))));
            }
        }
        let xb = &x[b * 256..b * 256 + 256];
        // Sub-blocks in pairs, the even one into `acc[i][0]` and the odd one into `acc[i][1]`
        // (fixed indices keep the accumulators in registers).
        for p in 0..8 {
            // SAFETY: 32p + 32 ≤ 256 for both x and the codes.
            let (x0, x1) = unsafe { (_mm512_loadu_ps(xb.as_ptr().add(32 * p)), _mm512_loadu_ps(xb.as_ptr().add(32 * p + 16))) };
            for i in 0..R {
                // SAFETY: `q6k_codes` wrote this block's 256 codes above; 32p + 32 ≤ 256.
                let (q0, q1) = unsafe {
                    (
                        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_load_si128(codes[i].as_ptr().cast::<i8>().add(32 * p).cast()))),
                        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_load_si128(codes[i].as_ptr().cast::<i8>().add(32 * p + 16).cast()))),
                    )
                };
                acc[i][0] = _mm512_fmadd_ps(_mm512_mul_ps(q0, x0), _mm512_set1_ps(ds[i][2 * p]), acc[i][0]);
                acc[i][1] = _mm512_fmadd_ps(_mm512_mul_ps(q1, x1), _mm512_set1_ps(ds[i][2 * p + 1]), acc[i][1]);
            }
        }
    }
    std::array::from_fn(|i| _mm512_reduce_add_ps(_mm512_add_ps(acc[i][0], acc[i][1])))
}
