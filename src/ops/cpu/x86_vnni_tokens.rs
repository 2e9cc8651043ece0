//! The int8 input mode's Q4_K product at many token rows on CPUs with AVX-512 VNNI (AMD Zen 4,
//! Intel Ice Lake and later): the same arithmetic as [`super::x86_int8_tokens`] with one
//! `vpdpbusd` per 32 multiply-adds where that takes three instructions.
//!
//! `vpdpbusd` sums four adjacent byte products into each int32 lane, so a lane must hold one
//! weight row's four codes: each task first regroups its weight rows eight at a time
//! ([`Group8`]): per block, sub-block `s` and run of four inputs `q`, one 32-byte vector holds
//! the four codes of each of the eight rows (an 8 × 8 transpose of 4-byte elements of the
//! unpacked nibbles, made once per task and used by every tile of token rows). Then per
//! sub-block and token row: 8 `vpdpbusd` with the token's four inputs broadcast, one `vpmulld`
//! by the eight rows' sub-block scales and an add. The result vector's lanes are the eight
//! weight rows, so a token row's outputs are stored as they are, with no horizontal sums.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::x86::q4k_head;
use super::x86_int8_tokens::{TOKENS, TokenRows};
use crate::format::BlockQ4K;

/// Whether this CPU runs [`q4k_tokens`] (AVX-512 VNNI with 256-bit vectors, AVX2, FMA, F16C),
/// checked once.
pub fn has_vnni() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    })
}

/// Eight Q4_K weight rows regrouped for `vpdpbusd` (see the module docs); rows past the end of
/// the weight are zeros.
struct Group8 {
    /// Per block, sub-block `s`, run `q`: lane `r` = row `r`'s codes `32s + 4q .. + 4`.
    codes: Vec<__m256i>,
    /// Per block and sub-block: the rows' 6-bit scales.
    scales: Vec<__m256i>,
    /// Per block and sub-block: the rows' `−dmin · m_s`.
    neg_mins: Vec<__m256>,
    /// Per block: the rows' `d`.
    d: Vec<__m256>,
}

/// Writes `y[t · ldy + r] = Σ_k W[r, k] · xq_t[k]` for the `rows` Q4_K weight rows of `per_row`
/// blocks each (`w`) and every token row `t` of `xs` (as [`super::x86_int8_tokens::q4k_tokens`]).
///
/// # Safety
/// The CPU must have the features [`has_vnni`] checks; `per_row` must be the blocks per row of
/// `xs`; `y` must be valid for writes at `t · ldy + r` for every token row `t` and `r < rows`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
pub unsafe fn q4k_tokens(w: &[BlockQ4K], per_row: usize, rows: usize, xs: &TokenRows, y: *mut f32, ldy: usize) {
    assert!(w.len() >= rows * per_row && per_row == xs.blocks());
    let groups: Vec<Group8> = (0..rows.div_ceil(8)).map(|g| group8(&w[8 * g * per_row..(8 * (g + 1)).min(rows) * per_row], per_row)).collect();
    let m = xs.len();
    for tile in 0..m.div_ceil(TOKENS) {
        let t0 = TOKENS * tile;
        let n = TOKENS.min(m - t0);
        for (g, group) in groups.iter().enumerate() {
            let acc = tile8(group, xs, tile);
            let r0 = 8 * g;
            let nr = 8.min(rows - r0);
            for (t, a) in acc[..n].iter().enumerate() {
                // SAFETY: t0 + t < m and r0 + nr ≤ rows (the caller's contract).
                let dst = unsafe { y.add((t0 + t) * ldy + r0) };
                if nr == 8 {
                    // SAFETY: as above, 8 values.
                    unsafe { _mm256_storeu_ps(dst, *a) };
                } else {
                    let mut v = [0f32; 8];
                    // SAFETY: `v` holds 8 floats; dst..dst + nr as above.
                    unsafe {
                        _mm256_storeu_ps(v.as_mut_ptr(), *a);
                        std::ptr::copy_nonoverlapping(v.as_ptr(), dst, nr);
                    }
                }
            }
        }
    }
}

