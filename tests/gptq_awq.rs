//! GPTQ and AWQ int4 linears against the tiny checkpoints of tests/fixtures/{gptq,awq} (copied
//! from ../shared/fixtures: packed by AutoGPTQ 0.7.1 and AutoAWQ 0.2.9 themselves; the reference
//! weights are their own f32 dequantization).

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use burn_quant::format::gptq::{GptqTensors, GptqZeros};
use burn_quant::import::{HfCheckpoint, QuantMethod};
use burn_quant::{Error, QuantLinear};
use common::{Ref, fixture, rel_err};
use half::f16;

const LINEARS: [&str; 7] =
    ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"];

fn prefixes() -> Vec<String> {
    (0..2).flat_map(|l| LINEARS.iter().map(move |n| format!("model.layers.{l}.{n}"))).collect()
}

fn to_vec(t: Tensor<2>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32")
}

/// Every linear: the dequantized weight equals the reference bit for bit, and `x · Wᵀ` is within
/// 1e-5 (relative) of the float64 reference, for all of the reference's token rows and for the
/// first alone.
fn check_checkpoint(dir: &str, device: &Device) {
    let ckpt = HfCheckpoint::open(fixture(dir)).expect("checkpoint");
    let refs = Ref::open(&format!("{dir}/reference.safetensors"));
    assert_eq!(ckpt.quantized_linears().count(), 14);
    for p in prefixes() {
        let w = ckpt.linear(&p).expect("linear");
        let layer = QuantLinear::from_linear_weights(&w, device).expect("layer");
        let (want_w, shape) = refs.f32(&format!("{p}.weight"));
        assert_eq!(shape, vec![layer.out_features(), layer.in_features()], "{p}");
        let got_w = to_vec(layer.dequantize());
        let mismatches = got_w.iter().zip(&want_w).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(mismatches, 0, "{dir} {p}: dequantized weight differs in {mismatches} values");
        let (x, xs) = refs.f32(&format!("{p}.x"));
        let (want_y, _) = refs.f32(&format!("{p}.y"));
        // One token row alone takes the decode kernels' one-row path.
        let n = layer.out_features();
        let y1 = to_vec(layer.forward(Tensor::<2>::from_data(TensorData::new(x[..xs[1]].to_vec(), [1, xs[1]]), device)));
        let err1 = rel_err(&y1, &want_y[..n]);
        assert!(err1 <= 1e-5, "{dir} {p}: one row, rel. error {err1}");
        let y = to_vec(layer.forward(Tensor::<2>::from_data(TensorData::new(x, [xs[0], xs[1]]), device)));
        let err = rel_err(&y, &want_y);
        assert!(err <= 1e-5, "{dir} {p}: rel. error {err}");
    }
}

fn gptq_matches_autogptq(device: Device) {
    let ckpt = HfCheckpoint::open(fixture("gptq")).unwrap();
    assert!(matches!(ckpt.quant(), Some(QuantMethod::Gptq { bits: 4, group: Some(64), desc_act: true, .. })));
    let w = ckpt.linear("model.layers.0.self_attn.q_proj").unwrap();
    assert!(w.perm.is_some(), "the fixture is act-order: its columns must be reordered");
    check_checkpoint("gptq", &device);
}

fn awq_matches_autoawq(device: Device) {
    let ckpt = HfCheckpoint::open(fixture("awq")).unwrap();
    assert!(matches!(ckpt.quant(), Some(QuantMethod::Awq { bits: 4, group: Some(64), .. })));
    check_checkpoint("awq", &device);
}

/// Leading batch dims and the gradient with respect to the input through the permutation.
fn act_order_layer_batches_and_differentiates(device: Device) {
    let ckpt = HfCheckpoint::open(fixture("gptq")).unwrap();
    let refs = Ref::open("gptq/reference.safetensors");
    let p = "model.layers.1.mlp.down_proj";
    let w = ckpt.linear(p).unwrap();
    let (x, xs) = refs.f32(&format!("{p}.x"));
    let (want, _) = refs.f32(&format!("{p}.y"));
    let layer = QuantLinear::from_linear_weights(&w, &device).unwrap();
    let x3 = Tensor::<3>::from_data(TensorData::new(x.clone(), [2, 2, xs[1]]), &device);
    let y = layer.forward(x3).reshape([4, w.out_features]);
    assert!(rel_err(&to_vec(y), &want) <= 1e-5);

    // d(sum(y · g))/dx = g · W, W the reference weight in original column order.
    let ad = device.clone().autodiff();
    let layer = QuantLinear::from_linear_weights(&w, &ad).unwrap();
    let xa = Tensor::<2>::from_data(TensorData::new(x, [xs[0], xs[1]]), &ad).require_grad();
    let g: Vec<f32> = (0..4 * w.out_features).map(|i| ((i * 7919) % 13) as f32 / 13.0 - 0.5).collect();
    let gt = Tensor::<2>::from_data(TensorData::new(g.clone(), [4, w.out_features]), &ad);
    let grads = (layer.forward(xa.clone()) * gt).sum().backward();
    let dx = to_vec(xa.grad(&grads).expect("input gradient"));
    let (wref, _) = refs.f32(&format!("{p}.weight"));
    let (n, k) = (w.out_features, w.in_features);
    let mut want = vec![0f64; 4 * k];
    for t in 0..4 {
        for o in 0..n {
            for c in 0..k {
                want[t * k + c] += g[t * n + o] as f64 * wref[o * k + c] as f64;
            }
        }
    }
    let want: Vec<f32> = want.iter().map(|&v| v as f32).collect();
    assert!(rel_err(&dx, &want) <= 1e-5);
}

