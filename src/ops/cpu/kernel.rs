//! The fused CPU kernel for quantized matmul, on plain slices (shared by burn-flex and
//! burn-ndarray).
//!
//! - **Decode** (`m ≤ DECODE_MAX_M` token rows): one pass over the weight. Each block is decoded
//!   into a 256-float scratch that stays in L1 and is dotted with every token row while it is
//!   there (16-lane FMA accumulators), so the weight is read and decoded once for all rows.
//!   Rows are split across threads with rayon; the inner loop runs under pulp's runtime SIMD
//!   dispatch (AVX-512 / AVX2+FMA / NEON / scalar).
//! - **Prefill** (more rows): each thread takes a panel of `PANEL_ROWS` weight rows, decodes it
//!   `PANEL_K` columns at a time into an L2-sized f32 tile, and multiplies all token rows by that
//!   tile with the `gemm` crate. Each weight block is decoded exactly once per call.
//!
//! - **Opt-in int8 input** ([`QuantLayout::int8_input`], x86 with AVX2): one token row takes the
//!   decode path's int8 kernels; more rows are rounded once per call and multiplied by the
//!   integer kernels of `x86_int8_tokens` / `x86_vnni_tokens` (Q4_K, Q6_K), llama.cpp's
//!   arithmetic.
//!
//! No f32 copy of the whole weight is ever made; all accumulation is f32.

use rayon::prelude::*;

use super::super::layout::{QuantLayout, QuantPart};
use crate::error::{Error, Result};
use crate::format::{BlockFormat, FormatVisitor, LANES, as_blocks, fma_lanes};

/// Largest token count handled by the decode (matrix-vector) path.
pub const DECODE_MAX_M: usize = 8;
/// Elements decoded at a time in the decode path.
const CHUNK: usize = 256;
/// Weight rows per task in the decode path.
const DECODE_ROWS_PER_TASK: usize = 16;
/// Weight rows per panel in the prefill path.
const PANEL_ROWS: usize = 64;
/// Columns per decoded tile in the prefill path (64 × 2048 × 4 B = 512 KiB, fits L2); a
/// multiple of every type's block (at most 1024 weights).
const PANEL_K: usize = 2048;

/// Checks that `x` holds `m` rows of `k`, and that `w` holds at least the layout's bytes.
fn check(x_len: usize, m: usize, k: usize, w: &[u8], layout: &QuantLayout) -> Result<()> {
    if x_len != m * k {
        return Err(Error::Shape(format!("input has {x_len} values, expected {m} rows of {k}")));
    }
    if w.len() < layout.total_bytes() {
        return Err(Error::ByteLength { what: "packed weight".into(), expected: layout.total_bytes(), got: w.len() });
    }
    Ok(())
}

/// `y[m, out] = x[m, in] · Wᵀ` for the packed weight `w` described by `layout`.
pub fn matmul(x: &[f32], m: usize, w: &[u8], layout: &QuantLayout) -> Result<Vec<f32>> {
    let k = layout.in_features;
    check(x.len(), m, k, w, layout)?;
    if m == 0 {
        return Ok(Vec::new());
    }
    #[cfg(target_arch = "x86_64")]
    if m > 1
        && layout.int8_input
        && let Some(y) = matmul_int8(x, m, w, layout)
    {
        return Ok(y);
    }
    if m <= DECODE_MAX_M { matvec(x, m, w, layout) } else { matmul_panels(x, m, w, layout) }
}

/// Whether [`matmul_int8`] may take the AVX-512 VNNI Q4_K kernel where the CPU has it
/// (`BURN_QUANT_CPU_VNNI=0` keeps the AVX2 one, for comparisons).
#[cfg(target_arch = "x86_64")]
fn vnni_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("BURN_QUANT_CPU_VNNI").map_or(true, |v| v != "0"))
}

/// Weight rows per task of [`matmul_int8`].
#[cfg(target_arch = "x86_64")]
const INT8_ROWS_PER_TASK: usize = 16;

