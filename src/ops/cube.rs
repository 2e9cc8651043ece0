//! The CubeCL backends (wgpu, CUDA; and, through the generated `Fusion<B>` implementation, the
//! fusion-wrapped default devices): launches the kernels of `crate::kernels`.
//!
//! - `m ≤ 8` token rows: the fused decode kernel (`kernels::matvec`), one pass over the weight.
//! - more rows: the tiled kernel (`kernels::tiled`), weight tiles decoded into shared memory,
//!   f32 multiply-adds (Burn's own matmul would use TF32 on CUDA and miss the 1e-5 accuracy).
//!   The input gradient (`g · W`) uses its transposed twin.

use burn::backend::ops::{FloatTensorOps, IntTensorOps};
use burn::tensor::{DType, FloatDType, IntDType, Shape};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::calculate_cube_count_elemwise;
use cubecl::prelude::*;

use super::{QuantLayout, QuantMatmulBackend, QuantPart};
use crate::kernels::decode::{block_bytes, block_elems};
use crate::kernels::{dequant, matvec, matvec_q4k, matvec_q6k, reduce, tiled, tiled_mma};

/// Cubes the prefill path aims for (about 4 per SM of a large GPU).
const SPLIT_K_TARGET: usize = 528;

fn f32_contiguous(x: CubeTensor) -> CubeTensor {
    let x = if x.dtype == DType::F32 { x } else { CubeBackend::float_cast(x, FloatDType::F32) };
    into_contiguous(x)
}

fn restore_dtype(y: CubeTensor, dtype: DType) -> CubeTensor {
    match dtype {
        DType::F32 => y,
        DType::F64 => CubeBackend::float_cast(y, FloatDType::F64),
        DType::F16 => CubeBackend::float_cast(y, FloatDType::F16),
        DType::BF16 => CubeBackend::float_cast(y, FloatDType::BF16),
        _ => y,
    }
}

fn empty_f32(like: &CubeTensor, shape: Vec<usize>) -> CubeTensor {
    let n: usize = shape.iter().product();
    let handle = like.client.empty(n.max(1) * 4);
    CubeTensor::new_contiguous(like.client.clone(), like.device.clone(), Shape::from(shape), handle, DType::F32)
}

fn kind_code(p: &QuantPart) -> u32 {
    p.kind.id()
}

fn buffer(t: &CubeTensor, elems: usize) -> BufferArg {
    // SAFETY: `t` is contiguous and holds at least `elems` elements of the kernel's type.
    unsafe { BufferArg::from_raw_parts(t.handle.clone(), elems) }
}

/// `cubes` cubes as a grid of at most 65535 per dimension (kernels use the flat `CUBE_POS`).
fn grid_1d(cubes: usize) -> CubeCount {
    let x = cubes.min(65535);
    CubeCount::Static(x as u32, cubes.div_ceil(x.max(1)) as u32, 1)
}

/// Weight rows per thread in the vectorised decode kernels.
const DECODE_ROWS_PER_THREAD: u32 = 2;

/// Planes sharing a row group in the vectorised decode kernels, for rows of `steps` plane
/// steps (a plane step covers 4 Q4_K blocks = 1024 columns): as many as there are steps, up to 4.
fn decode_split(steps: usize) -> u32 {
    match steps {
        0..=1 => 1,
        2..=3 => 2,
        _ => 4,
    }
}

/// Whether the device's planes are exactly as wide as the decode kernels' rows of lanes, so
/// they can reduce with `plane_sum`.
fn planes_are_32(t: &CubeTensor) -> bool {
    let hw = &t.client.properties().hardware;
    hw.plane_size_min == reduce::LANES && hw.plane_size_max == reduce::LANES
}

