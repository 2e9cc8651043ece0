//! Qwen3 as Burn modules built from [`QuantLinear`](crate::QuantLinear): loading from GGUF,
//! a KV cache for incremental decoding, and sampling.
//!
//! Conventions (llama.cpp's `qwen3` graph = Hugging Face Qwen3): `RMSNorm(x)·w`; per-head
//! RMSNorm of q and k over `head_dim` before RoPE; NEOX RoPE (pairs `(j, j + d/2)`) with the
//! file's base; scale `1/√head_dim`; causal grouped-query attention; SwiGLU MLP; tied or separate
//! LM head.

mod attention;
mod block;
mod cache;
mod config;
mod generate;
mod graph;
mod load_gguf;
mod load_hf;
mod mlp;
mod model;
pub mod rope;
pub mod sampling;

pub use attention::Qwen3Attention;
pub use block::Qwen3Block;
pub use cache::{KvCache, KvView};
pub use config::Qwen3Config;
pub use generate::{Generation, StepRead, StepTimes, logits_to_vec};
pub use graph::DecodeGraph;
pub use mlp::Qwen3Mlp;
pub use model::Qwen3;
pub use sampling::{Sampler, Sampling};

/// Runs each layer on `norm(x)` and concatenates the outputs along the last dim. One fused layer
/// runs alone and does the norm as it reads `x` where the backend can
/// ([`QuantLinear::forward_norm`](crate::QuantLinear::forward_norm)).
fn forward_concat(layers: &[crate::QuantLinear], x: burn::tensor::Tensor<3>, norm: &burn::nn::RmsNorm) -> burn::tensor::Tensor<3> {
    match layers {
        [one] => one.forward_norm(x, norm),
        many => {
            let x = norm.forward(x);
            burn::tensor::Tensor::cat(many.iter().map(|l| l.forward(x.clone())).collect(), 2)
        }
    }
}

/// An RMSNorm over `weight.len()` features whose scale is `weight`.
fn rms_norm(weight: Vec<f32>, eps: f64, device: &burn::tensor::Device) -> burn::nn::RmsNorm {
    let len = weight.len();
    let mut n = burn::nn::RmsNormConfig::new(len).with_epsilon(eps).init(device);
    n.gamma = burn::module::Param::from_tensor(burn::tensor::Tensor::from_data(burn::tensor::TensorData::new(weight, [len]), device));
    n
}
