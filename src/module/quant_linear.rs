//! [`QuantLinear`]: a linear layer whose weight stays quantized in device memory.

use burn::module::{Module, Param, ParamId};
use burn::nn::RmsNorm;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::format::GgmlType;
use crate::ops::{QuantLayout, QuantMatmulBackend};

/// Which product [`QuantLinear`] computes, with the residual where it takes one.
enum Product<'a, const D: usize> {
    /// `x · Wᵀ (+ r)`.
    Plain(Option<Tensor<D>>),
    /// `norm(x) · Wᵀ`.
    Norm(&'a RmsNorm),
    /// `(silu(gate) ⊙ up) · Wᵀ + r` of an input `[gate | up]` twice as wide.
    SwiGluAdd(Tensor<D>),
}

/// `e` wrapped with `name(i)` when there is one.
fn named(name: &impl Fn(usize) -> Option<String>, i: usize, e: Error) -> Error {
    match name(i) {
        Some(what) => e.within(what),
        None => e,
    }
}

/// `parts` with each type replaced by the form it is stored in ([`GgmlType::stored_form`]).
fn stored(parts: &[(GgmlType, usize)], in_features: usize) -> Vec<(GgmlType, usize)> {
    parts.iter().map(|&(k, r)| (k.stored_form(in_features), r)).collect()
}

/// Describes a [`QuantLinear`] without its data, like Burn's `LinearConfig`: `init` builds one
/// with zeroed blocks, ready for `load_record` / `load_file`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuantLinearConfig {
    /// Input features.
    pub in_features: usize,
    /// Row parts `(type, rows)` stacked along the output dimension, in the types a file names
    /// (Q6_K, not its stored form: `init` and the constructors regroup alike, so a record saved
    /// from a layer built from a file loads into the skeleton built from the same types).
    pub parts: Vec<(GgmlType, usize)>,
    /// Whether the layer has a bias.
    pub bias: bool,
    /// Whether the layer permutes its input columns (act-order GPTQ).
    pub permuted: bool,
}

impl QuantLinearConfig {
    /// One part of `out_features` rows of `kind`.
    pub fn new(kind: GgmlType, out_features: usize, in_features: usize) -> Self {
        Self { in_features, parts: vec![(kind, out_features)], bias: false, permuted: false }
    }

    /// Sets whether there is a bias.
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Builds the layer with zeroed weight blocks (and bias) on `device`.
    pub fn init(&self, device: &Device) -> Result<QuantLinear> {
        let layout = QuantLayout::new(self.in_features, &stored(&self.parts, self.in_features))?;
        let words = vec![0u32; layout.total_words()];
        let bias = self.bias.then(|| vec![0f32; layout.out_features()]);
        let mut layer = QuantLinear::from_words(words, layout, bias, device);
        if self.permuted {
            layer = layer.with_input_permutation(&(0..self.in_features as u32).collect::<Vec<_>>())?;
        }
        Ok(layer)
    }
}

/// A linear layer `y = x · Wᵀ + b` whose weight `W[out, in]` is held as GGUF blocks on the device.
///
/// The blocks are kept as the file stores them, except Q6_K rows of a multiple of 1024 weights,
/// which are regrouped at load into [`GgmlType::Q6_Kx4`] (the same bytes, four blocks' fields
/// side by side, so GPU kernels read them with aligned 8-byte loads); [`layout`](Self::layout)
/// names the stored types.
///
/// It is a Burn [`Module`] with no backend generic (the device picks the backend): it can be a
/// field of any `#[derive(Module)]` struct, moves with `to_device`, and saves and loads with
/// Burn's records (build the skeleton with [`QuantLinearConfig::init`], then load). The weight
/// is frozen: under `Autodiff` the gradient flows to the input only.
#[derive(Module, Debug)]
pub struct QuantLinear {
    /// The packed blocks as u32 words (dtype `U32`), rank 1.
    pub weight: Param<Tensor<1, Int>>,
    /// Optional bias `[out]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// Input column permutation `[in]` applied before the product (act-order GPTQ: the weight's
    /// columns were reordered once at load so each group is contiguous).
    pub perm: Option<Param<Tensor<1, Int>>>,
    /// How the words are laid out (types, rows, offsets).
    #[module(skip)]
    layout: QuantLayout,
}

