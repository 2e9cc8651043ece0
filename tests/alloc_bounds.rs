//! The GGUF reader's heap use on adversarial files made of the smallest possible items: many
//! metadata entries, huge string and nested arrays, many tensor infos. Measured with a counting
//! allocator, neither one allocation nor the live heap may exceed twice the file's size plus a
//! fixed cost per item the file really holds (`PER_ITEM`: one parsed metadata entry, tensor info
//! or nested array is a vector slot, a hash-map slot and a copy of its key, larger in memory than
//! its smallest encoding in the file). Counts are checked against the bytes left before anything
//! is reserved, so no number in the file can make the reader allocate for items it does not hold.

use std::sync::Mutex;

use burn_quant::GgmlType;
use burn_quant::alloc_meter::{PeakAlloc, PeakScope};
use burn_quant::gguf::GgufFile;

#[global_allocator]
static A: PeakAlloc = PeakAlloc;

/// Tests in this file run one at a time so the counters see one parse.
static SERIAL: Mutex<()> = Mutex::new(());

/// Heap bytes a parsed entry may cost beyond twice its bytes in the file: the reader's bound.
const PER_ITEM: usize = burn_quant::gguf::HEAP_PER_ENTRY;

/// Parses `bytes` (moved in) and returns (largest allocation, peak live heap) of the parse.
fn measure(bytes: Vec<u8>) -> (usize, usize, GgufFile) {
    let scope = PeakScope::start();
    let file = GgufFile::from_bytes(bytes).expect("a valid file");
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
    let bound = 2 * len + PER_ITEM * items;
    println!(
        "{name}: {len} B file, {items} items: largest allocation {largest} B, peak {peak} B ({:.2} B/item over 2x)",
        (peak as f64 - 2.0 * len as f64) / items.max(1) as f64
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