/// Regroups up to eight rows (`w`, whole rows of `per_row` blocks) into a [`Group8`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
fn group8(w: &[BlockQ4K], per_row: usize) -> Group8 {
    let n = w.len() / per_row;
    let low4 = _mm256_set1_epi8(0x0F);
    let mut g = Group8 {
        codes: Vec::with_capacity(per_row * 64),
        scales: Vec::with_capacity(per_row * 8),
        neg_mins: Vec::with_capacity(per_row * 8),
        d: Vec::with_capacity(per_row),
    };
    for b in 0..per_row {
        let (mut sc, mut nm, mut d) = ([[0i32; 8]; 8], [[0f32; 8]; 8], [0f32; 8]);
        for r in 0..n {
            let (sm, dr, dmin) = q4k_head(&w[r * per_row + b]);
            d[r] = dr;
            for s in 0..8 {
                sc[s][r] = i32::from(sm[s]);
                nm[s][r] = -dmin * f32::from(sm[8 + s]);
            }
        }
        for j in 0..4 {
            // Bytes 32j..32j + 32 of each row: low nibbles are sub-block 2j, high 2j + 1.
            // SAFETY: qs has 128 bytes; 32j + 32 ≤ 128.
            let q: [__m256i; 8] = std::array::from_fn(|r| if r < n { unsafe { _mm256_loadu_si256(w[r * per_row + b].qs.as_ptr().add(32 * j).cast()) } } else { _mm256_setzero_si256() });
            g.codes.extend(transpose8(q.map(|v| _mm256_and_si256(v, low4))));
            g.codes.extend(transpose8(q.map(|v| _mm256_and_si256(_mm256_srli_epi16::<4>(v), low4))));
        }
        for s in 0..8 {
            // SAFETY: each array holds 8 values.
            unsafe {
                g.scales.push(_mm256_loadu_si256(sc[s].as_ptr().cast()));
                g.neg_mins.push(_mm256_loadu_ps(nm[s].as_ptr()));
            }
        }
        // SAFETY: `d` holds 8 floats.
        g.d.push(unsafe { _mm256_loadu_ps(d.as_ptr()) });
    }
    g
}

/// The 8 × 8 transpose of 4-byte elements: lane `r` of result `q` is lane `q` of `v[r]`.
#[inline]
#[target_feature(enable = "avx2")]
fn transpose8(v: [__m256i; 8]) -> [__m256i; 8] {
    let t: [__m256i; 8] = std::array::from_fn(|i| {
        let (a, b) = (v[2 * (i / 2)], v[2 * (i / 2) + 1]);
        if i % 2 == 0 { _mm256_unpacklo_epi32(a, b) } else { _mm256_unpackhi_epi32(a, b) }
    });
    // u[i]: lanes i (low half) and i + 4 (high half) of rows 0..4 (i < 4) or 4..8.
    let u: [__m256i; 8] = std::array::from_fn(|i| {
        let (base, k) = (4 * (i / 4), i % 4);
        let (a, b) = (t[base + k / 2], t[base + 2 + k / 2]);
        if k % 2 == 0 { _mm256_unpacklo_epi64(a, b) } else { _mm256_unpackhi_epi64(a, b) }
    });
    std::array::from_fn(|q| if q < 4 { _mm256_permute2x128_si256::<0x20>(u[q], u[q + 4]) } else { _mm256_permute2x128_si256::<0x31>(u[q - 4], u[q]) })
}

/// The eight rows of `g` against tile `tile` of token rows: result `t`'s lane `r` is row `r`'s
/// product with token row `TOKENS · tile + t`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
fn tile8(g: &Group8, xs: &TokenRows, tile: usize) -> [__m256; TOKENS] {
    let mut acc = [_mm256_setzero_ps(); TOKENS];
    for b in 0..g.d.len() {
        let (dx, sub32) = xs.tile_sums(tile, b);
        let q8: [*const i8; TOKENS] = std::array::from_fn(|t| xs.codes(TOKENS * tile + t, b));
        let mut isum = [_mm256_setzero_si256(); TOKENS];
        for s in 0..8 {
            let mut dot = [_mm256_setzero_si256(); TOKENS];
            for q in 0..8 {
                let w = g.codes[(b * 8 + s) * 8 + q];
                for t in 0..TOKENS {
                    // SAFETY: each token row holds this block's 256 codes (`codes`); 32s + 4q + 4 ≤ 256.
                    let x = _mm256_set1_epi32(unsafe { q8[t].add(32 * s + 4 * q).cast::<i32>().read_unaligned() });
                    dot[t] = _mm256_dpbusd_epi32(dot[t], w, x);
                }
            }
            let sc = g.scales[b * 8 + s];
            for t in 0..TOKENS {
                isum[t] = _mm256_add_epi32(isum[t], _mm256_mullo_epi32(dot[t], sc));
            }
        }
        let d = g.d[b];
        for t in 0..TOKENS {
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_mul_ps(d, _mm256_set1_ps(dx[t])), acc[t]);
            let (mut m0, mut m1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            for s in (0..8).step_by(2) {
                m0 = _mm256_fmadd_ps(g.neg_mins[b * 8 + s], _mm256_set1_ps(sub32[s][t]), m0);
                m1 = _mm256_fmadd_ps(g.neg_mins[b * 8 + s + 1], _mm256_set1_ps(sub32[s + 1][t]), m1);
            }
            acc[t] = _mm256_add_ps(acc[t], _mm256_add_ps(m0, m1));
        }
    }
    acc
}
