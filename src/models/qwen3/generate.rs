//! Token generation: one forward over the prompt, then one token at a time through the KV cache.

use std::time::{Duration, Instant};

use burn::tensor::Tensor;

use super::model::Qwen3;
use super::sampling::Sampler;
use crate::error::{Error, Result};

/// What a [`Qwen3::generate`] call produced, with its timings.
#[derive(Clone, Debug, Default)]
pub struct Generation {
    /// The generated ids (not the prompt), including a final end-of-sequence id if one was drawn.
    pub tokens: Vec<u32>,
    /// Time of the prompt's forward pass (up to the first sampled token).
    pub prompt_time: Duration,
    /// Time of the forwards after the first sampled token.
    pub generation_time: Duration,
}

/// A logits tensor `[rows, vocab]` on the host, row-major.
pub fn logits_to_vec(logits: Tensor<2>) -> Result<Vec<f32>> {
    logits.into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| Error::Invalid(format!("reading logits: {e:?}")))
}

impl Qwen3 {
    /// Runs `prompt` as one batch and then samples up to `max_new` tokens, one forward each,
    /// stopping early at any id in `stop`. `on_token` sees every new id as it is drawn and may
    /// return `false` to stop.
    pub fn generate(
        &self,
        prompt: &[u32],
        max_new: usize,
        sampler: &mut Sampler,
        stop: &[u32],
        mut on_token: impl FnMut(u32) -> Result<bool>,
    ) -> Result<Generation> {
        let mut cache = self.cache();
        let mut out = Generation::default();
        if max_new == 0 {
            return Ok(out);
        }
        let start = Instant::now();
        let mut logits = logits_to_vec(self.forward_tokens(prompt, &mut cache, false)?)?;
        out.prompt_time = start.elapsed();
        let start = Instant::now();
        loop {
            let next = sampler.sample(&logits);
            out.tokens.push(next);
            if !on_token(next)? || stop.contains(&next) || out.tokens.len() >= max_new {
                break;
            }
            if cache.len() + 1 > self.config.max_context {
                break;
            }
            logits = logits_to_vec(self.forward_tokens(&[next], &mut cache, false)?)?;
        }
        out.generation_time = start.elapsed();
        Ok(out)
    }
}