impl QuantLinear {
    /// A layer from one GGUF tensor's raw bytes: `out_features` rows of `in_features` in `kind`.
    pub fn from_gguf_bytes(kind: GgmlType, bytes: &[u8], out_features: usize, in_features: usize, device: &Device) -> Result<Self> {
        Self::from_gguf_fused(&[(kind, bytes, out_features)], in_features, device)
    }

    /// One layer from several row parts that keep their own types (e.g. q/k in Q4_K and v in
    /// Q6_K): `parts` are `(kind, bytes, rows)`; one forward returns the concatenated outputs.
    /// Every block's scales must be finite ([`Error::NonFinite`]); errors about one part of
    /// several name it (`part 1 of 3`).
    pub fn from_gguf_fused(parts: &[(GgmlType, &[u8], usize)], in_features: usize, device: &Device) -> Result<Self> {
        let n = parts.len();
        Self::from_named_parts(parts, in_features, device, |i| (n > 1).then(|| format!("part {i} of {n}")))
    }

    /// [`from_gguf_fused`](Self::from_gguf_fused) with errors about part `i` wrapped in
    /// [`Error::Context`] with `name(i)` (loaders pass the tensor's name).
    pub(crate) fn from_named_parts(
        parts: &[(GgmlType, &[u8], usize)],
        in_features: usize,
        device: &Device,
        name: impl Fn(usize) -> Option<String>,
    ) -> Result<Self> {
        let spec: Vec<_> = parts.iter().map(|&(k, _, r)| (k, r)).collect();
        // `dst` is exactly the part's size, so a length mismatch is a bad byte count.
        Self::from_filled_parts(&spec, in_features, device, name, |i, dst| {
            let &(kind, src, rows) = parts.get(i).ok_or_else(|| Error::Invalid(format!("no part {i}")))?;
            if src.len() != dst.len() {
                return Err(Error::ByteLength { what: format!("{rows}x{in_features} {kind} weight"), expected: dst.len(), got: src.len() });
            }
            dst.copy_from_slice(src);
            Ok(())
        })
    }

    /// A layer of row parts `spec` (`(kind, rows)`) whose bytes `fill(i, dst)` writes straight
    /// into the layer's buffer (part `i`'s exact byte range), so a loader can stream a mapped
    /// file in and release its pages as it goes. Every block must then hold finite scales.
    pub(crate) fn from_filled_parts(
        spec: &[(GgmlType, usize)],
        in_features: usize,
        device: &Device,
        name: impl Fn(usize) -> Option<String>,
        mut fill: impl FnMut(usize, &mut [u8]) -> Result<()>,
    ) -> Result<Self> {
        // Each part on its own first, so an error names the part it is about.
        for (i, &part) in spec.iter().enumerate() {
            QuantLayout::new(in_features, &[part]).map_err(|e| named(&name, i, e))?;
        }
        let layout = QuantLayout::new(in_features, &stored(spec, in_features))?;
        // The words are filled in place: the only copy of the weight made here is the layer's.
        let mut words = vec![0u32; layout.total_words()];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
        for (i, (p, &(kind, _))) in layout.parts.iter().zip(spec).enumerate() {
            let len = p.kind.matrix_bytes(p.rows, in_features)?;
            let dst = bytes
                .get_mut(p.byte_offset..p.byte_offset + len)
                .ok_or_else(|| Error::Overflow("packed weight layout".into()))?;
            fill(i, dst).map_err(|e| named(&name, i, e))?;
            crate::format::validate(kind, dst, in_features).map_err(|e| named(&name, i, e))?;
            crate::format::regroup(kind, p.kind, dst).map_err(|e| named(&name, i, e))?;
        }
        // The blocks are little-endian bytes; the words hold them as little-endian u32s.
        for w in &mut words {
            *w = u32::from_le(*w);
        }
        Ok(Self::from_words(words, layout, None, device))
    }

    fn from_words(words: Vec<u32>, layout: QuantLayout, bias: Option<Vec<f32>>, device: &Device) -> Self {
        let n = words.len();
        let weight = Tensor::<1, Int>::from_data(TensorData::new(words, [n]), (device, DType::U32));
        let bias = bias.map(|b| {
            let n = b.len();
            Param::from_tensor(Tensor::<1>::from_data(TensorData::new(b, [n]), device))
        });
        Self { weight: Param::initialized(ParamId::new(), weight), bias, perm: None, layout }
    }

