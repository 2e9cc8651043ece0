//! Building a [`Qwen3`] from a GGUF file (llama.cpp's tensor names), keeping every quantized
//! tensor in its own type.

use burn::nn::RmsNorm;
use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};

use super::attention::Qwen3Attention;
use super::block::Qwen3Block;
use super::config::Qwen3Config;
use super::mlp::Qwen3Mlp;
use super::model::Qwen3;
use crate::QuantLinear;
use crate::error::{Error, Result};
use crate::format::GgmlType;
use crate::gguf::GgufFile;

/// A weight matrix of the file, checked against the shape the config implies.
fn matrix<'a>(file: &'a GgufFile, name: &str, rows: usize, cols: usize) -> Result<(GgmlType, &'a [u8], usize)> {
    let info = file.tensor(name)?;
    if info.matrix_shape() != (rows, cols) || info.dims.len() != 2 {
        return Err(Error::Shape(format!("tensor {name} has shape {:?}, the config implies [{rows}, {cols}]", info.shape())));
    }
    Ok((info.kind, file.tensor_data(name)?, rows))
}

/// An RMSNorm whose weight is the file's vector `name` of length `len`.
fn norm(file: &GgufFile, name: &str, len: usize, eps: f64, device: &Device) -> Result<RmsNorm> {
    let (w, rows, cols) = file.dequantize(name)?;
    if rows * cols != len {
        return Err(Error::Shape(format!("tensor {name} has {} values, expected {len}", rows * cols)));
    }
    Ok(super::rms_norm(w, eps, device))
}

impl Qwen3Block {
    /// Loads decoder block `index` (`blk.{index}.*`) of a GGUF file, shapes checked against `c`.
    pub fn from_gguf(file: &GgufFile, c: &Qwen3Config, index: usize, device: &Device) -> Result<Self> {
        let (hid, ffn, eps) = (c.hidden_size, c.intermediate_size, c.rms_norm_eps);
        let t = |s: &str| format!("blk.{index}.{s}.weight");
        let q = matrix(file, &t("attn_q"), c.q_dim(), hid)?;
        let k = matrix(file, &t("attn_k"), c.kv_dim(), hid)?;
        let v = matrix(file, &t("attn_v"), c.kv_dim(), hid)?;
        let o = matrix(file, &t("attn_output"), hid, c.q_dim())?;
        let gate = matrix(file, &t("ffn_gate"), ffn, hid)?;
        let up = matrix(file, &t("ffn_up"), ffn, hid)?;
        let down = matrix(file, &t("ffn_down"), hid, ffn)?;
        Ok(Qwen3Block {
            attn_norm: norm(file, &t("attn_norm"), hid, eps, device)?,
            attn: Qwen3Attention {
                qkv: vec![QuantLinear::from_gguf_fused(&[q, k, v], hid, device)?],
                q_norm: norm(file, &t("attn_q_norm"), c.head_dim, eps, device)?,
                k_norm: norm(file, &t("attn_k_norm"), c.head_dim, eps, device)?,
                o: QuantLinear::from_gguf_fused(&[o], c.q_dim(), device)?,
                num_heads: c.num_heads,
                num_kv_heads: c.num_kv_heads,
                head_dim: c.head_dim,
            },
            ffn_norm: norm(file, &t("ffn_norm"), hid, eps, device)?,
            mlp: Qwen3Mlp {
                gate_up: vec![QuantLinear::from_gguf_fused(&[gate, up], hid, device)?],
                down: QuantLinear::from_gguf_fused(&[down], ffn, device)?,
            },
        })
    }
}

impl Qwen3 {
    /// Loads a Qwen3 from a GGUF file onto `device`, with a progress bar on stderr when it is a
    /// terminal. Q/K/V become one fused [`QuantLinear`] and so do gate/up, whatever their types.
    pub fn from_gguf(file: &GgufFile, device: &Device) -> Result<Self> {
        let c = Qwen3Config::from_gguf(file)?;
        let (hid, eps) = (c.hidden_size, c.rms_norm_eps);
        let progress = ProgressBar::new(c.num_layers as u64 + 2);
        if let Ok(style) = ProgressStyle::with_template("loading {bar:30} {pos}/{len} {msg}") {
            progress.set_style(style);
        }
        progress.set_message("token_embd");
        let e = matrix(file, "token_embd.weight", c.vocab_size, hid)?;
        let embed = QuantLinear::from_gguf_fused(&[e], hid, device)?;
        progress.inc(1);
        let mut blocks = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            progress.set_message(format!("blk.{i}"));
            blocks.push(Qwen3Block::from_gguf(file, &c, i, device)?);
            progress.inc(1);
        }
        progress.set_message("output");
        let lm_head = if c.tie_embeddings {
            None
        } else {
            Some(QuantLinear::from_gguf_fused(&[matrix(file, "output.weight", c.vocab_size, hid)?], hid, device)?)
        };
        let norm = norm(file, "output_norm.weight", hid, eps, device)?;
        progress.inc(1);
        progress.finish_and_clear();
        Ok(Self { embed, blocks, norm, lm_head, config: c })
    }
}
