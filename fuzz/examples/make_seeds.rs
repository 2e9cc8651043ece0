//! Writes the seed corpus (fuzz/seeds/<target>/) from the repository's fixtures: small GGUF files
//! cut from tests/fixtures/gguf-blocks and tests/fixtures/qwen3-tiny (every block type, every
//! metadata value type, a one-layer Qwen3), Hugging Face checkpoints cut from tests/fixtures/gptq
//! and tests/fixtures/awq (single linears and a one-layer Qwen3), and QuantLinear inputs of every
//! type. Run from fuzz/: `cargo run --release --example make_seeds`.

use std::collections::HashMap;
use std::path::Path;

use burn_quant::GgmlType;
use burn_quant::format::quantize::quantize;
use burn_quant::gguf::{Array, GgufFile, GgufWriter, Value, WriterTensor};
use burn_quant_fuzz::{FLAG_BATCH, FLAG_BIAS, FLAG_EXPLICIT_ROWS, FLAG_FUSED, FLAG_PERM, LinearHeader, encode_hf};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Res<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), bytes)?;
    println!("{:>8} B  {}/{name}", bytes.len(), dir.display());
    Ok(())
}

/// Metadata with every array cut to its first `n` elements.
fn trimmed(meta: &[(String, Value)], n: usize) -> Vec<(String, Value)> {
    fn cut(a: &Array, n: usize) -> Array {
        match a {
            Array::U8(v) => Array::U8(v.iter().take(n).cloned().collect()),
            Array::I8(v) => Array::I8(v.iter().take(n).cloned().collect()),
            Array::U16(v) => Array::U16(v.iter().take(n).cloned().collect()),
            Array::I16(v) => Array::I16(v.iter().take(n).cloned().collect()),
            Array::U32(v) => Array::U32(v.iter().take(n).cloned().collect()),
            Array::I32(v) => Array::I32(v.iter().take(n).cloned().collect()),
            Array::F32(v) => Array::F32(v.iter().take(n).cloned().collect()),
            Array::Bool(v) => Array::Bool(v.iter().take(n).cloned().collect()),
            Array::String(v) => Array::String(Box::new(v.iter().take(n).collect())),
            Array::Array(v) => Array::Array(v.iter().take(n).map(|a| cut(a, n)).collect()),
            Array::U64(v) => Array::U64(v.iter().take(n).cloned().collect()),
            Array::I64(v) => Array::I64(v.iter().take(n).cloned().collect()),
            Array::F64(v) => Array::F64(v.iter().take(n).cloned().collect()),
        }
    }
    meta.iter()
        .map(|(k, v)| (k.clone(), if let Value::Array(a) = v { Value::Array(cut(a, n)) } else { v.clone() }))
        .collect()
}

fn gguf(meta: &[(String, Value)], tensors: Vec<WriterTensor>) -> Res<Vec<u8>> {
    let mut w = GgufWriter::new();
    for (k, v) in meta {
        w = w.metadata(k.clone(), v.clone());
    }
    for t in tensors {
        w = w.tensor(t)?;
    }
    Ok(w.to_bytes()?)
}