/// The opt-in int8 input mode ([`QuantLayout::int8_input`]) at more than one token row: the
/// rows rounded to int8 once per call, then integer products tile by tile
/// ([`super::x86_int8_tokens`]), where every part is Q4_K or Q6_K (Q6_Kx4) and the CPU has AVX2,
/// FMA and F16C. `None` elsewhere, and the f32 paths run.
#[cfg(target_arch = "x86_64")]
fn matmul_int8(x: &[f32], m: usize, w: &[u8], layout: &QuantLayout) -> Option<Vec<f32>> {
    use super::x86_int8_tokens::{TokenRows, q4k_tokens, q6k_tokens};
    use crate::GgmlType::{Q4_K, Q6_K, Q6_Kx4};
    use crate::format::{BlockQ4K, BlockQ6K, BlockQ6Kx4, act_q8k::QK8K};
    let (k, out) = (layout.in_features, layout.out_features());
    let kinds_ok = layout.parts.iter().all(|p| matches!(p.kind, Q4_K | Q6_K | Q6_Kx4));
    if !super::x86_avx2::has_avx2() || k % QK8K != 0 || !kinds_ok {
        return None;
    }
    let xs = TokenRows::quantize(x, k);
    let mut y = vec![0f32; m * out];
    let yp = SyncPtr(y.as_mut_ptr());
    let mut row0 = 0;
    for part in &layout.parts {
        let rb = layout.row_bytes(part);
        let bytes = &w[part.byte_offset..part.byte_offset + part.rows * rb];
        let task = |p: usize| {
            let r0 = p * INT8_ROWS_PER_TASK;
            let rows = INT8_ROWS_PER_TASK.min(part.rows - r0);
            let b = &bytes[r0 * rb..(r0 + rows) * rb];
            // SAFETY: `has_avx2` was checked; every token row holds k / 256 blocks, which is
            // `per_row` blocks of each kind; the task writes y[t · out + row0 + r0 + r] for
            // r < rows, inside y and disjoint between tasks. The casts are between alignment-1
            // Pod types and whole rows, so they cannot fail.
            unsafe {
                let yt = yp.get().add(row0 + r0);
                match part.kind {
                    Q4_K if super::x86_vnni_tokens::has_vnni() && vnni_on() => {
                        super::x86_vnni_tokens::q4k_tokens(bytemuck::cast_slice(b), rb / size_of::<BlockQ4K>(), rows, &xs, yt, out)
                    }
                    Q4_K => q4k_tokens(bytemuck::cast_slice(b), rb / size_of::<BlockQ4K>(), rows, &xs, yt, out),
                    Q6_K => q6k_tokens::<BlockQ6K>(bytemuck::cast_slice(b), rb / size_of::<BlockQ6K>(), rows, &xs, yt, out),
                    _ => q6k_tokens::<BlockQ6Kx4>(bytemuck::cast_slice(b), rb / size_of::<BlockQ6Kx4>(), rows, &xs, yt, out),
                }
            }
        };
        let tasks = part.rows.div_ceil(INT8_ROWS_PER_TASK);
        if m * part.rows * k < SERIAL_MACS {
            (0..tasks).for_each(task);
        } else {
            (0..tasks).into_par_iter().for_each(task);
        }
        row0 += part.rows;
    }
    Some(y)
}

/// Raw pointer that may cross threads: every task writes a disjoint region.
#[derive(Clone, Copy)]
pub(super) struct SyncPtr(pub(super) *mut f32);
// SAFETY: the tasks sharing one write disjoint regions (see each use).
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

impl SyncPtr {
    /// The pointer (a method, so that a closure captures the whole `SyncPtr`, not its field).
    pub(super) fn get(self) -> *mut f32 {
        self.0
    }
}

/// Decode path: results are produced per weight row (`[out][m]`) and transposed at the end.
fn matvec(x: &[f32], m: usize, w: &[u8], layout: &QuantLayout) -> Result<Vec<f32>> {
    let out = layout.out_features();
    let mut by_row = vec![0f32; out * m];
    let mut row0 = 0;
    for part in &layout.parts {
        let rb = layout.row_bytes(part);
        let bytes = &w[part.byte_offset..part.byte_offset + part.rows * rb];
        let dst = &mut by_row[row0 * m..(row0 + part.rows) * m];
        part.kind.visit(Matvec { x, m, k: layout.in_features, bytes, row_bytes: rb, dst, int8: layout.int8_input })??;
        row0 += part.rows;
    }
    if m == 1 {
        return Ok(by_row);
    }
    let mut y = vec![0f32; m * out];
    for (j, r) in by_row.chunks_exact(m).enumerate() {
        for (t, v) in r.iter().enumerate() {
            y[t * out + j] = *v;
        }
    }
    Ok(y)
}

