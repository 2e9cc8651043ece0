//! Every error kind a file or a caller can cause, on small hand-made inputs: each is a typed
//! error (never a panic) whose message names the file, the tensor and the offending value.

mod common;

use burn::tensor::Device;
use burn_quant::error::Error;
use burn_quant::format::{dequantize, quantize::quantize, validate};
use burn_quant::gguf::{GgufFile, GgufWriter, Value, WriterTensor};
use burn_quant::import::HfCheckpoint;
use burn_quant::models::qwen3::Qwen3;
use burn_quant::{GgmlType, QuantLinear};
use safetensors::{Dtype, tensor::TensorView};

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("burn-quant-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n).map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / (1 << 24) as f32 - 0.5).collect()
}

/// The tensors of a one-layer Qwen3 at hidden 32 (Q8_0 weights, f32 norms).
fn mini_tensors() -> Vec<WriterTensor> {
    let w = |name: &str, rows: usize, cols: usize, seed: u32| WriterTensor {
        name: name.into(),
        shape: vec![rows, cols],
        kind: GgmlType::Q8_0,
        data: quantize(GgmlType::Q8_0, &values(rows * cols, seed)).unwrap(),
    };
    let norm = |name: &str| WriterTensor {
        name: name.into(),
        shape: vec![32],
        kind: GgmlType::F32,
        data: vec![1f32; 32].iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    let mut t = vec![w("token_embd.weight", 8, 32, 1), norm("output_norm.weight")];
    for (i, n) in ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"].iter().enumerate() {
        t.push(w(&format!("blk.0.{n}.weight"), 32, 32, i as u32 + 2));
    }
    for n in ["attn_norm", "ffn_norm", "attn_q_norm", "attn_k_norm"] {
        t.push(norm(&format!("blk.0.{n}.weight")));
    }
    t
}

/// Writes a one-layer Qwen3 GGUF with `edit` applied to its keys and tensors, and opens it.
fn mini_qwen3(name: &str, edit: impl FnOnce(&mut Vec<(String, Value)>, &mut Vec<WriterTensor>)) -> (std::path::PathBuf, GgufFile) {
    let mut meta: Vec<(String, Value)> = vec![("general.architecture".into(), Value::String("qwen3".into()))];
    for (k, v) in [
        ("block_count", 1u32),
        ("embedding_length", 32),
        ("feed_forward_length", 32),
        ("attention.head_count", 1),
        ("attention.head_count_kv", 1),
        ("attention.key_length", 32),
    ] {
        meta.push((format!("qwen3.{k}"), Value::U32(v)));
    }
    let mut tensors = mini_tensors();
    edit(&mut meta, &mut tensors);
    let mut w = GgufWriter::new();
    for (k, v) in meta {
        w = w.metadata(k, v);
    }
    for t in tensors {
        w = w.tensor(t).unwrap();
    }
    let path = tmp(name);
    w.write_to(&path).unwrap();
    let file = GgufFile::open(&path).unwrap();
    (path, file)
}

fn tensor<'a>(t: &'a mut [WriterTensor], name: &str) -> &'a mut WriterTensor {
    t.iter_mut().find(|t| t.name == name).unwrap()
}

/// f16 NaN, little-endian.
const F16_NAN: [u8; 2] = [0x00, 0x7E];

fn load_err(name: &str, edit: impl FnOnce(&mut Vec<(String, Value)>, &mut Vec<WriterTensor>)) -> (String, String) {
    let (path, file) = mini_qwen3(name, edit);
    let err = Qwen3::from_gguf(&file, &Device::default()).map(|_| ()).unwrap_err();
    (err.to_string(), path.display().to_string())
}

#[test]
fn the_unedited_mini_model_loads() {
    let (_, file) = mini_qwen3("ok.gguf", |_, _| {});
    let model = Qwen3::from_gguf(&file, &Device::default()).expect("the baseline loads, so each edit below is the cause");
    assert_eq!(model.config.num_layers, 1);
}