fn gguf_seeds(fixtures: &Path, out: &Path) -> Res<()> {
    // One small file per block type: the fixture's metadata and the first rows of its tensor.
    let blocks = GgufFile::open(fixtures.join("gguf-blocks/blocks.gguf"))?;
    for t in &blocks.tensors {
        let (rows, cols) = t.matrix_shape();
        let keep = rows.min(2);
        let row_bytes = t.kind.row_bytes(cols)?;
        let data = blocks.tensor_data(&t.name)?[..keep * row_bytes].to_vec();
        let file = gguf(&blocks.metadata, vec![WriterTensor { name: t.name.clone(), shape: vec![keep, cols], kind: t.kind, data }])?;
        write(out, &format!("blocks-{}.gguf", t.name), &file)?;
    }
    // The tiny Qwen3's header: every key, arrays cut short, no tensors.
    let tiny = GgufFile::open(fixtures.join("qwen3-tiny/tiny-qwen3-Q4_K_M.gguf"))?;
    write(out, "qwen3-header.gguf", &gguf(&trimmed(&tiny.metadata, 16), vec![])?)?;
    // A one-layer Qwen3 with the tiny model's keys at hidden 32: slices of its tensors,
    // requantized to Q8_0 / Q4_0 (K-quants need 256 columns).
    let (hid, ffn, vocab) = (32usize, 32usize, 8usize);
    let mut meta = trimmed(&tiny.metadata, vocab);
    let set: HashMap<&str, u32> = [
        ("qwen3.block_count", 1),
        ("qwen3.embedding_length", hid as u32),
        ("qwen3.feed_forward_length", ffn as u32),
        ("qwen3.attention.head_count", 1),
        ("qwen3.attention.head_count_kv", 1),
        ("qwen3.attention.key_length", hid as u32),
        ("qwen3.attention.value_length", hid as u32),
    ]
    .into();
    for (k, v) in meta.iter_mut() {
        if let Some(&n) = set.get(k.as_str()) {
            *v = Value::U32(n);
        }
    }
    let slice = |name: &str, rows: usize, cols: usize, kind: GgmlType| -> Res<WriterTensor> {
        let (w, _, full_cols) = tiny.dequantize(name)?;
        let v: Vec<f32> = (0..rows).flat_map(|r| w[r * full_cols..r * full_cols + cols].to_vec()).collect();
        let shape = if rows == 1 { vec![cols] } else { vec![rows, cols] };
        let data = match kind {
            GgmlType::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            _ => quantize(kind, &v)?,
        };
        Ok(WriterTensor { name: name.to_string(), shape, kind, data })
    };
    let mut tensors = vec![slice("token_embd.weight", vocab, hid, GgmlType::Q8_0)?, slice("output_norm.weight", 1, hid, GgmlType::F32)?];
    for (n, rows, cols, kind) in [
        ("attn_q", hid, hid, GgmlType::Q4_0),
        ("attn_k", hid, hid, GgmlType::Q4_0),
        ("attn_v", hid, hid, GgmlType::Q8_0),
        ("attn_output", hid, hid, GgmlType::Q4_0),
        ("ffn_gate", ffn, hid, GgmlType::Q4_0),
        ("ffn_up", ffn, hid, GgmlType::Q4_0),
        ("ffn_down", hid, ffn, GgmlType::Q8_0),
        ("attn_norm", 1, hid, GgmlType::F32),
        ("ffn_norm", 1, hid, GgmlType::F32),
        ("attn_q_norm", 1, hid, GgmlType::F32),
        ("attn_k_norm", 1, hid, GgmlType::F32),
    ] {
        tensors.push(slice(&format!("blk.0.{n}.weight"), rows, cols, kind)?);
    }
    write(out, "qwen3-mini.gguf", &gguf(&meta, tensors)?)?;
    Ok(())
}

/// Rows `rows` × columns `cols` of a row-major 2-D tensor; a 1-D tensor is one row (`rows` is
/// then ignored) and stays 1-D.
fn slice2(t: &TensorView<'_>, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>) -> (Vec<u8>, Vec<usize>) {
    let elem = t.dtype().bitsize() / 8;
    let (full, rows, two_d) = match t.shape() {
        &[_, c] => (c, rows, true),
        s => (s[0], 0..1, false),
    };
    let mut out = Vec::new();
    for r in rows.clone() {
        out.extend_from_slice(&t.data()[(r * full + cols.start) * elem..(r * full + cols.end) * elem]);
    }
    let shape = if two_d { vec![rows.len(), cols.len()] } else { vec![cols.len()] };
    (out, shape)
}

fn safetensors_of(tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) -> Res<Vec<u8>> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| Ok((n.clone(), TensorView::new(*d, s.clone(), b)?)))
        .collect::<Res<_>>()?;
    Ok(safetensors::serialize(views, None)?)
}

