//! A deterministic mutation smoke test of the GGUF reader (until the cargo-fuzz targets of issue 6
//! exist): thousands of corrupted copies of the gguf-blocks fixture — flipped bytes, overwritten
//! 8-byte fields (counts, lengths, offsets, dims) with extreme values, truncations — must each
//! parse to a value or a typed error, and every tensor that parses must decode or error, without
//! a panic.

use burn_quant::format::dequantize;
use burn_quant::gguf::GgufFile;

const ROUNDS: usize = 3000;

#[test]
fn corrupted_files_never_panic() {
    let base = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gguf-blocks/blocks.gguf")).unwrap();
    // Mutations concentrate on the header and tensor infos (the first few KiB), where every
    // count, length and offset lives.
    let header = base.len().min(8192);
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let (mut parsed, mut errors) = (0, 0);
    for _ in 0..ROUNDS {
        let mut b = base.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() as usize) % header.min(b.len());
            match next() % 4 {
                0 => b[at] ^= 1 << (next() % 8),
                1 => {
                    let v: u64 = [0, 1, u64::MAX, u32::MAX as u64, 1 << 40, next()][(next() % 6) as usize];
                    let end = (at + 8).min(b.len());
                    b[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
                }
                2 => b[at] = next() as u8,
                _ => b.truncate(at.max(1)),
            }
        }
        let result = std::panic::catch_unwind(|| match GgufFile::from_bytes(b) {
            Ok(f) => {
                for t in f.tensors() {
                    if let Ok(data) = f.tensor_data(&t.name) {
                        let (rows, cols) = t.matrix_shape();
                        let _ = dequantize(t.kind, data, rows, cols);
                    }
                }
                true
            }
            Err(_) => false,
        });
        match result {
            Ok(true) => parsed += 1,
            Ok(false) => errors += 1,
            Err(_) => panic!("the reader panicked on a corrupted file"),
        }
    }
    assert_eq!(parsed + errors, ROUNDS);
    assert!(errors > ROUNDS / 4, "the mutations should break most files ({errors} errors)");
}
