//! Loads one Qwen3 decoder block from a GGUF file, runs it on a prompt's hidden states (the
//! token embeddings of the prompt) and prints the output statistics and the time per block.
//!
//! `cargo run --release --example qwen3_block [-- --model FILE.gguf --layer 0 --prompt TEXT --backend flex|ndarray|wgpu|cuda --runs 20]`

use std::time::Instant;

use burn::tensor::{Int, Tensor, TensorData};
use burn_quant::device::device_by_name;
use burn_quant::gguf::GgufFile;
use burn_quant::models::qwen3::rope::{self, RopeAt};
use burn_quant::models::qwen3::{KvCache, Qwen3Block, Qwen3Config};
use burn_quant::tokenizer::Tokenizer;
use burn_quant::{Error, QuantLinear, Result};

const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/qwen3-tiny/tiny-qwen3-Q4_K_M.gguf");

fn opt<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(|s| s.as_str())
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let device = device_by_name(opt(&args, "--backend").unwrap_or("flex"))?;
    let path = opt(&args, "--model").unwrap_or(TINY);
    let layer: usize = opt(&args, "--layer").unwrap_or("0").parse().map_err(|_| Error::Invalid("--layer".into()))?;
    let runs: usize = opt(&args, "--runs").unwrap_or("20").parse().map_err(|_| Error::Invalid("--runs".into()))?;
    let text = opt(&args, "--prompt").unwrap_or("The quick brown fox jumps over the lazy dog, again and again.");
    let file = GgufFile::open(path)?;
    let c = Qwen3Config::from_gguf(&file)?;
    if layer >= c.num_layers {
        return Err(Error::Invalid(format!("--layer {layer}: the model has {} layers", c.num_layers)));
    }
    let tokens = Tokenizer::from_gguf(&file)?
        .ok_or_else(|| Error::Invalid("the GGUF has no tokenizer".into()))?
        .encode(text)?;
    let n = tokens.len();
    let block = Qwen3Block::from_gguf(&file, &c, layer, &device)?;
    let embd = file.tensor("token_embd.weight")?;
    let embed = QuantLinear::from_gguf_bytes(embd.kind, file.tensor_data(&embd.name)?, c.vocab_size, c.hidden_size, &device)?;
    let ids = Tensor::<1, Int>::from_data(TensorData::new(tokens.iter().map(|&t| t as i64).collect::<Vec<_>>(), [n]), &device);
    let x: Tensor<3> = embed.rows(ids).reshape([1, n, c.hidden_size]);
    let (cos, sin) = rope::tables(0, n, c.head_dim, c.rope_theta, &device);

    let once = || {
        let mut cache = KvCache::new(1);
        block.forward(x.clone(), RopeAt::Rows(&cos, &sin), &mut cache, 0)
    };
    let y = once().into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| Error::Invalid(format!("{e:?}")))?;
    let mut times: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let t = Instant::now();
            let _ = once().into_data();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let mean = y.iter().map(|&v| v as f64).sum::<f64>() / y.len() as f64;
    let var = y.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / y.len() as f64;
    let (min, max) = y.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    println!("{path}: block {layer} of {}, hidden {}, {n} prompt tokens", c.num_layers, c.hidden_size);
    println!("output [1, {n}, {}]: mean {mean:.5}, std {:.5}, min {min:.4}, max {max:.4}", c.hidden_size, var.sqrt());
    println!("time per block: median {:.1} µs over {} runs ({:.1} µs/token)", times[times.len() / 2], times.len(), times[times.len() / 2] / n as f64);
    Ok(())
}

fn main() -> std::process::ExitCode {
    burn_quant::error::exit_code(run())
}