struct Matvec<'a> {
    x: &'a [f32],
    m: usize,
    k: usize,
    bytes: &'a [u8],
    row_bytes: usize,
    dst: &'a mut [f32],
    /// The layout's [`int8_input`](QuantLayout::int8_input).
    int8: bool,
}

impl FormatVisitor for Matvec<'_> {
    type Output = Result<()>;
    fn visit<F: BlockFormat>(self) -> Result<()> {
        let Matvec { x, m, k, bytes, row_bytes, dst, int8 } = self;
        let blocks = as_blocks::<F>(bytes)?;
        let per_row = row_bytes / F::BYTES;
        // Small weights run on the calling thread (one task): waking the pool costs more.
        let serial = dst.len() * k < SERIAL_MACS;
        #[cfg(target_arch = "x86_64")]
        if m == 1 && let Some(simd) = x86_m1::<F>() {
            // One token row: the hand-written kernels for the hottest formats, on runs of rows.
            // The casts are between alignment-1 Pod types of equal size, so they cannot fail.
            // The opt-in int8 input: x rounded once per call, integer dots (llama.cpp's), for
            // Q4_K and Q6_K on CPUs with AVX2, FMA and F16C (`has_avx2`).
            let q4k = matches!(simd, X86M1::Q4kAvx512 | X86M1::Q4kAvx2);
            let q6k = matches!(simd, X86M1::Q6kAvx512 | X86M1::Q6kAvx2);
            let xq = (int8 && (q4k || q6k) && super::x86_avx2::has_avx2()).then(|| crate::format::act_q8k::ActQ8K::quantize(x));
            let xl = match (simd, &xq) {
                (X86M1::Q4kAvx512, None) => super::x86::lane_order(x),
                (X86M1::Q4kAvx2, None) => super::x86_avx2::sub_block_sums(x),
                _ => Vec::new(),
            };
            let task_rows = if serial { dst.len().max(1) } else { DECODE_ROWS_PER_TASK };
            let x4 = F::TYPE == crate::GgmlType::Q6_Kx4;
            dst.par_chunks_mut(task_rows).enumerate().for_each(|(task, out)| {
                let first = task * task_rows;
                let rows = &blocks[first * per_row..(first + out.len()) * per_row];
                // SAFETY (all): `x86_m1` checked the CPU features each kernel needs (`has_avx2`
                // those of the int8 kernels); `xq` holds the row's k / 256 blocks.
                use crate::format::{BlockQ6K, BlockQ6Kx4};
                match (simd, x4, &xq) {
                    (_, _, Some(xq)) if q4k => unsafe { super::x86_avx2::q4k_rows_q8(bytemuck::cast_slice(rows), per_row, xq, out) },
                    (_, false, Some(xq)) => unsafe { super::x86_avx2::q6k_rows_q8::<BlockQ6K>(bytemuck::cast_slice(rows), per_row, xq, out) },
                    (_, true, Some(xq)) => unsafe { super::x86_avx2::q6k_rows_q8::<BlockQ6Kx4>(bytemuck::cast_slice(rows), per_row, xq, out) },
                    (X86M1::Q4kAvx512, _, None) => unsafe { super::x86::q4k_rows(bytemuck::cast_slice(rows), per_row, &xl, out) },
                    (X86M1::Q4kAvx2, _, None) => unsafe { super::x86_avx2::q4k_rows(bytemuck::cast_slice(rows), per_row, x, &xl, out) },
                    (X86M1::Q80Avx2, _, None) => unsafe { super::x86_avx2::q80_rows(bytemuck::cast_slice(rows), per_row, x, out) },
                    (X86M1::Q6kAvx512, false, None) => unsafe { super::x86::q6k_rows::<BlockQ6K>(bytemuck::cast_slice(rows), per_row, x, out) },
                    (X86M1::Q6kAvx512, true, None) => unsafe { super::x86::q6k_rows::<BlockQ6Kx4>(bytemuck::cast_slice(rows), per_row, x, out) },
                    (X86M1::Q6kAvx2, false, None) => unsafe { super::x86_avx2::q6k_rows::<BlockQ6K>(bytemuck::cast_slice(rows), per_row, x, out) },
                    (X86M1::Q6kAvx2, true, None) => unsafe { super::x86_avx2::q6k_rows::<BlockQ6Kx4>(bytemuck::cast_slice(rows), per_row, x, out) },
                }
            });
            return Ok(());
        }
        let task_rows = if serial { dst.len() / m.max(1) } else { DECODE_ROWS_PER_TASK };
        dst.par_chunks_mut((task_rows * m).max(1)).enumerate().for_each(|(task, dst)| {
            let first = task * task_rows;
            let rows = &blocks[first * per_row..(first + dst.len() / m) * per_row];
            pulp::Arch::new().dispatch(MatvecRows { rows, per_row, x, m, k, dst });
        });
        Ok(())
    }
}

