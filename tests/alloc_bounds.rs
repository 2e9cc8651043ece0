//! The GGUF reader's heap use on adversarial files made of the smallest possible items: many
//! metadata entries, huge string and nested arrays, many tensor infos. Measured with a counting
//! allocator over the parse and then reading every value and tensor info back, neither one
//! allocation nor the live heap may exceed twice the file's size (the reader keeps 12 bytes per
//! entry or info, each at least 13 bytes in the file, and builds values only when read). Counts
//! are checked against the bytes left before anything is reserved, so no number in the file can
//! make the reader allocate for items it does not hold.

use std::sync::Mutex;

use burn_quant::GgmlType;
use burn_quant::alloc_meter::{PeakAlloc, PeakScope};
use burn_quant::gguf::GgufFile;

#[global_allocator]
static A: PeakAlloc = PeakAlloc;

/// Tests in this file run one at a time so the counters see one parse.
static SERIAL: Mutex<()> = Mutex::new(());

/// Parses `bytes` (moved in), reads every metadata value and tensor info back (one at a time,
/// as a loader does), and returns (largest allocation, peak live heap) of it all.
fn measure(bytes: Vec<u8>) -> (usize, usize, GgufFile) {
    let scope = PeakScope::start();
    let file = GgufFile::from_bytes(bytes).expect("a valid file");
    for (key, value) in file.metadata() {
        assert!(!value.summary().is_empty());
        if let Some(burn_quant::gguf::Array::Array(list)) = value.as_array() {
            assert_eq!(list.iter().count(), list.len(), "{key}");
        }
    }
    for t in file.tensors() {
        assert_eq!(file.tensor_data(&t.name).map(|d| d.len() as u64).ok(), Some(t.size));
    }
    (scope.largest(), scope.peak(), file)
}

fn header(n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut v = b"GGUF".to_vec();
    v.extend_from_slice(&3u32.to_le_bytes());
    v.extend_from_slice(&n_tensors.to_le_bytes());
    v.extend_from_slice(&n_kv.to_le_bytes());
    v
}

fn key(v: &mut Vec<u8>, k: &str) {
    v.extend_from_slice(&(k.len() as u64).to_le_bytes());
    v.extend_from_slice(k.as_bytes());
}

fn check(name: &str, build: impl FnOnce() -> Vec<u8>, items: usize) {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bytes = build();
    let len = bytes.len();
    let (largest, peak, file) = measure(bytes);
    // The file's own buffer (moved in) is counted by neither: it was allocated before.
    let bound = 2 * len;
    println!(
        "{name}: {len} B file, {items} items: largest allocation {largest} B, peak {peak} B ({:.2}x the file)",
        peak as f64 / len as f64
    );
    assert!(
        largest <= bound,
        "{name}: one allocation of {largest} B > {bound} B"
    );
    assert!(peak <= bound, "{name}: peak {peak} B > {bound} B");
    drop(file);
}

#[test]
fn many_tiny_metadata_entries() {
    let n = 100_000;
    check(
        "kv",
        || {
            let mut v = header(0, n);
            for i in 0..n {
                key(&mut v, &format!("{i:x}"));
                v.extend_from_slice(&0u32.to_le_bytes()); // u8
                v.push(7);
            }
            v
        },
        n as usize,
    );
}

#[test]
fn a_huge_array_of_empty_strings() {
    let n = 500_000u64;
    check(
        "strings",
        || {
            let mut v = header(0, 1);
            key(&mut v, "a");
            v.extend_from_slice(&9u32.to_le_bytes()); // array
            v.extend_from_slice(&8u32.to_le_bytes()); // of strings
            v.extend_from_slice(&n.to_le_bytes());
            for _ in 0..n {
                v.extend_from_slice(&0u64.to_le_bytes());
            }
            v
        },
        1,
    );
}

#[test]
fn a_huge_array_of_empty_arrays() {
    let n = 300_000u64;
    check(
        "nested",
        || {
            let mut v = header(0, 1);
            key(&mut v, "a");
            v.extend_from_slice(&9u32.to_le_bytes());
            v.extend_from_slice(&9u32.to_le_bytes()); // of arrays
            v.extend_from_slice(&n.to_le_bytes());
            for _ in 0..n {
                v.extend_from_slice(&0u32.to_le_bytes()); // of u8
                v.extend_from_slice(&0u64.to_le_bytes()); // empty
            }
            v
        },
        n as usize,
    );
}