fn matmul_decode(x: CubeTensor, w: &CubeTensor, layout: &QuantLayout, m: usize) -> CubeTensor {
    let (k, n) = (layout.in_features, layout.out_features());
    let y = empty_f32(&x, vec![m, n]);
    let client = x.client.clone();
    let plane32 = planes_are_32(&x);
    let mut col0 = 0;
    for part in &layout.parts {
        let code = kind_code(part);
        let count = grid_1d(part.rows.div_ceil(matvec::ROWS_PER_CUBE as usize));
        if part.kind == crate::GgmlType::Q4_K && part.byte_offset % 16 == 0 {
            let (r, split) = (DECODE_ROWS_PER_THREAD, decode_split(k / 1024));
            let groups = (reduce::PLANES / split) as usize * r as usize;
            // SAFETY: the part starts on a 16-byte boundary and its rows are whole 144-byte
            // blocks, so every 16-byte read stays inside it; rows past `rows` are clamped in
            // the kernel; `y` is `[m, n]` and the part writes columns `col0..col0 + rows`.
            unsafe {
                matvec_q4k::matvec_q4k::launch_unchecked(
                    &client,
                    grid_1d(part.rows.div_ceil(groups)),
                    CubeDim::new_2d(reduce::LANES, reduce::PLANES),
                    4,
                    buffer(w, layout.total_words() / 4),
                    buffer(&x, m * k / 4),
                    buffer(&y, m * n),
                    (part.byte_offset / 16) as u32,
                    part.rows as u32,
                    k as u32,
                    n as u32,
                    col0 as u32,
                    m as u32,
                    r,
                    split,
                    plane32,
                )
            };
            col0 += part.rows;
            continue;
        }
        if part.kind == crate::GgmlType::Q6_K {
            let (r, split) = (DECODE_ROWS_PER_THREAD, decode_split(k / 512));
            let groups = (reduce::PLANES / split) as usize * r as usize;
            // SAFETY: every word read is inside a block of a row below `rows` (rows past it are
            // clamped in the kernel); `y` is `[m, n]` and the part writes columns
            // `col0..col0 + rows`.
            unsafe {
                matvec_q6k::matvec_q6k::launch_unchecked(
                    &client,
                    grid_1d(part.rows.div_ceil(groups)),
                    CubeDim::new_2d(reduce::LANES, reduce::PLANES),
                    4,
                    buffer(w, layout.total_words()),
                    buffer(&x, m * k / 4),
                    buffer(&y, m * n),
                    part.byte_offset as u32,
                    part.rows as u32,
                    k as u32,
                    layout.row_bytes(part) as u32,
                    n as u32,
                    col0 as u32,
                    m as u32,
                    r,
                    split,
                    plane32,
                )
            };
            col0 += part.rows;
            continue;
        }
        // SAFETY: rows past `rows` are masked in the kernel; reads stay inside the part; `y` is
        // `[m, n]` and the part writes columns `col0..col0 + rows`.
        unsafe {
            matvec::matvec::launch_unchecked(
                &client,
                count,
                CubeDim::new_2d(matvec::LANES, matvec::ROWS),
                buffer(w, layout.total_words()),
                buffer(&x, m * k),
                buffer(&y, m * n),
                part.byte_offset as u32,
                part.rows as u32,
                k as u32,
                layout.row_bytes(part) as u32,
                n as u32,
                col0 as u32,
                m as u32,
                code,
                block_elems(code),
                block_bytes(code),
            )
        };
        col0 += part.rows;
    }
    y
}

/// Whether the device has the 16×16×16 f16·f16→f32 matrix instruction the
/// [`tiled_mma`] prefill kernel uses.
fn has_f16_mma(t: &CubeTensor) -> bool {
    use cubecl::ir::{ElemType, FloatKind, features::MmaConfig};
    let f16 = ElemType::Float(FloatKind::F16);
    let f32 = ElemType::Float(FloatKind::F32);
    t.client.properties().features.matmul.cmma.contains(&MmaConfig { a_type: f16, b_type: f16, cd_type: f32, m: 16, n: 16, k: 16 })
}

/// How many slices to split a reduction of `k` into, for `tiles` output tiles, so that about
/// [`SPLIT_K_TARGET`] cubes run, each slice at least 8 chunks of `bk`; returns `(splits, kslice)`.
fn split_k(k: usize, tiles: usize, bk: usize) -> (usize, usize) {
    let splits = SPLIT_K_TARGET.div_ceil(tiles).clamp(1, (k / (8 * bk)).max(1));
    let kslice = k.div_ceil(splits).div_ceil(bk) * bk;
    (k.div_ceil(kslice), kslice)
}