/// The hand-written x86 kernel for one token row of format `F` on this CPU, if there is one.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, PartialEq, Eq)]
enum X86M1 {
    /// [`super::x86::q4k_rows`].
    Q4kAvx512,
    /// [`super::x86::q6k_rows`] (Q6_K and Q6_Kx4).
    Q6kAvx512,
    /// [`super::x86_avx2::q4k_rows`].
    Q4kAvx2,
    /// [`super::x86_avx2::q6k_rows`] (Q6_K and Q6_Kx4).
    Q6kAvx2,
    /// [`super::x86_avx2::q80_rows`].
    Q80Avx2,
}

/// See [`X86M1`].
#[cfg(target_arch = "x86_64")]
fn x86_m1<F: BlockFormat>() -> Option<X86M1> {
    use crate::GgmlType::{Q4_K, Q6_K, Q6_Kx4, Q8_0};
    let avx512 = super::x86::has_avx512();
    match F::TYPE {
        Q4_K if avx512 => Some(X86M1::Q4kAvx512),
        Q6_K | Q6_Kx4 if avx512 => Some(X86M1::Q6kAvx512),
        Q4_K if super::x86_avx2::has_avx2() => Some(X86M1::Q4kAvx2),
        Q6_K | Q6_Kx4 if super::x86_avx2::has_avx2() => Some(X86M1::Q6kAvx2),
        Q8_0 if !avx512 && super::x86_avx2::has_avx2() => Some(X86M1::Q80Avx2),
        _ => None,
    }
}

/// A run of weight rows for the decode path. Implemented as a [`pulp::WithSimd`] struct (not a
/// closure) so that its body is inlined into pulp's target-feature function and compiled for
/// AVX-512 / AVX2+FMA: a closure body is a separate function compiled for the baseline ISA,
/// which turns every `mul_add` into a library call.
struct MatvecRows<'a, F> {
    rows: &'a [F],
    per_row: usize,
    x: &'a [f32],
    m: usize,
    k: usize,
    dst: &'a mut [f32],
}

impl<F: BlockFormat> pulp::WithSimd for MatvecRows<'_, F> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        for (row, out) in self.rows.chunks_exact(self.per_row).zip(self.dst.chunks_exact_mut(self.m)) {
            row_dot(row, self.x, self.m, self.k, out);
        }
    }
}

