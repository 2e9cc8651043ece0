//! burn-quant: quantized LLM weights (GGUF k-quants and legacy quants, GPTQ, AWQ) for Burn.
//!
//! Layers, from the bottom: [`format`] (byte layouts, reference decode/encode; no Burn types),
//! [`gguf`] (reader and writer), [`ops`] (the quantized-matmul backend extension and its
//! per-backend kernels), [`module`] ([`QuantLinear`]), [`models`] (Qwen3 on top), [`tokenizer`]
//! (byte-level BPE from GGUF metadata or `tokenizer.json`).

// Library code returns typed errors; an unwrap or expect reachable from a file or a caller's
// argument would be a panic (issue 6). Tests may unwrap.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod alloc_meter;
pub mod device;
pub mod error;
pub mod format;
pub mod gguf;
#[cfg(feature = "cube")]
pub mod kernels;
pub mod import;
pub mod models;
pub mod module;
pub mod ops;
pub mod tokenizer;

pub use error::{Error, Result};
pub use format::GgmlType;
pub use module::{QuantLinear, QuantLinearConfig};
