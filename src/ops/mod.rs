//! The quantized-matmul backend extension (Burn's `#[backend_extension]` mechanism) and its
//! per-backend implementations: one file per backend family.
//!
//! The weight travels as a rank-1 `Int` tensor of raw `u32` words (dtype `U32`) holding the GGUF
//! blocks exactly as stored; [`QuantLayout`] says how to read them.

mod autodiff;
mod cpu;
mod layout;

pub use cpu::kernel as cpu_kernel;
pub use layout::{QuantLayout, QuantPart};

use burn::backend::backend_extension;
use burn::backend::tensor::{FloatTensor, IntTensor};

/// Quantized matrix multiplication on packed GGUF blocks.
#[backend_extension(Flex: cfg(feature = "flex"), NdArray: cfg(feature = "ndarray"), Autodiff)]
pub trait QuantMatmulBackend: burn::backend::Backend {
    /// `y = x · Wᵀ`: `x` is `[m, in]` (f32), the result `[m, out]`. `weight` is the packed
    /// u32 words described by `layout`.
    fn quant_matmul(x: FloatTensor<Self>, weight: IntTensor<Self>, layout: QuantLayout) -> FloatTensor<Self>;

    /// `g · W`: `g` is `[m, out]`, the result `[m, in]` (the input gradient of
    /// [`quant_matmul`](QuantMatmulBackend::quant_matmul)).
    fn quant_matmul_transposed(g: FloatTensor<Self>, weight: IntTensor<Self>, layout: QuantLayout) -> FloatTensor<Self>;

    /// Dequantizes the weight rows named by `ids` (rank 1, any int dtype) into `[n, in]` f32:
    /// the lookup of a quantized embedding table. Not differentiable (the ids are integers and
    /// the weight is frozen).
    fn quant_rows(ids: IntTensor<Self>, weight: IntTensor<Self>, layout: QuantLayout) -> FloatTensor<Self>;
}
