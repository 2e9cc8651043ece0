//! The `burn-quant` command line against the gguf-blocks fixture.

mod common;

use std::process::Command;

use common::{Ref, fixture, rel_err};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_burn-quant"))
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("burn-quant-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn read_f32(path: &std::path::Path, name: &str) -> (Vec<f32>, Vec<usize>) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::F32);
    (t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(), t.shape().to_vec())
}

#[test]
fn inspect_lists_metadata_and_tensors() {
    let out = bin().arg("inspect").arg(fixture("gguf-blocks/blocks.gguf")).output().unwrap();
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.contains("GGUF v3"), "{s}");
    assert!(s.contains("fixture.seed"), "{s}");
    assert!(s.lines().any(|l| l.starts_with("w.q4_K") && l.contains("Q4_K") && l.contains("[64, 512]") && l.contains("18432")), "{s}");
}

#[test]
fn dequant_writes_the_ggml_weight() {
    let out_path = tmp("w.safetensors");
    let st = bin()
        .args(["dequant"])
        .arg(fixture("gguf-blocks/blocks.gguf"))
        .args(["w.q3_K", "--out"])
        .arg(&out_path)
        .status()
        .unwrap();
    assert!(st.success());
    let (w, shape) = read_f32(&out_path, "weight");
    assert_eq!(shape, vec![64, 512]);
    let (want, _) = Ref::open("gguf-blocks/blocks-ref.safetensors").f32("w.q3_K.dequant");
    assert!(w.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()));
}

#[test]
fn matmul_runs_the_quantized_layer() {
    let r = Ref::open("gguf-blocks/blocks-ref.safetensors");
    let (x, _) = r.f32("x.m3");
    let x_path = tmp("x.safetensors");
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![3, 512], bytemuck::cast_slice(&x)).unwrap();
    safetensors::serialize_to_file([("x", view)], None, &x_path).unwrap();
    let y_path = tmp("y.safetensors");
    let st = bin()
        .arg("matmul")
        .arg(fixture("gguf-blocks/blocks.gguf"))
        .args(["w.q5_K", "--input"])
        .arg(&x_path)
        .arg("--out")
        .arg(&y_path)
        .status()
        .unwrap();
    assert!(st.success());
    let (y, shape) = read_f32(&y_path, "y");
    assert_eq!(shape, vec![3, 64]);
    let (want, _) = r.f32("w.q5_K.y.m3");
    assert!(rel_err(&y, &want) <= 1e-5);
}

#[test]
fn errors_are_one_line_and_nonzero() {
    let cases: Vec<Vec<String>> = vec![
        vec!["inspect".into(), "/nonexistent.gguf".into()],
        vec!["inspect".into(), fixture("gguf-blocks/README.md").display().to_string()],
        vec!["dequant".into(), fixture("gguf-blocks/blocks.gguf").display().to_string(), "nope".into(), "--out".into(), "/tmp/x".into()],
        vec!["matmul".into(), fixture("gguf-blocks/blocks.gguf").display().to_string(), "w.q4_K".into(), "--input".into(), "/nonexistent".into(), "--out".into(), "/tmp/y".into(), "--backend".into(), "tpu".into()],
        vec!["frobnicate".into()],
    ];
    for args in cases {
        let out = bin().args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.starts_with("burn-quant: "), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    let out = bin().args(["inspect"]).arg(fixture("gguf-blocks/README.md")).output().unwrap();
    assert_eq!(String::from_utf8(out.stderr).unwrap().lines().count(), 1);
}

/// A GPTQ checkpoint directory in place of a GGUF file: `dequant` writes the (out, in) weight in
/// the original column order, bit-exact with AutoGPTQ's dequantization.
#[test]
fn dequant_and_matmul_accept_a_checkpoint_directory() {
    let prefix = "model.layers.0.self_attn.q_proj";
    let out_path = tmp("gptq-w.safetensors");
    let st = bin().arg("dequant").arg(fixture("gptq")).arg(prefix).arg("--out").arg(&out_path).status().unwrap();
    assert!(st.success());
    let (w, shape) = read_f32(&out_path, "weight");
    let (want, want_shape) = Ref::open("gptq/reference.safetensors").f32(&format!("{prefix}.weight"));
    assert_eq!(shape, want_shape);
    assert!(w.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()));

    let refs = Ref::open("awq/reference.safetensors");
    let prefix = "model.layers.1.mlp.down_proj";
    let (x, xs) = refs.f32(&format!("{prefix}.x"));
    let x_path = tmp("awq-x.safetensors");
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, xs, bytemuck::cast_slice(&x)).unwrap();
    safetensors::serialize_to_file([("x", view)], None, &x_path).unwrap();
    let y_path = tmp("awq-y.safetensors");
    let st = bin().arg("matmul").arg(fixture("awq")).arg(prefix).arg("--input").arg(&x_path).arg("--out").arg(&y_path).status().unwrap();
    assert!(st.success());
    let (y, _) = read_f32(&y_path, "y");
    let (want, _) = refs.f32(&format!("{prefix}.y"));
    assert!(rel_err(&y, &want) <= 1e-5);

    let out = bin().arg("dequant").arg(fixture("awq")).arg("model.layers.0.nope").arg("--out").arg(&out_path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("model.layers.0.nope"), "{err}");
}
