//! [`Qwen3`]: token embedding → decoder blocks → final norm → LM head.

use burn::module::Module;
use burn::nn::RmsNorm;
use burn::tensor::{Int, Tensor, TensorData};

use super::block::Qwen3Block;
use super::cache::KvCache;
use super::config::Qwen3Config;
use super::rope::{self, RopeAt};
use crate::QuantLinear;
use crate::error::{Error, Result};

/// A Qwen3 decoder whose linear layers (and token embedding) stay quantized.
#[derive(Module, Debug)]
pub struct Qwen3 {
    /// Token embedding `[vocab, hidden]`, quantized; rows are decoded on lookup. It is also the
    /// LM head when the model ties them.
    pub embed: QuantLinear,
    /// The decoder blocks.
    pub blocks: Vec<Qwen3Block>,
    /// Final RMSNorm.
    pub norm: RmsNorm,
    /// LM head `[vocab, hidden]`, absent when tied to the embedding.
    pub lm_head: Option<QuantLinear>,
    /// Hyper-parameters.
    #[module(skip)]
    pub config: Qwen3Config,
}

impl Qwen3 {
    /// Opts the LM head (the embedding table when the model ties them; lookups stay exact) into
    /// int8 input on the CPU backends ([`QuantLinear::with_int8_input`]): the product that
    /// dominates a CPU decode step of a small model, taken with llama.cpp's arithmetic.
    pub fn with_int8_lm_head(mut self, on: bool) -> Self {
        match self.lm_head.take() {
            Some(head) => self.lm_head = Some(head.with_int8_input(on)),
            None => self.embed = self.embed.with_int8_input(on),
        }
        self
    }

    /// Opts every quantized product (the blocks' projections and the LM head; embedding lookups
    /// stay exact) into int8 input on the CPU backends ([`QuantLinear::with_int8_input`]):
    /// llama.cpp's arithmetic throughout a decode step.
    pub fn with_int8_input(mut self, on: bool) -> Self {
        for b in &mut self.blocks {
            for l in b.attn.qkv.iter_mut().chain(b.mlp.gate_up.iter_mut()) {
                l.set_int8_input(on);
            }
            b.attn.o.set_int8_input(on);
            b.mlp.down.set_int8_input(on);
        }
        self.with_int8_lm_head(on)
    }

    /// A fresh KV cache for this model.
    pub fn cache(&self) -> KvCache {
        KvCache::for_device(self.blocks.len(), &self.embed.weight.val().device())
    }

    /// Embeds token ids `[batch, seq]` → `[batch, seq, hidden]`; ids must be `< vocab_size`.
    pub fn embed_tokens(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let [b, s] = ids.dims();
        self.embed.rows(ids.reshape([b * s])).reshape([b, s, self.config.hidden_size])
    }

    /// Runs the decoder blocks on embedded inputs `[batch, seq, hidden]` placed after the
    /// `cache.len()` positions already in `cache` (which grows by `seq`), and returns the final
    /// normed hidden states `[batch, seq, hidden]`.
    pub fn forward_embeddings(&self, x: Tensor<3>, cache: &mut KvCache) -> Tensor<3> {
        let [_, s, _] = x.dims();
        let c = &self.config;
        let (cos, sin) = rope::tables(cache.len(), s, c.head_dim, c.rope_theta, &x.device());
        let mut h = x;
        for (i, block) in self.blocks.iter().enumerate() {
            h = block.forward(h, RopeAt::Rows(&cos, &sin), cache, i);
        }
        cache.advance(s);
        // One launch where the backend compiles kernels (Burn's RmsNorm costs a fusion-wrapped
        // cube backend's host ~0.5 ms a call: BENCHMARKS.md, session 14).
        if crate::device::compiles_kernels(&h.device()) {
            crate::ops::rms_norm(h, self.norm.gamma.val(), self.norm.epsilon)
        } else {
            self.norm.forward(h)
        }
    }

    /// Logits `[batch, seq, vocab]` of normed hidden states.
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        self.lm_head.as_ref().unwrap_or(&self.embed).forward(hidden)
    }

    /// Token ids `[batch, seq]` → logits `[batch, seq, vocab]` for every position.
    pub fn forward(&self, ids: Tensor<2, Int>, cache: &mut KvCache) -> Tensor<3> {
        let h = self.forward_embeddings(self.embed_tokens(ids), cache);
        self.logits(h)
    }

    /// An error unless `tokens` is non-empty and every id is in the vocabulary.
    pub(super) fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        let vocab = self.config.vocab_size;
        if tokens.is_empty() {
            return Err(Error::Invalid("no tokens to run".into()));
        }
        match tokens.iter().find(|&&t| t as usize >= vocab) {
            Some(&bad) => Err(Error::Invalid(format!("token id {bad} is out of range for a vocabulary of {vocab}"))),
            None => Ok(()),
        }
    }

    /// Checked entry for one sequence of host token ids: appends them to `cache` and returns the
    /// logits `[n, vocab]` of every position (`all_positions`) or `[1, vocab]` of the last one.
    pub fn forward_tokens(&self, tokens: &[u32], cache: &mut KvCache, all_positions: bool) -> Result<Tensor<2>> {
        let c = &self.config;
        self.check_tokens(tokens)?;
        let device = self.embed.weight.val().device();
        let n = tokens.len();
        let ids = TensorData::new(tokens.iter().map(|&t| t as i64).collect::<Vec<_>>(), [1, n]);
        let ids = Tensor::<2, Int>::from_data(ids, &device);
        let h = self.forward_embeddings(self.embed_tokens(ids), cache);
        let h = if all_positions { h } else { h.narrow(1, n - 1, 1) };
        let rows = h.dims()[1];
        Ok(self.logits(h).reshape([rows, c.vocab_size]))
    }
}
