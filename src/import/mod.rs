//! Readers for checkpoints other than GGUF: Hugging Face GPTQ / AWQ directories.

pub mod hf;

pub use hf::{HfCheckpoint, LinearWeights, QuantMethod};
