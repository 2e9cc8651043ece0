//! Building a [`Qwen3`] from a Hugging Face checkpoint directory (GPTQ, AWQ or dense f16/bf16/f32
//! safetensors), with Hugging Face's tensor names.

use burn::nn::RmsNorm;
use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};

use super::attention::Qwen3Attention;
use super::block::Qwen3Block;
use super::config::Qwen3Config;
use super::mlp::Qwen3Mlp;
use super::model::Qwen3;
use crate::QuantLinear;
use crate::error::{Error, Result, ResultExt};
use crate::import::{HfCheckpoint, LinearWeights};

fn norm(ckpt: &HfCheckpoint, name: &str, len: usize, eps: f64, device: &Device) -> Result<RmsNorm> {
    let (w, shape) = ckpt.tensor_f32(name)?;
    if shape != [len] || w.iter().any(|v| !v.is_finite()) {
        return Err(Error::Shape(format!("{}: tensor {name} has shape {shape:?}, expected [{len}] finite values", ckpt.dir().display())));
    }
    Ok(super::rms_norm(w, eps, device))
}

fn linear(ckpt: &HfCheckpoint, prefix: &str, out: usize, inp: usize) -> Result<LinearWeights> {
    let w = ckpt.linear(prefix)?;
    if (w.out_features, w.in_features) != (out, inp) {
        return Err(Error::Shape(format!(
            "{}: linear {prefix} is [{}, {}], the config implies [{out}, {inp}]",
            ckpt.dir().display(),
            w.out_features,
            w.in_features
        )));
    }
    Ok(w)
}

/// One fused layer when no part permutes its input (and none has a bias), else one per part.
/// `names` are the parts' prefixes, for errors.
fn fused(ckpt: &HfCheckpoint, names: &[String], parts: &[LinearWeights], inp: usize, device: &Device) -> Result<Vec<QuantLinear>> {
    let what = |i: usize| names.get(i).map(|n| format!("{}: linear {n}", ckpt.dir().display()));
    if parts.iter().all(|p| p.perm.is_none() && p.bias.is_none()) {
        let spec: Vec<_> = parts.iter().map(|p| (p.kind, p.bytes.as_slice(), p.out_features)).collect();
        Ok(vec![QuantLinear::from_named_parts(&spec, inp, device, what)?])
    } else {
        (parts.iter().enumerate())
            .map(|(i, p)| QuantLinear::from_linear_weights(p, device).context(|| what(i).unwrap_or_default()))
            .collect()
    }
}

/// One layer; errors name the checkpoint and the linear.
fn single(ckpt: &HfCheckpoint, name: &str, w: &LinearWeights, device: &Device) -> Result<QuantLinear> {
    QuantLinear::from_linear_weights(w, device).context(|| format!("{}: linear {name}", ckpt.dir().display()))
}

impl Qwen3Block {
    /// Loads `model.layers.{index}` of a Hugging Face checkpoint.
    pub fn from_hf(ckpt: &HfCheckpoint, c: &Qwen3Config, index: usize, device: &Device) -> Result<Self> {
        let (hid, ffn, eps) = (c.hidden_size, c.intermediate_size, c.rms_norm_eps);
        let p = |s: &str| format!("model.layers.{index}.{s}");
        let q = linear(ckpt, &p("self_attn.q_proj"), c.q_dim(), hid)?;
        let k = linear(ckpt, &p("self_attn.k_proj"), c.kv_dim(), hid)?;
        let v = linear(ckpt, &p("self_attn.v_proj"), c.kv_dim(), hid)?;
        let o = linear(ckpt, &p("self_attn.o_proj"), hid, c.q_dim())?;
        let gate = linear(ckpt, &p("mlp.gate_proj"), ffn, hid)?;
        let up = linear(ckpt, &p("mlp.up_proj"), ffn, hid)?;
        let down = linear(ckpt, &p("mlp.down_proj"), hid, ffn)?;
        Ok(Qwen3Block {
            attn_norm: norm(ckpt, &p("input_layernorm.weight"), hid, eps, device)?,
            attn: Qwen3Attention {
                qkv: fused(ckpt, &[p("self_attn.q_proj"), p("self_attn.k_proj"), p("self_attn.v_proj")], &[q, k, v], hid, device)?,
                q_norm: norm(ckpt, &p("self_attn.q_norm.weight"), c.head_dim, eps, device)?,
                k_norm: norm(ckpt, &p("self_attn.k_norm.weight"), c.head_dim, eps, device)?,
                o: single(ckpt, &p("self_attn.o_proj"), &o, device)?,
                num_heads: c.num_heads,
                num_kv_heads: c.num_kv_heads,
                head_dim: c.head_dim,
            },
            ffn_norm: norm(ckpt, &p("post_attention_layernorm.weight"), hid, eps, device)?,
            mlp: Qwen3Mlp {
                gate_up: fused(ckpt, &[p("mlp.gate_proj"), p("mlp.up_proj")], &[gate, up], hid, device)?,
                down: single(ckpt, &p("mlp.down_proj"), &down, device)?,
            },
        })
    }
}

impl Qwen3 {
    /// Loads a Qwen3 from a Hugging Face checkpoint directory (config.json `model_type` qwen3;
    /// GPTQ / AWQ 4-bit linears or dense ones), with a progress bar on a terminal.
    pub fn from_hf(ckpt: &HfCheckpoint, device: &Device) -> Result<Self> {
        let c = Qwen3Config::from_hf_config(ckpt.config())?;
        let hid = c.hidden_size;
        let progress = ProgressBar::new(c.num_layers as u64 + 2);
        if let Ok(style) = ProgressStyle::with_template("loading {bar:30} {pos}/{len} {msg}") {
            progress.set_style(style);
        }
        progress.set_message("embed_tokens");
        let e = linear(ckpt, "model.embed_tokens", c.vocab_size, hid)?;
        let embed = single(ckpt, "model.embed_tokens", &e, device)?;
        progress.inc(1);
        let mut blocks = Vec::new(); // not sized by the file: it grows as blocks load
        for i in 0..c.num_layers {
            progress.set_message(format!("layer {i}"));
            blocks.push(Qwen3Block::from_hf(ckpt, &c, i, device)?);
            progress.inc(1);
        }
        let tied = c.tie_embeddings || !ckpt.contains("lm_head.weight") && !ckpt.contains("lm_head.qweight");
        let lm_head = if tied {
            None
        } else {
            Some(single(ckpt, "lm_head", &linear(ckpt, "lm_head", c.vocab_size, hid)?, device)?)
        };
        let norm = norm(ckpt, "model.norm.weight", hid, c.rms_norm_eps, device)?;
        progress.finish_and_clear();
        Ok(Self { embed, blocks, norm, lm_head, config: Qwen3Config { tie_embeddings: tied, ..c } })
    }
}
