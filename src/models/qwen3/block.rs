//! One Qwen3 decoder block: `x + attn(norm(x))`, then `h + mlp(norm(h))`.

use burn::module::Module;
use burn::nn::RmsNorm;
use burn::tensor::Tensor;

use super::attention::Qwen3Attention;
use super::cache::KvCache;
use super::mlp::Qwen3Mlp;
use super::rope::RopeAt;

/// A decoder block.
#[derive(Module, Debug)]
pub struct Qwen3Block {
    /// RMSNorm before attention.
    pub attn_norm: RmsNorm,
    /// Self-attention.
    pub attn: Qwen3Attention,
    /// RMSNorm before the MLP.
    pub ffn_norm: RmsNorm,
    /// SwiGLU MLP.
    pub mlp: Qwen3Mlp,
}

impl Qwen3Block {
    /// `[batch, seq, hidden]` → `[batch, seq, hidden]`, the new keys and values into layer
    /// `layer` of `cache` (see [`Qwen3Attention::forward`]).
    pub fn forward(&self, x: Tensor<3>, rope: RopeAt<'_>, cache: &mut KvCache, layer: usize) -> Tensor<3> {
        let h = self.attn.forward(x, &self.attn_norm, rope, cache, layer);
        self.mlp.forward(h, &self.ffn_norm)
    }
}