fn hf_seeds(fixtures: &Path, out: &Path) -> Res<()> {
    for method in ["gptq", "awq"] {
        let dir = fixtures.join(method);
        let config = std::fs::read_to_string(dir.join("config.json"))?;
        let bytes = std::fs::read(dir.join("model.safetensors"))?;
        let st = SafeTensors::deserialize(&bytes)?;
        let get = |n: &str| st.tensor(n);
        // One linear (layer 0's k_proj) cut to 8 outputs, every input kept.
        let p = "model.layers.0.self_attn.k_proj";
        let mut t = Vec::new();
        for (suffix, cols) in [("qweight", 0..8), ("qzeros", 0..1), ("scales", 0..8), ("g_idx", 0..256)] {
            let name = format!("{p}.{suffix}");
            let Ok(v) = get(&name) else { continue };
            let (cols, rows) = match (method, suffix) {
                ("awq", "qweight") => (0..1, 0..v.shape()[0]),
                _ => (cols, 0..v.shape()[0]),
            };
            let (b, s) = slice2(&v, rows, cols);
            t.push((name, v.dtype(), s, b));
        }
        write(&out, &format!("{method}-k_proj"), &encode_hf(&config, &safetensors_of(&t)?))?;

        // A one-layer Qwen3 at hidden 64, every linear [64, 64] cut from the fixture's layer 0.
        let mut cfg: serde_json::Value = serde_json::from_str(&config)?;
        for (k, v) in [
            ("hidden_size", 64),
            ("intermediate_size", 64),
            ("num_attention_heads", 1),
            ("num_key_value_heads", 1),
            ("head_dim", 64),
            ("num_hidden_layers", 1),
            ("vocab_size", 8),
        ] {
            cfg[k] = v.into();
        }
        let mut t = Vec::new();
        for lin in ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"] {
            let p = format!("model.layers.0.{lin}");
            // GPTQ packs K in qweight's rows (8 per int32), AWQ packs N in its columns.
            let (qw_rows, qw_cols) = if method == "gptq" { (0..8, 0..64) } else { (0..64, 0..8) };
            for (suffix, rows, cols) in [("qweight", qw_rows, qw_cols), ("qzeros", 0..1, 0..8), ("scales", 0..1, 0..64)] {
                let v = get(&format!("{p}.{suffix}"))?;
                let (b, s) = slice2(&v, rows, cols);
                t.push((format!("{p}.{suffix}"), v.dtype(), s, b));
            }
            if method == "gptq" {
                t.push((format!("{p}.g_idx"), Dtype::I32, vec![64], vec![0u8; 64 * 4]));
            }
        }
        for (name, len) in [
            ("model.layers.0.input_layernorm.weight", 64),
            ("model.layers.0.post_attention_layernorm.weight", 64),
            ("model.layers.0.self_attn.q_norm.weight", 64),
            ("model.layers.0.self_attn.k_norm.weight", 64),
            ("model.norm.weight", 64),
        ] {
            let v = get(name)?;
            let (b, s) = slice2(&v, 0..1, 0..len);
            t.push((name.to_string(), v.dtype(), s, b));
        }
        let e = get("model.embed_tokens.weight")?;
        let (b, s) = slice2(&e, 0..8, 0..64);
        t.push(("model.embed_tokens.weight".into(), e.dtype(), s, b));
        write(&out, &format!("{method}-qwen3-mini"), &encode_hf(&serde_json::to_string_pretty(&cfg)?, &safetensors_of(&t)?))?;
    }
    Ok(())
}

fn quant_linear_seeds(fixtures: &Path, out: &Path) -> Res<()> {
    // Two rows of each fixture block type, plus fused, biased, permuted and batched variants.
    let blocks = GgufFile::open(fixtures.join("gguf-blocks/blocks.gguf"))?;
    let all: Vec<GgmlType> = GgmlType::all().collect();
    let index = |k: GgmlType| all.iter().position(|&a| a == k).unwrap_or(0) as u8;
    for t in &blocks.tensors {
        let (_, cols) = t.matrix_shape();
        let rb = t.kind.row_bytes(cols)?;
        let Ok(in_features) = u16::try_from(cols) else { continue };
        let two = &blocks.tensor_data(&t.name)?[..2 * rb];
        let h = LinearHeader { kind: index(t.kind), kind2: index(GgmlType::Q8_0), in_features, flags: 0, split: 0 };
        write(out, &format!("{}", t.name), &h.encode(two))?;
        let flags = FLAG_BIAS | FLAG_PERM | FLAG_BATCH;
        write(out, &format!("{}-bias-perm-batch", t.name), &LinearHeader { flags, split: 2, ..h }.encode(two))?;
        write(out, &format!("{}-rows", t.name), &LinearHeader { flags: FLAG_EXPLICIT_ROWS, split: 2, ..h }.encode(two))?;
    }
    // A fused pair of different types on the same 256 columns (like q/k Q4_K with v Q6_K).
    let q4k = blocks.tensors.iter().find(|t| t.kind == GgmlType::Q4_K);
    let q6k = blocks.tensors.iter().find(|t| t.kind == GgmlType::Q6_K);
    if let (Some(a), Some(b)) = (q4k, q6k) {
        let (ra, rb) = (a.kind.row_bytes(256)?, b.kind.row_bytes(256)?);
        let mut bytes = blocks.tensor_data(&a.name)?[..ra].to_vec();
        bytes.extend_from_slice(&blocks.tensor_data(&b.name)?[..rb]);
        let h = LinearHeader { kind: index(a.kind), kind2: index(b.kind), in_features: 256, flags: FLAG_FUSED, split: ra as u16 };
        write(out, "fused-Q4_K-Q6_K", &h.encode(&bytes))?;
    }
    Ok(())
}

fn main() -> Res<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixtures = root.join("../tests/fixtures");
    let seeds = root.join("seeds");
    gguf_seeds(&fixtures, &seeds.join("gguf_reader"))?;
    hf_seeds(&fixtures, &seeds.join("hf_import"))?;
    quant_linear_seeds(&fixtures, &seeds.join("quant_linear"))?;
    Ok(())
}
