//! `burn-quant`: inspect GGUF files and Hugging Face GPTQ/AWQ checkpoint directories,
//! dequantize a tensor, or run a quantized matmul.
//!
//! ```text
//! burn-quant inspect FILE.gguf|DIR
//! burn-quant dequant FILE.gguf|DIR TENSOR --out OUT.safetensors
//! burn-quant matmul FILE.gguf|DIR TENSOR --input X.safetensors --out Y.safetensors [--backend B]
//! ```
//!
//! In a directory, TENSOR names a linear by its prefix (`model.layers.0.self_attn.q_proj`).

use std::process::ExitCode;

use burn::tensor::{Device, Tensor, TensorData};
use burn_quant::gguf::GgufFile;
use burn_quant::import::HfCheckpoint;
use burn_quant::error::ResultExt;
use burn_quant::{Error, QuantLinear, Result};

const USAGE: &str = "usage:
  burn-quant inspect FILE.gguf|DIR
  burn-quant dequant FILE.gguf|DIR TENSOR --out OUT.safetensors
  burn-quant matmul FILE.gguf|DIR TENSOR --input X.safetensors --out Y.safetensors [--backend flex|ndarray|wgpu|cuda]
(DIR: a Hugging Face GPTQ/AWQ checkpoint; TENSOR is then a linear's prefix, e.g. model.layers.0.self_attn.q_proj)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("burn-quant: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Positional arguments and `--flag value` options.
struct Args<'a> {
    pos: Vec<&'a str>,
    opts: Vec<(&'a str, &'a str)>,
}

impl<'a> Args<'a> {
    fn parse(args: &'a [String], known: &[&str]) -> Result<Self> {
        let (mut pos, mut opts) = (Vec::new(), Vec::new());
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                if !known.contains(&name) {
                    return Err(Error::Invalid(format!("unknown option --{name}\n{USAGE}")));
                }
                let v = it.next().ok_or_else(|| Error::Invalid(format!("--{name} needs a value")))?;
                opts.push((name, v.as_str()));
            } else {
                pos.push(a.as_str());
            }
        }
        Ok(Self { pos, opts })
    }

    fn opt(&self, name: &str) -> Option<&'a str> {
        self.opts.iter().rev().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    fn need(&self, name: &str) -> Result<&'a str> {
        self.opt(name).ok_or_else(|| Error::Invalid(format!("missing --{name}\n{USAGE}")))
    }

    fn positional(&self, n: usize) -> Result<&[&'a str]> {
        if self.pos.len() != n {
            return Err(Error::Invalid(format!("expected {n} arguments, got {}\n{USAGE}", self.pos.len())));
        }
        Ok(&self.pos)
    }
}

fn run(args: &[String]) -> Result<()> {
    let Some((cmd, rest)) = args.split_first() else {
        return Err(Error::Invalid(USAGE.into()));
    };
    match cmd.as_str() {
        "inspect" => {
            let a = Args::parse(rest, &[])?;
            inspect(a.positional(1)?[0])
        }
        "dequant" => {
            let a = Args::parse(rest, &["out"])?;
            let p = a.positional(2)?;
            dequant(p[0], p[1], a.need("out")?)
        }
        "matmul" => {
            let a = Args::parse(rest, &["input", "out", "backend"])?;
            let p = a.positional(2)?;
            matmul(p[0], p[1], a.need("input")?, a.need("out")?, a.opt("backend").unwrap_or("flex"))
        }
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(Error::Invalid(format!("unknown command {other:?}\n{USAGE}"))),
    }
}

fn open(path: &str) -> Result<GgufFile> {
    GgufFile::open(path)
}

/// Writes `text` to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn print_out(text: &str) -> Result<()> {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::Io { path: "stdout".into(), source: e }),
        _ => Ok(()),
    }
}

fn is_dir(path: &str) -> bool {
    std::path::Path::new(path).is_dir()
}

fn inspect_dir(path: &str) -> Result<()> {
    use std::fmt::Write as _;
    let mut o = String::new();
    let c = HfCheckpoint::open(path)?;
    let _ = writeln!(o, "{path}: Hugging Face checkpoint, {} tensors, quantization {:?}", c.tensors().len(), c.quant());
    let _ = writeln!(o, "\nquantized linears:");
    for p in c.quantized_linears() {
        let w = c.linear(p)?;
        let _ = writeln!(o, 
            "  {p:<48} [{}, {}] -> {}{}",
            w.out_features,
            w.in_features,
            w.kind,
            if w.perm.is_some() { " (act-order: input permuted)" } else { "" }
        );
    }
    let _ = writeln!(o, "\n{:<56} {:>6} {:>16}", "tensor", "dtype", "shape");
    for (name, dtype, shape) in c.tensors() {
        let _ = writeln!(o, "{name:<56} {:>6} {:>16}", format!("{dtype:?}"), format!("{shape:?}"));
    }
    print_out(&o)
}