/// Packs codes/zeros/scales by the AutoGPTQ formula written out here independently, for the
/// configurations the fixture does not cover: asymmetric zeros, group size −1, the v2 zero
/// convention.
fn gptq_asym_single_group_and_v2(device: Device) {
    let (out, inp) = (16usize, 64usize);
    let code = |n: usize, k: usize| ((n * 5 + k * 3 + n * k) % 16) as u32;
    let zero = |n: usize| ((n * 3) % 15 + 1) as u32; // 1..=15, asymmetric
    let scale = |n: usize| f16::from_f32(0.01 * (n as f32 + 1.0));
    let mut qweight = vec![0i32; inp / 8 * out];
    for k in 0..inp {
        for n in 0..out {
            qweight[(k / 8) * out + n] |= (code(n, k) << (4 * (k % 8))) as i32;
        }
    }
    for (convention, stored) in [(GptqZeros::V1, 1u32), (GptqZeros::V2, 0u32)] {
        let mut qzeros = vec![0i32; out / 8];
        for n in 0..out {
            qzeros[n / 8] |= ((zero(n) - stored) << (4 * (n % 8))) as i32;
        }
        let scales: Vec<f16> = (0..out).map(scale).collect();
        let t = GptqTensors { qweight: &qweight, qzeros: &qzeros, scales: &scales, g_idx: None };
        let layer = QuantLinear::from_gptq(t, out, inp, inp, convention, &device).unwrap();
        assert!(layer.perm.is_none());
        let got = to_vec(layer.dequantize());
        for n in 0..out {
            for k in 0..inp {
                let want = scale(n).to_f32() * (code(n, k) as f32 - zero(n) as f32);
                assert_eq!(got[n * inp + k], want, "{convention:?} [{n}, {k}]");
            }
        }
    }
}

/// Hostile inputs are typed errors: a g_idx out of range, a group size that does not divide
/// `in_features`, wrong lengths, uneven groups.
fn bad_int4_inputs_are_errors(device: Device) {
    let (out, inp) = (8usize, 64usize);
    let qweight = vec![0i32; inp / 8 * out];
    let qzeros = vec![0i32; 2];
    let scales = vec![f16::ONE; 2 * out];
    let mut g_idx: Vec<i32> = (0..inp as i32).map(|k| k / 32).collect();
    g_idx[5] = 7;
    let t = GptqTensors { qweight: &qweight, qzeros: &qzeros, scales: &scales, g_idx: Some(&g_idx) };
    let err = QuantLinear::from_gptq(t, out, inp, 32, GptqZeros::V1, &device).unwrap_err();
    assert!(matches!(err, Error::Invalid(ref m) if m.contains("g_idx[5] = 7")), "{err}");
    let mut uneven = g_idx.clone();
    uneven[5] = 1; // group 1 now has 33 channels
    let t2 = GptqTensors { g_idx: Some(&uneven), ..t };
    assert!(QuantLinear::from_gptq(t2, out, inp, 32, GptqZeros::V1, &device).is_err());
    let t = GptqTensors { g_idx: None, ..t };
    let err = QuantLinear::from_gptq(t, out, inp, 48, GptqZeros::V1, &device).unwrap_err();
    assert!(matches!(err, Error::Shape(ref m) if m.contains("does not divide")), "{err}");
    let short = GptqTensors { qweight: &qweight[1..], ..t };
    assert!(matches!(QuantLinear::from_gptq(short, out, inp, 32, GptqZeros::V1, &device), Err(Error::Shape(_))));
    let ckpt = HfCheckpoint::open(fixture("awq")).unwrap();
    assert!(matches!(ckpt.linear("model.layers.9.mlp.up_proj"), Err(Error::NotFound(_))));
    assert!(matches!(HfCheckpoint::open(fixture("gguf-blocks")), Err(Error::Io { .. })));
}

backend_tests!(
    gptq_matches_autogptq,
    awq_matches_autoawq,
    act_order_layer_batches_and_differentiates,
    gptq_asym_single_group_and_v2,
    bad_int4_inputs_are_errors,
);
