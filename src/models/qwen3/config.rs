//! [`Qwen3Config`]: every hyper-parameter of a Qwen3 decoder, read from the file (GGUF `qwen3.*`
//! keys or a Hugging Face `config.json`), none hard-coded.

use crate::error::{Error, Result};
use crate::gguf::GgufFile;

/// The largest value any size hyper-parameter may take (2^24).
pub const MAX_DIM: usize = 1 << 24;

/// Qwen3 hyper-parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Qwen3Config {
    /// Rows of the token embedding (and of the LM head).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Decoder blocks.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention: `num_heads` is a multiple of this).
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// RoPE base frequency θ.
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Trained context length.
    pub max_context: usize,
    /// Whether the LM head is the token embedding.
    pub tie_embeddings: bool,
}

impl Qwen3Config {
    /// Reads the `qwen3.*` keys of a GGUF file; the architecture must be `qwen3`. The LM head is
    /// tied when the file has no `output.weight`.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let arch = file.get_str("general.architecture").unwrap_or("");
        if arch != "qwen3" {
            return Err(Error::UnsupportedModel(format!("general.architecture is {arch:?}, expected \"qwen3\"")));
        }
        let int = |key: &str| -> Result<usize> {
            let k = format!("qwen3.{key}");
            let v = file.get_u64(&k)?.ok_or_else(|| Error::NotFound(format!("GGUF key {k}")))?;
            usize::try_from(v).map_err(|_| Error::Invalid(format!("GGUF key {k} = {v} does not fit in usize")))
        };
        let float = |key: &str, default: f64| -> f64 {
            file.get_f64(&format!("qwen3.{key}")).unwrap_or(default)
        };
        let hidden_size = int("embedding_length")?;
        let num_heads = int("attention.head_count")?;
        let head_dim = match int("attention.key_length") {
            Ok(d) => d,
            Err(_) if num_heads > 0 => hidden_size / num_heads,
            Err(e) => return Err(e),
        };
        let embd = file.tensor("token_embd.weight")?;
        let config = Self {
            vocab_size: embd.matrix_shape().0,
            hidden_size,
            num_layers: int("block_count")?,
            num_heads,
            num_kv_heads: int("attention.head_count_kv").unwrap_or(num_heads),
            head_dim,
            intermediate_size: int("feed_forward_length")?,
            rope_theta: float("rope.freq_base", 1e6),
            rms_norm_eps: float("attention.layer_norm_rms_epsilon", 1e-6),
            max_context: int("context_length").unwrap_or(4096),
            tie_embeddings: file.tensor("output.weight").is_err(),
        };
        config.validate()
    }

    /// Reads a Hugging Face `config.json` (`model_type` qwen3).
    pub fn from_hf_json(json: &str) -> Result<Self> {
        let v = crate::import::parse_config_json(json).map_err(|e| Error::Invalid(format!("config.json: {e}")))?;
        Self::from_hf_config(&v)
    }

    /// Reads a parsed Hugging Face config (as [`HfCheckpoint::config`](crate::import::HfCheckpoint::config) holds it).
    pub fn from_hf_config(v: &serde_json::Value) -> Result<Self> {
        let model_type = v.get("model_type").and_then(|t| t.as_str()).unwrap_or("");
        if model_type != "qwen3" {
            return Err(Error::UnsupportedModel(format!("config.json model_type is {model_type:?}, expected \"qwen3\"")));
        }
        let int = |key: &str| -> Result<usize> {
            v.get(key)
                .and_then(|x| x.as_u64())
                .and_then(|x| usize::try_from(x).ok())
                .ok_or_else(|| Error::NotFound(format!("config.json key {key}")))
        };
        let hidden_size = int("hidden_size")?;
        let num_heads = int("num_attention_heads")?;
        let config = Self {
            vocab_size: int("vocab_size")?,
            hidden_size,
            num_layers: int("num_hidden_layers")?,
            num_heads,
            num_kv_heads: int("num_key_value_heads").unwrap_or(num_heads),
            head_dim: int("head_dim").unwrap_or(if num_heads > 0 { hidden_size / num_heads } else { 0 }),
            intermediate_size: int("intermediate_size")?,
            rope_theta: v.get("rope_theta").and_then(|x| x.as_f64()).unwrap_or(1e6),
            rms_norm_eps: v.get("rms_norm_eps").and_then(|x| x.as_f64()).unwrap_or(1e-6),
            max_context: int("max_position_embeddings").unwrap_or(4096),
            tie_embeddings: v.get("tie_word_embeddings").and_then(|x| x.as_bool()).unwrap_or(false),
        };
        config.validate()
    }

    /// Checks the values are usable (non-zero, heads divide evenly, even head width).
    pub fn validate(self) -> Result<Self> {
        let zero = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("intermediate_size", self.intermediate_size),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, v)| *v == 0) {
            return Err(Error::UnsupportedModel(format!("{name} is 0")));
        }
        // Far above any real model, and small enough that products of two sizes cannot overflow.
        if let Some((name, v)) = zero.iter().find(|(_, v)| *v > MAX_DIM) {
            return Err(Error::UnsupportedModel(format!("{name} {v} exceeds {MAX_DIM}")));
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(Error::UnsupportedModel(format!(
                "{} query heads is not a multiple of {} key/value heads",
                self.num_heads, self.num_kv_heads
            )));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(Error::UnsupportedModel(format!("head_dim {} is odd (RoPE rotates halves)", self.head_dim)));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0 && self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(Error::UnsupportedModel(format!("rope θ {} / rms eps {}", self.rope_theta, self.rms_norm_eps)));
        }
        Ok(self)
    }

    /// Query width (`num_heads · head_dim`).
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Key (and value) width (`num_kv_heads · head_dim`).
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
}
