//! CubeCL kernels (one source for CUDA, wgpu/Vulkan/Metal/WebGPU) over the packed GGUF / int4
//! blocks, read straight from device memory as `u32` words.
//!
//! - [`decode`]: the per-format element decoders (one place per block layout on the GPU, mirroring
//!   `crate::format`, bit-exact with ggml's reference decode).
//! - [`dequant`]: weight rows picked by id → f32 (the embedding lookup).
//! - [`matvec`]: the decode path (1–8 token rows): four planes per weight row, one pass over the
//!   weight for all token rows at once; Q4_K and Q6_K have their own kernels.
//! - [`tiled`]: the prefill path and the input gradient, weight tiles decoded into shared memory.

// Cube functions assign defaults before comptime branches overwrite them.
#![allow(unused_assignments)]

pub mod decode;
pub mod dequant;
pub mod matvec;
pub mod tiled;
