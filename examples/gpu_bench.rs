//! GPU benchmark of `QuantLinear` at out = 4096, in = 14336 (llama.cpp's test-backend-ops shape)
//! for m ∈ {1, 2, 4, 8, 16, 64, 512}, beside Burn's own dense f16 and f32 matmul of the shape.
//! Each figure is the median of `--runs` timed calls after warm-up, with device synchronisation
//! around every call; GB/s counts the weight bytes read once per call.
//!
//! `cargo run --release --features cuda --example gpu_bench [-- --backend cuda --runs 50 --types Q4_K,Q6_K --m 1,8 --no-dense]`

use std::time::Instant;

use burn::tensor::{DType, Device, Distribution, Tensor};
use burn_quant::device::device_by_name;
use burn_quant::format::quantize::quantize;
use burn_quant::{Error, GgmlType, QuantLinear, Result};

const OUT: usize = 4096;
const IN: usize = 14336;
const MS: [usize; 7] = [1, 2, 4, 8, 16, 64, 512];

fn opt<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(|s| s.as_str())
}

/// Deterministic pseudo-random weights.
fn weights(n: usize) -> Vec<f32> {
    let mut s = 0x2545F4914F6CDD1Du64;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect()
}

/// Blocks of `kind` for an OUT × IN weight: quantized where the crate has a quantizer, else
/// random codes with a sane f16 scale in every block.
fn blocks(kind: GgmlType, w: &[f32]) -> Result<Vec<u8>> {
    if let Ok(b) = quantize(kind, w) {
        return Ok(b);
    }
    let bytes = kind.matrix_bytes(OUT, IN)?;
    let mut v: Vec<u8> = weights(bytes / 4 + 1).iter().flat_map(|f| f.to_le_bytes()).take(bytes).collect();
    let scale = half::f16::from_f32(0.01).to_le_bytes();
    for blk in v.chunks_exact_mut(kind.block_bytes()) {
        blk[..2].copy_from_slice(&scale);
        if kind.is_internal() {
            blk[2] = 8;
            blk[3] = 0;
        }
    }
    Ok(v)
}

