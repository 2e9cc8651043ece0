//! Readers for checkpoints other than GGUF: Hugging Face GPTQ / AWQ directories.

#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

mod config_json;
pub mod hf;
mod safetensors_header;

pub use config_json::parse_config as parse_config_json;
pub use hf::{HfCheckpoint, LinearWeights, QuantMethod};
