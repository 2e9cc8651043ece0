//! CubeCL kernels (one source for CUDA, wgpu/Vulkan/Metal/WebGPU) over the packed GGUF / int4
//! blocks, read straight from device memory as `u32` words.
//!
//! - [`decode`]: the per-format element decoders (one place per block layout on the GPU, mirroring
//!   `crate::format`, bit-exact with ggml's reference decode).
//! - [`dequant`]: rows of a weight part → f32 (the embedding lookup, and the tiles the prefill
//!   path hands to Burn's matmul).
//! - [`matvec`]: the decode path (1–8 token rows): one plane per weight row, one pass over the
//!   weight for all token rows at once.

// Cube functions assign defaults before comptime branches overwrite them.
#![allow(unused_assignments)]

pub mod decode;
pub mod dequant;
pub mod matvec;
pub mod tiled;
