//! Token generation: one forward over the prompt, then one token at a time through the KV cache.

use std::time::{Duration, Instant};

use burn::tensor::Tensor;

use super::cache::KvCache;
use super::graph::DecodeGraph;
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
    /// Time of the forwards after the first sampled token, less `record_time`.
    pub generation_time: Duration,
    /// Time spent recording the decode graph (its warm-up runs and the recorded step) on the
    /// cube backends, once per call; zero where steps run eagerly.
    pub record_time: Duration,
    /// The one-token forwards `generation_time` covers (the recorded step is not one of them).
    pub timed_steps: usize,
}

/// Whether [`Qwen3::generate`] decodes through a [`DecodeGraph`](super::DecodeGraph) on the cube
/// backends: yes unless the environment sets `BURN_QUANT_GRAPH=0` (for comparisons).
pub fn decode_graphs_enabled() -> bool {
    std::env::var("BURN_QUANT_GRAPH").map_or(true, |v| v != "0")
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
        // Positions the whole generation may need: the graph's cache is reserved for them.
        let positions = (prompt.len() + max_new).min(self.config.max_context);
        let mut graph = None;
        let mut cache = Some(cache);
        loop {
            let next = sampler.sample(&logits);
            out.tokens.push(next);
            if !on_token(next)? || stop.contains(&next) || out.tokens.len() >= max_new {
                break;
            }
            let held = graph.as_ref().map_or_else(|| cache.as_ref().map_or(0, KvCache::len), DecodeGraph::len);
            if held + 1 > self.config.max_context {
                break;
            }
            if let Some(c) = cache.take_if(|c| c.has_static_shapes() && decode_graphs_enabled()) {
                let begin = Instant::now();
                let mut g = self.decode_graph(c, positions)?;
                logits = logits_to_vec(g.step(next)?)?;
                out.record_time = begin.elapsed();
                graph = Some(g);
                continue;
            }
            let step = match (&mut graph, &mut cache) {
                (Some(g), _) => g.step(next)?,
                (None, Some(c)) => self.forward_tokens(&[next], c, false)?,
                (None, None) => return Err(Error::Invalid("generation lost its cache".into())),
            };
            logits = logits_to_vec(step)?;
            out.timed_steps += 1;
        }
        out.generation_time = start.elapsed().saturating_sub(out.record_time);
        Ok(out)
    }
}