/// Median time of one call when `batch` calls are queued between two synchronisations (so the
/// cost of a synchronisation is spread over `batch` calls).
fn median_us_batched(device: &Device, runs: usize, batch: usize, mut f: impl FnMut()) -> Result<f64> {
    for _ in 0..3 {
        f();
    }
    device.sync().map_err(|e| Error::Invalid(format!("{e:?}")))?;
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs.div_ceil(batch).max(3) {
        let s = Instant::now();
        for _ in 0..batch {
            f();
        }
        device.sync().map_err(|e| Error::Invalid(format!("{e:?}")))?;
        t.push(s.elapsed().as_secs_f64() * 1e6 / batch as f64);
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

fn median_us(device: &Device, runs: usize, mut f: impl FnMut()) -> Result<f64> {
    for _ in 0..3 {
        f();
    }
    device.sync().map_err(|e| Error::Invalid(format!("{e:?}")))?;
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs {
        let s = Instant::now();
        f();
        device.sync().map_err(|e| Error::Invalid(format!("{e:?}")))?;
        t.push(s.elapsed().as_secs_f64() * 1e6);
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

pub fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let backend = opt(&args, "--backend").unwrap_or("cuda");
    let device = device_by_name(backend)?;
    let runs: usize = opt(&args, "--runs").unwrap_or("50").parse().map_err(|_| Error::Invalid("--runs".into()))?;
    let types: Vec<GgmlType> = opt(&args, "--types")
        .unwrap_or("Q4_K,Q6_K,Q8_0,Q5_0,I4_128")
        .split(',')
        .map(GgmlType::from_name)
        .collect::<Result<_>>()?;
    let ms: Vec<usize> = match opt(&args, "--m") {
        Some(s) => s.split(',').map(|v| v.parse().map_err(|_| Error::Invalid("--m".into()))).collect::<Result<_>>()?,
        None => MS.to_vec(),
    };
    let w = weights(OUT * IN);
    println!("# {backend}: y[m, {OUT}] = x[m, {IN}] · Wᵀ, median of {runs} runs (µs), weight-read GB/s");
    println!("{:<8} {:>5} {:>10} {:>9} {:>10} {:>14}", "type", "m", "µs", "GB/s", "MB", "µs (10/sync)");
    for &kind in &types {
        let layer = QuantLinear::from_gguf_bytes(kind, &blocks(kind, &w)?, OUT, IN, &device)?;
        let mb = layer.num_bytes() as f64 / 1e6;
        for &m in &ms {
            let x = Tensor::<2>::random([m, IN], Distribution::Default, &device);
            let us = median_us(&device, runs, || {
                let _ = layer.forward(x.clone());
            })?;
            let batched = median_us_batched(&device, runs, 10, || {
                let _ = layer.forward(x.clone());
            })?;
            println!("{:<8} {:>5} {:>10.1} {:>9.0} {:>10.1} {:>14.1}", kind.name(), m, us, mb * 1e6 / us / 1e3, mb, batched);
        }
    }
    if args.iter().any(|a| a == "--no-dense") {
        return Ok(());
    }
    // Per-call cost floor: a 64 × 256 Q4_K layer (16 KiB of weight) at m = 1.
    let tiny = QuantLinear::from_gguf_bytes(GgmlType::Q4_K, &quantize(GgmlType::Q4_K, &w[..64 * 256])?, 64, 256, &device)?;
    let xt = Tensor::<2>::random([1, 256], Distribution::Default, &device);
    let us = median_us(&device, runs, || {
        let _ = tiny.forward(xt.clone());
    })?;
    let batched = median_us_batched(&device, runs, 10, || {
        let _ = tiny.forward(xt.clone());
    })?;
    println!("{:<8} {:>5} {:>10.1} {:>9} {:>10} {:>14.1}   (64x256 Q4_K: per-call floor)", "tiny", 1, us, "", "", batched);
    // Burn's own per-op floor on the same device, for comparison: one elementwise op on 256 floats,
    // and a 1x256 · 256x64 f32 matmul.
    let us = median_us(&device, runs, || {
        let _ = xt.clone() + 1.0;
    })?;
    let batched = median_us_batched(&device, runs, 10, || {
        let _ = xt.clone() + 1.0;
    })?;
    println!("{:<8} {:>5} {:>10.1} {:>9} {:>10} {:>14.1}   (Burn x + 1 on 256 floats)", "add", 1, us, "", "", batched);
    let wsmall = Tensor::<2>::random([256, 64], Distribution::Default, &device);
    let us = median_us(&device, runs, || {
        let _ = xt.clone().matmul(wsmall.clone());
    })?;
    let batched = median_us_batched(&device, runs, 10, || {
        let _ = xt.clone().matmul(wsmall.clone());
    })?;
    println!("{:<8} {:>5} {:>10.1} {:>9} {:>10} {:>14.1}   (Burn f32 matmul 1x256 · 256x64)", "mm-tiny", 1, us, "", "", batched);
    for (name, dtype) in [("f16", DType::F16), ("f32", DType::F32)] {
        let wt = Tensor::<2>::random([IN, OUT], Distribution::Default, &device).cast(dtype);
        let mb = (OUT * IN * dtype.size()) as f64 / 1e6;
        for &m in &ms {
            let x = Tensor::<2>::random([m, IN], Distribution::Default, &device).cast(dtype);
            let us = median_us(&device, runs, || {
                let _ = x.clone().matmul(wt.clone());
            })?;
            let batched = median_us_batched(&device, runs, 10, || {
                let _ = x.clone().matmul(wt.clone());
            })?;
            println!("{:<8} {:>5} {:>10.1} {:>9.0} {:>10.1} {:>14.1}", format!("dense-{name}"), m, us, mb * 1e6 / us / 1e3, mb, batched);
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    burn_quant::error::exit_code(run())
}
