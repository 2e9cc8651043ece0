//! burn-quant: quantized LLM weights (GGUF k-quants and legacy quants, GPTQ, AWQ) for Burn.
//!
//! Layers, from the bottom: [`format`] (byte layouts, reference decode/encode; no Burn types),
//! [`gguf`] (reader and writer), [`ops`] (the quantized-matmul backend extension and its
//! per-backend kernels), [`module`] ([`QuantLinear`]).

pub mod error;
pub mod format;
pub mod gguf;
pub mod module;
pub mod ops;

pub use error::{Error, Result};
pub use format::GgmlType;
pub use module::{QuantLinear, QuantLinearConfig};
