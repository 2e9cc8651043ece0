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
use crate::error::{Error, Result, ResultExt};
use crate::format::GgmlType;
use crate::gguf::GgufFile;

/// The type and rows of a weight matrix of the file, checked against the shape the config implies.
fn matrix(file: &GgufFile, name: &str, rows: usize, cols: usize) -> Result<(GgmlType, usize)> {
    let info = file.tensor(name).context(|| file.describe(name))?;
    if info.matrix_shape() != (rows, cols) || info.dims.len() != 2 {
        let e = Error::Shape(format!("shape {:?}, the config implies [{rows}, {cols}]", info.shape()));
        return Err(e.within(file.describe(name)));
    }
    Ok((info.kind, rows))
}

/// One [`QuantLinear`] from the tensors `names` (each `(name, rows)`) stacked along the output,
/// all with `cols` columns; errors name the file and the tensor.
fn linear(file: &GgufFile, names: &[(String, usize)], cols: usize, device: &Device) -> Result<QuantLinear> {
    let spec = names.iter().map(|(n, rows)| matrix(file, n, *rows, cols)).collect::<Result<Vec<_>>>()?;
    let name = |i: usize| names.get(i).map(|(n, _)| file.describe(n));
    // Streamed from the file into the layer, the file's pages released as they are copied.
    QuantLinear::from_filled_parts(&spec, cols, device, name, |i, dst| match names.get(i) {
        Some((n, _)) => file.copy_tensor(n, dst),
        None => Err(Error::Invalid(format!("part {i}"))),
    })
}

/// An RMSNorm whose weight is the file's vector `name` of length `len`.
fn norm(file: &GgufFile, name: &str, len: usize, eps: f64, device: &Device) -> Result<RmsNorm> {
    let (w, rows, cols) = file.dequantize(name).context(|| file.describe(name))?;
    if rows.checked_mul(cols) != Some(len) || w.iter().any(|v| !v.is_finite()) {
        let e = Error::Shape(format!("{rows}x{cols} values (finite ones expected), the config implies {len}"));
        return Err(e.within(file.describe(name)));
    }
    Ok(super::rms_norm(w, eps, device))
}

impl Qwen3Block {
    /// Loads decoder block `index` (`blk.{index}.*`) of a GGUF file, shapes checked against `c`.
    pub fn from_gguf(file: &GgufFile, c: &Qwen3Config, index: usize, device: &Device) -> Result<Self> {
        let (hid, ffn, eps) = (c.hidden_size, c.intermediate_size, c.rms_norm_eps);
        let t = |s: &str| format!("blk.{index}.{s}.weight");
        let (q, kv) = (c.q_dim(), c.kv_dim());
        let qkv = linear(file, &[(t("attn_q"), q), (t("attn_k"), kv), (t("attn_v"), kv)], hid, device)?;
        let o = linear(file, &[(t("attn_output"), hid)], q, device)?;
        let gate_up = linear(file, &[(t("ffn_gate"), ffn), (t("ffn_up"), ffn)], hid, device)?;
        let down = linear(file, &[(t("ffn_down"), hid)], ffn, device)?;
        Ok(Qwen3Block {
            attn_norm: norm(file, &t("attn_norm"), hid, eps, device)?,
            attn: Qwen3Attention {
                qkv: vec![qkv],
                q_norm: norm(file, &t("attn_q_norm"), c.head_dim, eps, device)?,
                k_norm: norm(file, &t("attn_k_norm"), c.head_dim, eps, device)?,
                o,
                num_heads: c.num_heads,
                num_kv_heads: c.num_kv_heads,
                head_dim: c.head_dim,
            },
            ffn_norm: norm(file, &t("ffn_norm"), hid, eps, device)?,
            mlp: Qwen3Mlp {
                gate_up: vec![gate_up],
                down,
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
        let embed = linear(file, &[("token_embd.weight".into(), c.vocab_size)], hid, device)?;
        progress.inc(1);
        let mut blocks = Vec::new(); // not sized by the file: it grows as blocks load
        for i in 0..c.num_layers {
            progress.set_message(format!("blk.{i}"));
            blocks.push(Qwen3Block::from_gguf(file, &c, i, device)?);
            progress.inc(1);
        }
        progress.set_message("output");
        let lm_head = if c.tie_embeddings {
            None
        } else {
            Some(linear(file, &[("output.weight".into(), c.vocab_size)], hid, device)?)
        };
        let norm = norm(file, "output_norm.weight", hid, eps, device)?;
        progress.inc(1);
        progress.finish_and_clear();
        Ok(Self { embed, blocks, norm, lm_head, config: c })
    }
}
