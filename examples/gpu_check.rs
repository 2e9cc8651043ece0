//! Correctness of the GPU kernels against the repo's fixtures, then (with `--bench`) the GPU
//! benchmark: the one binary `scripts/gpu-check.sh` carries to the GPU machine.
//!
//! `cargo run --release --features cuda --example gpu_check [-- --backend cuda --bench --runs 50]`
//! `... --example gpu_check -- --backend cuda --shape 8b` runs examples/qwen3_bench.rs instead;
//! `--bench-only` runs the benchmark without the checks; `--attention-only` the prompt attention's checks alone.
//!
//! Checks (each against the reference data of tests/fixtures, made by ggml / AutoGPTQ / AutoAWQ /
//! llama.cpp): device decode bit-exact for all 13 GGUF types; `x · Wᵀ` within 1e-5 (relative) of
//! the float64 reference for m = 1, 3, 17 and for 61 of the 64 rows; leading batch dims; the input
//! gradient under Autodiff; every GPTQ and AWQ linear (bit-exact weight, 1e-5 product) and their
//! whole Qwen3 (logits within 1e-3 of llama.cpp's F32 ones, greedy tokens); and, when
//! `tests/fixtures/qwen3-tiny` is present, the tiny Qwen3's logits against llama.cpp's F32
//! reference (top-64 within 1e-3) and greedy tokens.

#[allow(dead_code)]
#[path = "gpu_bench.rs"]
mod bench;
#[allow(dead_code)]
#[path = "qwen3_bench.rs"]
mod qwen3_bench;
#[path = "../tests/common/attention_ref.rs"]
mod attention_ref;

use std::path::PathBuf;

use burn::tensor::{Device, Tensor, TensorData};
use burn_quant::device::device_by_name;
use burn_quant::gguf::GgufFile;
use burn_quant::import::HfCheckpoint;
use burn_quant::models::qwen3::{Qwen3, Sampler, Sampling, logits_to_vec, sampling::argmax};
use burn_quant::{Error, GgmlType, QuantLinear, Result};

const NAMES: [&str; 13] = ["f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_K", "q3_K", "q4_K", "q5_K", "q6_K"];

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

struct Refs(Vec<u8>);

impl Refs {
    fn open(rel: &str) -> Result<Self> {
        let p = fixture(rel);
        Ok(Refs(std::fs::read(&p).map_err(|e| Error::Io { path: p.display().to_string(), source: e })?))
    }
    fn get(&self, name: &str) -> Result<(Vec<u8>, Vec<usize>)> {
        let st = safetensors::SafeTensors::deserialize(&self.0).map_err(|e| Error::SafeTensors(e.to_string()))?;
        let t = st.tensor(name).map_err(|_| Error::NotFound(name.into()))?;
        Ok((t.data().to_vec(), t.shape().to_vec()))
    }
    fn f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let (b, s) = self.get(name)?;
        Ok((b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(), s))
    }
    fn i32(&self, name: &str) -> Result<Vec<i32>> {
        Ok(self.get(name)?.0.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }
}

fn host<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| Error::Invalid(format!("{e:?}")))
}

/// Whether `device` is the CUDA backend (whose prefill path runs on f16 tensor cores).
fn backend_is_cuda(device: &Device) -> bool {
    format!("{device:?}").to_lowercase().contains("cuda")
}

fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((*x as f64) - (*y as f64)).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    if a.len() != b.len() { f64::INFINITY } else { (num / den).sqrt() }
}

/// Records one named check.
struct Report {
    rows: Vec<(String, bool, String)>,
}

impl Report {
    fn check(&mut self, name: String, ok: bool, detail: String) {
        println!("{:<6} {name:<52} {detail}", if ok { "PASS" } else { "FAIL" });
        self.rows.push((name, ok, detail));
    }
}

