//! The opt-in int8 input mode for many token rows (a prompt, or a few decode rows): AVX2 integer
//! products of Q4_K and Q6_K weights with activations rounded to int8 per 256 values
//! ([`ActQ8K`], llama.cpp's `Q8_K`), as llama.cpp computes its CPU prefill.
//!
//! The one-token-row kernels of [`super::x86_avx2`] (`q4k_rows_q8`, `q6k_rows_q8`) already do
//! this arithmetic; here a weight row's codes are unpacked and its sub-block scales spread once
//! per block for a tile of [`TOKENS`] token rows, so the per-weight work on the weight side is
//! shared: per 32 weights and token row one `maddubs` (codes · int8 input in pairs), one `madd`
//! by the sub-block scale and an add, all in registers. Per block the tile's eight int32 sums
//! are reduced together into one vector (lane = token row), converted and multiplied by
//! `d · dx` for all eight rows at once; Q4_K's mins term is eight FMAs over the tile
//! ([`TokenRows`] holds the inputs' sub-block sums transposed for it). Token rows are padded
//! with zero rows to a whole tile.
//!
//! Weights and inputs are small next to the arithmetic here (a prompt's input stays in L2 and a
//! tile of it in L1), so the kernels are compute-bound: about 3 integer instructions per 32
//! multiply-adds against the f32 path's 4 FMAs.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::x86::{Q6KBlocks, q4k_head};
use super::x86_avx2::{q6k_codes_u8, scale_spread};
use crate::format::act_q8k::{ActQ8K, QK8K};
use crate::format::{BlockQ4K, f16_le};
use rayon::prelude::*;

/// Token rows per tile: each unpacked weight code vector serves this many rows, and the tile's
/// sums are one vector of eight lanes.
pub const TOKENS: usize = 8;

/// Below this many input values [`TokenRows::quantize`] runs on the calling thread.
const SERIAL_VALUES: usize = 1 << 13;

/// The token rows of one product rounded to int8 ([`ActQ8K`] per row, padded with zero rows to a
/// multiple of [`TOKENS`]), and per tile of [`TOKENS`] rows what the epilogues read as vectors
/// over the tile's rows.
pub struct TokenRows {
    /// Token rows before padding.
    m: usize,
    /// One quantized row per token, then the zero rows.
    rows: Vec<ActQ8K>,
    /// Per tile, per block: `dx` of the tile's rows.
    dx: Vec<[f32; TOKENS]>,
    /// Per tile, per block, per 32-value sub-block `s`: `dx · Σ q` over the sub-block, for the
    /// tile's rows (Q4_K's mins).
    sub32: Vec<[f32; TOKENS]>,
    /// Blocks per row.
    blocks: usize,
}

impl TokenRows {
    /// Rounds `m` rows of `k` values (`k` a multiple of [`QK8K`]), a tile of [`TOKENS`] rows per
    /// task.
    pub fn quantize(x: &[f32], k: usize) -> Self {
        let m = x.len() / k;
        let blocks = k / QK8K;
        let tile = |xt: &[f32]| {
            let mut rows: Vec<ActQ8K> = xt.chunks_exact(k).map(ActQ8K::quantize).collect();
            rows.resize(TOKENS, ActQ8K { d: vec![0.0; blocks], q: vec![0; k], sums16: vec![0; blocks * 16] });
            let (mut dx, mut sub32) = (vec![[0f32; TOKENS]; blocks], vec![[0f32; TOKENS]; blocks * 8]);
            for (t, r) in rows.iter().enumerate() {
                for b in 0..blocks {
                    dx[b][t] = r.d[b];
                    for s in 0..8 {
                        let sum = i32::from(r.sums16[16 * b + 2 * s]) + i32::from(r.sums16[16 * b + 2 * s + 1]);
                        sub32[b * 8 + s][t] = r.d[b] * sum as f32;
                    }
                }
            }
            (rows, dx, sub32)
        };
        let tiles: Vec<_> = if x.len() < SERIAL_VALUES { x.chunks(TOKENS * k).map(tile).collect() } else { x.par_chunks(TOKENS * k).map(tile).collect() };
        let mut out = TokenRows { m, rows: Vec::with_capacity(tiles.len() * TOKENS), dx: Vec::new(), sub32: Vec::new(), blocks };
        for (rows, dx, sub32) in tiles {
            out.rows.extend(rows);
            out.dx.extend(dx);
            out.sub32.extend(sub32);
        }
        out
    }

    /// Token rows (before padding).
    pub(super) fn len(&self) -> usize {
        self.m
    }

    /// Blocks per row.
    pub(super) fn blocks(&self) -> usize {
        self.blocks
    }

