//! CPU quantized matmul at llama.cpp's test-backend-ops shape (out=4096, in=14336) for
//! m = 1 (decode) and m = 512 (prefill), beside Burn's dense f32 matmul of the same shape.
//!
//! `cargo bench --bench cpu_matmul --features ndarray` (flex is the default backend).
//! Weights: 64 distinct rows quantized by the crate's ggml-exact quantizers, tiled to 4096 rows
//! (distinct addresses, so memory traffic is that of a real 4096-row weight).

use burn::tensor::{Device, Tensor, TensorData};
use burn_quant::format::quantize::quantize;
use burn_quant::{GgmlType, QuantLinear};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const OUT: usize = 4096;
const IN: usize = 14336;

fn weights(kind: GgmlType) -> Vec<u8> {
    weights_of(kind, OUT, IN)
}

/// `out` rows of `k` quantized in `kind`: 64 distinct rows tiled.
fn weights_of(kind: GgmlType, out: usize, k: usize) -> Vec<u8> {
    let mut state = 0x2545F4914F6CDD1Du64;
    let mut rnd = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
    };
    let src: Vec<f32> = (0..64 * k).map(|_| rnd()).collect();
    let q = quantize(kind, &src).expect("quantizable");
    q.repeat(out.div_ceil(64))[..q.len() / 64 * out].to_vec()
}

#[allow(deprecated)]
fn devices() -> Vec<(&'static str, Device)> {
    let mut v = Vec::new();
    #[cfg(feature = "flex")]
    v.push(("flex", Device::flex()));
    #[cfg(feature = "ndarray")]
    v.push(("ndarray", Device::ndarray()));
    v
}

fn input(m: usize, device: &Device) -> Tensor<2> {
    let x: Vec<f32> = (0..m * IN).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
    Tensor::<2>::from_data(TensorData::new(x, [m, IN]), device)
}

fn bench(c: &mut Criterion) {
    for m in [1usize, 512] {
        let mut g = c.benchmark_group(format!("matmul_{OUT}x{IN}_m{m}"));
        g.sample_size(10);
        for (dev_name, device) in devices() {
            let x = input(m, &device);
            for kind in [GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q8_0] {
                let layer = QuantLinear::from_gguf_bytes(kind, &weights(kind), OUT, IN, &device).expect("layer");
                g.throughput(Throughput::Bytes(layer.num_bytes() as u64));
                g.bench_function(BenchmarkId::new(format!("{dev_name}/{kind}"), m), |b| {
                    b.iter(|| layer.forward(x.clone()).into_data())
                });
                if m == 1 && kind != GgmlType::Q8_0 {
                    // The same with the input rounded to int8 (`with_int8_input`).
                    let layer = layer.with_int8_input(true);
                    g.bench_function(BenchmarkId::new(format!("{dev_name}/{kind}-int8"), m), |b| {
                        b.iter(|| layer.forward(x.clone()).into_data())
                    });
                }
            }
            let w = Tensor::<2>::from_data(TensorData::new(vec![0.01f32; OUT * IN], [IN, OUT]), &device);
            g.throughput(Throughput::Bytes((OUT * IN * 4) as u64));
            g.bench_function(BenchmarkId::new(format!("{dev_name}/f32-dense"), m), |b| {
                b.iter(|| x.clone().matmul(w.clone()).into_data())
            });
        }
        g.finish();
    }
    // The tiny Qwen3's prompt: a 128-token prefill through its 768×256 gate projection (Q4_K,
    // and Q6_K as some of its layers have), f32 and with the input rounded to int8
    // (`with_int8_input`, llama.cpp's arithmetic).
    let (out, k, m) = (768usize, 256usize, 128usize);
    let mut g = c.benchmark_group(format!("prefill_{out}x{k}_m{m}"));
    g.sample_size(30);
    g.throughput(Throughput::Elements((out * k * m) as u64));
    for (dev_name, device) in devices() {
        let x = Tensor::<2>::from_data(TensorData::new((0..m * k).map(|i| (i % 13) as f32 / 13.0 - 0.5).collect::<Vec<f32>>(), [m, k]), &device);
        for kind in [GgmlType::Q4_K, GgmlType::Q6_K] {
            let layer = QuantLinear::from_gguf_bytes(kind, &weights_of(kind, out, k), out, k, &device).expect("layer");
            g.bench_function(BenchmarkId::new(format!("{dev_name}/{kind}"), m), |b| b.iter(|| layer.forward(x.clone()).into_data()));
            let layer = layer.with_int8_input(true);
            g.bench_function(BenchmarkId::new(format!("{dev_name}/{kind}-int8"), m), |b| b.iter(|| layer.forward(x.clone()).into_data()));
        }
    }
    g.finish();
    // The tiny Qwen3's tied LM head (151,936 × 256 Q6_K, 32 MB), one token row: what the CPU
    // generation of tests/fixtures/qwen3-tiny spends most of its time in.
    let (out, k) = (151_936usize, 256usize);
    let mut g = c.benchmark_group(format!("lm_head_{out}x{k}_m1"));
    g.sample_size(20);
    for (dev_name, device) in devices() {
        let layer = QuantLinear::from_gguf_bytes(GgmlType::Q6_K, &weights_of(GgmlType::Q6_K, out, k), out, k, &device).expect("layer");
        let x = Tensor::<2>::from_data(TensorData::new((0..k).map(|i| (i % 13) as f32 / 13.0 - 0.5).collect::<Vec<f32>>(), [1, k]), &device);
        g.throughput(Throughput::Bytes(layer.num_bytes() as u64));
        g.bench_function(BenchmarkId::new(format!("{dev_name}/Q6_K"), 1), |b| b.iter(|| layer.forward(x.clone()).into_data()));
        // The same with the input rounded to int8 (`with_int8_input`, llama.cpp's arithmetic).
        let layer = layer.with_int8_input(true);
        g.bench_function(BenchmarkId::new(format!("{dev_name}/Q6_K-int8"), 1), |b| b.iter(|| layer.forward(x.clone()).into_data()));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
