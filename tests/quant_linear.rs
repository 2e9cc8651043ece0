//! QuantLinear as a Burn module: records, fused parts, bias, autodiff, errors.

mod common;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use burn_quant::gguf::GgufFile;
use burn_quant::{Error, GgmlType, QuantLinear, QuantLinearConfig};
use common::{Ref, fixture, rel_err};

/// A user model holding a QuantLinear among ordinary fields.
#[derive(Module, Debug)]
struct Net {
    proj: QuantLinear,
    head: burn::nn::Linear,
}

fn file() -> GgufFile {
    GgufFile::open(fixture("gguf-blocks/blocks.gguf")).unwrap()
}

fn x17(device: &Device) -> (Tensor<2>, Ref) {
    let r = Ref::open("gguf-blocks/blocks-ref.safetensors");
    let (x, _) = r.f32("x.m17");
    (Tensor::<2>::from_data(TensorData::new(x, [17, 512]), device), r)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

fn record_round_trip_inside_a_derived_module(device: Device) {
    let g = file();
    let proj = QuantLinear::from_gguf_bytes(GgmlType::Q6_K, g.tensor_data("w.q6_K").unwrap(), 64, 512, &device)
        .unwrap()
        .with_bias(&(0..64).map(|i| i as f32 * 0.01).collect::<Vec<_>>())
        .unwrap();
    let head = burn::nn::LinearConfig::new(64, 8).init(&device);
    let net = Net { proj, head };
    let (x, _) = x17(&device);
    let before = values(net.head.forward(net.proj.forward(x.clone())));

    let dir = std::env::temp_dir().join(format!("burn-quant-record-{}-{:?}", std::process::id(), std::thread::current().id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("net.bpk");
    net.save_file(&path).unwrap();

    // A fresh skeleton (zeroed blocks, fresh head) loads the record back.
    let skeleton = Net {
        proj: QuantLinearConfig::new(GgmlType::Q6_K, 64, 512).with_bias(true).init(&device).unwrap(),
        head: burn::nn::LinearConfig::new(64, 8).init(&device),
    };
    let zero = values(skeleton.proj.forward(x.clone()));
    assert!(zero.iter().all(|v| *v == 0.0), "skeleton starts at zero");
    let loaded = skeleton.load_file(&path);
    let after = values(loaded.head.forward(loaded.proj.forward(x)));
    assert_eq!(before, after, "outputs identical after the round trip");
    assert_eq!(loaded.proj.num_bytes(), 64 * GgmlType::Q6_K.row_bytes(512).unwrap());
    std::fs::remove_dir_all(&dir).ok();
}

fn fused_parts_keep_their_types(device: Device) {
    let g = file();
    let (x, r) = x17(&device);
    // q/k as Q4_K and v as Q6_K, as in a llama.cpp Q4_K_M attention projection.
    let fused = QuantLinear::from_gguf_fused(
        &[
            (GgmlType::Q4_K, g.tensor_data("w.q4_K").unwrap(), 64),
            (GgmlType::Q5_0, g.tensor_data("w.q5_0").unwrap(), 64),
            (GgmlType::Q6_K, g.tensor_data("w.q6_K").unwrap(), 64),
        ],
        512,
        &device,
    )
    .unwrap();
    assert_eq!(fused.out_features(), 192);
    let y = values(fused.forward(x));
    for (i, name) in ["q4_K", "q5_0", "q6_K"].iter().enumerate() {
        let (want, _) = r.f32(&format!("w.{name}.y.m17"));
        let got: Vec<f32> = y.chunks_exact(192).flat_map(|row| row[64 * i..64 * i + 64].to_vec()).collect();
        assert!(rel_err(&got, &want) <= 1e-5, "{name} part");
    }
}

fn bias_is_added(device: Device) {
    let g = file();
    let (x, r) = x17(&device);
    let bias: Vec<f32> = (0..64).map(|i| (i as f32 - 30.0) * 0.5).collect();
    let layer = QuantLinear::from_gguf_bytes(GgmlType::Q8_0, g.tensor_data("w.q8_0").unwrap(), 64, 512, &device)
        .unwrap()
        .with_bias(&bias)
        .unwrap();
    let (mut want, _) = r.f32("w.q8_0.y.m17");
    for (i, w) in want.iter_mut().enumerate() {
        *w += bias[i % 64];
    }
    assert!(rel_err(&values(layer.forward(x)), &want) <= 1e-5);
}

/// `forward_add` (the residual in the product's epilogue on the cube backends' decode kernels,
/// added after the product elsewhere) against ggml's product plus the residual, for the types
/// with their own decode kernels and one on the generic kernel, at a decode (3) and a prefill
/// (17) token count; a residual of the wrong shape is an error; under Autodiff the residual's
/// gradient is the output's.
fn residual_is_added(device: Device) {
    let g = file();
    let r = Ref::open("gguf-blocks/blocks-ref.safetensors");
    for name in ["q4_K", "q6_K", "q8_0", "q5_0"] {
        let kind = GgmlType::from_name(name).unwrap();
        let layer = QuantLinear::from_gguf_bytes(kind, g.tensor_data(&format!("w.{name}")).unwrap(), 64, 512, &device).unwrap();
        for m in [3usize, 17] {
            let (x, _) = r.f32(&format!("x.m{m}"));
            let (mut want, _) = r.f32(&format!("w.{name}.y.m{m}"));
            let res: Vec<f32> = (0..m * 64).map(|i| ((i * 37) % 101) as f32 * 0.25 - 12.0).collect();
            for (w, v) in want.iter_mut().zip(&res) {
                *w += v;
            }
            let xt = Tensor::<3>::from_data(TensorData::new(x, [1, m, 512]), &device);
            let rt = Tensor::<3>::from_data(TensorData::new(res, [1, m, 64]), &device);
            let e = rel_err(&values(layer.forward_add(xt, rt)), &want);
            assert!(e <= 1e-5, "{name} m={m}: relative error {e:e}");
        }
        let xt = Tensor::<2>::zeros([3, 512], &device);
        assert!(matches!(layer.try_forward_add(xt, Tensor::<2>::zeros([3, 63], &device)), Err(Error::Shape(_))));
    }
    let ad = device.autodiff();
    let layer = QuantLinear::from_gguf_bytes(GgmlType::Q4_K, g.tensor_data("w.q4_K").unwrap(), 64, 512, &ad).unwrap();
    let rt = Tensor::<2>::from_data(TensorData::new(vec![0.5f32; 3 * 64], [3, 64]), &ad).require_grad();
    let c = Tensor::<2>::from_data(TensorData::new((0..3 * 64).map(|i| i as f32).collect::<Vec<_>>(), [3, 64]), &ad);
    let grads = (layer.forward_add(Tensor::<2>::ones([3, 512], &ad), rt.clone()) * c).sum().backward();
    let dr = values(rt.grad(&grads).unwrap());
    assert_eq!(dr, (0..3 * 64).map(|i| i as f32).collect::<Vec<_>>());
}

fn gradient_flows_to_the_input(device: Device) {
    let device = device.autodiff();
    let g = file();
    let r = Ref::open("gguf-blocks/blocks-ref.safetensors");
    let layer = QuantLinear::from_gguf_bytes(GgmlType::Q4_K, g.tensor_data("w.q4_K").unwrap(), 64, 512, &device).unwrap();
    let (xv, _) = r.f32("x.m3");
    let x = Tensor::<2>::from_data(TensorData::new(xv, [3, 512]), &device).require_grad();
    // d/dx sum(y ⊙ c) = c · W, with c[t, j] = j + 1 - t.
    let c: Vec<f32> = (0..3).flat_map(|t| (0..64).map(move |j| (j + 1) as f32 - t as f32)).collect();
    let ct = Tensor::<2>::from_data(TensorData::new(c.clone(), [3, 64]), &device);
    let loss = (layer.forward(x.clone()) * ct).sum();
    let grads = loss.backward();
    let dx = values(x.grad(&grads).expect("input gradient"));
    let (w, _) = r.f32("w.q4_K.dequant");
    let want: Vec<f32> = (0..3)
        .flat_map(|t| {
            let (c, w) = (&c, &w);
            (0..512).map(move |k| (0..64).map(|j| c[t * 64 + j] as f64 * w[j * 512 + k] as f64).sum::<f64>() as f32)
        })
        .collect();
    assert!(rel_err(&dx, &want) <= 1e-5, "{:e}", rel_err(&dx, &want));
}

fn moves_between_devices(device: Device) {
    let g = file();
    let (x, r) = x17(&device);
    let layer = QuantLinear::from_gguf_bytes(GgmlType::Q4_0, g.tensor_data("w.q4_0").unwrap(), 64, 512, &Device::default()).unwrap();
    let layer = layer.to_device(&device);
    let (want, _) = r.f32("w.q4_0.y.m17");
    assert!(rel_err(&values(layer.forward(x)), &want) <= 1e-5);
}

fn bad_shapes_are_errors(device: Device) {
    let g = file();
    let bytes = g.tensor_data("w.q4_K").unwrap();
    let err = QuantLinear::from_gguf_bytes(GgmlType::Q4_K, bytes, 63, 512, &device).unwrap_err();
    assert!(matches!(err, Error::ByteLength { expected: 18144, got: 18432, .. }), "{err}");
    let err = QuantLinear::from_gguf_bytes(GgmlType::Q4_K, bytes, 64, 500, &device).unwrap_err();
    assert!(matches!(err, Error::NotBlockAligned { cols: 500, block: 256, .. }), "{err}");
    let err = QuantLinear::from_gguf_bytes(GgmlType::IQ2_XS, bytes, 64, 512, &device).unwrap_err();
    assert!(matches!(err, Error::UnsupportedType(GgmlType::IQ2_XS)), "{err}");
    let layer = QuantLinear::from_gguf_bytes(GgmlType::Q4_K, bytes, 64, 512, &device).unwrap();
    let err = layer.try_forward(Tensor::<2>::zeros([2, 256], &device)).unwrap_err();
    assert!(matches!(err, Error::Shape(_)), "{err}");
    assert!(layer.clone().with_bias(&[0.0; 3]).is_err());
}

/// A weight tall enough (16,411 rows) that the GPU decode path takes its widest launch (8 rows
/// per thread at one token row) and a row count that is no multiple of it; the CPU backends take
/// their parallel AVX-512 path. Against a float64 matvec of the CPU reference decode.
fn tall_weight_one_token(device: Device) {
    let (rows, k) = (16_411usize, 512usize);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut rnd = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    let src: Vec<f32> = (0..rows * k).map(|_| rnd()).collect();
    let x: Vec<f32> = (0..k).map(|_| rnd()).collect();
    let bytes = burn_quant::format::quantize::quantize(GgmlType::Q4_K, &src).unwrap();
    let w = burn_quant::format::dequantize(GgmlType::Q4_K, &bytes, rows, k).unwrap();
    let want: Vec<f32> = w.chunks_exact(k).map(|r| r.iter().zip(&x).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() as f32).collect();
    let layer = QuantLinear::from_gguf_bytes(GgmlType::Q4_K, &bytes, rows, k, &device).unwrap();
    let got = values(layer.forward(Tensor::<2>::from_data(TensorData::new(x, [1, k]), &device)));
    let e = rel_err(&got, &want);
    assert!(e <= 1e-5, "relative error {e:e}");
}

/// Q8_0 (34-byte) and Q5_0 (22-byte) blocks start on a 4-byte boundary or 2 bytes past one, and
/// their decode kernels read them differently: rows of an odd number of blocks (so consecutive
/// rows alternate), alone and as a fused part that starts 2 bytes past a word (after one row of
/// Q4_0), at one and three token rows, against a float64 product with the CPU reference decode.
/// Q8_0 blocks come from the quantizer, Q5_0 blocks are random bytes under a sane scale.
fn two_byte_aligned_blocks_at_either_word_parity(device: Device) {
    let mut rnd = noise(0x0808_3434);
    for kind in [GgmlType::Q8_0, GgmlType::Q5_0] {
        for (rows, k) in [(37usize, 544usize), (5, 96)] {
            let bytes = if kind == GgmlType::Q8_0 {
                let src: Vec<f32> = (0..rows * k).map(|_| rnd()).collect();
                burn_quant::format::quantize::quantize(kind, &src).unwrap()
            } else {
                let mut v: Vec<u8> = (0..rows * k / 32 * 22).map(|_| ((rnd() + 1.0) * 128.0) as u8).collect();
                for blk in v.chunks_exact_mut(22) {
                    blk[..2].copy_from_slice(&half::f16::from_f32(0.02 + 0.01 * rnd()).to_le_bytes());
                }
                v
            };
            let w = burn_quant::format::dequantize(kind, &bytes, rows, k).unwrap();
            let head_src: Vec<f32> = (0..k).map(|_| rnd()).collect();
            let head = burn_quant::format::quantize::quantize(GgmlType::Q4_0, &head_src).unwrap();
            let hw = burn_quant::format::dequantize(GgmlType::Q4_0, &head, 1, k).unwrap();
            assert_eq!(head.len() % 4, 2, "the fused part starts 2 bytes past a word");
            let alone = QuantLinear::from_gguf_bytes(kind, &bytes, rows, k, &device).unwrap();
            let fused = QuantLinear::from_gguf_fused(&[(GgmlType::Q4_0, &head, 1), (kind, &bytes, rows)], k, &device).unwrap();
            for m in [1usize, 3] {
                let x: Vec<f32> = (0..m * k).map(|_| rnd()).collect();
                let product = |w: &[f32], n: usize| -> Vec<f32> {
                    x.chunks_exact(k).flat_map(|xr| w.chunks_exact(k).take(n).map(|wr| wr.iter().zip(xr).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() as f32).collect::<Vec<_>>()).collect()
                };
                let name = kind.name();
                let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [m, k]), &device);
                let e = rel_err(&values(alone.forward(xt.clone())), &product(&w, rows));
                assert!(e <= 1e-5, "{name} {rows}×{k} m={m}: relative error {e:e}");
                let both: Vec<f32> = hw.iter().chain(&w).copied().collect();
                let e = rel_err(&values(fused.forward(xt)), &product(&both, rows + 1));
                assert!(e <= 1e-5, "{name} fused {rows}×{k} m={m}: relative error {e:e}");
            }
        }
    }
}

/// A xorshift stream of values in [-1, 1) (deterministic test data).
fn noise(seed: u64) -> impl FnMut() -> f32 {
    let mut state = seed;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// A GPTQ int4 layer (symmetric, group 128) of random codes and scales.
fn gptq_layer(out: usize, inp: usize, device: &Device) -> QuantLinear {
    use burn_quant::format::gptq::{GptqTensors, GptqZeros};
    let mut rnd = noise(0x5151_2727);
    let mut qweight = vec![0i32; inp / 8 * out];
    for k in 0..inp {
        for n in 0..out {
            let code = ((rnd() + 1.0) * 8.0) as u32 & 15;
            qweight[(k / 8) * out + n] |= (code << (4 * (k % 8))) as i32;
        }
    }
    let groups = inp / 128;
    let qzeros: Vec<i32> = vec![0x7777_7777; groups * out / 8];
    let scales: Vec<half::f16> = (0..groups * out).map(|_| half::f16::from_f32(0.01 + 0.02 * rnd().abs())).collect();
    let t = GptqTensors { qweight: &qweight, qzeros: &qzeros, scales: &scales, g_idx: None };
    QuantLinear::from_gptq(t, out, inp, 128, GptqZeros::V1, device).unwrap()
}

/// `forward_norm` and `forward_swiglu_add` (the RMSNorm / SwiGLU done by the cube backends'
/// one-pass decode kernels as they read the input, composed of Burn's ops elsewhere and on the
/// other paths) against the same product in float64 on the host, from the layer's own
/// dequantized weight: for each type with a one-pass kernel (Q4_K, Q6_K regrouped to Q6_Kx4,
/// Q8_0, GPTQ int4), one on the generic kernel (Q4_0) and a Q4_K + Q6_K fused projection (one
/// launch for both parts), 40 rows (not a multiple of any
/// kernel's row group) of 2,048 inputs, at 1 token row (the fused one-pass kernels), 3 (the
/// tensor-core kernel where the device has one: composed) and 9 (the prefill path), with leading
/// batch dims.
fn input_ops_fuse_into_the_product(device: Device) {
    let (rows, k) = (40usize, 2048usize);
    let mut rnd = noise(0x9E37_79B9_7F4A_7C15);
    let src: Vec<f32> = (0..rows * k).map(|_| rnd()).collect();
    let mut layers: Vec<(&str, QuantLinear)> = [GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q8_0, GgmlType::Q4_0]
        .into_iter()
        .map(|kind| {
            let bytes = burn_quant::format::quantize::quantize(kind, &src).unwrap();
            (kind.name(), QuantLinear::from_gguf_bytes(kind, &bytes, rows, k, &device).unwrap())
        })
        .collect();
    layers.push(("gptq int4", gptq_layer(rows, k, &device)));
    // q/k in Q4_K and v in Q6_K as one projection (the cube backends' decode kernels take both
    // parts in one launch): 24 + 16 rows.
    let part = |kind, r: std::ops::Range<usize>| burn_quant::format::quantize::quantize(kind, &src[r.start * k..r.end * k]).unwrap();
    let (qk, v) = (part(GgmlType::Q4_K, 0..24), part(GgmlType::Q6_K, 24..rows));
    layers.push(("q4_K + q6_K fused", QuantLinear::from_gguf_fused(&[(GgmlType::Q4_K, &qk, 24), (GgmlType::Q6_K, &v, rows - 24)], k, &device).unwrap()));
    let gamma: Vec<f32> = (0..k).map(|_| 0.5 + rnd()).collect();
    let eps = 1e-6f64;
    let mut norm = burn::nn::RmsNormConfig::new(k).with_epsilon(eps).init(&device);
    norm.gamma = burn::module::Param::from_tensor(Tensor::from_data(TensorData::new(gamma.clone(), [k]), &device));
    for (name, layer) in &layers {
        let w: Vec<f64> = values(layer.dequantize()).into_iter().map(f64::from).collect();
        let product = |xin: &[f64], m: usize| -> Vec<f64> {
            (0..m).flat_map(|t| w.chunks_exact(k).map(move |row| row.iter().zip(&xin[t * k..(t + 1) * k]).map(|(a, b)| a * b).sum::<f64>())).collect()
        };
        for m in [1usize, 3, 9] {
            // Rows of different magnitudes, so each token's norm matters.
            let x: Vec<f32> = (0..m * k).map(|i| rnd() * (1 + i / k) as f32).collect();
            let xn: Vec<f64> = x
                .chunks_exact(k)
                .flat_map(|r| {
                    let ms = r.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / k as f64;
                    let inv = 1.0 / (ms + eps).sqrt();
                    r.iter().zip(&gamma).map(move |(v, g)| *v as f64 * inv * *g as f64).collect::<Vec<_>>()
                })
                .collect();
            let want: Vec<f32> = product(&xn, m).into_iter().map(|v| v as f32).collect();
            let xt = Tensor::<3>::from_data(TensorData::new(x, [1, m, k]), &device);
            let e = rel_err(&values(layer.forward_norm(xt, &norm)), &want);
            assert!(e <= 1e-5, "{name} norm m={m}: relative error {e:e}");

            let gu: Vec<f32> = (0..m * 2 * k).map(|_| 3.0 * rnd()).collect();
            let res: Vec<f32> = (0..m * rows).map(|_| rnd()).collect();
            let act: Vec<f64> = gu
                .chunks_exact(2 * k)
                .flat_map(|r| (0..k).map(move |j| {
                    let g = r[j] as f64;
                    g / (1.0 + (-g).exp()) * r[k + j] as f64
                }))
                .collect();
            let want: Vec<f32> = product(&act, m).into_iter().zip(&res).map(|(v, r)| (v + *r as f64) as f32).collect();
            let gt = Tensor::<3>::from_data(TensorData::new(gu, [1, m, 2 * k]), &device);
            let rt = Tensor::<3>::from_data(TensorData::new(res, [1, m, rows]), &device);
            let e = rel_err(&values(layer.forward_swiglu_add(gt, rt)), &want);
            assert!(e <= 1e-5, "{name} swiglu m={m}: relative error {e:e}");
        }
        let bad = Tensor::<2>::zeros([1, k], &device);
        assert!(matches!(layer.try_forward_swiglu_add(bad, Tensor::<2>::zeros([1, rows], &device)), Err(Error::Shape(_))), "{name}");
    }
    let short = burn::nn::RmsNormConfig::new(k / 2).init(&device);
    assert!(matches!(layers[0].1.try_forward_norm(Tensor::<2>::zeros([1, k], &device), &short), Err(Error::Shape(_))));
}

/// `with_int8_input` at 1, 3 and 13 token rows (13: past the decode path's 8, and not a
/// multiple of the prefill kernels' 4-row token tiles), for Q6_K and Q4_K: 61 rows of the
/// fixture's ggml-quantized weight of each type (k = 512; 61 is not a multiple of the kernels'
/// 4-row groups or 16-row tasks) and 13 rows quantized here at k = 2,048 (Q6_K stored as
/// Q6_Kx4); and a fused Q4_K + Q6_K layer. Where the int8 kernels run (the CPU backends on x86
/// with AVX2) each token row's product equals, within 1e-5, the float64 product of the weight
/// with that row rounded to int8 (`ActQ8K`), and is measurably not the f32 product; everywhere
/// else the flag changes nothing.
fn int8_input_matches_rounded_input(device: Device) {
    use burn_quant::format::act_q8k::ActQ8K;
    let g = file();
    let int8_runs = common::int8_kernels_run(&device);
    let check = |layer: QuantLinear, w: &[f32], rows: usize, k: usize, what: &str| {
        for m in [1usize, 3, 13] {
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 53) % 97) as f32 * 0.021 - 1.0 + (i / k) as f32 * 0.37).collect();
            let dot = |xs: &[f32]| -> Vec<f32> {
                xs.chunks_exact(k)
                    .flat_map(|xr| w.chunks_exact(k).map(move |r| r.iter().zip(xr).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() as f32))
                    .collect()
            };
            let rounded: Vec<f32> = x.chunks_exact(k).flat_map(|r| ActQ8K::quantize(r).dequantize()).collect();
            let (want_int8, want_f32) = (dot(&rounded), dot(&x));
            let got = values(layer.forward(Tensor::<2>::from_data(TensorData::new(x.clone(), [m, k]), &device)));
            assert_eq!(got.len(), m * rows, "{what} m = {m}");
            let (e8, e32) = (rel_err(&got, &want_int8), rel_err(&got, &want_f32));
            if int8_runs {
                assert!(e8 <= 1e-5, "{what} m = {m}: {e8:e} from the int8-input product");
                assert!(e32 > 1e-5, "{what} m = {m}: the f32 product ran ({e32:e} from it)");
            } else {
                assert!(e32 <= 1e-5, "{what} m = {m}: {e32:e} from the f32 product");
            }
        }
    };
    let mut parts = Vec::new();
    for (kind, name, block_bytes) in [(GgmlType::Q6_K, "w.q6_K", 210usize), (GgmlType::Q4_K, "w.q4_K", 144)] {
        let fixture_rows = &g.tensor_data(name).unwrap()[..61 * 2 * block_bytes];
        let mut next = noise(7);
        let w2048: Vec<f32> = (0..13 * 2048).map(|_| next()).collect();
        let quantized = burn_quant::format::quantize::quantize(kind, &w2048).unwrap();
        for (bytes, rows, k) in [(fixture_rows, 61usize, 512usize), (&quantized[..], 13, 2048)] {
            let w = burn_quant::format::dequantize(kind, bytes, rows, k).unwrap();
            let layer = QuantLinear::from_gguf_bytes(kind, bytes, rows, k, &device).unwrap().with_int8_input(true);
            assert!(layer.layout().int8_input);
            let stored = if kind == GgmlType::Q6_K && k % 1024 == 0 { GgmlType::Q6_Kx4 } else { kind };
            assert_eq!(layer.layout().parts[0].kind, stored);
            check(layer, &w, rows, k, &format!("{kind} k = {k}"));
        }
        parts.push((kind, fixture_rows, w_rows(kind, fixture_rows)));
    }
    // The fused layer: the 61 Q6_K rows, then the 61 Q4_K rows.
    let fused = QuantLinear::from_gguf_fused(&[(parts[0].0, parts[0].1, 61), (parts[1].0, parts[1].1, 61)], 512, &device).unwrap().with_int8_input(true);
    let w: Vec<f32> = parts.iter().flat_map(|p| p.2.clone()).collect();
    check(fused, &w, 122, 512, "fused Q6_K + Q4_K");
}

/// The dequantized 61 × 512 weight of `bytes`.
fn w_rows(kind: GgmlType, bytes: &[u8]) -> Vec<f32> {
    burn_quant::format::dequantize(kind, bytes, 61, 512).unwrap()
}

backend_tests!(
    int8_input_matches_rounded_input,
    input_ops_fuse_into_the_product,
    tall_weight_one_token,
    two_byte_aligned_blocks_at_either_word_parity,
    record_round_trip_inside_a_derived_module,
    fused_parts_keep_their_types,
    bias_is_added,
    residual_is_added,
    gradient_flows_to_the_input,
    moves_between_devices,
    bad_shapes_are_errors,
);
