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

backend_tests!(
    tall_weight_one_token,
    record_round_trip_inside_a_derived_module,
    fused_parts_keep_their_types,
    bias_is_added,
    residual_is_added,
    gradient_flows_to_the_input,
    moves_between_devices,
    bad_shapes_are_errors,
);