    /// Token row `t`'s codes of block `b` (256 of them from the pointer; `t` may be a padding
    /// row).
    pub(super) fn codes(&self, t: usize, b: usize) -> *const i8 {
        self.rows[t].q[QK8K * b..].as_ptr()
    }

    /// Tile `tile`'s `dx` of block `b`, and its `dx · Σ q` per sub-block (`[s][t]`).
    pub(super) fn tile_sums(&self, tile: usize, b: usize) -> (&[f32; TOKENS], &[[f32; TOKENS]]) {
        let tb = tile * self.blocks + b;
        (&self.dx[tb], &self.sub32[tb * 8..tb * 8 + 8])
    }
}

/// Writes `y[t · ldy + r] = Σ_k W[r, k] · xq_t[k]` for the `rows` Q4_K weight rows of `per_row`
/// blocks each (`w`) and every token row `t` of `xs`.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C ([`super::x86_avx2::has_avx2`]); `per_row` must be the
/// blocks per row of `xs`; `y` must be valid for writes at `t · ldy + r` for every token row `t`
/// and `r < rows`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q4k_tokens(w: &[BlockQ4K], per_row: usize, rows: usize, xs: &TokenRows, y: *mut f32, ldy: usize) {
    assert!(w.len() >= rows * per_row && per_row == xs.blocks);
    // SAFETY: the caller's contract on `y`.
    unsafe { tiles(rows, xs, y, ldy, |r, tile| q4k_tile(&w[r * per_row..(r + 1) * per_row], xs, tile)) }
}

/// As [`q4k_tokens`] for Q6_K rows (`B` = one Q6_K block or four, [`Q6KBlocks`]; `per_row` counts
/// `B`s).
///
/// # Safety
/// As [`q4k_tokens`] (`per_row · B::PER` must be the blocks per row of `xs`).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn q6k_tokens<B: Q6KBlocks>(w: &[B], per_row: usize, rows: usize, xs: &TokenRows, y: *mut f32, ldy: usize) {
    assert!(w.len() >= rows * per_row && per_row * B::PER == xs.blocks);
    // SAFETY: as in `q4k_tokens`.
    unsafe { tiles(rows, xs, y, ldy, |r, tile| q6k_tile::<B>(&w[r * per_row..(r + 1) * per_row], xs, tile)) }
}

/// Weight rows whose results [`tiles`] holds before writing them out.
const ROWS_HELD: usize = 16;

/// Runs `tile(r, tile)` for every weight row and tile of token rows, the tile outermost so that
/// its inputs stay in L1 while the weight rows pass; writes lane `t` of each result to
/// `y[(TOKENS · tile + t) · ldy + r]` for the token rows that are not padding. Results are held
/// [`ROWS_HELD`] weight rows at a time and written a token row at a time (reading a lane right
/// after storing the vector stalled on store forwarding).
///
/// # Safety
/// `y` must be valid for writes at `t · ldy + r` for every token row `t` and `r < rows`.
#[inline(always)]
unsafe fn tiles(rows: usize, xs: &TokenRows, y: *mut f32, ldy: usize, mut tile: impl FnMut(usize, usize) -> [f32; TOKENS]) {
    let mut held = [[0f32; TOKENS]; ROWS_HELD];
    for t in 0..xs.m.div_ceil(TOKENS) {
        let t0 = TOKENS * t;
        let n = TOKENS.min(xs.m - t0);
        for r0 in (0..rows).step_by(ROWS_HELD) {
            let nr = ROWS_HELD.min(rows - r0);
            for (i, h) in held[..nr].iter_mut().enumerate() {
                *h = tile(r0 + i, t);
            }
            for i in 0..n {
                // SAFETY: t0 + i < m and r0 + nr ≤ rows (the caller's contract).
                let dst = unsafe { std::slice::from_raw_parts_mut(y.add((t0 + i) * ldy + r0), nr) };
                for (d, h) in dst.iter_mut().zip(&held) {
                    *d = h[i];
                }
            }
        }
    }
}