/// Dots one quantized row with each of the `m` token rows of `x`, writing `out[..m]`.
#[inline(always)]
fn row_dot<F: BlockFormat>(row: &[F], x: &[f32], m: usize, k: usize, out: &mut [f32]) {
    let mut acc = [[0f32; LANES]; DECODE_MAX_M];
    let mut tail = [0f32; DECODE_MAX_M];
    if F::FUSED_DOT {
        // Decode each block straight into registers, once per token row. Even and odd blocks
        // use separate accumulators to halve the add-latency chain.
        let mut odd = [[0f32; LANES]; DECODE_MAX_M];
        let mut pairs = row.chunks_exact(2);
        for (p, pair) in (&mut pairs).enumerate() {
            let k0 = 2 * p * F::ELEMS;
            for t in 0..m {
                let xs = &x[t * k + k0..t * k + k0 + 2 * F::ELEMS];
                pair[0].dot_acc(&xs[..F::ELEMS], &mut acc[t]);
                pair[1].dot_acc(&xs[F::ELEMS..], &mut odd[t]);
            }
        }
        if let [last] = pairs.remainder() {
            let k0 = (row.len() - 1) * F::ELEMS;
            for t in 0..m {
                last.dot_acc(&x[t * k + k0..t * k + k0 + F::ELEMS], &mut acc[t]);
            }
        }
        for t in 0..m {
            for i in 0..LANES {
                acc[t][i] += odd[t][i];
            }
        }
    } else {
        // One-element types: decode runs of CHUNK into an L1 scratch, then dot every row.
        let mut scratch = [0f32; CHUNK];
        for (ci, chunk) in row.chunks(CHUNK / F::ELEMS).enumerate() {
            let n = chunk.len() * F::ELEMS;
            for (b, o) in chunk.iter().zip(scratch.chunks_exact_mut(F::ELEMS)) {
                b.decode(o);
            }
            let (k0, w) = (ci * CHUNK, &scratch[..n]);
            for t in 0..m {
                let xs = &x[t * k + k0..t * k + k0 + n];
                let mut wc = w.chunks_exact(LANES);
                let mut xc = xs.chunks_exact(LANES);
                for (wl, xl) in (&mut wc).zip(&mut xc) {
                    fma_lanes(&mut acc[t], wl, xl);
                }
                for (wv, xv) in wc.remainder().iter().zip(xc.remainder()) {
                    tail[t] = wv.mul_add(*xv, tail[t]);
                }
            }
        }
    }
    for t in 0..m {
        out[t] = acc[t].iter().sum::<f32>() + tail[t];
    }
}

/// Decodes rows `row0..row0 + rows` (global), columns `k0..k0 + kc`, into `tile[r * kc + c]`.
fn decode_tile(w: &[u8], layout: &QuantLayout, row0: usize, rows: usize, k0: usize, kc: usize, tile: &mut [f32]) {
    let mut part_start = 0;
    for part in &layout.parts {
        let (lo, hi) = (row0.max(part_start), (row0 + rows).min(part_start + part.rows));
        if lo < hi {
            let rb = layout.row_bytes(part);
            let start = part.byte_offset + (lo - part_start) * rb;
            let bytes = &w[start..start + (hi - lo) * rb];
            let out = &mut tile[(lo - row0) * kc..(hi - row0) * kc];
            // Parts were validated at layout construction; an unsupported kind cannot occur.
            let _ = part.kind.visit(DecodeRows { bytes, row_bytes: rb, k0, kc, out });
        }
        part_start += part.rows;
    }
}

/// Rows of one part to decode into a tile (a [`pulp::WithSimd`] struct, see [`MatvecRows`]).
struct DecodeRows<'a> {
    bytes: &'a [u8],
    row_bytes: usize,
    k0: usize,
    kc: usize,
    out: &'a mut [f32],
}

struct DecodeRowsOf<'a, F>(&'a [F], DecodeRows<'a>);

impl FormatVisitor for DecodeRows<'_> {
    type Output = ();
    fn visit<F: BlockFormat>(self) {
        if let Ok(blocks) = as_blocks::<F>(self.bytes) {
            pulp::Arch::new().dispatch(DecodeRowsOf(blocks, self));
        }
    }
}

impl<F: BlockFormat> pulp::WithSimd for DecodeRowsOf<'_, F> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let DecodeRowsOf(blocks, d) = self;
        let per_row = d.row_bytes / F::BYTES;
        let (first, n) = (d.k0 / F::ELEMS, d.kc / F::ELEMS);
        for (row, out) in blocks.chunks_exact(per_row).zip(d.out.chunks_exact_mut(d.kc)) {
            for (b, o) in row[first..first + n].iter().zip(out.chunks_exact_mut(F::ELEMS)) {
                b.decode(o);
            }
        }
    }
}