    /// A 4-bit AutoGPTQ linear (`qweight [in/8, out]`, `qzeros`, `scales`, optional `g_idx`;
    /// `group` = `in` for group size −1), repacked once into int4 blocks. Act-order checkpoints
    /// get their columns sorted by group and an input permutation, so the kernels see contiguous
    /// groups and run at the same speed.
    pub fn from_gptq(
        t: crate::format::gptq::GptqTensors<'_>,
        out_features: usize,
        in_features: usize,
        group: usize,
        zeros: crate::format::gptq::GptqZeros,
        device: &Device,
    ) -> Result<Self> {
        let u = crate::format::gptq::unpack(t, out_features, in_features, group, zeros)?;
        let (kind, bytes) = u.matrix.to_blocks()?;
        let layer = Self::from_gguf_bytes(kind, &bytes, out_features, in_features, device)?;
        match u.perm {
            Some(p) => layer.with_input_permutation(&p),
            None => Ok(layer),
        }
    }

    /// A 4-bit AutoAWQ GEMM linear (`qweight [in, out/8]`, `qzeros`, `scales`), repacked once
    /// into int4 blocks.
    pub fn from_awq(t: crate::format::awq::AwqTensors<'_>, out_features: usize, in_features: usize, group: usize, device: &Device) -> Result<Self> {
        let m = crate::format::awq::unpack(t, out_features, in_features, group)?;
        let (kind, bytes) = m.to_blocks()?;
        Self::from_gguf_bytes(kind, &bytes, out_features, in_features, device)
    }

    /// A layer from an imported checkpoint linear (see [`HfCheckpoint::linear`](crate::import::HfCheckpoint::linear)).
    pub fn from_linear_weights(w: &crate::import::LinearWeights, device: &Device) -> Result<Self> {
        let mut layer = Self::from_gguf_bytes(w.kind, &w.bytes, w.out_features, w.in_features, device)?;
        if let Some(p) = &w.perm {
            layer = layer.with_input_permutation(p)?;
        }
        if let Some(b) = &w.bias {
            layer = layer.with_bias(b)?;
        }
        Ok(layer)
    }

    /// Sets the input permutation: the product uses `x'[j] = x[perm[j]]`. `perm` must be a
    /// permutation of `0..in_features`.
    pub fn with_input_permutation(mut self, perm: &[u32]) -> Result<Self> {
        let k = self.in_features();
        let mut seen = vec![false; k];
        if perm.len() != k || !perm.iter().all(|&p| (p as usize) < k && !std::mem::replace(&mut seen[p as usize], true)) {
            return Err(Error::Shape(format!("input permutation of {} values is not a permutation of 0..{k}", perm.len())));
        }
        let device = self.weight.val().device();
        let t = Tensor::<1, Int>::from_data(TensorData::new(perm.iter().map(|&p| p as i64).collect::<Vec<_>>(), [k]), &device);
        self.perm = Some(Param::initialized(ParamId::new(), t));
        Ok(self)
    }

    /// Adds (or replaces) the bias; its length must be `out_features`.
    pub fn with_bias(mut self, bias: &[f32]) -> Result<Self> {
        if bias.len() != self.out_features() {
            return Err(Error::Shape(format!("bias has {} values, the layer {} outputs", bias.len(), self.out_features())));
        }
        if let Some(i) = bias.iter().position(|b| !b.is_finite()) {
            return Err(Error::Invalid(format!("bias[{i}] = {} is not finite", bias[i])));
        }
        let device = self.weight.val().device();
        let t = Tensor::<1>::from_data(TensorData::new(bias.to_vec(), [bias.len()]), &device);
        self.bias = Some(Param::from_tensor(t));
        Ok(self)
    }

    /// Opts this layer into (or out of) int8 input on the CPU backends: each input row is
    /// rounded to int8 per 256 values (one f32 scale each, llama.cpp's `Q8_K`) and the kernels
    /// take integer dot products, as llama.cpp's CPU backend always does. Faster where the f32
    /// kernels are compute-bound, at the cost of exactness (the input's rounding is up to half a
    /// step of `max|x| / 127` per value). Applies to one-token-row products of Q4_K and Q6_K
    /// weights on x86 CPUs with AVX2; everything else (other types and token counts, the GPU backends)
    /// stays f32. Not saved with records (it is a compute mode, like a device choice).
    pub fn with_int8_input(mut self, on: bool) -> Self {
        self.set_int8_input(on);
        self
    }

