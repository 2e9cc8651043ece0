//! Qwen3's SwiGLU MLP: `down(silu(gate · x) ⊙ (up · x))`.

use burn::module::Module;
use burn::nn::RmsNorm;
use burn::tensor::Tensor;

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
    /// `x + mlp(norm(x))`: `[batch, seq, hidden]` → `[batch, seq, hidden]`. The norm is done
    /// by the gate/up projection as it reads `x`, the SwiGLU by the down projection as it reads
    /// the gate/up output, and the residual `x` added in its epilogue, where the backend can
    /// ([`QuantLinear::forward_norm`], [`QuantLinear::forward_swiglu_add`]).
    pub fn forward(&self, x: Tensor<3>, norm: &RmsNorm) -> Tensor<3> {
        let gu = super::forward_concat(&self.gate_up, x.clone(), norm);
        self.down.forward_swiglu_add(gu, x)
    }
}