/// Sums the split-K slices of `y` (`[splits, m, n]`) into `[m, n]`.
fn sum_slices(y: CubeTensor, splits: usize, m: usize, n: usize) -> CubeTensor {
    if splits == 1 {
        CubeBackend::float_reshape(y, Shape::new([m, n]))
    } else {
        CubeBackend::float_reshape(CubeBackend::float_sum_dim(y, 0), Shape::new([m, n]))
    }
}

/// The prefill path on matrix units: f16 tiles, f32 accumulation ([`tiled_mma`]).
fn matmul_prefill_mma(x: CubeTensor, w: &CubeTensor, layout: &QuantLayout, m: usize) -> CubeTensor {
    let (k, n) = (layout.in_features, layout.out_features());
    let (bm, bn) = (tiled_mma::BM as usize, tiled_mma::BN as usize);
    let tiles = n.div_ceil(bn) * m.div_ceil(bm);
    let (splits, kslice) = split_k(k, tiles, tiled_mma::BK as usize);
    let y = empty_f32(&x, vec![splits, m, n]);
    let client = x.client.clone();
    let mut col0 = 0;
    for part in &layout.parts {
        let code = kind_code(part);
        let count = CubeCount::Static(part.rows.div_ceil(bn) as u32, m.div_ceil(bm) as u32, splits as u32);
        // SAFETY: out-of-range rows/columns are masked in the kernel; weight reads stay inside
        // the part; `y` is `[splits, m, n]` and this part writes columns `col0..col0 + rows`.
        unsafe {
            tiled_mma::matmul_mma::launch_unchecked(
                &client,
                count,
                CubeDim::new_2d(tiled_mma::LANES, tiled_mma::PLANES),
                buffer(w, layout.total_words()),
                buffer(&x, m * k),
                buffer(&y, splits * m * n),
                part.byte_offset as u32,
                part.rows as u32,
                m as u32,
                k as u32,
                layout.row_bytes(part) as u32,
                n as u32,
                col0 as u32,
                kslice as u32,
                code,
                block_elems(code),
                block_bytes(code),
            )
        };
        col0 += part.rows;
    }
    sum_slices(y, splits, m, n)
}

fn matmul_prefill(x: CubeTensor, w: &CubeTensor, layout: &QuantLayout, m: usize) -> CubeTensor {
    if has_f16_mma(&x) && planes_are_32(&x) {
        return matmul_prefill_mma(x, w, layout, m);
    }
    let (k, n) = (layout.in_features, layout.out_features());
    let b = tiled::B as usize;
    let bk = tiled::BK as usize;
    // Split the reduction until there are about 4 cubes per SM-sized slot (a few token rows give
    // few output tiles), keeping each slice at least 8 chunks long.
    let (splits, kslice) = split_k(k, n.div_ceil(b) * m.div_ceil(b), bk);
    let y = empty_f32(&x, vec![splits, m, n]);
    let client = x.client.clone();
    let mut col0 = 0;
    for part in &layout.parts {
        let code = kind_code(part);
        let count = CubeCount::Static(part.rows.div_ceil(b) as u32, m.div_ceil(b) as u32, splits as u32);
        // SAFETY: out-of-range rows/columns are masked in the kernel; weight reads stay inside
        // the part; `y` is `[splits, m, n]` and this part writes columns `col0..col0 + rows`.
        unsafe {
            tiled::matmul_tiled::launch_unchecked(
                &client,
                count,
                CubeDim::new_2d(tiled::T, tiled::T),
                buffer(w, layout.total_words()),
                buffer(&x, m * k),
                buffer(&y, splits * m * n),
                part.byte_offset as u32,
                part.rows as u32,
                m as u32,
                k as u32,
                layout.row_bytes(part) as u32,
                n as u32,
                col0 as u32,
                kslice as u32,
                code,
                block_elems(code),
                block_bytes(code),
            )
        };
        col0 += part.rows;
    }
    sum_slices(y, splits, m, n)
}