fn gguf_blocks(device: &Device, rep: &mut Report) -> Result<()> {
    let g = GgufFile::open(fixture("gguf-blocks/blocks.gguf"))?;
    let r = Refs::open("gguf-blocks/blocks-ref.safetensors")?;
    for name in NAMES {
        let t = format!("w.{name}");
        let info = g.tensor(&t)?;
        let bytes = g.tensor_data(&t)?;
        let layer = QuantLinear::from_gguf_bytes(info.kind, bytes, 64, 512, device)?;
        let got = host(layer.dequantize())?;
        let (want, _) = r.f32(&format!("{t}.dequant"))?;
        let bad = got.iter().zip(&want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        rep.check(format!("{t} decode bit-exact"), bad == 0 && got.len() == want.len(), format!("{bad} values differ"));
        let odd = QuantLinear::from_gguf_bytes(info.kind, &bytes[..61 * bytes.len() / 64], 61, 512, device)?;
        let (mut worst, mut worst_prefill) = (0f64, 0f64);
        for m in [1usize, 3, 17] {
            let (x, _) = r.f32(&format!("x.m{m}"))?;
            let (want, _) = r.f32(&format!("{t}.y.m{m}"))?;
            let xt = Tensor::<2>::from_data(TensorData::new(x, [m, 512]), device);
            let want61: Vec<f32> = want.chunks_exact(64).flat_map(|row| row[..61].to_vec()).collect();
            let e = rel_err(&host(layer.forward(xt.clone()))?, &want).max(rel_err(&host(odd.forward(xt))?, &want61));
            if m <= 8 { worst = worst.max(e) } else { worst_prefill = worst_prefill.max(e) }
        }
        rep.check(format!("{t} matmul m=1,3 (64 and 61 rows), f32"), worst <= 1e-5, format!("max rel. error {worst:.2e}"));
        // m = 17 takes the prefill path: on CUDA, f16 tiles on the tensor cores (issue 3's f16
        // bound, 2e-3); elsewhere the f32 tiled kernel (1e-5).
        let bound = if backend_is_cuda(device) { 2e-3 } else { 1e-5 };
        rep.check(format!("{t} matmul m=17 (64 and 61 rows), ≤ {bound:.0e}"), worst_prefill <= bound, format!("max rel. error {worst_prefill:.2e}"));
    }
    // A weight tall enough for the widest decode launch (8 rows per thread at one token row),
    // and the tensor-core decode kernel at 1, 5 and 16 token rows (16,411 rows: not a multiple
    // of its 16-row tile), Q4_K and int4 groups of 128, against a float64 product with the CPU
    // reference decode. All of these paths are exact f32 (hi/lo f16 input split on the tensor
    // cores), hence 1e-5.
    {
        let (rows, k) = (16_411usize, 512usize);
        let src: Vec<f32> = (0..rows * k).map(|i| ((i.wrapping_mul(2_654_435_761) >> 7) % 2001) as f32 / 1000.0 - 1.0).collect();
        let x: Vec<f32> = (0..16 * k).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        let q4k = (GgmlType::Q4_K, burn_quant::format::quantize::quantize(GgmlType::Q4_K, &src)?);
        let i4 = burn_quant::format::Int4Matrix {
            out_features: rows,
            in_features: k,
            group: 128,
            codes: (0..rows * k).map(|i| ((i.wrapping_mul(2_246_822_519) >> 9) % 16) as u8).collect(),
            scales: (0..rows * k / 128).map(|i| half::f16::from_f32(0.001 + ((i * 37) % 100) as f32 * 1e-4)).collect(),
            zeros: (0..rows * k / 128).map(|i| ((i * 5) % 17) as u8).collect(),
        }
        .to_blocks()?;
        for (kind, bytes) in [q4k, i4] {
            let w = burn_quant::format::dequantize(kind, &bytes, rows, k)?;
            let layer = QuantLinear::from_gguf_bytes(kind, &bytes, rows, k, device)?;
            for m in [1usize, 5, 16] {
                let e = forward_err(&layer, &x[..m * k], &w, k, device)?;
                rep.check(format!("{} {rows}×{k} m={m} (widest decode launches), f32", kind.name()), e <= 1e-5, format!("rel. error {e:.2e}"));
            }
            check_input_ops(device, rep, &layer, &w, k, &[1, 5, 40])?;
        }
    }
    // The prefill path at a size with partial tiles on both sides (300 weight rows, 200 tokens)
    // and a reduction long enough to be split (4,096), Q4_K, Q6_K (stored as Q6_Kx4) and int4
    // groups of 128 and 64, against
    // float64; on CUDA the f16 tensor-core route (2e-3), elsewhere f32 (1e-5).
    {
        let (rows, k, m) = (300usize, 4096usize, 200usize);
        let src: Vec<f32> = (0..rows * k).map(|i| ((i.wrapping_mul(2_654_435_761) >> 7) % 2001) as f32 / 1000.0 - 1.0).collect();
        let x: Vec<f32> = (0..m * k).map(|i| ((i.wrapping_mul(7919) >> 3) % 1000) as f32 / 500.0 - 1.0).collect();
        let h = |v: &[f32]| -> Vec<f32> { v.iter().map(|a| half::f16::from_f32(*a).to_f32()).collect() };
        let bound = if backend_is_cuda(device) { 2e-3 } else { 1e-5 };
        let mut weights = vec![];
        for kind in [GgmlType::Q4_K, GgmlType::Q6_K] {
            weights.push((kind, burn_quant::format::quantize::quantize(kind, &src)?));
        }
        // int4 groups of 128 and 64 (GPTQ/AWQ's layouts after repacking), random codes and zeros.
        for group in [128usize, 64] {
            let i4 = burn_quant::format::Int4Matrix {
                out_features: rows,
                in_features: k,
                group,
                codes: (0..rows * k).map(|i| ((i.wrapping_mul(2_246_822_519) >> 9) % 16) as u8).collect(),
                scales: (0..rows * k / group).map(|i| half::f16::from_f32(0.001 + ((i * 37) % 100) as f32 * 1e-4)).collect(),
                zeros: (0..rows * k / group).map(|i| ((i * 5) % 17) as u8).collect(),
            };
            weights.push(i4.to_blocks()?);
        }
        for (kind, bytes) in weights {
            let w = burn_quant::format::dequantize(kind, &bytes, rows, k)?;
            let layer = QuantLinear::from_gguf_bytes(kind, &bytes, rows, k, device)?;
            let y = host(layer.forward(Tensor::<2>::from_data(TensorData::new(x.clone(), [m, k]), device)))?;
            let want = f64_product(&x, &w, k);
            let e = rel_err(&y, &want);
            // What rounding both operands to f16 alone costs on this data (for the message).
            let e16 = rel_err(&f64_product(&h(&x), &h(&w), k), &want);
            rep.check(format!("{} {rows}×{k} m={m} prefill, ≤ {bound:.0e}", kind.name()), e <= bound, format!("rel. error {e:.2e} (f16-rounded operands in f64: {e16:.2e})"));
        }
    }
    // Q6_K rows of a multiple of 1024 are stored regrouped (Q6_Kx4): ggml's blocks from the
    // fixture as 15 rows of 2048 (bit-exact decode, the three paths against a float64 product of
    // ggml's decode), and a weight of 4,099 × 2048 for the widest one-row launch and the decode
    // kernel at 5 and 8 token rows.
    {
        let (rows, k) = (15usize, 2048usize);
        let bytes = &g.tensor_data("w.q6_K")?[..rows * 4 * GgmlType::Q6_K.row_bytes(512)?];
        let (dq, _) = r.f32("w.q6_K.dequant")?;
        let (x3, _) = r.f32("x.m17")?;
        let x: Vec<f32> = x3.chunks_exact(512).flat_map(|row| (0..4).flat_map(move |c| row.iter().map(move |v| v * (1.0 + c as f32 / 4.0)))).collect();
        check_q6kx4(device, rep, bytes, &dq[..rows * k], rows, k, &x, &[1, 3, 17])?;
        let (rows, k) = (4_099usize, 2048usize);
        let src: Vec<f32> = (0..rows * k).map(|i| ((i.wrapping_mul(2_654_435_761) >> 7) % 2001) as f32 / 1000.0 - 1.0).collect();
        let bytes = burn_quant::format::quantize::quantize(GgmlType::Q6_K, &src)?;
        let w = burn_quant::format::dequantize(GgmlType::Q6_K, &bytes, rows, k)?;
        let x: Vec<f32> = (0..8 * k).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        check_q6kx4(device, rep, &bytes, &w, rows, k, &x, &[1, 5, 8])?;
        check_input_ops(device, rep, &QuantLinear::from_gguf_bytes(GgmlType::Q6_K, &bytes, rows, k, device)?, &w, k, &[1, 5, 40])?;
        // A Q4_K part then this Q6_K one as one projection (q/k and v of a Q4_K_M file): one
        // launch for both parts at one token row.
        let qk = burn_quant::format::quantize::quantize(GgmlType::Q4_K, &src[..3_000 * k])?;
        let mut wf = burn_quant::format::dequantize(GgmlType::Q4_K, &qk, 3_000, k)?;
        wf.extend_from_slice(&w);
        let fused = QuantLinear::from_gguf_fused(&[(GgmlType::Q4_K, &qk, 3_000), (GgmlType::Q6_K, &bytes, rows)], k, device)?;
        check_input_ops(device, rep, &fused, &wf, k, &[1, 5, 40])?;
    }
    // Leading dims, and the input gradient under Autodiff (g · W against the f64 product with
    // ggml's dequantized weight).
    let info = g.tensor("w.q4_K")?;
    let layer = QuantLinear::from_gguf_bytes(info.kind, g.tensor_data("w.q4_K")?, 64, 512, device)?;
    let (x, _) = r.f32("x.m17")?;
    let (want, _) = r.f32("w.q4_K.y.m17")?;
    let y4 = layer.forward(Tensor::<4>::from_data(TensorData::new(x[..8 * 512].to_vec(), [2, 2, 2, 512]), device));
    let dims = y4.dims();
    let e = rel_err(&host(y4)?, &want[..8 * 64]);
    rep.check("q4_K leading dims [2, 2, 2, 512]".into(), dims == [2, 2, 2, 64] && e <= 1e-5, format!("{dims:?}, rel. error {e:.2e}"));
    let ad = device.clone().autodiff();
    let layer = QuantLinear::from_gguf_bytes(info.kind, g.tensor_data("w.q4_K")?, 64, 512, &ad)?;
    let xa = Tensor::<2>::from_data(TensorData::new(x[..3 * 512].to_vec(), [3, 512]), &ad).require_grad();
    let grads = layer.forward(xa.clone()).sum().backward();
    let dx = host(xa.grad(&grads).ok_or_else(|| Error::Invalid("no input gradient".into()))?)?;
    let (w, _) = r.f32("w.q4_K.dequant")?;
    let col: Vec<f32> = (0..512).map(|c| (0..64).map(|o| w[o * 512 + c] as f64).sum::<f64>() as f32).collect();
    let want: Vec<f32> = (0..3).flat_map(|_| col.clone()).collect();
    let e = rel_err(&dx, &want);
    rep.check("q4_K input gradient under Autodiff".into(), e <= 1e-5, format!("rel. error {e:.2e}"));
    Ok(())
}

/// The relative error of `layer`'s product with the token rows `x` (of `k`) against a float64
/// product with `w` (its decoded weight, rows of `k`).
fn forward_err(layer: &QuantLinear, x: &[f32], w: &[f32], k: usize, device: &Device) -> Result<f64> {
    let y = host(layer.forward(Tensor::<2>::from_data(TensorData::new(x.to_vec(), [x.len() / k, k]), device)))?;
    Ok(rel_err(&y, &f64_product(x, w, k)))
}

/// `x · wᵀ` in float64, rounded to f32 (`x` and `w` rows of `k` values).
fn f64_product(x: &[f32], w: &[f32], k: usize) -> Vec<f32> {
    x.chunks_exact(k)
        .flat_map(|xr| w.chunks_exact(k).map(move |r| r.iter().zip(xr).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() as f32))
        .collect()
}

/// The issues' bound on a product of `m` token rows on `device`: 2e-3 where CUDA's prefill takes
/// f16 operands (more than 16 rows), else 1e-5 (f32).
fn product_bound(device: &Device, m: usize) -> f64 {
    if m > 16 && backend_is_cuda(device) { 2e-3 } else { 1e-5 }
}

/// `forward_norm` and `forward_swiglu_add` of `layer` (decoded weight `w`, rows of `k`) at `ms`
/// token rows against float64 (the RMSNorm / SwiGLU done by the one-pass decode kernels as they
/// read the input, or composed where the tensor-core kernel runs): 1e-5; 2e-3 for a prefill on
/// CUDA (more than 16 rows), whose input the norm or SwiGLU kernel writes as f16 and whose
/// split slices are summed with the residual in one launch.
fn check_input_ops(device: &Device, rep: &mut Report, layer: &QuantLinear, w: &[f32], k: usize, ms: &[usize]) -> Result<()> {
    let name = format!("{} {}×{k}", layer.layout().parts[0].kind, layer.out_features());
    let rows = layer.out_features();
    let val = |i: usize, s: usize| ((i.wrapping_mul(s) >> 5) % 2001) as f32 / 1000.0 - 1.0;
    let gamma: Vec<f32> = (0..k).map(|i| 0.5 + val(i, 40_503)).collect();
    let eps = 1e-6f64;
    let mut norm = burn::nn::RmsNormConfig::new(k).with_epsilon(eps).init(device);
    norm.gamma = burn::module::Param::from_tensor(Tensor::from_data(TensorData::new(gamma.clone(), [k]), device));
    let product = |xin: &[f64], m: usize| -> Vec<f64> {
        (0..m).flat_map(|t| w.chunks_exact(k).map(move |r| r.iter().zip(&xin[t * k..(t + 1) * k]).map(|(a, b)| *a as f64 * b).sum::<f64>())).collect()
    };
    for &m in ms {
        let x: Vec<f32> = (0..m * k).map(|i| val(i, 7_919) * (1 + i / k) as f32).collect();
        let xn: Vec<f64> = x
            .chunks_exact(k)
            .flat_map(|r| {
                let inv = 1.0 / (r.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / k as f64 + eps).sqrt();
                r.iter().zip(&gamma).map(move |(v, g)| *v as f64 * inv * *g as f64).collect::<Vec<_>>()
            })
            .collect();
        let want: Vec<f32> = product(&xn, m).into_iter().map(|v| v as f32).collect();
        let y = host(layer.forward_norm(Tensor::<2>::from_data(TensorData::new(x, [m, k]), device), &norm))?;
        let e = rel_err(&y, &want);
        let bound = product_bound(device, m);
        rep.check(format!("{name} RMSNorm in the product, m={m}, ≤ {bound:.0e}"), e <= bound, format!("rel. error {e:.2e}"));
        let gu: Vec<f32> = (0..m * 2 * k).map(|i| 3.0 * val(i, 104_729)).collect();
        let res: Vec<f32> = (0..m * rows).map(|i| val(i, 15_485_863)).collect();
        let act: Vec<f64> = gu
            .chunks_exact(2 * k)
            .flat_map(|r| (0..k).map(move |j| r[j] as f64 / (1.0 + (-(r[j] as f64)).exp()) * r[k + j] as f64))
            .collect();
        let want: Vec<f32> = product(&act, m).into_iter().zip(&res).map(|(v, r)| (v + *r as f64) as f32).collect();
        let gt = Tensor::<2>::from_data(TensorData::new(gu, [m, 2 * k]), device);
        let y = host(layer.forward_swiglu_add(gt, Tensor::<2>::from_data(TensorData::new(res, [m, rows]), device)))?;
        let e = rel_err(&y, &want);
        rep.check(format!("{name} SwiGLU in the product + residual, m={m}, ≤ {bound:.0e}"), e <= bound, format!("rel. error {e:.2e}"));
    }
    Ok(())
}

/// A Q6_K weight (`bytes`, `rows × k`, `k` a multiple of 1024) through a layer, which stores it
/// as Q6_Kx4: its decode on the device against `w` (ggml's decode, bit for bit) and its products
/// with the first `m` rows of `x` against float64 (1e-5; 2e-3 where CUDA's prefill takes f16).
#[allow(clippy::too_many_arguments)]
fn check_q6kx4(device: &Device, rep: &mut Report, bytes: &[u8], w: &[f32], rows: usize, k: usize, x: &[f32], ms: &[usize]) -> Result<()> {
    let layer = QuantLinear::from_gguf_bytes(GgmlType::Q6_K, bytes, rows, k, device)?;
    let stored = layer.layout().parts[0].kind;
    let got = host(layer.dequantize())?;
    let bad = got.iter().zip(w).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    rep.check(format!("Q6_K as {stored} {rows}×{k} decode bit-exact"), stored == GgmlType::Q6_Kx4 && bad == 0 && got.len() == w.len(), format!("{bad} values differ"));
    for &m in ms {
        let e = forward_err(&layer, &x[..m * k], w, k, device)?;
        let bound = product_bound(device, m);
        rep.check(format!("Q6_K as {stored} {rows}×{k} m={m}, ≤ {bound:.0e}"), e <= bound, format!("rel. error {e:.2e}"));
    }
    Ok(())
}

fn int4(device: &Device, rep: &mut Report, dir: &str) -> Result<()> {
    let ckpt = HfCheckpoint::open(fixture(dir))?;
    let r = Refs::open(&format!("{dir}/reference.safetensors"))?;
    let (mut bad, mut worst) = (0usize, 0f64);
    for p in ckpt.quantized_linears() {
        let layer = QuantLinear::from_linear_weights(&ckpt.linear(p)?, device)?;
        let (want, _) = r.f32(&format!("{p}.weight"))?;
        bad += host(layer.dequantize())?.iter().zip(&want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        let (x, xs) = r.f32(&format!("{p}.x"))?;
        let (y, _) = r.f32(&format!("{p}.y"))?;
        worst = worst.max(rel_err(&host(layer.forward(Tensor::<2>::from_data(TensorData::new(x, [xs[0], xs[1]]), device)))?, &y));
    }
    rep.check(format!("{dir}: 14 linears, weights bit-exact"), bad == 0, format!("{bad} values differ"));
    rep.check(format!("{dir}: 14 linears, x·Wᵀ (m=4)"), worst <= 1e-5, format!("max rel. error {worst:.2e}"));
    // The whole Qwen3 of the checkpoint against llama.cpp's F32 logits and greedy tokens.
    let model = Qwen3::from_hf(&ckpt, device)?;
    let tokens: Vec<u32> = r.i32("tokens")?.iter().map(|&t| t as u32).collect();
    let (want, _) = r.f32("logits")?;
    let got = logits_to_vec(model.forward_tokens(&tokens, &mut model.cache(), true)?)?;
    let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    // Issue 4/5's criterion is 1e-3 relative. (On CUDA, Burn's own f32 matmul — used by the
    // attention — runs in TF32, which moves logits by ~1e-2 absolute; the quantized matmuls are
    // exact f32. The CPU and wgpu tests also hold the 1e-3 absolute bound.)
    let rel = rel_err(&got, &want);
    rep.check(
        format!("{dir}: Qwen3 logits [24, 4096]"),
        got.len() == want.len() && rel <= 1e-3,
        format!("rel. error {rel:.2e}, max abs diff {diff:.2e}"),
    );
    let greedy: Vec<u32> = r.i32("greedy_tokens")?.iter().map(|&t| t as u32).collect();
    let out = model.generate(&tokens, greedy.len(), &mut Sampler::new(Sampling::Greedy, 0), &[], |_| Ok(true))?;
    rep.check(format!("{dir}: Qwen3 greedy tokens"), out.tokens == greedy, format!("{:?}", out.tokens));
    // The recorded decode step (CUDA graph, fused norm/RoPE/attention kernels, device-held
    // position) against eager steps through the same cache, token after token. The eager steps'
    // attention is Burn's (TF32 matmuls on CUDA), hence the model-level 1e-3 bound.
    let (head, tail) = tokens.split_at(4);
    let mut eager = model.cache();
    model.forward_tokens(head, &mut eager, false)?;
    let mut graphed = model.cache();
    model.forward_tokens(head, &mut graphed, false)?;
    let mut graph = model.decode_graph(graphed, tokens.len())?;
    let mut worst = 0f64;
    let mut fed_ok = true;
    for &t in tail {
        let want = logits_to_vec(model.forward_tokens(&[t], &mut eager, false)?)?;
        let got = logits_to_vec(graph.step(t)?)?;
        worst = worst.max(rel_err(&got, &want));
        // The argmax the step took on the device is the host's argmax of its logits.
        fed_ok &= graph.fed_token()? as usize == burn_quant::models::qwen3::sampling::argmax(&got);
    }
    rep.check(
        format!("{dir}: Qwen3 decode graph vs eager steps"),
        graph.is_recorded() && worst <= 1e-3 && fed_ok,
        format!("{} steps, recorded {}, max rel. error {worst:.2e}, device argmax = host argmax {fed_ok}", tail.len(), graph.is_recorded()),
    );
    Ok(())
}

/// `ops::rms_norm` against float64 on rows that take the held-in-registers kernel (4,096 and
/// 1,028 values, three rows) and one that takes the two-pass kernel (20,000).
fn rms_norm(device: &Device, rep: &mut Report) -> Result<()> {
    for n in [4096usize, 1028, 20_000] {
        let rows = 3;
        let x: Vec<f32> = (0..rows * n).map(|i| ((i * 37) % 41) as f32 * 0.05 - 1.0 + (i / n) as f32).collect();
        let gamma: Vec<f32> = (0..n).map(|j| 0.25 + (j % 7) as f32 * 0.2).collect();
        let mut want = vec![0f32; x.len()];
        for r in 0..rows {
            let row = &x[r * n..][..n];
            let inv = 1.0 / (row.iter().map(|v| *v as f64 * *v as f64).sum::<f64>() / n as f64 + 1e-6).sqrt();
            for j in 0..n {
                want[r * n + j] = (row[j] as f64 * inv * gamma[j] as f64) as f32;
            }
        }
        let got = host(burn_quant::ops::rms_norm(
            Tensor::<2>::from_data(TensorData::new(x, [rows, n]), device),
            Tensor::<1>::from_data(TensorData::new(gamma, [n]), device),
            1e-6,
        ))?;
        let e = rel_err(&got, &want);
        rep.check(format!("rms_norm {rows}×{n}, f32"), e <= 1e-5, format!("rel. error {e:.2e}"));
    }
    Ok(())
}

/// `ops::greedy_feed` on a vocabulary-sized row (151,936 logits, a tie of the maximum split
/// across the kernel's cubes) with the device's 4-byte ids and with 8-byte ones (a high word to
/// clear): the host's argmax and the position advanced.
fn greedy_feed(device: &Device, rep: &mut Report) -> Result<()> {
    use burn::tensor::{DType, Int};
    let n = 151_936usize;
    let mut row: Vec<f32> = (0..n).map(|i| ((i * 7919) % 10007) as f32 * 1e-3 - 5.0).collect();
    for i in [150_000, 90_001, 1_025] {
        row[i] = 11.0;
    }
    let want = argmax(&row) as i64;
    for wide in [false, true] {
        let int = |v: i64| match wide {
            true => Tensor::<1, Int>::from_data(TensorData::new(vec![v], [1]), (device, DType::I64)),
            false => Tensor::<1, Int>::from_data(TensorData::new(vec![v], [1]), device),
        };
        let logits = Tensor::<2>::from_data(TensorData::new(row.clone(), [1, n]), device);
        let (token, pos) = burn_quant::ops::greedy_feed(logits, int(if wide { 3 + (9 << 32) } else { 3 }), int(99));
        let read = |t: Tensor<1, Int>| t.into_data().convert::<i64>().try_to_vec::<i64>().map_err(|e| Error::Invalid(format!("{e:?}")));
        let (got, p) = (read(token)?, read(pos)?);
        rep.check(format!("greedy_feed {n} logits, 8-byte ids {wide}"), got == vec![want] && p == vec![100], format!("id {got:?} (host {want}), position {p:?}"));
    }
    Ok(())
}

/// A prompt's attention op (`ops::attention_prompt`) at the model shapes' head size (128)
/// against float64: the 0.6B's groups (16 query heads over 8) with 300 tokens after 5 positions
/// held (19 row blocks of 32, the last partial; 10 key tiles), the 8B's (32 over 8) with 77
/// tokens from position 0, and a batch of two sequences (20 tokens after 3). Both attention
/// kernels: the tensor-core one (the default where the device has the f16 `mma`; f16 operands,
/// held to the issues' f16 bound 2e-3) and the f32 SIMT one (`BURN_QUANT_ATTN_MMA=0`, 1e-5).
fn attention_prompt(device: &Device, rep: &mut Report) -> Result<()> {
    for (mma, label, bound) in [(true, "default: f16 mma on CUDA", 2e-3), (false, "f32 SIMT", 1e-5)] {
        // SAFETY: the checks run on this one thread; the op reads the variable at each call.
        unsafe { std::env::set_var("BURN_QUANT_ATTN_MMA", if mma { "1" } else { "0" }) };
        attention_prompt_at(device, rep, label, bound)?;
    }
    // SAFETY: as above.
    unsafe { std::env::remove_var("BURN_QUANT_ATTN_MMA") };
    Ok(())
}

/// [`attention_prompt`]'s checks with the kernel the environment selects, held to `bound`.
fn attention_prompt_at(device: &Device, rep: &mut Report, label: &str, bound: f64) -> Result<()> {
    let (d, cap, eps) = (128usize, 512usize, 1e-6f64);
    // (batch, query heads, KV heads, positions held, tokens); the batch of two has 40 query rows
    // per KV head and sequence, so its blocks are partial.
    for (b, h, kvh, start, s) in [(1usize, 16usize, 8usize, 5usize, 300usize), (1, 32, 8, 0, 77), (2, 16, 8, 3, 20)] {
        let width = (h + 2 * kvh) * d;
        let val = |i: usize, m: usize| ((i * m + 7) % 37) as f32 * 0.05 - 0.9;
        let qkv: Vec<f32> = (0..b * s * width).map(|i| val(i, 29)).collect();
        let gq: Vec<f32> = (0..d).map(|j| 0.5 + j as f32 * 0.01).collect();
        let gk: Vec<f32> = (0..d).map(|j| 1.5 - j as f32 * 0.005).collect();
        let mut kc: Vec<f32> = (0..b * kvh * cap * d).map(|i| if (i / d) % cap < start { val(i, 13) } else { 50.0 }).collect();
        let mut vc: Vec<f32> = (0..b * kvh * cap * d).map(|i| if (i / d) % cap < start { val(i, 17) } else { 50.0 }).collect();
        let cache = |x: &[f32]| Tensor::<4>::from_data(TensorData::new(x.to_vec(), [b, kvh, cap, d]), device);
        let caches = (cache(&kc), cache(&vc));
        let (cos, sin) = attention_ref::rope_tables(start, s, d);
        let want = attention_ref::prompt_attention(&qkv, [&gq, &gk], [&mut kc, &mut vc], [b, s, h, kvh, d, cap], start, eps);
        let (out, k, _) = burn_quant::ops::attention_prompt(
            Tensor::<3>::from_data(TensorData::new(qkv, [b, s, width]), device),
            Tensor::<1>::from_data(TensorData::new(gq, [d]), device),
            Tensor::<1>::from_data(TensorData::new(gk, [d]), device),
            Tensor::<2>::from_data(TensorData::new(cos, [s, d / 2]), device),
            Tensor::<2>::from_data(TensorData::new(sin, [s, d / 2]), device),
            caches,
            start,
            [h, kvh],
            eps,
            1.0 / (d as f32).sqrt(),
        );
        let (e, ek) = (rel_err(&host(out)?, &want), rel_err(&host(k)?, &kc));
        rep.check(format!("attention_prompt {b}×{h}/{kvh} heads, {s} tokens after {start}, {label}"), e <= bound && ek <= 1e-5, format!("rel. error {e:.2e}, key cache {ek:.2e}"));
    }
    Ok(())
}

fn qwen3(device: &Device, rep: &mut Report) -> Result<()> {
    let path = fixture("qwen3-tiny/tiny-qwen3-Q4_K_M.gguf");
    if !path.exists() {
        println!("SKIP   qwen3-tiny (fixture not carried)");
        return Ok(());
    }
    let model = Qwen3::from_gguf(&GgufFile::open(path)?, device)?;
    let r = Refs::open("qwen3-tiny/logits-llamacpp.safetensors")?;
    let vocab = model.config.vocab_size;
    for i in 0..2 {
        let tokens: Vec<u32> = r.i32(&format!("prompt{i}.tokens"))?.iter().map(|&t| t as u32).collect();
        let logits = logits_to_vec(model.forward_tokens(&tokens, &mut model.cache(), true)?)?;
        let ids = r.i32(&format!("prompt{i}.f32_dequant.top64_ids"))?;
        let (top, _) = r.f32(&format!("prompt{i}.f32_dequant.top64_logits"))?;
        let (mut worst, mut top1) = (0f32, true);
        for p in 0..tokens.len() {
            let row = &logits[p * vocab..(p + 1) * vocab];
            for j in 0..64 {
                worst = worst.max((row[ids[p * 64 + j] as usize] - top[p * 64 + j]).abs());
            }
            top1 &= argmax(row) == ids[p * 64] as usize;
        }
        rep.check(format!("qwen3-tiny prompt{i} logits vs f32-dequant"), worst <= 1e-3 && top1, format!("top-64 max abs diff {worst:.2e}"));
        let want: Vec<u32> = r.i32(&format!("prompt{i}.f32_dequant.greedy_tokens"))?.iter().map(|&t| t as u32).collect();
        let got = model.generate(&tokens, 8, &mut Sampler::new(Sampling::Greedy, 0), &[], |_| Ok(true))?;
        rep.check(format!("qwen3-tiny prompt{i} greedy tokens"), got.tokens == want, format!("{:?}", got.tokens));
    }
    Ok(())
}

fn run() -> Result<bool> {
    let args: Vec<String> = std::env::args().collect();
    let backend = args.iter().position(|a| a == "--backend").and_then(|i| args.get(i + 1)).map_or("cuda", |s| s.as_str());
    if args.iter().any(|a| a == "--shape") {
        // Model-shape benchmark only (examples/qwen3_bench.rs).
        qwen3_bench::run()?;
        return Ok(true);
    }
    if args.iter().any(|a| a == "--bench-only") {
        bench::run()?;
        return Ok(true);
    }
    let device = device_by_name(backend)?;
    let mut rep = Report { rows: Vec::new() };
    if args.iter().any(|a| a == "--attention-only") {
        // The prompt attention's checks alone (to compare its variants quickly).
        attention_prompt(&device, &mut rep)?;
        return Ok(rep.rows.iter().all(|r| r.1));
    }
    println!("# correctness on {backend}");
    gguf_blocks(&device, &mut rep)?;
    for dir in ["gptq", "awq"] {
        if fixture(dir).exists() {
            int4(&device, &mut rep, dir)?;
        }
    }
    rms_norm(&device, &mut rep)?;
    greedy_feed(&device, &mut rep)?;
    attention_prompt(&device, &mut rep)?;
    qwen3(&device, &mut rep)?;
    let failed = rep.rows.iter().filter(|r| !r.1).count();
    println!("# {} checks, {failed} failed", rep.rows.len());
    if args.iter().any(|a| a == "--bench") {
        bench::run()?;
    }
    Ok(failed == 0)
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