/// One Q4_K weight row (`row`, its blocks) against tile `tile` of token rows: per block
/// `d·dx·Σ_s sc_s·Σ_{j∈s} c_j q_j − dmin·dx·Σ_s m_s·Σ_{j∈s} q_j`, the first as in
/// [`super::x86_avx2::q4k_rows_q8`], the second as eight FMAs of the broadcast `−dmin·m_s` with
/// the tile's `dx · Σ q` per sub-block ([`TokenRows`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q4k_tile(row: &[BlockQ4K], xs: &TokenRows, tile: usize) -> [f32; TOKENS] {
    let low4 = _mm256_set1_epi8(0x0F);
    let mut acc = _mm256_setzero_ps();
    let mut mins = [_mm256_setzero_ps(); 4];
    for (b, blk) in row.iter().enumerate() {
        let (sm, d, dmin) = q4k_head(blk);
        let (dx, sub32) = xs.tile_sums(tile, b);
        let q8: [*const i8; TOKENS] = std::array::from_fn(|t| xs.codes(TOKENS * tile + t, b));
        let mut isum = [_mm256_setzero_si256(); TOKENS];
        // SAFETY: qs has 128 bytes (32j + 32 ≤ 128); each token row holds this block's 256 codes
        // (`codes`; the callers check the blocks per row); 64j + 64 ≤ 256.
        unsafe {
            for j in 0..4 {
                // Bytes 32j..32j + 32: low nibbles are elements 64j + 0..32 (sub-block 2j),
                // high nibbles 64j + 32..64 (sub-block 2j + 1).
                let q = _mm256_loadu_si256(blk.qs.as_ptr().add(32 * j).cast());
                let lo = _mm256_and_si256(q, low4);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), low4);
                let (sl, sh) = (_mm256_set1_epi16(i16::from(sm[2 * j])), _mm256_set1_epi16(i16::from(sm[2 * j + 1])));
                for t in 0..TOKENS {
                    let xl = _mm256_loadu_si256(q8[t].add(64 * j).cast());
                    let xh = _mm256_loadu_si256(q8[t].add(64 * j + 32).cast());
                    let pl = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, xl), sl);
                    let ph = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, xh), sh);
                    isum[t] = _mm256_add_epi32(isum[t], _mm256_add_epi32(pl, ph));
                }
            }
        }
        // SAFETY: `dx` and each `sub32[s]` hold 8 floats.
        let (dx, sub32s) = unsafe { (_mm256_loadu_ps(dx.as_ptr()), std::array::from_fn::<__m256, 8, _>(|s| _mm256_loadu_ps(sub32[s].as_ptr()))) };
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums8(isum)), _mm256_mul_ps(_mm256_set1_ps(d), dx), acc);
        // −dmin · m_s against the tile's dx · Σ q, in four independent chains (one chain of
        // eight dependent FMAs was the tile's latency).
        for (s, x) in sub32s.into_iter().enumerate() {
            mins[s % 4] = _mm256_fmadd_ps(_mm256_set1_ps(-dmin * f32::from(sm[8 + s])), x, mins[s % 4]);
        }
    }
    lanes(_mm256_add_ps(acc, _mm256_add_ps(_mm256_add_ps(mins[0], mins[1]), _mm256_add_ps(mins[2], mins[3]))))
}

/// One Q6_K weight row against tile `tile` of token rows: per block
/// `d6·dx·Σ_s sc_s·(Σ_{j∈s} c_j q_j − 32·Σ_{j∈s} q_j)` over its 16 sub-blocks, as
/// [`super::x86_avx2::q6k_rows_q8`], with the codes and the spread scales made once per tile.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn q6k_tile<B: Q6KBlocks>(row: &[B], xs: &TokenRows, tile: usize) -> [f32; TOKENS] {
    let spread = [scale_spread(0), scale_spread(1), scale_spread(2), scale_spread(3)];
    let mut acc = _mm256_setzero_ps();
    for b in 0..row.len() * B::PER {
        let blk = row[b / B::PER].q6k(b % B::PER);
        let q8: [*const i8; TOKENS] = std::array::from_fn(|t| xs.codes(TOKENS * tile + t, b));
        // SAFETY: scales has 16 bytes; each token row holds this block's 256 codes (`codes`)
        // and 16 sums at 16b (the callers check the blocks per row); 128n + 32s + 32 ≤ 256.
        let isum = unsafe {
            let sc8 = _mm_loadu_si128(blk.scales.as_ptr().cast());
            let sc16 = _mm256_cvtepi8_epi16(sc8);
            // The codes' offset: −32 · Σ_s sc_s · Σ_{j∈s} q_j.
            let mut isum: [__m256i; TOKENS] = std::array::from_fn(|t| {
                let sums = _mm256_loadu_si256(xs.rows[TOKENS * tile + t].sums16.as_ptr().add(16 * b).cast());
                _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<5>(_mm256_madd_epi16(sc16, sums)))
            });
            for n in 0..2 {
                let sc = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(if n == 0 { sc8 } else { _mm_unpackhi_epi64(sc8, sc8) }));
                for (s, (c, spread_s)) in q6k_codes_u8(blk, n).into_iter().zip(&spread).enumerate() {
                    let scale = _mm256_shuffle_epi8(sc, *spread_s);
                    for t in 0..TOKENS {
                        let x8 = _mm256_loadu_si256(q8[t].add(128 * n + 32 * s).cast());
                        isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(_mm256_maddubs_epi16(c, x8), scale));
                    }
                }
            }
            isum
        };
        // SAFETY: `dx` holds 8 floats.
        let dx = unsafe { _mm256_loadu_ps(xs.tile_sums(tile, b).0.as_ptr()) };
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums8(isum)), _mm256_mul_ps(_mm256_set1_ps(f16_le(blk.d)), dx), acc);
    }
    lanes(acc)
}