#[test]
fn gguf_model_errors_name_the_file_the_tensor_and_the_value() {
    // A NaN scale in block 3 of attn_v (Q8_0 at 32 columns: one block per row, so row 3).
    let (msg, path) = load_err("nan.gguf", |_, t| {
        let v = tensor(t, "blk.0.attn_v.weight");
        v.data[3 * 34..3 * 34 + 2].copy_from_slice(&F16_NAN);
    });
    for needle in [path.as_str(), "tensor blk.0.attn_v.weight", "Q8_0 block at row 3, column 0", "NaN"] {
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    }
    // An infinite norm weight.
    let (msg, path) = load_err("inf.gguf", |_, t| {
        tensor(t, "blk.0.ffn_norm.weight").data[4..8].copy_from_slice(&f32::INFINITY.to_le_bytes());
    });
    assert!(msg.contains(&path) && msg.contains("tensor blk.0.ffn_norm.weight") && msg.contains("finite"), "{msg}");
    // A weight whose shape disagrees with the config.
    let (msg, path) = load_err("shape.gguf", |_, t| {
        let q = tensor(t, "blk.0.attn_q.weight");
        q.shape = vec![16, 64];
    });
    assert!(msg.contains(&path) && msg.contains("tensor blk.0.attn_q.weight") && msg.contains("[16, 64]") && msg.contains("[32, 32]"), "{msg}");
    // A missing tensor.
    let (msg, path) = load_err("missing.gguf", |_, t| t.retain(|t| t.name != "blk.0.ffn_down.weight"));
    assert!(msg.contains(&path) && msg.contains("blk.0.ffn_down.weight") && msg.contains("not found"), "{msg}");
    // Hyper-parameters from the file that no real model has.
    let (msg, _) = load_err("layers.gguf", |m, _| {
        m.retain(|(k, _)| k != "qwen3.block_count");
        m.push(("qwen3.block_count".into(), Value::U64(1 << 40)));
    });
    assert!(msg.contains("num_layers 1099511627776 exceeds"), "{msg}");
    let (msg, _) = load_err("eps.gguf", |m, _| m.push(("qwen3.attention.layer_norm_rms_epsilon".into(), Value::F32(0.0))));
    assert!(msg.contains("rms eps 0"), "{msg}");
    let (msg, _) = load_err("arch.gguf", |m, _| m[0].1 = Value::String("llama".into()));
    assert!(msg.contains("\"llama\"") && msg.contains("qwen3"), "{msg}");
}

#[test]
fn columns_not_a_whole_number_of_blocks() {
    let bytes = vec![0u8; 144 * 56];
    let err = QuantLinear::from_gguf_bytes(GgmlType::Q4_K, &bytes, 1, 14336 - 32, &Device::default()).unwrap_err();
    assert_eq!(err.to_string(), "14304 columns is not a multiple of Q4_K's block of 256");
    let parts = [(GgmlType::Q4_K, &bytes[..144], 1), (GgmlType::Q8_0, &bytes[..34], 1)];
    let err = QuantLinear::from_gguf_fused(&parts, 32, &Device::default()).unwrap_err();
    assert_eq!(err.to_string(), "part 0 of 2: 32 columns is not a multiple of Q4_K's block of 256");
}

/// For every type with a decoder: a NaN/Inf written at any byte of a zero block is rejected by
/// validation exactly when the reference decode turns it into a non-finite value, and
/// `QuantLinear` refuses such a block with `NonFinite`.
#[test]
fn nan_and_inf_scales_are_rejected_for_every_type() {
    let patterns: [&[u8]; 4] = [&F16_NAN, &[0x00, 0x7C], &[0xC0, 0x7F], &f32::NAN.to_le_bytes()];
    for kind in GgmlType::all().filter(|k| k.is_supported()) {
        let (elems, bytes) = (kind.block_elems(), kind.block_bytes());
        let mut flagged = 0;
        for at in 0..bytes {
            for p in patterns {
                let mut block = vec![0u8; bytes];
                let n = p.len().min(bytes - at);
                block[at..at + n].copy_from_slice(&p[..n]);
                let decoded = dequantize(kind, &block, 1, elems).unwrap();
                let bad = decoded.iter().any(|v| !v.is_finite());
                let rejected = validate(kind, &block, elems).is_err();
                assert_eq!(rejected, bad, "{kind}: pattern {p:02x?} at byte {at}");
                if rejected {
                    flagged += 1;
                    let err = QuantLinear::from_gguf_bytes(kind, &block, 1, elems, &Device::default()).unwrap_err();
                    assert!(matches!(err, Error::NonFinite { row: 0, column: 0, .. }), "{kind}: {err}");
                }
            }
        }
        assert!(flagged > 0, "{kind}: no position holds a float");
    }
}

/// A tiny GPTQ linear (in 64, out 8, group 32) as one safetensors file, with `edit` applied.
fn tiny_gptq(edit: impl FnOnce(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>)) -> Vec<u8> {
    let f16s = |n: usize, v: f32| (0..n).flat_map(|_| half::f16::from_f32(v).to_le_bytes()).collect::<Vec<u8>>();
    let mut t = vec![
        ("l.qweight".to_string(), Dtype::I32, vec![8, 8], (0..64u32).flat_map(|i| i.wrapping_mul(0x9E3779B9).to_le_bytes()).collect()),
        ("l.qzeros".to_string(), Dtype::I32, vec![2, 1], 0x7777_7777u32.to_le_bytes().repeat(2)),
        ("l.scales".to_string(), Dtype::F16, vec![2, 8], f16s(16, 0.01)),
    ];
    edit(&mut t);
    let views: Vec<_> = t.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    safetensors::serialize(views, None).unwrap()
}

const GPTQ_CONFIG: &str = r#"{"quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 32, "sym": true}}"#;

fn hf_err(config: &str, st: Vec<u8>) -> String {
    let r = HfCheckpoint::from_memory(config, None, vec![("model.safetensors".into(), st)])
        .and_then(|c| c.linear("l").and_then(|w| QuantLinear::from_linear_weights(&w, &Device::default())));
    r.map(|_| ()).unwrap_err().to_string()
}