#[test]
fn many_tensor_infos() {
    let n = 50_000u64;
    check(
        "tensors",
        || {
            let mut v = header(n, 0);
            for i in 0..n {
                key(&mut v, &format!("{i:x}"));
                v.extend_from_slice(&1u32.to_le_bytes());
                v.extend_from_slice(&8u64.to_le_bytes()); // 8 f32 = 32 bytes, one alignment unit
                v.extend_from_slice(&GgmlType::F32.id().to_le_bytes());
                v.extend_from_slice(&(i * 32).to_le_bytes());
            }
            v.resize(v.len().next_multiple_of(32) + 32 * n as usize, 0);
            v
        },
        n as usize,
    );
}

/// A count the file does not back with items (it claims as many entries as its bytes could
/// hold, then stops being valid): the parse fails having reserved no more than the file's size.
#[test]
fn unbacked_counts_reserve_at_most_the_file() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut v = header(0, 0);
    let body = 1_300_000usize;
    v.truncate(16);
    v.extend_from_slice(&((body / 13) as u64).to_le_bytes());
    key(&mut v, "a");
    v.extend_from_slice(&0u32.to_le_bytes());
    v.push(1);
    v.resize(24 + body, 0xFF); // then garbage: the second entry's key length is huge
    let len = v.len();
    let scope = PeakScope::start();
    assert!(GgufFile::from_bytes(v).is_err());
    let (largest, peak) = (scope.largest(), scope.peak());
    println!("unbacked: {len} B file: largest allocation {largest} B, peak {peak} B");
    assert!(largest <= len && peak <= 2 * len, "largest {largest} B, peak {peak} B for a {len} B file");
}

/// Reads a Hugging Face checkpoint of `config` and one safetensors shard of `header` (no data)
/// through the importer, lists its tensors, and checks the heap stays within twice the input.
fn check_hf(name: &str, build: impl FnOnce() -> (String, String), tensors: usize) {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (config, header) = build();
    let mut st = (header.len() as u64).to_le_bytes().to_vec();
    st.extend_from_slice(header.as_bytes());
    let len = st.len() + config.len();
    let scope = PeakScope::start();
    let ckpt = burn_quant::import::HfCheckpoint::from_memory(&config, None, vec![("model.safetensors".into(), st)]).expect("valid");
    assert_eq!(ckpt.tensors().count(), tensors);
    assert_eq!(ckpt.tensors().filter(|t| ckpt.raw(t.0).is_ok()).count(), tensors);
    let (largest, peak) = (scope.largest(), scope.peak());
    println!("{name}: {len} B input, {tensors} tensors: largest allocation {largest} B, peak {peak} B ({:.2}x the input)", peak as f64 / len as f64);
    // The shard's bytes were allocated before the scope, the copy of the config text inside it.
    assert!(peak <= 2 * len, "{name}: peak {peak} B > 2 x {len} B");
    drop(ckpt);
}

/// `n` zero-sized tensors of `shape`: the smallest JSON entries a safetensors header can hold.
fn tiny_tensors(n: usize, shape: &str) -> String {
    let entries: Vec<String> =
        (0..n).map(|i| format!("\"{i:x}\":{{\"dtype\":\"U8\",\"shape\":[{shape}],\"data_offsets\":[0,0]}}")).collect();
    format!("{{{}}}", entries.join(","))
}

/// A safetensors header of many zero-sized tensors (the `safetensors` crate's own parser holds
/// 13 times such a header; the importer's holds 1.2 times).
#[test]
fn many_safetensors_entries() {
    check_hf("safetensors", || ("{}".into(), tiny_tensors(50_000, "0")), 50_000);
}

/// The same with shapes of the most dimensions the importer accepts (8 bytes a dimension in
/// memory against 2 in the file).
#[test]
fn many_safetensors_entries_of_rank_8() {
    check_hf("rank 8", || ("{}".into(), tiny_tensors(50_000, "0,0,0,0,0,0,0,0")), 50_000);
}

/// A config.json of many small values (a `serde_json::Value` of it would be 16 times its size):
/// only the keys the importer reads are kept.
#[test]
fn a_config_of_many_small_values() {
    let config = || {
        let zeros = vec!["0"; 500_000].join(",");
        format!("{{\"model_type\":\"qwen3\",\"hidden_size\":[{zeros}],\"quantization_config\":{{\"bits\":4,\"x\":[{zeros}]}},\"y\":[{zeros}]}}")
    };
    check_hf("config", || (config(), "{}".into()), 0);
}
