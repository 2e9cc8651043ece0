//! [`KvCache`]: keys and values of the positions already seen, for incremental decoding.
//!
//! Each layer's keys and values live in a buffer whose length (the capacity) only changes at
//! powers of two; new positions are written into it in place. On backends that compile kernels
//! for the shapes they see (CUDA, wgpu: [`KvCache::for_device`] picks this), attention runs over
//! the whole buffer with a mask hiding the positions not written yet and the future ones, so from
//! one token to the next every tensor keeps its shape and each kernel is compiled once per
//! capacity instead of once per length. On the CPU backends attention sees exactly the positions
//! held, with a causal mask.

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use burn::tensor::IndexingUpdateOp;

/// The smallest capacity a layer's buffer gets.
pub const MIN_CAPACITY: usize = 256;

/// What attention sees after a layer appended its new keys and values: `k`, `v`
/// `[batch, kv_heads, t, head_dim]` and, for a static-shape cache, `mask` `[seq, t]` (`t` the
/// capacity), true where query row `i` (absolute position `start + i`) may not look: unwritten or
/// future positions. Without a mask, `t` is the positions held and attention is causal.
#[derive(Clone, Debug)]
pub struct KvView {
    /// Keys.
    pub k: Tensor<4>,
    /// Values.
    pub v: Tensor<4>,
    /// `[seq, t]`, true = hidden; `None`: causal over exactly the positions held, or see `pos`.
    pub mask: Option<Tensor<2, Bool>>,
    /// For one token written at a device-held position ([`KvCache::write_at`]): that position
    /// `[1]`; attention sees the positions up to it (and `mask` is `None`).
    pub pos: Option<Tensor<1, Int>>,
}

/// Per-layer keys and values `[batch, kv_heads, capacity, head_dim]` (after RoPE and `k_norm`).
#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    len: usize,
    /// Attention over the whole buffer with a mask (static shapes) instead of the positions held.
    static_shapes: bool,
    /// What the layers of the step in progress share, made by the first (forgotten at
    /// [`KvCache::advance`]).
    step: StepShared,
}

/// One value and the key it was made for.
#[derive(Debug)]
struct Memo<K, T>(Option<(K, T)>);

impl<K, T> Default for Memo<K, T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<K: PartialEq, T: Clone> Memo<K, T> {
    /// The value made for `key`, made by `make` unless the one held is for `key`.
    fn get_or(&mut self, key: K, make: impl FnOnce() -> T) -> T {
        match &self.0 {
            Some((at, v)) if *at == key => v.clone(),
            _ => {
                let v = make();
                self.0 = Some((key, v.clone()));
                v
            }
        }
    }
}

/// What the layers of a step share.
#[derive(Debug, Default)]
struct StepShared {
    /// The mask, by (start, seq, capacity).
    mask: Memo<(usize, usize, usize), Tensor<2, Bool>>,
    /// `0..s` on the device for the step's `s` rows ([`KvCache::step_rows`]).
    rows: Memo<usize, Tensor<1, Int>>,
    /// The mask as a layer's attention takes it, by its dims ([`KvCache::step_mask_4d`]).
    mask_4d: Memo<[usize; 4], Tensor<4, Bool>>,
}

/// The capacity that holds `n` positions: a power of two, at least [`MIN_CAPACITY`].
pub fn capacity_for(n: usize) -> usize {
    n.next_power_of_two().max(MIN_CAPACITY)
}

impl KvCache {
    /// An empty cache for `num_layers` layers; attention sees exactly the positions held.
    pub fn new(num_layers: usize) -> Self {
        Self { layers: (0..num_layers).map(|_| None).collect(), len: 0, static_shapes: false, step: StepShared::default() }
    }

    /// An empty cache for a model on `device`: static shapes (whole buffer + mask) on the cube
    /// backends, which compile kernels per shape; exact lengths on the CPU backends.
    pub fn for_device(num_layers: usize, device: &burn::tensor::Device) -> Self {
        Self { static_shapes: crate::device::compiles_kernels(device), ..Self::new(num_layers) }
    }

    /// Chooses static shapes (whole buffer + mask) or exact lengths, whatever the device.
    pub fn with_static_shapes(mut self, on: bool) -> Self {
        self.static_shapes = on;
        self
    }

    /// Whether attention runs over the whole buffer with a mask.
    pub fn has_static_shapes(&self) -> bool {
        self.static_shapes
    }

