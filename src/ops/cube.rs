//! The CubeCL backends (wgpu, CUDA; and, through the generated `Fusion<B>` implementation, the
//! fusion-wrapped default devices): launches the kernels of `crate::kernels`.
//!
//! - `m ≤ 8` token rows: the fused decode kernel (`kernels::matvec`), one pass over the weight.
//! - more rows: each part is dequantized in chunks of at most `CHUNK_ELEMS` weights into an f32
//!   tile that Burn's own matmul multiplies (the tile is freed after use; the layer keeps only
//!   the quantized blocks).

use burn::backend::ops::{FloatTensorOps, IntTensorOps};
use burn::tensor::{DType, FloatDType, IntDType, Shape};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::calculate_cube_count_elemwise;
use cubecl::prelude::*;

use super::{QuantLayout, QuantMatmulBackend, QuantPart};
use crate::kernels::decode::{block_bytes, block_elems};
use crate::kernels::{dequant, matvec};

/// Largest dequantized tile of the prefill path, in weights (64 Mi f32 = 256 MiB at most... kept
/// to 16 Mi = 64 MiB).
const CHUNK_ELEMS: usize = 1 << 24;

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

/// Dequantizes rows `row0..row0 + rows` of `part` into a new `[rows, k]` f32 tensor.
fn dequant_part_rows(w: &CubeTensor, layout: &QuantLayout, part: &QuantPart, row0: usize, rows: usize) -> CubeTensor {
    let k = layout.in_features;
    let out = empty_f32(w, vec![rows, k]);
    let n = rows * k;
    let client = &w.client;
    let dim = CubeDim::new_1d(256);
    let count = calculate_cube_count_elemwise(client, n, dim);
    let code = kind_code(part);
    // SAFETY: the kernel bounds-checks its element index; every weight byte it reads lies inside
    // the part (validated by `QuantLayout`), and `out` has `rows · k` elements.
    unsafe {
        dequant::dequant_rows::launch_unchecked(
            client,
            count,
            dim,
            buffer(w, layout.total_words()),
            buffer(&out, n),
            part.byte_offset as u32,
            row0 as u32,
            rows as u32,
            k as u32,
            layout.row_bytes(part) as u32,
            code,
            block_elems(code),
            block_bytes(code),
        )
    };
    out
}

fn matmul_decode(x: CubeTensor, w: &CubeTensor, layout: &QuantLayout, m: usize) -> CubeTensor {
    let (k, n) = (layout.in_features, layout.out_features());
    let y = empty_f32(&x, vec![m, n]);
    let client = x.client.clone();
    let mut col0 = 0;
    for part in &layout.parts {
        let code = kind_code(part);
        let count = CubeCount::Static(part.rows.div_ceil(matvec::ROWS as usize) as u32, 1, 1);
        if part.kind == crate::GgmlType::Q4_K {
            // SAFETY: as below; Q4_K rows are whole 36-word blocks starting on a word.
            unsafe {
                matvec::matvec_q4k::launch_unchecked(
                    &client,
                    count,
                    CubeDim::new_2d(matvec::LANES, matvec::ROWS),
                    buffer(w, layout.total_words()),
                    buffer(&x, m * k),
                    buffer(&y, m * n),
                    (part.byte_offset / 4) as u32,
                    part.rows as u32,
                    k as u32,
                    n as u32,
                    col0 as u32,
                    m as u32,
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

/// Calls `f(part, row0, rows)` for every chunk of at most `CHUNK_ELEMS` weights.
fn for_each_chunk(layout: &QuantLayout, mut f: impl FnMut(&QuantPart, usize, usize)) {
    let per_chunk = (CHUNK_ELEMS / layout.in_features).max(1);
    for part in &layout.parts {
        let mut row0 = 0;
        while row0 < part.rows {
            let rows = per_chunk.min(part.rows - row0);
            f(part, row0, rows);
            row0 += rows;
        }
    }
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
            let mut outs = Vec::new();
            for_each_chunk(&layout, |part, row0, rows| {
                let tile = dequant_part_rows(&weight, &layout, part, row0, rows);
                outs.push(CubeBackend::float_matmul(x2.clone(), CubeBackend::float_transpose(tile)));
            });
            if outs.len() == 1 { outs.pop().unwrap_or_else(|| empty_f32(&x2, vec![m, 0])) } else { CubeBackend::float_cat(outs, 1) }
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
        let mut acc: Option<CubeTensor> = None;
        let mut col0 = 0;
        let mut part_start = std::collections::HashMap::new();
        for p in &layout.parts {
            part_start.insert(p.byte_offset, col0);
            col0 += p.rows;
        }
        for_each_chunk(&layout, |part, row0, rows| {
            let start = part_start.get(&part.byte_offset).copied().unwrap_or(0) + row0;
            let tile = dequant_part_rows(&weight, &layout, part, row0, rows);
            let gs = CubeBackend::float_slice(g.clone(), &[burn::tensor::Slice::from(0..m), burn::tensor::Slice::from(start..start + rows)]);
            let d = CubeBackend::float_matmul(gs, tile);
            acc = Some(match acc.take() {
                Some(a) => CubeBackend::float_add(a, d),
                None => d,
            });
        });
        let y = acc.unwrap_or_else(|| empty_f32(&g, vec![m, k]));
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
