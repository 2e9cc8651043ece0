//! NEOX-style rotary position embedding (rotate halves: pairs `(j, j + d/2)`), as Qwen3 uses.

use burn::tensor::{Device, Int, Tensor, TensorData};

/// `cos` and `sin` of `θ_j · p` for positions `start..start + len` and `j < head_dim / 2`, where
/// `θ_j = base^(-2j / head_dim)`; each `[len, head_dim / 2]`, computed in f64.
pub fn tables(start: usize, len: usize, head_dim: usize, base: f64, device: &Device) -> (Tensor<2>, Tensor<2>) {
    let half = head_dim / 2;
    let mut cos = Vec::with_capacity(len * half);
    let mut sin = Vec::with_capacity(len * half);
    for p in start..start + len {
        for j in 0..half {
            let angle = p as f64 * base.powf(-2.0 * j as f64 / head_dim as f64);
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    (
        Tensor::from_data(TensorData::new(cos, [len, half]), device),
        Tensor::from_data(TensorData::new(sin, [len, half]), device),
    )
}

/// Rotates `x [batch, seq, heads, head_dim]` by the tables of [`tables`] (`[seq, head_dim/2]`).
pub fn apply(x: Tensor<4>, cos: &Tensor<2>, sin: &Tensor<2>) -> Tensor<4> {
    let [_, seq, _, d] = x.dims();
    let half = d / 2;
    let cos = cos.clone().reshape([1, seq, 1, half]);
    let sin = sin.clone().reshape([1, seq, 1, half]);
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.narrow(3, half, half);
    let a = x1.clone() * cos.clone() - x2.clone() * sin.clone();
    let b = x2 * cos + x1 * sin;
    Tensor::cat(vec![a, b], 3)
}

/// Where a forward finds the rotation of its new positions.
#[derive(Clone, Copy, Debug)]
pub enum RopeAt<'a> {
    /// The rows of the new positions, `cos` and `sin` `[seq, head_dim/2]` (from [`tables`]): the
    /// q/k norms and the rotation run as Burn ops.
    Rows(&'a Tensor<2>, &'a Tensor<2>),
    /// The tables of every position below the cache's capacity and the new positions `[seq]`
    /// held on the device: the fused ops ([`crate::ops::norm_rope`], [`crate::ops::rms_norm`])
    /// of a recorded decode step, whose position never comes to the host.
    Device {
        /// `[capacity, head_dim/2]`.
        cos: &'a Tensor<2>,
        /// `[capacity, head_dim/2]`.
        sin: &'a Tensor<2>,
        /// `[seq]`.
        pos: &'a Tensor<1, Int>,
    },
}

impl RopeAt<'_> {
    /// Whether the fused ops run (see [`RopeAt::Device`]).
    pub fn is_fused(&self) -> bool {
        matches!(self, RopeAt::Device { .. })
    }
}