    /// Positions held (the position the next token gets).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every position (and frees the buffers).
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
        self.len = 0;
        self.step = StepShared::default();
    }

    /// Writes layer `layer`'s new keys and values `[batch, kv_heads, seq, head_dim]` after the
    /// positions already held and returns what attention sees (the model calls it for each
    /// layer; call [`advance`](Self::advance) once all layers have appended).
    pub fn append_layer(&mut self, layer: usize, k: Tensor<4>, v: Tensor<4>) -> KvView {
        let [b, kvh, s, d] = k.dims();
        let (start, end) = (self.len, self.len + s);
        let device = k.device();
        let (kb, vb) = self.take_with_capacity(layer, [b, kvh, end, d], &device);
        let cap = kb.dims()[2];
        let kb = kb.slice_assign([0..b, 0..kvh, start..end, 0..d], k);
        let vb = vb.slice_assign([0..b, 0..kvh, start..end, 0..d], v);
        self.layers[layer] = Some((kb.clone(), vb.clone()));
        if !self.static_shapes {
            return KvView { k: kb.narrow(2, 0, end), v: vb.narrow(2, 0, end), mask: None, pos: None };
        }
        let mask = self.step.mask.get_or((start, s, cap), || {
            // Row i is position start + i: it sees columns 0..=start + i.
            let hidden: Vec<bool> = (0..s).flat_map(|i| (0..cap).map(move |j| j > start + i)).collect();
            Tensor::<2, Bool>::from_data(TensorData::new(hidden, [s, cap]), &device)
        });
        KvView { k: kb, v: vb, mask: Some(mask), pos: None }
    }

    /// Takes layer `layer`'s buffers out, grown (the positions held keep their place) or created
    /// so that they hold `end` positions of `[b, kv_heads, _, d]`.
    fn take_with_capacity(&mut self, layer: usize, [b, kvh, end, d]: [usize; 4], device: &Device) -> (Tensor<4>, Tensor<4>) {
        if self.layers.len() <= layer {
            self.layers.resize_with(layer + 1, || None);
        }
        match self.layers[layer].take() {
            Some((kb, vb)) if kb.dims()[2] >= end => (kb, vb),
            Some((kb, vb)) => {
                // Grow to the next power of two; the positions held keep their place.
                let pad = capacity_for(end) - kb.dims()[2];
                let zeros = Tensor::<4>::zeros([b, kvh, pad, d], device);
                (Tensor::cat(vec![kb, zeros.clone()], 2), Tensor::cat(vec![vb, zeros], 2))
            }
            // Two buffers, not one shared: an op that writes the cache in place may only write
            // a buffer nothing else holds.
            None => {
                let zeros = || Tensor::<4>::zeros([b, kvh, capacity_for(end), d], device);
                (zeros(), zeros())
            }
        }
    }

    /// Grows every layer's buffers (shaped `[b, kv_heads, _, d]`) to hold `n` positions, so that
    /// steps up to there keep every shape (a captured [`DecodeGraph`](super::DecodeGraph) needs
    /// that); returns the capacity.
    pub fn reserve(&mut self, n: usize, [b, kvh, d]: [usize; 3], device: &Device) -> usize {
        for layer in 0..self.layers.len() {
            let kv = self.take_with_capacity(layer, [b, kvh, n, d], device);
            self.layers[layer] = Some(kv);
        }
        self.layers.iter().flatten().map(|(k, _)| k.dims()[2]).min().unwrap_or(0)
    }

    /// Writes layer `layer`'s keys and values `[batch, kv_heads, 1, head_dim]` of one token at
    /// the position held on the device in `pos` (`[1]`), in place, and returns the whole buffers
    /// with that position. The position never comes to the host, so a recorded step replays at
    /// any position; the buffers must already be [reserved](Self::reserve) past it. Call
    /// [`advance`](Self::advance) once all layers are written.
    pub fn write_at(&mut self, layer: usize, pos: &Tensor<1, Int>, k: Tensor<4>, v: Tensor<4>) -> KvView {
        let [b, kvh, _, d] = k.dims();
        let (kb, vb) = self.take_with_capacity(layer, [b, kvh, 1, d], &k.device());
        let kb = kb.select_assign(2, pos.clone(), k, IndexingUpdateOp::Assign);
        let vb = vb.select_assign(2, pos.clone(), v, IndexingUpdateOp::Assign);
        self.layers[layer] = Some((kb.clone(), vb.clone()));
        KvView { k: kb, v: vb, mask: None, pos: Some(pos.clone()) }
    }

    /// Hands layer `layer`'s buffers `[b, kv_heads, capacity, d]` (grown or created so that they
    /// hold `end` positions) to `f`, which returns them written, and keeps those: for an op that
    /// writes the cache itself, in place ([`crate::ops::attention_step`],
    /// [`crate::ops::attention_prompt`]). Call [`advance`](Self::advance) once all layers are
    /// written.
    pub fn update_layer<T>(&mut self, layer: usize, [b, kvh, end, d]: [usize; 4], device: &Device, f: impl FnOnce(Tensor<4>, Tensor<4>) -> (T, Tensor<4>, Tensor<4>)) -> T {
        let (kb, vb) = self.take_with_capacity(layer, [b, kvh, end, d], device);
        let (out, kb, vb) = f(kb, vb);
        self.layers[layer] = Some((kb, vb));
        out
    }

    /// The row indices `0..s` of the current step on `device`, made once and shared by every
    /// layer until [`KvCache::advance`] (the positions of the step's rows in tables built for
    /// them, as [`super::rope::tables`] builds).
    pub fn step_rows(&mut self, s: usize, device: &Device) -> Tensor<1, Int> {
        self.step.rows.get_or(s, || Tensor::<1, Int>::arange(0..s as i64, device))
    }

    /// The step's mask in the 4-d form `dims` a layer's attention takes, made by `make` (from
    /// the view's mask) for the first layer and shared by the others until
    /// [`KvCache::advance`].
    pub fn step_mask_4d(&mut self, dims: [usize; 4], make: impl FnOnce() -> Tensor<4, Bool>) -> Tensor<4, Bool> {
        self.step.mask_4d.get_or(dims, make)
    }

    /// Records that `n` positions were appended to every layer.
    pub fn advance(&mut self, n: usize) {
        self.len += n;
        self.step = StepShared::default();
    }
}
