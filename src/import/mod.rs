//! Readers for checkpoints other than GGUF: Hugging Face GPTQ / AWQ directories.

#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

pub mod hf;

pub use hf::{HfCheckpoint, LinearWeights, QuantMethod};
