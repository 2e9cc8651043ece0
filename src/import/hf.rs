//! A Hugging Face checkpoint directory: `config.json` (with `quantization_config`, or a separate
//! `quantize_config.json`) and `*.safetensors` files mapped with mmap. Quantized linears (GPTQ
//! `qweight/qzeros/scales/g_idx`, AWQ GEMM `qweight/qzeros/scales`) are looked up by prefix and
//! repacked into burn-quant's int4 blocks; dense f16/bf16/f32 tensors are read as they are.

use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::Dtype;

use crate::error::{Error, Result};
use crate::format::GgmlType;
use crate::format::awq::{self, AwqTensors};
use crate::format::gptq::{self, GptqTensors, GptqZeros};

use super::config_json;
use super::safetensors_header::{self, Entry};

/// The quantization a checkpoint declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantMethod {
    /// AutoGPTQ: `bits`, `group` (input columns per group; `None` = −1, one group), `sym`,
    /// act-order, and the zero convention.
    Gptq {
        /// Bits per weight (4 is supported).
        bits: u32,
        /// Group size; `None` for −1.
        group: Option<usize>,
        /// Symmetric quantization (informational: zeros are read from `qzeros` either way).
        sym: bool,
        /// Act-order (`desc_act`).
        desc_act: bool,
        /// How `qzeros` stores zeros.
        zeros: GptqZeros,
    },
    /// AutoAWQ GEMM: `bits`, `group`, `zero_point`.
    Awq {
        /// Bits per weight (4 is supported).
        bits: u32,
        /// Group size; `None` for −1.
        group: Option<usize>,
        /// Whether zeros are stored (AWQ GEMM always stores `qzeros`).
        zero_point: bool,
    },
}

/// One linear layer's weight ready for [`QuantLinear`](crate::QuantLinear): blocks of `kind`,
/// `[out, in]` row-major, the input permutation act-order needs, and the bias.
#[derive(Clone, Debug)]
pub struct LinearWeights {
    /// Block type of `bytes`.
    pub kind: GgmlType,
    /// Packed rows.
    pub bytes: Vec<u8>,
    /// Output features.
    pub out_features: usize,
    /// Input features.
    pub in_features: usize,
    /// `x'[j] = x[perm[j]]` before the product (act-order GPTQ), if any.
    pub perm: Option<Vec<u32>>,
    /// Bias `[out]`, if the checkpoint has one.
    pub bias: Option<Vec<f32>>,
}

struct Shard {
    path: PathBuf,
    map: ShardBytes,
    data_start: usize,
}

/// A mapped Hugging Face checkpoint directory.
pub struct HfCheckpoint {
    dir: PathBuf,
    config: serde_json::Value,
    config_text: String,
    quant: Option<QuantMethod>,
    shards: Vec<Shard>,
    /// Every tensor of every shard, sorted by name.
    index: Vec<Entry>,
}

impl std::fmt::Debug for HfCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HfCheckpoint({}, {} tensors, {:?})", self.dir.display(), self.index.len(), self.quant)
    }
}

/// The first `N` bytes of a `chunks_exact(N)` chunk as an array.
fn le<const N: usize>(c: &[u8]) -> [u8; N] {
    c.first_chunk().copied().unwrap_or([0; N])
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io { path: path.display().to_string(), source }
}

fn group_of(v: &serde_json::Value, key: &str) -> Result<Option<usize>> {
    match v.get(key).and_then(|g| g.as_i64()) {
        None | Some(-1) => Ok(None),
        Some(g) if g > 0 => usize::try_from(g).map(Some).map_err(|_| Error::Overflow(format!("quantization_config {key} {g}"))),
        Some(g) => Err(Error::Invalid(format!("quantization_config {key} {g} is not positive or -1"))),
    }
}