fn matmul_transposed_tiled(g: CubeTensor, w: &CubeTensor, layout: &QuantLayout, m: usize) -> CubeTensor {
    let (k, n) = (layout.in_features, layout.out_features());
    let dx = CubeBackend::float_zeros(Shape::new([m, k]), &g.device, FloatDType::F32);
    let client = g.client.clone();
    let b = tiled::B as usize;
    let mut row0 = 0;
    for part in &layout.parts {
        let code = kind_code(part);
        let count = CubeCount::Static(k.div_ceil(b) as u32, m.div_ceil(b) as u32, 1);
        // SAFETY: as in `matmul_prefill`; each launch adds one part's contribution to `dx`.
        unsafe {
            tiled::matmul_tiled_transposed::launch_unchecked(
                &client,
                count,
                CubeDim::new_2d(tiled::T, tiled::T),
                buffer(w, layout.total_words()),
                buffer(&g, m * n),
                buffer(&dx, m * k),
                part.byte_offset as u32,
                part.rows as u32,
                m as u32,
                k as u32,
                layout.row_bytes(part) as u32,
                n as u32,
                row0 as u32,
                code,
                block_elems(code),
                block_bytes(code),
            )
        };
        row0 += part.rows;
    }
    dx
}

impl QuantMatmulBackend for CubeBackend {
    fn quant_matmul(x: CubeTensor, weight: CubeTensor, layout: QuantLayout) -> CubeTensor {
        let dtype = x.dtype;
        let shape = x.meta.shape().clone();
        let k = layout.in_features;
        let m = shape.num_elements() / k.max(1);
        let x = f32_contiguous(x);
        let x2 = CubeBackend::float_reshape(x, Shape::new([m, k]));
        let weight = into_contiguous(weight);
        let y = if m <= matvec::MAX_M as usize {
            matmul_decode(x2, &weight, &layout, m)
        } else {
            matmul_prefill(x2, &weight, &layout, m)
        };
        let mut out = shape.iter().copied().collect::<Vec<usize>>();
        if let Some(l) = out.last_mut() {
            *l = layout.out_features();
        }
        restore_dtype(CubeBackend::float_reshape(y, Shape::from(out)), dtype)
    }

    fn quant_matmul_transposed(g: CubeTensor, weight: CubeTensor, layout: QuantLayout) -> CubeTensor {
        let dtype = g.dtype;
        let shape = g.meta.shape().clone();
        let (k, n) = (layout.in_features, layout.out_features());
        let m = shape.num_elements() / n.max(1);
        let g = CubeBackend::float_reshape(f32_contiguous(g), Shape::new([m, n]));
        let weight = into_contiguous(weight);
        let y = matmul_transposed_tiled(g, &weight, &layout, m);
        let mut out = shape.iter().copied().collect::<Vec<usize>>();
        if let Some(l) = out.last_mut() {
            *l = k;
        }
        restore_dtype(CubeBackend::float_reshape(y, Shape::from(out)), dtype)
    }

    fn quant_rows(ids: CubeTensor, weight: CubeTensor, layout: QuantLayout) -> CubeTensor {
        let ids = into_contiguous(CubeBackend::int_cast(ids, IntDType::U32));
        let n = ids.meta.shape().num_elements();
        let k = layout.in_features;
        let weight = into_contiguous(weight);
        let out = empty_f32(&weight, vec![n, k]);
        let client = weight.client.clone();
        let dim = CubeDim::new_1d(256);
        let count = calculate_cube_count_elemwise(&client, n * k, dim);
        let mut first = 0;
        for part in &layout.parts {
            let code = kind_code(part);
            // SAFETY: ids outside this part are skipped; reads stay inside the part; `out` has
            // `n · k` elements.
            unsafe {
                dequant::dequant_ids::launch_unchecked(
                    &client,
                    count.clone(),
                    dim,
                    buffer(&weight, layout.total_words()),
                    buffer(&ids, n),
                    buffer(&out, n * k),
                    part.byte_offset as u32,
                    first as u32,
                    part.rows as u32,
                    n as u32,
                    k as u32,
                    layout.row_bytes(part) as u32,
                    code,
                    block_elems(code),
                    block_bytes(code),
                )
            };
            first += part.rows;
        }
        out
    }
}