/// The layer named `tensor` in a GGUF file or checkpoint directory.
fn load_layer(path: &str, tensor: &str, device: &Device) -> Result<QuantLinear> {
    if is_dir(path) {
        let c = HfCheckpoint::open(path)?;
        let what = || format!("{path}: linear {tensor}");
        return QuantLinear::from_linear_weights(&c.linear(tensor)?, device).context(what);
    }
    let g = open(path)?;
    let what = || g.describe(tensor);
    let info = g.tensor(tensor).context(what)?;
    let (rows, cols) = info.matrix_shape();
    QuantLinear::from_gguf_bytes(info.kind, g.tensor_data(tensor)?, rows, cols, device).context(what)
}

fn inspect(path: &str) -> Result<()> {
    use std::fmt::Write as _;
    let mut o = String::new();
    if is_dir(path) {
        return inspect_dir(path);
    }
    let g = open(path)?;
    let _ = writeln!(o, "{path}: GGUF v{}, {} metadata keys, {} tensors, alignment {}", g.version, g.metadata_len(), g.tensor_count(), g.alignment);
    let _ = writeln!(o, "\nmetadata:");
    for (k, v) in g.metadata() {
        let _ = writeln!(o, "  {k:<44} {}", v.summary());
    }
    let _ = writeln!(o, "\n{:<40} {:>8} {:>24} {:>14}", "tensor", "type", "shape", "bytes");
    let mut total = 0u64;
    for t in g.tensors() {
        total += t.size;
        let _ = writeln!(o, "{:<40} {:>8} {:>24} {:>14}", t.name, t.kind.name(), format!("{:?}", t.shape()), t.size);
    }
    let _ = writeln!(o, "{:<40} {:>8} {:>24} {:>14}", "total", "", "", total);
    print_out(&o)
}

fn write_f32(path: &str, name: &str, data: &[f32], shape: Vec<usize>) -> Result<()> {
    let bytes: &[u8] = bytemuck::cast_slice(data);
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, bytes)
        .map_err(|e| Error::SafeTensors(e.to_string()))?;
    safetensors::serialize_to_file([(name, view)], None, std::path::Path::new(path))
        .map_err(|e| Error::SafeTensors(format!("{path}: {e}")))
}

fn dequant(path: &str, tensor: &str, out: &str) -> Result<()> {
    if is_dir(path) {
        let layer = load_layer(path, tensor, &device("flex")?)?;
        let (rows, cols) = (layer.out_features(), layer.in_features());
        let w = layer.dequantize().into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| Error::Invalid(format!("{e:?}")))?;
        write_f32(out, "weight", &w, vec![rows, cols])?;
        eprintln!("wrote {tensor} ({rows}x{cols}, {}) to {out} as `weight`", layer.layout().parts[0].kind);
        return Ok(());
    }
    let g = open(path)?;
    let (w, rows, cols) = g.dequantize(tensor)?;
    write_f32(out, "weight", &w, vec![rows, cols])?;
    eprintln!("wrote {tensor} ({rows}x{cols}, from {}) to {out} as `weight`", g.tensor(tensor)?.kind);
    Ok(())
}

fn device(name: &str) -> Result<Device> {
    burn_quant::device::device_by_name(name)
}

fn matmul(path: &str, tensor: &str, input: &str, out: &str, backend: &str) -> Result<()> {
    let device = device(backend)?;
    let layer = load_layer(path, tensor, &device)?;
    let (rows, cols) = (layer.out_features(), layer.in_features());

    let raw = std::fs::read(input).map_err(|source| Error::Io { path: input.into(), source })?;
    let st = safetensors::SafeTensors::deserialize(&raw).map_err(|e| Error::SafeTensors(format!("{input}: {e}")))?;
    let x = st.tensor("x").map_err(|_| Error::NotFound(format!("{input}: tensor `x`")))?;
    if x.dtype() != safetensors::Dtype::F32 || x.shape().len() != 2 || x.shape()[1] != cols {
        return Err(Error::Shape(format!("{input}: `x` must be f32 (m, {cols}), got {:?} {:?}", x.dtype(), x.shape())));
    }
    let m = x.shape()[0];
    let xs: Vec<f32> = x.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let xt = Tensor::<2>::from_data(TensorData::new(xs, [m, cols]), &device);
    let y = layer.try_forward(xt)?;
    let y = y.into_data().convert::<f32>().try_to_vec::<f32>().map_err(|e| Error::Invalid(format!("{e:?}")))?;
    write_f32(out, "y", &y, vec![m, rows])?;
    eprintln!("y = x · {tensor}ᵀ ({m}x{rows}) on {backend} written to {out}");
    Ok(())
}