thread_local! {
    /// Per-thread decoded tile of the prefill path, reused across calls.
    static TILE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Below this many multiply-adds a call runs on the calling thread: waking the pool costs more.
const SERIAL_MACS: usize = 1 << 21;

/// Prefill path: weight panels decoded tile by tile, multiplied with `gemm`.
fn matmul_panels(x: &[f32], m: usize, w: &[u8], layout: &QuantLayout) -> Result<Vec<f32>> {
    let (k, out) = (layout.in_features, layout.out_features());
    let mut y = vec![0f32; m * out];
    let yp = SyncPtr(y.as_mut_ptr());
    let panel = |p: usize| {
        let n0 = p * PANEL_ROWS;
        let nr = PANEL_ROWS.min(out - n0);
        TILE.with_borrow_mut(|tile| {
            tile.resize(PANEL_ROWS * PANEL_K.min(k), 0.0);
            for k0 in (0..k).step_by(PANEL_K) {
                let kc = PANEL_K.min(k - k0);
                decode_tile(w, layout, n0, nr, k0, kc, tile);
                // SAFETY: dst covers y[0..m, n0..n0+nr], disjoint between tasks and inside y;
                // lhs covers x[0..m, k0..k0+kc]; rhs covers tile[0..nr*kc].
                unsafe {
                    gemm::gemm(
                        m, nr, kc,
                        yp.get().add(n0), 1, out as isize, k0 > 0,
                        x.as_ptr().add(k0), 1, k as isize,
                        tile.as_ptr(), kc as isize, 1,
                        1.0, 1.0, false, false, false,
                        gemm::Parallelism::None,
                    );
                }
            }
        });
    };
    let panels = out.div_ceil(PANEL_ROWS);
    if m * out * k < SERIAL_MACS {
        (0..panels).for_each(panel);
    } else {
        (0..panels).into_par_iter().for_each(panel);
    }
    Ok(y)
}

/// `g[m, out] · W` → `[m, in]`: the input gradient of [`matmul`].
pub fn matmul_transposed(g: &[f32], m: usize, w: &[u8], layout: &QuantLayout) -> Result<Vec<f32>> {
    let (k, out) = (layout.in_features, layout.out_features());
    check(g.len(), m, out, w, layout)?;
    let mut dx = vec![0f32; m * k];
    if m == 0 {
        return Ok(dx);
    }
    // Column slices of whole blocks of every type (Q6_Kx4 holds 1024 weights).
    const KC: usize = 1024;
    const NR: usize = 128;
    let dp = SyncPtr(dx.as_mut_ptr());
    (0..k.div_ceil(KC)).into_par_iter().for_each_init(
        || vec![0f32; NR * KC],
        |tile, c| {
            let k0 = c * KC;
            let kc = KC.min(k - k0);
            for n0 in (0..out).step_by(NR) {
                let nr = NR.min(out - n0);
                decode_tile(w, layout, n0, nr, k0, kc, tile);
                // SAFETY: dst covers dx[0..m, k0..k0+kc], disjoint between tasks;
                // lhs covers g[0..m, n0..n0+nr]; rhs covers tile[0..nr*kc].
                unsafe {
                    gemm::gemm(
                        m, kc, nr,
                        dp.get().add(k0), 1, k as isize, n0 > 0,
                        g.as_ptr().add(n0), 1, out as isize,
                        tile.as_ptr(), 1, kc as isize,
                        1.0, 1.0, false, false, false,
                        gemm::Parallelism::None,
                    );
                }
            }
        },
    );
    Ok(dx)
}

/// Rows of the part at `part` as a byte slice (for tests and tools).
pub fn part_bytes<'a>(w: &'a [u8], layout: &QuantLayout, part: &QuantPart) -> &'a [u8] {
    &w[part.byte_offset..part.byte_offset + part.rows * layout.row_bytes(part)]
}

/// Dequantizes the weight rows `ids` (global row indices) into `[ids.len(), in]` f32: the
/// embedding lookup of a quantized token table, one row decoded per id.
pub fn gather_rows(ids: &[i64], w: &[u8], layout: &QuantLayout) -> Result<Vec<f32>> {
    let k = layout.in_features;
    if w.len() < layout.total_bytes() {
        return Err(Error::ByteLength { what: "packed weight".into(), expected: layout.total_bytes(), got: w.len() });
    }
    let mut out = vec![0f32; ids.len() * k];
    for (&id, dst) in ids.iter().zip(out.chunks_exact_mut(k)) {
        let (part, row) = usize::try_from(id)
            .ok()
            .and_then(|r| layout.locate(r))
            .ok_or_else(|| Error::Shape(format!("row id {id} is out of range for {} rows", layout.out_features())))?;
        let rb = layout.row_bytes(part);
        let start = part.byte_offset + row * rb;
        let dec = crate::format::dequantize(part.kind, &w[start..start + rb], 1, k)?;
        dst.copy_from_slice(&dec);
    }
    Ok(out)
}
