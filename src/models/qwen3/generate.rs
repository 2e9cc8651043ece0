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

/// How [`Qwen3::generate`] runs its one-token steps.
enum Decoder<'m> {
    /// Through the cache, one forward each.
    Eager(KvCache),
    /// Through a recorded decode step.
    Graph(DecodeGraph<'m>),
}

impl Decoder<'_> {
    /// Positions held.
    fn len(&self) -> usize {
        match self {
            Decoder::Eager(c) => c.len(),
            Decoder::Graph(g) => g.len(),
        }
    }
}

/// A logits tensor `[rows, vocab]` on the host, row-major.
pub fn logits_to_vec(logits: Tensor<2>) -> Result<Vec<f32>> {
    logits.into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| Error::Invalid(format!("reading logits: {e:?}")))
}

/// Whether greedy generation on a backend that compiles kernels takes the argmax on the device:
/// yes unless the environment sets `BURN_QUANT_DEVICE_ARGMAX=0` (then the row of logits is read
/// back, for comparisons).
fn device_argmax_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("BURN_QUANT_DEVICE_ARGMAX").map_or(true, |v| v != "0"))
}

/// Reads token ids (an argmax) back from the device. The read is forced: Burn reads data
/// lazily, and an `into_data()` whose bytes are never converted does not wait for the device.
pub(super) fn read_ids<const D: usize>(ids: Tensor<D, burn::tensor::Int>) -> Result<Vec<i64>> {
    ids.into_data().convert::<i64>().try_into_vec::<i64>().map_err(|e| Error::Invalid(format!("reading the argmax: {e:?}")))
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
        // Greedy on a backend that compiles kernels: the argmax on the device, one id read back
        // per token instead of the whole row of logits (151,936 floats for Qwen3) and a scan
        // of it on the host. Burn's argmax keeps the lowest id on ties, as [`argmax`] does; a
        // decode graph takes its own argmax inside the step (`DecodeGraph::fed_token`).
        let on_device = sampler.is_greedy() && device_argmax_on() && crate::device::compiles_kernels(&self.embed.weight.val().device());
        let mut next_of = |logits: Tensor<2>| -> Result<u32> {
            if on_device {
                let id = read_ids(logits.argmax(1))?;
                return Ok(id.first().copied().unwrap_or(0) as u32);
            }
            Ok(sampler.sample(&logits_to_vec(logits)?))
        };
        let start = Instant::now();
        let mut next = next_of(self.forward_tokens(prompt, &mut cache, false)?)?;
        out.prompt_time = start.elapsed();
        let start = Instant::now();
        // Positions the whole generation may need: the graph's cache is reserved for them.
        let positions = (prompt.len() + max_new).min(self.config.max_context);
        let mut decoder = Decoder::Eager(cache);
        loop {
            out.tokens.push(next);
            if !on_token(next)? || stop.contains(&next) || out.tokens.len() >= max_new {
                break;
            }
            if decoder.len() + 1 > self.config.max_context {
                break;
            }
            // The first step after the prompt records the decode graph, where it can.
            let begin = Instant::now();
            let recording = matches!(&decoder, Decoder::Eager(c) if c.has_static_shapes() && decode_graphs_enabled());
            if let (true, Decoder::Eager(c)) = (recording, &mut decoder) {
                decoder = Decoder::Graph(self.decode_graph(std::mem::take(c), positions)?);
            }
            next = match &mut decoder {
                Decoder::Eager(c) => next_of(self.forward_tokens(&[next], c, false)?)?,
                Decoder::Graph(g) if on_device => {
                    g.step(next)?;
                    g.fed_token()?
                }
                Decoder::Graph(g) => next_of(g.step(next)?)?,
            };
            if recording {
                out.record_time = begin.elapsed();
            } else {
                out.timed_steps += 1;
            }
        }
        out.generation_time = start.elapsed().saturating_sub(out.record_time);
        Ok(out)
    }
}

/// What [`Qwen3::time_steps`] does between decode steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepRead {
    /// Nothing until the last step's logits (read in full): the device's own pace, the steps
    /// enqueued back to back.
    Nothing,
    /// A device synchronisation after each step, nothing read.
    Synced,
    /// Burn's argmax of the logits read back and fed as the next token from the host (greedy
    /// decoding as [`generate`](Qwen3::generate) did before the step took its own argmax).
    BurnArgmax,
    /// The argmax the step left on the device read back (4 bytes) and the next step run
    /// without writing its inputs ([`DecodeGraph::fed_token`]; what `generate` does).
    Fed,
}

impl Qwen3 {
    /// Times `steps` decode steps after `prompt` (a recorded graph where the backend has one),
    /// doing `read` between them: [`StepRead::Nothing`] and [`StepRead::Synced`] feed the
    /// prompt's last token at every step, the others their argmax. Against `Nothing` (the
    /// device's own pace) the others show what a token's round trip costs. The recording step is
    /// not timed.
    pub fn time_steps(&self, prompt: &[u32], steps: usize, read: StepRead) -> Result<StepTimes> {
        let mut cache = self.cache();
        let _ = logits_to_vec(self.forward_tokens(prompt, &mut cache, false)?)?;
        let mut token = prompt.last().copied().unwrap_or(0);
        let mut graph = self.decode_graph(cache, prompt.len() + steps + 1)?;
        // The first step records.
        let _ = logits_to_vec(graph.step(token)?)?;
        let device = self.embed.weight.val().device();
        let mut times = StepTimes::default();
        let start = Instant::now();
        let mut last = None;
        for _ in 0..steps {
            let t = Instant::now();
            let logits = graph.step(token)?;
            times.in_step += t.elapsed();
            let t = Instant::now();
            match read {
                StepRead::Nothing => last = Some(logits),
                StepRead::Synced => {
                    <burn::backend::Dispatch as burn::backend::Backend>::sync(device.as_dispatch()).map_err(|e| Error::Invalid(format!("sync: {e:?}")))?;
                    last = Some(logits);
                }
                StepRead::BurnArgmax => token = read_ids(logits.argmax(1))?.first().copied().unwrap_or(0) as u32,
                StepRead::Fed => token = graph.fed_token()?,
            }
            times.in_read += t.elapsed();
        }
        if let Some(logits) = last {
            // Read in full: Burn reads lazily, and only a converted read waits for the device.
            times.head = logits_to_vec(logits)?.into_iter().take(8).collect();
        }
        times.total = start.elapsed();
        times.last_token = token;
        Ok(times)
    }
}

/// What [`Qwen3::time_steps`] measured over its steps.
#[derive(Clone, Debug, Default)]
pub struct StepTimes {
    /// All the steps, up to their last result read back.
    pub total: Duration,
    /// Inside [`DecodeGraph::step`] (the inputs written, the replay enqueued).
    pub in_step: Duration,
    /// Reading back after each step.
    pub in_read: Duration,
    /// The first logits of the last step (where the steps feed a fixed token).
    pub head: Vec<f32>,
    /// The token fed to the last step.
    pub last_token: u32,
}