/// Reads the quantization method from a `quantization_config` / `quantize_config.json` object.
pub fn parse_quant_config(q: &serde_json::Value) -> Result<QuantMethod> {
    let method = q.get("quant_method").and_then(|m| m.as_str()).unwrap_or("gptq").to_ascii_lowercase();
    let bits = q.get("bits").or_else(|| q.get("w_bit")).and_then(|b| b.as_u64()).unwrap_or(4);
    let bits = u32::try_from(bits).map_err(|_| Error::Invalid(format!("quantization_config bits {bits}")))?;
    let flag = |k: &str, d: bool| q.get(k).and_then(|v| v.as_bool()).unwrap_or(d);
    match method.as_str() {
        "gptq" => {
            let format = q.get("checkpoint_format").and_then(|f| f.as_str()).unwrap_or("gptq");
            let zeros = match format {
                "gptq" => GptqZeros::V1,
                "gptq_v2" => GptqZeros::V2,
                other => return Err(Error::UnsupportedModel(format!("GPTQ checkpoint_format {other:?}"))),
            };
            if flag("is_marlin_format", false) {
                return Err(Error::UnsupportedModel("GPTQ Marlin-packed checkpoints are not supported".into()));
            }
            Ok(QuantMethod::Gptq { bits, group: group_of(q, "group_size")?, sym: flag("sym", true), desc_act: flag("desc_act", false), zeros })
        }
        "awq" => {
            let version = q.get("version").and_then(|v| v.as_str()).unwrap_or("gemm").to_ascii_lowercase();
            if version != "gemm" {
                return Err(Error::UnsupportedModel(format!("AWQ version {version:?} (only GEMM packing)")));
            }
            let group = match q.get("q_group_size") {
                Some(_) => group_of(q, "q_group_size")?,
                None => group_of(q, "group_size")?,
            };
            Ok(QuantMethod::Awq { bits, group, zero_point: flag("zero_point", true) })
        }
        other => Err(Error::UnsupportedModel(format!("quant_method {other:?} (gptq and awq are supported)"))),
    }
}

/// A shard's bytes: a read-only mapping of a file, or bytes handed over in memory.
enum ShardBytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for ShardBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ShardBytes::Mapped(m) => m,
            ShardBytes::Owned(v) => v,
        }
    }
}

fn json_err(what: &Path) -> impl Fn(serde_json::Error) -> Error + '_ {
    move |e| Error::Invalid(format!("{}: {e}", what.display()))
}

impl HfCheckpoint {
    /// Opens a checkpoint directory: parses `config.json` (and `quantize_config.json` when the
    /// config has no `quantization_config`) and maps every `*.safetensors` file.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let cfg_path = dir.join("config.json");
        let config_text = std::fs::read_to_string(&cfg_path).map_err(|e| io(&cfg_path, e))?;
        let qc_path = dir.join("quantize_config.json");
        let quantize_config = std::fs::read_to_string(&qc_path).ok();
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| io(&dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        paths.sort();
        let mut shards = Vec::with_capacity(paths.len());
        for path in paths {
            let file = std::fs::File::open(&path).map_err(|e| io(&path, e))?;
            // SAFETY: the file is mapped read-only; a concurrent external modification is the
            // caller's responsibility, as for every mmap-based model loader.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| io(&path, e))?;
            shards.push((path, ShardBytes::Mapped(map)));
        }
        Self::build(dir, config_text, quantize_config.as_deref(), shards)
    }

    /// A checkpoint held in memory: the text of `config.json`, optionally of
    /// `quantize_config.json`, and `(file name, bytes)` of each safetensors shard. Errors name
    /// the files as if they lay in a directory called `<memory>`.
    pub fn from_memory(config_json: &str, quantize_config_json: Option<&str>, shards: Vec<(String, Vec<u8>)>) -> Result<Self> {
        let dir = PathBuf::from("<memory>");
        let shards = shards.into_iter().map(|(name, bytes)| (dir.join(name), ShardBytes::Owned(bytes))).collect();
        Self::build(dir.clone(), config_json.to_string(), quantize_config_json, shards)
    }

    fn build(dir: PathBuf, config_text: String, quantize_config: Option<&str>, files: Vec<(PathBuf, ShardBytes)>) -> Result<Self> {
        let config = config_json::parse_config(&config_text).map_err(json_err(&dir.join("config.json")))?;
        let quant = match (config.get("quantization_config"), quantize_config) {
            (Some(q), _) => Some(parse_quant_config(q)?),
            (None, Some(t)) => {
                let path = dir.join("quantize_config.json");
                Some(parse_quant_config(&config_json::parse_quantize_config(t).map_err(json_err(&path))?)?)
            }
            (None, None) => None,
        };
        if files.is_empty() {
            return Err(Error::NotFound(format!("{}: no *.safetensors file", dir.display())));
        }
        let mut shards = Vec::with_capacity(files.len());
        let mut index = Vec::new();
        for (path, map) in files {
            let shard = u32::try_from(shards.len()).map_err(|_| Error::Invalid(format!("{}: too many shards", dir.display())))?;
            let data_start = safetensors_header::read(&map, shard, &mut index, &path.display())?;
            shards.push(Shard { path, map, data_start });
        }
        index.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        for w in index.windows(2) {
            if let [a, b] = w
                && a.name == b.name
            {
                let file = |e: &Entry| shards.get(e.shard as usize).map(|s| s.path.display().to_string()).unwrap_or_default();
                return Err(Error::SafeTensors(format!("{}, {}: tensor {} is declared twice", file(a), file(b), a.name)));
            }
        }
        Ok(Self { dir, config, config_text, quant, shards, index })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `config.json` as text.
    pub fn config_json(&self) -> &str {
        &self.config_text
    }

    /// `config.json` parsed, reduced to the keys burn-quant reads (see [`parse_config_json`](super::parse_config_json)).
    pub fn config(&self) -> &serde_json::Value {
        &self.config
    }

    /// The declared quantization, if any.
    pub fn quant(&self) -> Option<QuantMethod> {
        self.quant
    }

    /// Every tensor: name, dtype, shape (sorted by name).
    pub fn tensors(&self) -> impl ExactSizeIterator<Item = (&str, Dtype, &[usize])> + '_ {
        self.index.iter().map(|e| (&*e.name, e.dtype, &*e.shape))
    }