#[test]
fn checkpoint_errors_name_the_file_the_tensor_and_the_value() {
    // The unedited linear builds.
    let ckpt = HfCheckpoint::from_memory(GPTQ_CONFIG, None, vec![("model.safetensors".into(), tiny_gptq(|_| {}))]).unwrap();
    QuantLinear::from_linear_weights(&ckpt.linear("l").unwrap(), &Device::default()).unwrap();
    // A NaN scale: the int4 block of row 5, second group.
    let msg = hf_err(GPTQ_CONFIG, tiny_gptq(|t| t[2].3[2 * (8 + 5)..2 * (8 + 5) + 2].copy_from_slice(&F16_NAN)));
    assert!(msg.contains("I4_32 block at row 5, column 32") && msg.contains("NaN"), "{msg}");
    // Wrong dtype, wrong shape, g_idx out of range, a group that does not divide in_features.
    let msg = hf_err(GPTQ_CONFIG, tiny_gptq(|t| t[2].1 = Dtype::I16));
    assert!(msg.contains("<memory>/model.safetensors: tensor l.scales: dtype I16, expected F16"), "{msg}");
    let msg = hf_err(GPTQ_CONFIG, tiny_gptq(|t| t[1].2 = vec![1, 2]));
    assert!(msg.contains("tensor l.qzeros: shape [1, 2], expected [2, 1]"), "{msg}");
    let msg = hf_err(GPTQ_CONFIG, tiny_gptq(|t| t.push(("l.g_idx".into(), Dtype::I32, vec![64], [0i32, 2].repeat(32).iter().flat_map(|v| v.to_le_bytes()).collect()))));
    assert!(msg.contains("g_idx[1] = 2 is out of range for 2 groups"), "{msg}");
    let msg = hf_err(&GPTQ_CONFIG.replace("32", "48"), tiny_gptq(|_| {}));
    assert!(msg.contains("group size 48 does not divide in_features 64"), "{msg}");
    // A missing tensor, a config that is not JSON, sizes that are not sizes.
    let msg = hf_err(GPTQ_CONFIG, tiny_gptq(|t| t.truncate(2)));
    assert!(msg.contains("<memory>: tensor l.scales"), "{msg}");
    let msg = hf_err("{", tiny_gptq(|_| {}));
    assert!(msg.contains("<memory>/config.json"), "{msg}");
    let awq = r#"{"quantization_config": {"quant_method": "awq", "bits": 4, "q_group_size": 0, "version": "gemm"}}"#;
    assert!(hf_err(awq, tiny_gptq(|_| {})).contains("q_group_size 0 is not positive"));
    let bits = r#"{"quantization_config": {"quant_method": "gptq", "bits": 4294967300}}"#;
    assert!(hf_err(bits, tiny_gptq(|_| {})).contains("bits 4294967300"));
    // Not a safetensors file; a header larger than the file.
    let msg = hf_err(GPTQ_CONFIG, b"not a safetensors file".to_vec());
    assert!(msg.contains("<memory>/model.safetensors"), "{msg}");
    let mut st = tiny_gptq(|_| {});
    st.truncate(40);
    assert!(hf_err(GPTQ_CONFIG, st).contains("<memory>/model.safetensors"));
    // Headers whose entries disagree with themselves or the file.
    let header = |json: &str, data: usize| {
        let mut v = (json.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(json.as_bytes());
        v.resize(v.len() + data, 0);
        v
    };
    let msg = hf_err(GPTQ_CONFIG, header(r#"{"l.qweight":{"dtype":"I32","shape":[8,8],"data_offsets":[0,255]}}"#, 256));
    assert!(msg.contains("tensor l.qweight: data_offsets [0, 255] do not hold the 256 bytes of I32 [8, 8]"), "{msg}");
    let msg = hf_err(GPTQ_CONFIG, header(r#"{"l.qweight":{"dtype":"I32","shape":[8,8],"data_offsets":[0,256]}}"#, 255));
    assert!(msg.contains("tensor l.qweight: data_offsets end 256 lies past the 255 bytes of data"), "{msg}");
    let msg = hf_err(GPTQ_CONFIG, header(r#"{"t":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]}}"#, 1));
    assert!(msg.contains("shape of more than 8 dimensions"), "{msg}");
    let msg = hf_err(GPTQ_CONFIG, header(r#"{"t":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,1]}}"#, 1));
    assert!(msg.contains("tensor t: shape [4294967296, 4294967296] of U8 overflows"), "{msg}");
    let msg = hf_err(GPTQ_CONFIG, header(r#"{"t":{"dtype":"Q9","shape":[1],"data_offsets":[0,1]}}"#, 1));
    assert!(msg.contains("<memory>/model.safetensors: header: unknown variant `Q9`"), "{msg}");
    // The same tensor in two shards.
    let st = || header(r#"{"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#, 1);
    let r = HfCheckpoint::from_memory(GPTQ_CONFIG, None, vec![("a.safetensors".into(), st()), ("b.safetensors".into(), st())]);
    let msg = r.map(|_| ()).unwrap_err().to_string();
    assert!(msg.contains("<memory>/a.safetensors, <memory>/b.safetensors: tensor t is declared twice"), "{msg}");
}
