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
fn read_ids<const D: usize>(ids: Tensor<D, burn::tensor::Int>) -> Result<Vec<i64>> {
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
        // of it on the host. Burn's argmax keeps the lowest id on ties, as [`argmax`] does.
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
            let step = match &mut decoder {
                Decoder::Eager(c) => self.forward_tokens(&[next], c, false)?,
                Decoder::Graph(g) => g.step(next)?,
            };
            next = next_of(step)?;
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

/// What [`Qwen3::time_steps`] reads back after each decode step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepRead {
    /// Nothing until the last step: the device's own pace.
    Nothing,
    /// The first logit (a read of one value, without the argmax).
    FirstLogit,
    /// The argmax id, fed back as the next step's token (greedy decoding).
    ArgmaxFed,
    /// The argmax id written into the next step's token on the device and the next step
    /// enqueued; the ids read back 8 steps at a time (greedy decoding, pipelined).
    Pipelined,
}

impl Qwen3 {
    /// Times `steps` decode steps after `prompt` that feed the same token every step, reading
    /// `read` back after each (recorded graph where the backend has one). Against
    /// [`StepRead::Nothing`] (the device's own pace) the others show what the per-token round
    /// trip of [`generate`](Self::generate) costs. Times the `steps` steps (the
    /// recording step excluded).
    pub fn time_steps(&self, prompt: &[u32], steps: usize, read: StepRead) -> Result<StepTimes> {
        let mut cache = self.cache();
        let _ = self.forward_tokens(prompt, &mut cache, false)?.into_data();
        let mut token = prompt.last().copied().unwrap_or(0);
        let mut graph = self.decode_graph(cache, prompt.len() + steps + 1)?;
        // The first step records.
        let _ = graph.step(token)?.into_data();
        let mut times = StepTimes::default();
        if read == StepRead::Pipelined {
            // The ids are read back PIPELINE steps at a time.
            const PIPELINE: usize = 8;
            let start = Instant::now();
            let mut id: Tensor<1, burn::tensor::Int> = graph.step(token)?.argmax(1).reshape([1]);
            let mut held = vec![id.clone()];
            for i in 1..steps {
                let t = Instant::now();
                let logits = graph.step_from_device(id.clone())?;
                times.in_step += t.elapsed();
                id = logits.argmax(1).reshape([1]);
                held.push(id.clone());
                if held.len() == PIPELINE || i + 1 == steps {
                    let t = Instant::now();
                    let ids = read_ids(Tensor::cat(std::mem::take(&mut held), 0))?;
                    if ids.is_empty() {
                        return Err(Error::Invalid("no id read".into()));
                    }
                    times.in_read += t.elapsed();
                }
            }
            times.total = start.elapsed();
            return Ok(times);
        }
        let start = Instant::now();
        let mut last = None;
        for _ in 0..steps {
            let t = Instant::now();
            let logits = graph.step(token)?;
            times.in_step += t.elapsed();
            let t = Instant::now();
            match read {
                StepRead::Nothing | StepRead::Pipelined => last = Some(logits),
                StepRead::ArgmaxFed => {
                    let id = read_ids(logits.argmax(1))?;
                    token = id.first().copied().unwrap_or(0) as u32;
                }
                StepRead::FirstLogit => {
                    // Converted, so the read really happens (the data is read back lazily).
                    let v = logits.narrow(1, 0, 1).into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| Error::Invalid(format!("reading a logit: {e:?}")))?;
                    if v.is_empty() {
                        return Err(Error::Invalid("no logit read".into()));
                    }
                }
            }
            times.in_read += t.elapsed();
        }
        if let Some(logits) = last {
            let _ = logits.into_data().convert::<f32>();
        }
        times.total = start.elapsed();
        Ok(times)
    }
}

/// What [`Qwen3::time_steps`] measured over its steps.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepTimes {
    /// All the steps, up to their last result read back.
    pub total: Duration,
    /// Inside [`DecodeGraph::step`] (the inputs written, the replay enqueued).
    pub in_step: Duration,
    /// Reading back after each step.
    pub in_read: Duration,
}
