//! Qwen3 self-attention: fused q/k/v projection, per-head RMSNorm on q and k, NEOX RoPE,
//! grouped-query causal attention over the KV cache, output projection.

use burn::module::Module;
use burn::nn::RmsNorm;
use burn::tensor::Tensor;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use super::cache::KvCache;
use super::rope::{self, RopeAt};
use crate::QuantLinear;

/// One attention layer.
#[derive(Module, Debug)]
pub struct Qwen3Attention {
    /// q, k and v: one fused projection `[q_dim + 2·kv_dim, hidden]` (parts keep their types), or
    /// three layers when they cannot share an input (act-order GPTQ permutes each differently).
    pub qkv: Vec<QuantLinear>,
    /// RMSNorm over `head_dim` applied to every query head before RoPE.
    pub q_norm: RmsNorm,
    /// RMSNorm over `head_dim` applied to every key head before RoPE.
    pub k_norm: RmsNorm,
    /// Output projection `[hidden, q_dim]`.
    pub o: QuantLinear,
    /// Query heads.
    #[module(skip)]
    pub num_heads: usize,
    /// Key/value heads.
    #[module(skip)]
    pub num_kv_heads: usize,
    /// Head width.
    #[module(skip)]
    pub head_dim: usize,
}

impl Qwen3Attention {
    /// `x + attn(norm(x))`: `x [batch, seq, hidden]` → `[batch, seq, hidden]`, the norm done by
    /// the q/k/v projection as it reads `x` where the backend can
    /// ([`QuantLinear::forward_norm`]) and `x` added by the output projection; `rope` says where
    /// the rotation of the new positions comes from ([`RopeAt`]); the new keys and values go into
    /// layer `layer` of `cache`: after the positions held with [`RopeAt::Rows`] (everything
    /// after the projection is one op, [`crate::ops::attention_prompt`]; with
    /// `BURN_QUANT_PROMPT_OP=0`, Burn's ops and [`KvCache::append_layer`]), at the device-held
    /// position with [`RopeAt::Device`] (one token: one op, [`crate::ops::attention_step`]).
    pub fn forward(&self, x: Tensor<3>, norm: &RmsNorm, rope: RopeAt<'_>, cache: &mut KvCache, layer: usize) -> Tensor<3> {
        let [b, s, _] = x.dims();
        let (h, kvh, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let qkv = super::forward_concat(&self.qkv, x.clone(), norm);
        if let RopeAt::Device { cos, sin, pos } = rope
            && s == 1
            && self.q_norm.epsilon == self.k_norm.epsilon
        {
            let y = cache.update_layer(layer, [b, kvh, 1, d], &x.device(), |kc, vc| {
                let (q, k) = (self.q_norm.gamma.val(), self.k_norm.gamma.val());
                let scale = 1.0 / (d as f32).sqrt();
                crate::ops::attention_step(qkv, q, k, cos.clone(), sin.clone(), pos.clone(), (kc, vc), [h, kvh], self.q_norm.epsilon, scale)
            });
            return self.o.forward_add(y, x);
        }
        // New positions with their own RoPE rows (a prompt; on the CPU backends every step):
        // everything after the projection is one op (two launches on the cube backends, one pass
        // on the CPU ones) that writes the cache and returns the output in the layout the output
        // projection reads.
        if let RopeAt::Rows(cos, sin) = rope
            && prompt_op_on()
            && self.q_norm.epsilon == self.k_norm.epsilon
        {
            let start = cache.len();
            let y = cache.update_layer(layer, [b, kvh, start + s, d], &x.device(), |kc, vc| {
                let (q, k) = (self.q_norm.gamma.val(), self.k_norm.gamma.val());
                let scale = 1.0 / (d as f32).sqrt();
                crate::ops::attention_prompt(qkv, q, k, cos.clone(), sin.clone(), (kc, vc), start, [h, kvh], self.q_norm.epsilon, scale)
            });
            return self.o.forward_add(y, x);
        }
        // The views of `qkv` each arm needs, made only there (each is an op the host pays for).
        let q = || qkv.clone().narrow(2, 0, h * d).reshape([b, s, h, d]);
        let k = || qkv.clone().narrow(2, h * d, kvh * d).reshape([b, s, kvh, d]);
        let v = qkv.clone().narrow(2, (h + kvh) * d, kvh * d).reshape([b, s, kvh, d]);
        // Backends that compile kernels take the fused norm + rotation for a prompt's rows too
        // (positions `0..s` of the rows' tables, made once per step): as Burn ops, the two
        // RMSNorms alone cost the host of a fusion-wrapped cube backend ~0.5 ms a layer
        // (BENCHMARKS.md, session 14).
        let rows_pos;
        let rotate = match rope {
            RopeAt::Rows(cos, sin) if crate::device::compiles_kernels(&x.device()) => {
                rows_pos = cache.step_rows(s, &x.device());
                RopeAt::Device { cos, sin, pos: &rows_pos }
            }
            other => other,
        };
        let (q, k) = match rotate {
            RopeAt::Rows(cos, sin) => (rope::apply(self.q_norm.forward(q()), cos, sin), rope::apply(self.k_norm.forward(k()), cos, sin)),
            // q and k heads side by side in `qkv`: one launch for both (they share `eps`).
            RopeAt::Device { cos, sin, pos } if self.q_norm.epsilon == self.k_norm.epsilon => {
                let qk = qkv.clone().narrow(2, 0, (h + kvh) * d).reshape([b, s, h + kvh, d]);
                let qk = crate::ops::qk_norm_rope(
                    qk,
                    self.q_norm.gamma.val(),
                    self.k_norm.gamma.val(),
                    h,
                    cos.clone(),
                    sin.clone(),
                    pos.clone(),
                    self.q_norm.epsilon,
                );
                (qk.clone().narrow(2, 0, h), qk.narrow(2, h, kvh))
            }
            RopeAt::Device { cos, sin, pos } => {
                let fused = |x, n: &RmsNorm| crate::ops::norm_rope(x, n.gamma.val(), cos.clone(), sin.clone(), pos.clone(), n.epsilon);
                (fused(q(), &self.q_norm), fused(k(), &self.k_norm))
            }
        };
        let (q, k) = (q.swap_dims(1, 2), k.swap_dims(1, 2));
        let v = v.swap_dims(1, 2);
        let view = match rope {
            RopeAt::Rows(..) => cache.append_layer(layer, k, v),
            RopeAt::Device { pos, .. } => cache.write_at(layer, pos, k, v),
        };
        let g = h / kvh;
        let y = match (view.pos, view.mask) {
            // One token at a device-held position: the fused decode attention over the positions
            // up to it (the `g` query heads of a KV head as its rows).
            (Some(pos), _) => {
                let q = q.reshape([b, kvh, g * s, d]);
                crate::ops::attention_decode(q, view.k, view.v, pos, 1.0 / (d as f32).sqrt()).reshape([b, h, s, d])
            }
            // A static-shape cache: attention over the whole buffer, the mask hiding the future
            // and the unwritten positions. The `g` query heads that share a KV head are read as
            // `g · s` rows of one head, so the cache is attended as it is, not copied per head.
            // Measured on the H100 (BENCHMARKS.md): faster up to 1024 rows (decode, and the 0.6B
            // shape's 512-token prompt), 3.5x slower at 2048 (the 8B shape's prompt, 4 groups),
            // where the copy of the cache per head is cheap against the prompt anyway.
            (None, Some(mask)) if g * s <= GROUPED_ROWS_MAX => {
                let t = view.k.dims()[2];
                let q = q.reshape([b, kvh, g * s, d]);
                // The same for every layer of the step: made once (each op costs the host).
                let mask = cache.step_mask_4d([b, kvh, g * s, t], || mask.reshape([1, 1, 1, s, t]).expand([1, 1, g, s, t]).reshape([1, 1, g * s, t]).expand([b, kvh, g * s, t]));
                attention(q, view.k, view.v, Some(mask), None, AttentionModuleOptions::default()).reshape([b, h, s, d])
            }
            (None, Some(mask)) => {
                let (k, v) = (repeat_kv(view.k, g), repeat_kv(view.v, g));
                let t = k.dims()[2];
                let mask = cache.step_mask_4d([b, h, s, t], || mask.reshape([1, 1, s, t]).expand([b, h, s, t]));
                attention(q, k, v, Some(mask), None, AttentionModuleOptions::default())
            }
            // One token over the positions held: it sees all of them, so the `g` query heads of
            // a KV head are read as `g` rows of one head, with no mask and no copy of the cache.
            (None, None) if s == 1 => {
                let q = q.reshape([b, kvh, g, d]);
                attention(q, view.k, view.v, None, None, AttentionModuleOptions::default()).reshape([b, h, s, d])
            }
            // The positions held: causal attention, each KV head repeated for its query heads.
            (None, None) => {
                let (k, v) = (repeat_kv(view.k, g), repeat_kv(view.v, g));
                attention(q, k, v, None, None, AttentionModuleOptions { is_causal: true, ..Default::default() })
            }
        };
        self.o.forward_add(y.swap_dims(1, 2).reshape([b, s, h * d]), x)
    }
}

/// Whether a prompt takes [`crate::ops::attention_prompt`] where it can: yes unless the
/// environment sets `BURN_QUANT_PROMPT_OP=0` (then the Burn ops below, for comparisons).
fn prompt_op_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("BURN_QUANT_PROMPT_OP").map_or(true, |v| v != "0"))
}

/// Most query rows (grouped heads × tokens) attended per KV head without copying the cache.
const GROUPED_ROWS_MAX: usize = 1024;

/// `[b, kv_heads, t, d]` → `[b, kv_heads · groups, t, d]`, each KV head shared by `groups`
/// consecutive query heads.
fn repeat_kv(x: Tensor<4>, groups: usize) -> Tensor<4> {
    if groups == 1 {
        return x;
    }
    let [b, kvh, t, d] = x.dims();
    x.unsqueeze_dim::<5>(2).expand([b, kvh, groups, t, d]).reshape([b, kvh * groups, t, d])
}