    /// Prefixes of the quantized linears (`<prefix>.qweight`), sorted.
    pub fn quantized_linears(&self) -> impl Iterator<Item = &str> + '_ {
        self.index.iter().filter_map(|e| e.name.strip_suffix(".qweight"))
    }

    fn entry(&self, name: &str) -> Option<&Entry> {
        let i = self.index.binary_search_by(|e| (*e.name).cmp(name)).ok()?;
        self.index.get(i)
    }

    /// Whether the checkpoint has tensor `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.entry(name).is_some()
    }

    /// A tensor's dtype, shape and bytes.
    pub fn raw(&self, name: &str) -> Result<(Dtype, &[usize], &[u8])> {
        let e = self.entry(name).ok_or_else(|| Error::NotFound(format!("{}: tensor {name}", self.dir.display())))?;
        let bytes =
            self.shards.get(e.shard as usize).and_then(|s| s.map.get(s.data_start.checked_add(e.start)?..s.data_start.checked_add(e.end)?));
        let bytes = bytes.ok_or_else(|| Error::SafeTensors(format!("{}: tensor {name} lies outside its file", self.dir.display())))?;
        Ok((e.dtype, &e.shape, bytes))
    }

    fn shape_err(&self, name: &str, what: String) -> Error {
        let file = self.entry(name).and_then(|e| self.shards.get(e.shard as usize)).map(|s| s.path.display().to_string()).unwrap_or_default();
        Error::Shape(format!("{file}: tensor {name}: {what}"))
    }

    /// A float tensor (f32, f16 or bf16) as f32 values with its shape.
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let (dtype, shape, bytes) = self.raw(name)?;
        let v = match dtype {
            Dtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes(le(c))).collect(),
            Dtype::F16 => bytes.chunks_exact(2).map(|c| f16::from_le_bytes(le(c)).to_f32()).collect(),
            Dtype::BF16 => bytes.chunks_exact(2).map(|c| bf16::from_le_bytes(le(c)).to_f32()).collect(),
            other => return Err(self.shape_err(name, format!("dtype {other:?}, expected a float type"))),
        };
        Ok((v, shape.to_vec()))
    }

    fn typed<T>(&self, name: &str, want: Dtype, shape: &[usize], read: fn(&[u8]) -> T, size: usize) -> Result<Vec<T>> {
        let (dtype, got, bytes) = self.raw(name)?;
        if dtype != want {
            return Err(self.shape_err(name, format!("dtype {dtype:?}, expected {want:?}")));
        }
        if got != shape {
            return Err(self.shape_err(name, format!("shape {got:?}, expected {shape:?}")));
        }
        Ok(bytes.chunks_exact(size).map(read).collect())
    }

    fn i32s(&self, name: &str, shape: &[usize]) -> Result<Vec<i32>> {
        self.typed(name, Dtype::I32, shape, |c| i32::from_le_bytes(le(c)), 4)
    }

    fn f16s(&self, name: &str, shape: &[usize]) -> Result<Vec<f16>> {
        self.typed(name, Dtype::F16, shape, |c| f16::from_le_bytes(le(c)), 2)
    }

    /// The linear at `prefix` (e.g. `model.layers.0.self_attn.q_proj`): a GPTQ/AWQ one repacked
    /// into int4 blocks, or a dense `<prefix>.weight` `[out, in]` kept as F16/BF16/F32 rows.
    pub fn linear(&self, prefix: &str) -> Result<LinearWeights> {
        let bias = match self.contains(&format!("{prefix}.bias")) {
            true => Some(self.tensor_f32(&format!("{prefix}.bias"))?.0),
            false => None,
        };
        let qw = format!("{prefix}.qweight");
        let lw = if !self.contains(&qw) {
            self.dense_linear(prefix)?
        } else {
            let quant = self.quant.ok_or_else(|| {
                Error::Invalid(format!("{}: {qw} is quantized but config.json declares no quantization_config", self.dir.display()))
            })?;
            let (_, qshape, _) = self.raw(&qw)?;
            let &[a, b] = qshape else {
                return Err(self.shape_err(&qw, format!("rank {} (expected 2)", qshape.len())));
            };
            let sshape = self.raw(&format!("{prefix}.scales"))?.1.to_vec();
            match quant {
                QuantMethod::Gptq { bits, group, zeros, .. } => {
                    if bits != 4 {
                        return Err(Error::UnsupportedModel(format!("GPTQ with {bits} bits (4 is supported)")));
                    }
                    let inp = a.checked_mul(8).ok_or_else(|| self.shape_err(&qw, format!("{a} packed rows overflow")))?;
                    let out = b;
                    let group = group.unwrap_or(inp);
                    if inp.checked_rem(group) != Some(0) {
                        return Err(self.shape_err(&qw, format!("group size {group} does not divide in_features {inp}")));
                    }
                    let g = inp.checked_div(group).unwrap_or(0);
                    let qweight = self.i32s(&qw, &[a, b])?;
                    let qzeros = self.i32s(&format!("{prefix}.qzeros"), &[g, out / 8])?;
                    let scales = self.f16s(&format!("{prefix}.scales"), &[g, out])?;
                    let g_idx = match self.contains(&format!("{prefix}.g_idx")) {
                        true => Some(self.i32s(&format!("{prefix}.g_idx"), &[inp])?),
                        false => None,
                    };
                    let t = GptqTensors { qweight: &qweight, qzeros: &qzeros, scales: &scales, g_idx: g_idx.as_deref() };
                    let u = gptq::unpack(t, out, inp, group, zeros).map_err(|e| self.shape_err(&qw, e.to_string()))?;
                    let (kind, bytes) = u.matrix.to_blocks()?;
                    LinearWeights { kind, bytes, out_features: out, in_features: inp, perm: u.perm, bias: None }
                }
                QuantMethod::Awq { bits, group, .. } => {
                    if bits != 4 {
                        return Err(Error::UnsupportedModel(format!("AWQ with {bits} bits (4 is supported)")));
                    }
                    let out = b.checked_mul(8).ok_or_else(|| self.shape_err(&qw, format!("{b} packed columns overflow")))?;
                    let inp = a;
                    let group = group.unwrap_or(inp);
                    if inp.checked_rem(group) != Some(0) {
                        return Err(self.shape_err(&qw, format!("group size {group} does not divide in_features {inp}")));
                    }
                    let g = inp.checked_div(group).unwrap_or(0);
                    if sshape != [g, out] {
                        return Err(self.shape_err(&format!("{prefix}.scales"), format!("shape {sshape:?}, expected [{g}, {out}]")));
                    }
                    let qweight = self.i32s(&qw, &[a, b])?;
                    let qzeros = self.i32s(&format!("{prefix}.qzeros"), &[g, out / 8])?;
                    let scales = self.f16s(&format!("{prefix}.scales"), &[g, out])?;
                    let m = awq::unpack(AwqTensors { qweight: &qweight, qzeros: &qzeros, scales: &scales }, out, inp, group)
                        .map_err(|e| self.shape_err(&qw, e.to_string()))?;
                    let (kind, bytes) = m.to_blocks()?;
                    LinearWeights { kind, bytes, out_features: out, in_features: inp, perm: None, bias: None }
                }
            }
        };
        if let Some(b) = &bias
            && b.len() != lw.out_features
        {
            return Err(self.shape_err(&format!("{prefix}.bias"), format!("{} values for {} outputs", b.len(), lw.out_features)));
        }
        Ok(LinearWeights { bias, ..lw })
    }

    fn dense_linear(&self, prefix: &str) -> Result<LinearWeights> {
        let name = format!("{prefix}.weight");
        let (dtype, shape, bytes) = self.raw(&name)?;
        let &[out, inp] = shape else {
            return Err(self.shape_err(&name, format!("rank {} (expected 2)", shape.len())));
        };
        let kind = match dtype {
            Dtype::F32 => GgmlType::F32,
            Dtype::F16 => GgmlType::F16,
            Dtype::BF16 => GgmlType::BF16,
            other => return Err(self.shape_err(&name, format!("dtype {other:?}, expected a float type"))),
        };
        Ok(LinearWeights { kind, bytes: bytes.to_vec(), out_features: out, in_features: inp, perm: None, bias: None })
    }
}