    /// [`with_int8_input`](Self::with_int8_input) in place.
    pub fn set_int8_input(&mut self, on: bool) {
        self.layout.int8_input = on;
    }

    /// The packed layout.
    pub fn layout(&self) -> &QuantLayout {
        &self.layout
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.layout.in_features
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.layout.out_features()
    }

    /// Bytes the weight occupies on the device (the quantized blocks, padded to u32 words).
    pub fn num_bytes(&self) -> usize {
        self.layout.total_bytes()
    }

    /// `x · Wᵀ + b` over any leading dims (`[..., in]` → `[..., out]`); checks the last dim.
    pub fn try_forward<const D: usize>(&self, x: Tensor<D>) -> Result<Tensor<D>> {
        self.product(x, Product::Plain(None))
    }

    /// `x · Wᵀ + b + r` with `r` of the output's shape (a residual connection), the addition
    /// done by the product's kernels where the backend can; checks both shapes.
    pub fn try_forward_add<const D: usize>(&self, x: Tensor<D>, r: Tensor<D>) -> Result<Tensor<D>> {
        self.product(x, Product::Plain(Some(r)))
    }

    /// `norm(x) · Wᵀ + b`: the RMSNorm `norm` (over `in` features) before this layer, done by the
    /// product's kernels as they read `x` where the backend can (the cube backends' one-token
    /// decode); the same as `self.forward(norm.forward(x))` everywhere. Checks the shapes.
    pub fn try_forward_norm<const D: usize>(&self, x: Tensor<D>, norm: &RmsNorm) -> Result<Tensor<D>> {
        let len = norm.gamma.dims()[0];
        if len != self.in_features() {
            return Err(Error::Shape(format!("norm over {len} features before a layer of {} inputs", self.in_features())));
        }
        self.product(x, Product::Norm(norm))
    }

    /// [`try_forward_norm`](Self::try_forward_norm), panicking on a shape mismatch.
    pub fn forward_norm<const D: usize>(&self, x: Tensor<D>, norm: &RmsNorm) -> Tensor<D> {
        match self.try_forward_norm(x, norm) {
            Ok(y) => y,
            Err(e) => panic!("QuantLinear::forward_norm: {e}"),
        }
    }

    /// `(silu(gate) ⊙ up) · Wᵀ + b + r` for `gu = [gate | up]` (`[..., 2·in]`: a SwiGLU MLP's
    /// fused gate/up output before its down projection) and `r` of the output's shape; the
    /// SwiGLU is done by the product's kernels as they read `gu` where the backend can. Checks
    /// the shapes.
    pub fn try_forward_swiglu_add<const D: usize>(&self, gu: Tensor<D>, r: Tensor<D>) -> Result<Tensor<D>> {
        self.product(gu, Product::SwiGluAdd(r))
    }

    /// [`try_forward_swiglu_add`](Self::try_forward_swiglu_add), panicking on a shape mismatch.
    pub fn forward_swiglu_add<const D: usize>(&self, gu: Tensor<D>, r: Tensor<D>) -> Tensor<D> {
        match self.try_forward_swiglu_add(gu, r) {
            Ok(y) => y,
            Err(e) => panic!("QuantLinear::forward_swiglu_add: {e}"),
        }
    }

    /// [`try_forward_add`](Self::try_forward_add), panicking on a shape mismatch.
    pub fn forward_add<const D: usize>(&self, x: Tensor<D>, r: Tensor<D>) -> Tensor<D> {
        match self.try_forward_add(x, r) {
            Ok(y) => y,
            Err(e) => panic!("QuantLinear::forward_add: {e}"),
        }
    }

