//! The quantized-matmul backend extension (Burn's `#[backend_extension]` mechanism) and its
//! per-backend implementations: one file per backend family.
//!
//! The weight travels as a rank-1 `Int` tensor of raw `u32` words (dtype `U32`) holding the GGUF
//! blocks exactly as stored; [`QuantLayout`] says how to read them.

// burn-ndarray is deprecated upstream but still supported here (issue 2); the macro-generated
// dispatch names it.
#![allow(deprecated)]

mod autodiff;
mod cpu;
#[cfg(feature = "cube")]
mod cube;
#[cfg(feature = "cube")]
mod cube_decode;
mod decode;
mod layout;

pub use cpu::kernel as cpu_kernel;
pub use decode::{DecodeOpsBackend, attention_decode, attention_prompt, attention_step, greedy_feed, norm_rope, qk_norm_rope, rms_norm};
pub use layout::{QuantLayout, QuantPart};

use burn::backend::backend_extension;
use burn::backend::tensor::{FloatTensor, IntTensor};

/// Quantized matrix multiplication on packed GGUF blocks.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    Cube: cfg(feature = "cube"),
    Fusion: cfg(feature = "cube"),
    Autodiff
)]
pub trait QuantMatmulBackend: burn::backend::Backend {
    /// `y = x · Wᵀ`: `x` is `[m, in]` (f32), the result `[m, out]`. `weight` is the packed
    /// u32 words described by `layout`.
    #[fusion(dtype = x, shape = { let mut s = x.clone(); let last = s.num_dims() - 1; s[last] = layout.out_features(); s })]
    fn quant_matmul(x: FloatTensor<Self>, weight: IntTensor<Self>, layout: QuantLayout) -> FloatTensor<Self>;

    /// `y = x · Wᵀ + r`, `r` of `y`'s shape: a residual added in the product's epilogue where the
    /// backend can (the cube backends' decode kernels: one launch fewer per residual of a decode
    /// step). The default adds it after [`quant_matmul`](QuantMatmulBackend::quant_matmul),
    /// which is also what makes it differentiable under `Autodiff`.
    #[fusion(dtype = x, shape = r)]
    fn quant_matmul_add(x: FloatTensor<Self>, weight: IntTensor<Self>, layout: QuantLayout, r: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_add(Self::quant_matmul(x, weight, layout), r)
    }

    /// `y = rms_norm(x) · Wᵀ`, where `rms_norm(x) = x / √(mean(x²) + eps) · gamma` over the last
    /// dim (`gamma [in]`): the RMSNorm before a projection, done by the product's kernels as they
    /// read the input where the backend can (the cube backends' one-pass decode kernels: one
    /// launch fewer per norm of a decode step). The default composes
    /// [`DecodeOpsBackend::rms_norm`]'s body and [`quant_matmul`](QuantMatmulBackend::quant_matmul),
    /// which is also what makes it differentiable under `Autodiff`.
    #[fusion(dtype = x, shape = { let mut s = x.clone(); let last = s.num_dims() - 1; s[last] = layout.out_features(); s })]
    fn quant_matmul_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, eps: f32, weight: IntTensor<Self>, layout: QuantLayout) -> FloatTensor<Self> {
        Self::quant_matmul(decode::rms_norm_composed::<Self>(x, gamma, eps), weight, layout)
    }

    /// `y = (silu(gate) ⊙ up) · Wᵀ + r`, where `gu = [gate | up]` is `[m, 2·in]` (`silu(g) = g ·
    /// σ(g)`) and `r` of `y`'s shape: a SwiGLU MLP's down projection with its residual, the
    /// SwiGLU done by the product's kernels as they read the input where the backend can (one
    /// launch fewer per MLP of a decode step). The default composes Burn's ops and
    /// [`quant_matmul_add`](QuantMatmulBackend::quant_matmul_add).
    #[fusion(dtype = gu, shape = r)]
    fn quant_matmul_swiglu_add(gu: FloatTensor<Self>, weight: IntTensor<Self>, layout: QuantLayout, r: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::quant_matmul_add(decode::swiglu_composed::<Self>(gu), weight, layout, r)
    }

    /// `g · W`: `g` is `[m, out]`, the result `[m, in]` (the input gradient of
    /// [`quant_matmul`](QuantMatmulBackend::quant_matmul)).
    #[fusion(dtype = g, shape = { let mut s = g.clone(); let last = s.num_dims() - 1; s[last] = layout.in_features; s })]
    fn quant_matmul_transposed(g: FloatTensor<Self>, weight: IntTensor<Self>, layout: QuantLayout) -> FloatTensor<Self>;

    /// Dequantizes the weight rows named by `ids` (rank 1, any int dtype) into `[n, in]` f32:
    /// the lookup of a quantized embedding table. Not differentiable (the ids are integers and
    /// the weight is frozen).
    #[fusion(dtype = burn::tensor::DType::F32, shape = burn::tensor::Shape::new([ids.num_elements(), layout.in_features]))]
    fn quant_rows(ids: IntTensor<Self>, weight: IntTensor<Self>, layout: QuantLayout) -> FloatTensor<Self>;
}
