//! [`DecodeGraph`]: the one-token decode step recorded once as a device graph and replayed for
//! every later token (CUDA graphs on CUDA, a recorded dispatch list on wgpu; through Burn's
//! `graph_*` backend calls).
//!
//! A decode step is a few hundred small kernels (~60 a layer: norms, RoPE, the cache write,
//! attention, SwiGLU, residuals, the quantized matvecs), and Burn's host-side work per operation
//! (~25 µs) made decode launch-bound (BENCHMARKS.md). A replay launches all of them at once.
//!
//! A graph replays against the buffers it was recorded with, so everything that changes from one
//! token to the next lives on the device in buffers written in place between replays: the token
//! id, its position (which the fused ops read on the device: the RoPE rows, the KV-cache slot,
//! the positions attention sees) and the KV cache, reserved at its final capacity before
//! recording. The step runs the fused ops of [`crate::ops::DecodeOpsBackend`], which read the
//! position on the device and so replay at any position: per layer, one kernel does everything
//! between the q/k/v projection and the output projection (the q/k norm + RoPE, the two cache
//! writes, attention: [`crate::ops::attention_step`]).
//!
//! The step ends with greedy decoding's feed ([`crate::ops::greedy_feed`]): the argmax of the
//! logits written into the token buffer and the position advanced, on the device. A greedy
//! generation then reads 4 bytes a token ([`DecodeGraph::fed_token`]) and writes nothing before
//! the next replay; sampling writes its own token over the argmax.

use burn::backend::{Backend, Dispatch, DispatchGraph};
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::cache::KvCache;
use super::model::Qwen3;
use super::rope::{self, RopeAt};
use super::generate::read_ids;
use crate::error::{Error, Result};

/// Warm-up runs before recording: the first runs build and autotune Burn's fused kernels and
/// allocate every buffer the recorded run will reuse (nothing may be allocated while recording).
const WARMUP_RUNS: usize = 3;

/// What the recorded step reads and writes, all on the device and all written in place.
struct StepState {
    /// The token id of the step, `[1]`.
    token: Tensor<1, Int>,
    /// Its position, `[1]`.
    pos: Tensor<1, Int>,
    /// The keys and values, reserved at the graph's capacity.
    cache: KvCache,
    /// RoPE tables of every position below the capacity, `[capacity, head_dim / 2]`.
    cos: Tensor<2>,
    /// See `cos`.
    sin: Tensor<2>,
}

/// One-token decode steps of a [`Qwen3`] as a replayed device graph. Made by
/// [`Qwen3::decode_graph`] from the cache a prompt filled; each [`step`](Self::step) appends one
/// token. The first step records (a few eager runs, then the recorded one); later steps write the
/// token and its position into their device buffers and replay. Where the backend has no graph
/// support every step runs eagerly, with the same results.
pub struct DecodeGraph<'m> {
    model: &'m Qwen3,
    state: StepState,
    capacity: usize,
    device: Device,
    mode: Mode,
    /// The token the last step's argmax wrote on the device, once read by
    /// [`fed_token`](DecodeGraph::fed_token): a step of that token writes no inputs.
    fed: Option<u32>,
}

/// How [`DecodeGraph::step`] runs.
enum Mode {
    /// Before the first step.
    Unrecorded,
    /// Replays `graph`, which writes the logits into `output` (`[1, vocab]`).
    Recorded { graph: DispatchGraph, output: Tensor<2> },
    /// The backend cannot record: every step runs eagerly.
    Eager,
}

impl Qwen3 {
    /// Decode steps after the positions in `cache` (filled by a prompt's
    /// [`forward_tokens`](Qwen3::forward_tokens) with static shapes, as
    /// [`cache`](Qwen3::cache) makes on the cube backends), for up to `max_positions` positions
    /// in all.
    pub fn decode_graph(&self, mut cache: KvCache, max_positions: usize) -> Result<DecodeGraph<'_>> {
        let c = &self.config;
        if !cache.has_static_shapes() {
            return Err(Error::Invalid("a decode graph needs a cache with static shapes".into()));
        }
        if cache.is_empty() || cache.len() >= max_positions {
            return Err(Error::Invalid(format!("a decode graph starts after a prompt: {} positions held of {max_positions}", cache.len())));
        }
        let device = self.embed.weight.val().device();
        let capacity = cache.reserve(max_positions, [1, c.num_kv_heads, c.head_dim], &device);
        if capacity < max_positions {
            return Err(Error::Invalid(format!("the cache holds {capacity} positions, not {max_positions}")));
        }
        let (cos, sin) = rope::tables(0, capacity, c.head_dim, c.rope_theta, &device);
        let state = StepState {
            token: Tensor::zeros([1], &device),
            pos: Tensor::zeros([1], &device),
            cache,
            cos,
            sin,
        };
        Ok(DecodeGraph { model: self, state, capacity, device, mode: Mode::Unrecorded, fed: None })
    }

    /// One token at the device-held position: logits `[1, vocab]`; their argmax is left in the
    /// token buffer and the position advanced by one.
    fn step_on_device(&self, s: &mut StepState) -> Tensor<2> {
        let StepState { token, pos, cache, cos, sin } = s;
        let c = &self.config;
        let x = self.embed.rows(token.clone()).reshape([1, 1, c.hidden_size]);
        let rope = RopeAt::Device { cos, sin, pos };
        let mut h = x;
        for (i, block) in self.blocks.iter().enumerate() {
            h = block.forward(h, rope, cache, i);
        }
        let logits = self.lm_head.as_ref().unwrap_or(&self.embed).forward_norm(h, &self.norm).reshape([1, c.vocab_size]);
        let (next, after) = crate::ops::greedy_feed(logits.clone(), token.clone(), pos.clone());
        (*token, *pos) = (next, after);
        logits
    }
}