    /// `op`'s product of `x`, plus `b`.
    fn product<const D: usize>(&self, x: Tensor<D>, op: Product<'_, D>) -> Result<Tensor<D>> {
        type B = burn::backend::Dispatch;
        let dims = x.dims();
        let k = self.in_features();
        let width = if matches!(op, Product::SwiGluAdd(_)) { 2 * k } else { k };
        if D == 0 || dims[D - 1] != width {
            return Err(Error::Shape(format!("input {dims:?}: last dim must be {width}")));
        }
        let m: usize = dims[..D - 1].iter().product();
        let mut out = dims;
        out[D - 1] = self.out_features();
        if let Product::Plain(Some(r)) | Product::SwiGluAdd(r) = &op
            && r.dims() != out
        {
            return Err(Error::Shape(format!("residual {:?}: must be the output's {out:?}", r.dims())));
        }
        let residual = |r: Tensor<D>| r.reshape([m, self.out_features()]).into_dispatch();
        let mut x2 = x.reshape([m, width]);
        let mut op = op;
        if let Some(p) = &self.perm {
            // The permutation applies to the op's output: the op first, as Burn's ops.
            let (x, r) = match op {
                Product::Plain(r) => (x2, r),
                Product::Norm(n) => (n.forward(x2), None),
                Product::SwiGluAdd(r) => (burn::tensor::activation::silu(x2.clone().narrow(1, 0, k)) * x2.narrow(1, k, k), Some(r)),
            };
            x2 = x.select(1, p.val());
            op = Product::Plain(r);
        }
        let (w, layout) = (self.weight.val().into_dispatch(), self.layout.clone());
        let x2 = x2.into_dispatch();
        let y = match op {
            Product::Plain(None) => B::quant_matmul(x2, w, layout),
            Product::Plain(Some(r)) => B::quant_matmul_add(x2, w, layout, residual(r)),
            Product::Norm(n) => B::quant_matmul_norm(x2, n.gamma.val().into_dispatch(), n.epsilon as f32, w, layout),
            Product::SwiGluAdd(r) => B::quant_matmul_swiglu_add(x2, w, layout, residual(r)),
        };
        let mut y = Tensor::<2>::from_dispatch(y);
        if let Some(b) = &self.bias {
            y = y + b.val().unsqueeze::<2>();
        }
        Ok(y.reshape(out))
    }

    /// The dequantized weight rows `ids` as `[n, in]` f32 (an embedding lookup: a quantized token
    /// table decodes only the rows it is asked for). Errors on an id outside `0..out_features`.
    pub fn try_rows(&self, ids: &[u32]) -> Result<Tensor<2>> {
        let out = self.out_features();
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= out) {
            return Err(Error::Shape(format!("row id {bad} is out of range for {out} rows")));
        }
        let device = self.weight.val().device();
        let n = ids.len();
        let ids = Tensor::<1, Int>::from_data(TensorData::new(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), [n]), &device);
        Ok(self.rows(ids))
    }

    /// The dequantized weight rows `ids` (`[n]`, on this layer's device) as `[n, in]` f32. The
    /// ids must be in `0..out_features` (the backend panics otherwise); see
    /// [`try_rows`](Self::try_rows) for a checked lookup from host ids.
    pub fn rows(&self, ids: Tensor<1, Int>) -> Tensor<2> {
        let y = <burn::backend::Dispatch as QuantMatmulBackend>::quant_rows(
            ids.into_dispatch(),
            self.weight.val().into_dispatch(),
            self.layout.clone(),
        );
        Tensor::<2>::from_dispatch(y)
    }

    /// The whole weight dequantized, `[out, in]` f32 in the original input-column order (undoing
    /// an act-order permutation). For inspection and tests: it is the f32 copy the layer itself
    /// never keeps.
    pub fn dequantize(&self) -> Tensor<2> {
        let device = self.weight.val().device();
        let out = self.out_features();
        let ids = Tensor::<1, Int>::arange(0..out as i64, &device);
        let w = self.rows(ids);
        match &self.perm {
            None => w,
            Some(p) => {
                // W[:, perm[j]] = W'[:, j]  ⇔  W = W'[:, inverse(perm)]
                let k = self.in_features();
                let inv = p.val().argsort(0);
                debug_assert_eq!(inv.dims(), [k]);
                w.select(1, inv)
            }
        }
    }

    /// `x · Wᵀ + b` over any leading dims. Panics if the last dim is not `in_features`; use
    /// [`try_forward`](Self::try_forward) for an error instead.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match self.try_forward(x) {
            Ok(y) => y,
            Err(e) => panic!("QuantLinear::forward: {e}"),
        }
    }
}
