//! Qwen3's SwiGLU MLP: `down(silu(gate · x) ⊙ (up · x))`.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;

use crate::QuantLinear;

/// The MLP of one block.
#[derive(Module, Debug)]
pub struct Qwen3Mlp {
    /// gate and up: one fused projection `[2·ffn, hidden]`, or two layers (see
    /// [`Qwen3Attention::qkv`](super::Qwen3Attention::qkv)).
    pub gate_up: Vec<QuantLinear>,
    /// Down projection `[hidden, ffn]`.
    pub down: QuantLinear,
}

impl Qwen3Mlp {
    /// `[batch, seq, hidden]` → `[batch, seq, hidden]`, added to `residual` (the block's
    /// input) by the down projection.
    pub fn forward(&self, x: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        let ffn = self.gate_up.iter().map(|l| l.out_features()).sum::<usize>() / 2;
        let gu = super::forward_concat(&self.gate_up, x);
        let gate = gu.clone().narrow(2, 0, ffn);
        let up = gu.narrow(2, ffn, ffn);
        self.down.forward_add(silu(gate) * up, residual)
    }
}
