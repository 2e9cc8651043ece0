//! [`DecodeOpsBackend`] on the CubeCL backends: one launch per op (`crate::kernels::norm`,
//! `crate::kernels::attention`). Inputs are made contiguous f32 first; the output is f32.

use burn::backend::ops::IntTensorOps;
use burn::tensor::{DType, IntDType};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::DecodeOpsBackend;
use super::cube::{buffer, empty_f32, f32_contiguous, grid_1d};
use crate::kernels::{attention, norm};

/// Positions as 4-byte words the kernels read as `u32`: an `I32` or `U32` tensor as it is (a
/// position is never negative, so its bits are the same), any other dtype cast (one launch more
/// per op; Burn's cube backends default to `I32`).
fn positions(pos: CubeTensor) -> CubeTensor {
    let pos = match pos.dtype {
        DType::I32 | DType::U32 => pos,
        _ => CubeBackend::int_cast(pos, IntDType::U32),
    };
    into_contiguous(pos)
}

impl DecodeOpsBackend for CubeBackend {
    fn rms_norm(x: CubeTensor, gamma: CubeTensor, eps: f32) -> CubeTensor {
        let x = f32_contiguous(x);
        let gamma = f32_contiguous(gamma);
        let shape: Vec<usize> = x.meta.shape().iter().copied().collect();
        let n = shape.last().copied().unwrap_or(1);
        let rows = x.meta.shape().num_elements() / n.max(1);
        let y = empty_f32(&x, shape);
        // SAFETY: `x` and `y` are contiguous `[rows, n]`, `gamma` holds `n`; each cube reads and
        // writes its own row.
        unsafe {
            norm::rms_norm::launch_unchecked(
                &x.client,
                grid_1d(rows),
                CubeDim::new_1d(norm::RMS_THREADS),
                buffer(&x, rows * n),
                buffer(&gamma, n),
                buffer(&y, rows * n),
                n as u32,
                eps,
            )
        };
        y
    }

    fn norm_rope(x: CubeTensor, gamma: CubeTensor, gamma2: CubeTensor, first: usize, cos: CubeTensor, sin: CubeTensor, pos: CubeTensor, eps: f32) -> CubeTensor {
        let x = f32_contiguous(x);
        let (gamma, gamma2) = (f32_contiguous(gamma), f32_contiguous(gamma2));
        let (cos, sin) = (f32_contiguous(cos), f32_contiguous(sin));
        let pos = positions(pos);
        let shape: Vec<usize> = x.meta.shape().iter().copied().collect();
        let r = shape.len();
        let (heads, d) = (shape[r - 2], shape[r - 1]);
        let rows = x.meta.shape().num_elements() / d.max(1);
        let y = empty_f32(&x, shape);
        let table = cos.meta.shape().num_elements();
        // SAFETY: `x`, `y` are contiguous `[rows, d]` (`rows` = tokens · heads), `gamma` and
        // `gamma2` hold `d`, `pos` one entry per token (`rows / heads`); the callers' positions index rows of
        // the `[positions, d/2]` tables.
        unsafe {
            norm::norm_rope::launch_unchecked(
                &x.client,
                grid_1d(rows),
                CubeDim::new_1d(norm::THREADS),
                buffer(&x, rows * d),
                buffer(&gamma, d),
                buffer(&gamma2, d),
                buffer(&cos, table),
                buffer(&sin, table),
                buffer(&pos, rows / heads.max(1)),
                buffer(&y, rows * d),
                heads as u32,
                first.min(heads) as u32,
                d as u32,
                eps,
            )
        };
        y
    }

    fn attention_decode(q: CubeTensor, k: CubeTensor, v: CubeTensor, pos: CubeTensor, scale: f32) -> CubeTensor {
        let d = q.meta.shape().dims::<4>()[3];
        if !attention::supports(d) {
            return super::decode::attention_decode_composed::<Self>(q, k, v, pos, scale);
        }
        let (q, k, v) = (f32_contiguous(q), f32_contiguous(k), f32_contiguous(v));
        let pos = positions(pos);
        let [b, kvh, g, d] = q.meta.shape().dims::<4>();
        let cap = k.meta.shape()[2];
        let rows = b * kvh * g;
        let out = empty_f32(&q, vec![b, kvh, g, d]);
        let scores = empty_f32(&q, vec![rows, cap]);
        // SAFETY: `q`, `out` are contiguous `[rows, d]`, `k`, `v` `[b·kvh, cap, d]` (read as
        // 4-float vectors: `d` is a multiple of 4), `scores` `[rows, cap]`; the kernel reads
        // positions below `min(pos + 1, cap)` only.
        unsafe {
            attention::attention_decode::launch_unchecked(
                &q.client,
                grid_1d(rows),
                CubeDim::new_1d(attention::THREADS),
                4,
                buffer(&q, rows * d),
                buffer(&k, b * kvh * cap * d / 4),
                buffer(&v, b * kvh * cap * d / 4),
                buffer(&pos, 1),
                buffer(&scores, rows * cap),
                buffer(&out, rows * d),
                g as u32,
                cap as u32,
                scale,
                d as u32,
            )
        };
        out
    }
}
