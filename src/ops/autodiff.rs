//! Autodiff: the gradient flows to the input; the quantized weight is frozen.
//!
//! `y = x · Wᵀ` has input gradient `g · W` ([`QuantMatmulBackend::quant_matmul_transposed`]) and
//! vice versa, so each op's backward is the other op.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::{FloatTensor, IntTensor};

use super::{QuantLayout, QuantMatmulBackend};

/// Backward of one of the two ops; `TRANSPOSED` names the forward op it differentiates.
#[derive(Debug)]
struct QuantMatmulBackward<const TRANSPOSED: bool>;

impl<B: QuantMatmulBackend, const T: bool> Backward<B, 1> for QuantMatmulBackward<T> {
    type State = (IntTensor<B>, QuantLayout);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (weight, layout) = ops.state;
        if let Some(node) = node {
            let g = if T { B::quant_matmul(grad, weight, layout) } else { B::quant_matmul_transposed(grad, weight, layout) };
            grads.register::<B>(node.id, g);
        }
    }
}

fn forward<B: QuantMatmulBackend, C: CheckpointStrategy, const T: bool>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: IntTensor<B>,
    layout: QuantLayout,
) -> FloatTensor<Autodiff<B, C>> {
    let op = |x, w, l| if T { B::quant_matmul_transposed(x, w, l) } else { B::quant_matmul(x, w, l) };
    let (x, node) = x.into_parts();
    // "Compute bound" here means: keep the state (the weight handle and layout) rather than
    // recompute parents; the state holds no activation.
    match QuantMatmulBackward::<T>.prepare::<C>([node]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let y = op(x, weight.clone(), layout.clone());
            prep.finish((weight, layout), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(op(x, weight, layout)),
    }
}

impl<B: QuantMatmulBackend, C: CheckpointStrategy> QuantMatmulBackend for Autodiff<B, C> {
    fn quant_matmul(x: FloatTensor<Self>, weight: IntTensor<Self>, layout: QuantLayout) -> FloatTensor<Self> {
        forward::<B, C, false>(x, weight, layout)
    }

    fn quant_matmul_transposed(g: FloatTensor<Self>, weight: IntTensor<Self>, layout: QuantLayout) -> FloatTensor<Self> {
        forward::<B, C, true>(g, weight, layout)
    }

    fn quant_rows(ids: IntTensor<Self>, weight: IntTensor<Self>, layout: QuantLayout) -> FloatTensor<Self> {
        // A lookup by integer ids of a frozen weight: a leaf with no gradient.
        <Self as burn::backend::AutodiffBackend>::from_inner(B::quant_rows(ids, weight, layout))
    }
}

/// The default bodies: Burn's differentiable primitives, so gradients flow through them.
impl<B: super::DecodeOpsBackend, C: CheckpointStrategy> super::DecodeOpsBackend for Autodiff<B, C> {}
