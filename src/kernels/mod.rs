//! CubeCL kernels (one source for CUDA, wgpu/Vulkan/Metal/WebGPU) over the packed GGUF / int4
//! blocks, read straight from device memory as `u32` words.
//!
//! - [`decode`]: the per-format element decoders (one place per block layout on the GPU, mirroring
//!   `crate::format`, bit-exact with ggml's reference decode).
//! - [`dequant`]: weight rows picked by id → f32 (the embedding lookup).
//! - [`matvec`]: the generic decode path (1–8 token rows): one pass over the weight for all token
//!   rows at once; [`matvec_q4k`] and [`matvec_q6kx4`] are the vectorised kernels of the two types
//!   every Q4_K_M file is made of, launched through [`matvec_pair`] (one part, or a Q4_K and a
//!   Q6_Kx4 part in one launch) (Q6_K as regrouped at load; [`matvec_q6k`] reads the plain
//!   blocks), [`matvec_q80`] Q8_0's, [`matvec_q50`] Q5_0's, [`matvec_i4`] that of the GPTQ/AWQ
//!   int4 groups (at one token row [`matvec_i4_cols`], with the input held in registers);
//!   [`reduce`]
//!   ends them, and [`input`] is what they do to their input as they read it (SwiGLU, RMSNorm).
//!   [`matvec_mma`] is the tensor-core Q4_K kernel for 2..16 token rows, [`matvec_i4_mma`] the
//!   int4 one (input staged in shared memory, reduction split across cubes).
//! - [`tiled`]: the prefill path and the input gradient, weight tiles decoded into shared memory.
//! - [`tiled_mma`]: the prefill path on matrix units (f16 tiles, f32 accumulation).
//! - [`prefill_mma`]: the CUDA prefill of Q4_K and Q6_Kx4 weights, decoded straight into the
//!   `mma` A registers (the default where every part of a weight is one of them).
//! - [`norm`] and [`attention`]: the fused ops of a decode step (RMSNorm, q/k norm + RoPE, one
//!   token's attention over the KV cache); [`attention_prompt`]: a prompt's (q/k norm + RoPE
//!   with the cache writes, then tiled causal attention), whose attention [`attention_mma`] does
//!   on the tensor cores where the device has them.
//! - [`argmax`]: greedy decoding's argmax of the logits, written into the next step's token
//!   buffer with the position advanced (the end of a recorded decode step).

// Cube functions assign defaults before comptime branches overwrite them.
#![allow(unused_assignments)]

pub mod argmax;
pub mod attention;
pub mod attention_mma;
pub mod attention_prompt;
pub mod decode;
pub mod dequant;
pub mod input;
pub mod matvec;
pub mod matvec_i4;
pub mod matvec_i4_cols;
pub mod matvec_i4_mma;
pub mod matvec_mma;
pub mod matvec_pair;
pub mod matvec_q4k;
pub mod matvec_q50;
pub mod matvec_q6k;
pub mod matvec_q6kx4;
pub mod matvec_q80;
pub mod norm;
pub mod prefill_mma;
pub mod reduce;
pub mod tiled;
pub mod tiled_mma;