impl DecodeGraph<'_> {
    /// Positions held: the position the next token gets.
    pub fn len(&self) -> usize {
        self.state.cache.len()
    }

    /// Whether no position is held (never: a decode graph starts after a prompt).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Positions the reserved cache holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether steps replay a recorded graph (known after the first step).
    pub fn is_recorded(&self) -> bool {
        matches!(self.mode, Mode::Recorded { .. })
    }

    /// Appends `token` and returns the logits `[1, vocab]` of its position. Their argmax is
    /// left on the device for [`fed_token`](Self::fed_token).
    pub fn step(&mut self, token: u32) -> Result<Tensor<2>> {
        self.model.check_tokens(&[token])?;
        let pos = self.next_pos()?;
        // The step before left this token and position in the buffers already.
        if self.fed.take() != Some(token) {
            self.write_inputs(token, pos);
        }
        let logits = match &self.mode {
            Mode::Unrecorded => self.record(token, pos)?,
            Mode::Recorded { graph, output } => {
                self.replay(graph)?;
                output.clone()
            }
            Mode::Eager => self.model.step_on_device(&mut self.state),
        };
        self.state.cache.advance(1);
        Ok(logits)
    }

    /// The argmax of the last step's logits (the lowest id on ties), which that step wrote into
    /// the device's token buffer: a 4-byte read. A [`step`](Self::step) of this id then writes
    /// nothing before it runs.
    pub fn fed_token(&mut self) -> Result<u32> {
        if matches!(self.mode, Mode::Unrecorded) {
            return Err(Error::Invalid("fed_token needs a step first".into()));
        }
        let ids = read_ids(self.state.token.clone())?;
        let id = ids.first().copied().and_then(|id| u32::try_from(id).ok()).ok_or_else(|| Error::Invalid(format!("the device's argmax read back as {ids:?}")))?;
        self.fed = Some(id);
        Ok(id)
    }

    /// Replays `graph` (recorded by [`record`](Self::record)).
    fn replay(&self, graph: &DispatchGraph) -> Result<()> {
        // SAFETY (Burn's replay contract): every tensor the recorded step touched is alive: the
        // weights are borrowed from the model for this graph's lifetime, the token, position,
        // tables and cache are owned by `state` and the output by `mode`, and nothing else holds
        // them; the inputs were written just before by this thread's client, on the stream the
        // graph was recorded on, and the output is read after the replay on that stream too.
        unsafe { <Dispatch as Backend>::graph_replay(self.device.as_dispatch(), graph) }
            .map_err(|e| Error::Invalid(format!("decode graph replay: {e:?}")))
    }

    /// The position the next step writes, if the reserved cache still has room for it.
    fn next_pos(&self) -> Result<usize> {
        let pos = self.len();
        if pos >= self.capacity {
            return Err(Error::Invalid(format!("the decode graph's cache is full ({} positions)", self.capacity)));
        }
        Ok(pos)
    }

    /// Writes the token id and its position into their device buffers, in place.
    fn write_inputs(&mut self, token: u32, pos: usize) {
        write_value(&mut self.state.token, i64::from(token), &self.device);
        write_value(&mut self.state.pos, pos as i64, &self.device);
    }

    /// The first step, of `token` at `pos`: warm-up runs, then the recorded one, then its
    /// replay (each run from the same inputs: a run's feed overwrites them). Falls back to eager
    /// steps where the backend cannot record.
    fn record(&mut self, token: u32, pos: usize) -> Result<Tensor<2>> {
        let device = self.device.clone();
        let device = device.as_dispatch();
        let failed = |e| Error::Invalid(format!("decode graph warm-up: {e:?}"));
        <Dispatch as Backend>::graph_prepare(device).map_err(failed)?;
        for run in 0..WARMUP_RUNS {
            if run > 0 {
                self.write_inputs(token, pos);
            }
            // Kept until the sync: Burn's fusion skips work whose result is dropped unread.
            let out = self.model.step_on_device(&mut self.state);
            <Dispatch as Backend>::sync(device).map_err(failed)?;
            drop(out);
        }
        self.write_inputs(token, pos);
        // A backend without graph support refuses to start; then every step runs eagerly.
        if <Dispatch as Backend>::graph_start_capture(device).is_err() {
            self.mode = Mode::Eager;
            return Ok(self.model.step_on_device(&mut self.state));
        }
        let output = self.model.step_on_device(&mut self.state);
        // A refused recording leaves the buffers it would have written marked failed (the cache
        // among them), so it is an error rather than a silent fallback.
        let graph = <Dispatch as Backend>::graph_stop_capture(device).map_err(|e| Error::Invalid(format!("recording the decode graph: {e:?}")))?;
        // The recording ran none of its launches; the replay does, from the same inputs.
        self.write_inputs(token, pos);
        self.replay(&graph)?;
        self.mode = Mode::Recorded { graph, output: output.clone() };
        Ok(output)
    }
}

/// Writes `value` into the one-element device buffer `buf`, in place.
fn write_value(buf: &mut Tensor<1, Int>, value: i64, device: &Device) {
    assign(buf, Tensor::<1, Int>::from_data(TensorData::new(vec![value], [1]), device));
}

/// Copies the one-element `src` into the device buffer `buf`, in place.
fn assign(buf: &mut Tensor<1, Int>, src: Tensor<1, Int>) {
    buf.inplace(|b| b.slice_assign([0..1], src));
}