/// Lane `t` = the sum of the 8 lanes of `a[t]` (wrapping int32): three levels of pairwise
/// horizontal adds and a swap of 128-bit halves, 9 instructions where 8 separate sums take 32.
#[inline]
#[target_feature(enable = "avx2")]
fn sums8(a: [__m256i; 8]) -> __m256i {
    let (p01, p23, p45, p67) = (_mm256_hadd_epi32(a[0], a[1]), _mm256_hadd_epi32(a[2], a[3]), _mm256_hadd_epi32(a[4], a[5]), _mm256_hadd_epi32(a[6], a[7]));
    // Low 128 bits: a[0..4]'s sums over lanes 0..4; high: over lanes 4..8 (and a[4..8] alike).
    let (q0, q1) = (_mm256_hadd_epi32(p01, p23), _mm256_hadd_epi32(p45, p67));
    _mm256_add_epi32(_mm256_permute2x128_si256::<0x20>(q0, q1), _mm256_permute2x128_si256::<0x31>(q0, q1))
}

/// The 8 lanes of `v`.
#[inline]
#[target_feature(enable = "avx2")]
fn lanes(v: __m256) -> [f32; 8] {
    let mut out = [0f32; 8];
    // SAFETY: `out` holds 8 floats.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GgmlType;
    use crate::format::{BlockQ6K, dequantize, quantize::quantize};

    /// Every many-row int8 kernel this CPU can run, on 13 weight rows (not a multiple of the
    /// VNNI kernel's 8-row groups) × 512 inputs and 11 token rows (a whole tile and a padded
    /// one), against the float64 product of the dequantized weight with the int8-rounded rows.
    /// The model tests reach only the kernel the CPU dispatches to; this one runs both Q4_K
    /// kernels where AVX-512 VNNI is present.
    #[test]
    fn kernels_match_the_rounded_product() {
        if !super::super::x86_avx2::has_avx2() {
            return;
        }
        let (rows, k, m) = (13usize, 512usize, 11usize);
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut rnd = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let w: Vec<f32> = (0..rows * k).map(|_| rnd()).collect();
        let x: Vec<f32> = (0..m * k).map(|_| rnd() * 3.0).collect();
        let xs = TokenRows::quantize(&x, k);
        let rounded: Vec<f32> = x.chunks_exact(k).flat_map(|r| ActQ8K::quantize(r).dequantize()).collect();
        for kind in [GgmlType::Q4_K, GgmlType::Q6_K] {
            let bytes = quantize(kind, &w).unwrap();
            let wd = dequantize(kind, &bytes, rows, k).unwrap();
            let want: Vec<f64> = rounded
                .chunks_exact(k)
                .flat_map(|xr| wd.chunks_exact(k).map(move |wr| wr.iter().zip(xr).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>()))
                .collect();
            let scale = want.iter().fold(0f64, |a, v| a.max(v.abs()));
            let mut runs: Vec<(&str, Vec<f32>)> = Vec::new();
            let run = |f: &dyn Fn(*mut f32)| {
                let mut y = vec![f32::NAN; m * rows];
                f(y.as_mut_ptr());
                y
            };
            // SAFETY (all): the features were checked; y holds m rows of `rows`.
            if kind == GgmlType::Q4_K {
                let blocks: &[BlockQ4K] = bytemuck::cast_slice(&bytes);
                runs.push(("avx2", run(&|y| unsafe { q4k_tokens(blocks, k / 256, rows, &xs, y, rows) })));
                if super::super::x86_vnni_tokens::has_vnni() {
                    runs.push(("vnni", run(&|y| unsafe { super::super::x86_vnni_tokens::q4k_tokens(blocks, k / 256, rows, &xs, y, rows) })));
                }
            } else {
                let blocks: &[BlockQ6K] = bytemuck::cast_slice(&bytes);
                runs.push(("avx2", run(&|y| unsafe { q6k_tokens(blocks, k / 256, rows, &xs, y, rows) })));
            }
            for (name, got) in runs {
                let worst = got.iter().zip(&want).fold(0f64, |a, (g, w)| a.max((*g as f64 - w).abs()));
                assert!(worst <= 1e-5 * scale, "{kind} {name}: max error {worst:e} (scale {scale:e})");
            }
        }
    }
}
