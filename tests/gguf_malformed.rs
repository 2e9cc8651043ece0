//! Malformed GGUF input: every kind of damage is a typed error, never a panic or a huge
//! allocation.

use burn_quant::Error;
use burn_quant::format::GgmlType;
use burn_quant::gguf::{Array, GgufFile, GgufWriter, Value, WriterTensor};

/// A hand-assembled GGUF header, so single fields can be corrupted.
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Self {
        let mut v = b"GGUF".to_vec();
        v.extend(version.to_le_bytes());
        v.extend(n_tensors.to_le_bytes());
        v.extend(n_kv.to_le_bytes());
        Raw(v)
    }
    fn u32(mut self, x: u32) -> Self {
        self.0.extend(x.to_le_bytes());
        self
    }
    fn u64(mut self, x: u64) -> Self {
        self.0.extend(x.to_le_bytes());
        self
    }
    fn str(self, s: &str) -> Self {
        let mut r = self.u64(s.len() as u64);
        r.0.extend(s.as_bytes());
        r
    }
    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend(b);
        self
    }
    /// A tensor info: name, dims (ggml order), type id, offset.
    fn tensor(self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Self {
        let mut r = self.str(name).u32(dims.len() as u32);
        for &d in dims {
            r = r.u64(d);
        }
        r.u32(ty).u64(offset)
    }
    /// Pads to 32 and appends `n` data bytes.
    fn data(mut self, n: usize) -> Self {
        self.0.resize(self.0.len().next_multiple_of(32) + n, 0);
        self
    }
    fn parse(self) -> Result<GgufFile, Error> {
        GgufFile::from_bytes(self.0)
    }
}

fn gguf_err(r: Result<GgufFile, Error>, needle: &str) {
    match r {
        Err(Error::Gguf { context, .. }) => assert!(context.contains(needle), "{context:?} lacks {needle:?}"),
        Err(e) => panic!("expected a GGUF error containing {needle:?}, got {e}"),
        Ok(_) => panic!("expected a GGUF error containing {needle:?}, parsed fine"),
    }
}

fn valid_file() -> Vec<u8> {
    let q = burn_quant::format::quantize::quantize(GgmlType::Q8_0, &(0..128).map(|i| i as f32).collect::<Vec<_>>()).unwrap();
    GgufWriter::new()
        .metadata("general.architecture", Value::String("test".into()))
        .metadata("a.u8", Value::U8(7))
        .metadata("a.i8", Value::I8(-7))
        .metadata("a.u16", Value::U16(700))
        .metadata("a.i16", Value::I16(-700))
        .metadata("a.u32", Value::U32(70000))
        .metadata("a.i32", Value::I32(-70000))
        .metadata("a.f32", Value::F32(1.5))
        .metadata("a.bool", Value::Bool(true))
        .metadata("a.u64", Value::U64(1 << 40))
        .metadata("a.i64", Value::I64(-(1 << 40)))
        .metadata("a.f64", Value::F64(-2.25))
        .metadata("a.strings", Value::Array(Array::String(Box::new(["x", "yz"].into_iter().collect()))))
        .metadata("a.nested", Value::Array(nested()))
        .tensor(WriterTensor { name: "w".into(), shape: vec![2, 64], kind: GgmlType::Q8_0, data: q })
        .unwrap()
        .tensor(WriterTensor { name: "b".into(), shape: vec![3], kind: GgmlType::F32, data: vec![0; 12] })
        .unwrap()
        .to_bytes()
        .unwrap()
}

/// Arrays of arrays, three deep, of mixed element types.
fn nested() -> Array {
    let inner = vec![Array::String(Box::new(["deep"].into_iter().collect())), Array::U8(vec![])];
    Array::Array(Box::new(vec![Array::I32(vec![1, 2]), Array::Bool(vec![false]), Array::Array(Box::new(inner.into()))].into()))
}

#[test]
fn writer_output_reads_back_with_every_value_type() {
    let g = GgufFile::from_bytes(valid_file()).unwrap();
    assert_eq!(g.metadata_len(), 14);
    assert_eq!(g.get("a.i16"), Some(Value::I16(-700)));
    assert_eq!(g.get("a.f64"), Some(Value::F64(-2.25)));
    assert_eq!(g.get_f64("a.f64"), Some(-2.25));
    assert_eq!(g.get_str("general.architecture"), Some("test"));
    assert_eq!(g.get_str("a.u8"), None);
    assert_eq!(g.get("missing"), None);
    // Every entry reads back as written, in file order (values are built from the file on access).
    let keys: Vec<&str> = g.metadata().map(|(k, _)| k).collect();
    assert_eq!(keys.first(), Some(&"general.architecture"));
    assert_eq!(keys.last(), Some(&"a.nested"));
    for (k, v) in g.metadata() {
        assert_eq!(g.get(k).as_ref(), Some(&v), "{k}");
    }
    let strings = g.get("a.strings").unwrap();
    let Some(Array::String(s)) = strings.as_array() else { panic!("{strings:?}") };
    assert_eq!(s.iter().collect::<Vec<_>>(), ["x", "yz"]);
    // Nested arrays stay in the file; each level is read when reached.
    let nested_back = g.get("a.nested").unwrap();
    assert_eq!(nested_back, Value::Array(nested()));
    let Some(Array::Array(list)) = nested_back.as_array() else { panic!() };
    assert_eq!(list.len(), 3);
    assert_eq!(list.get(1), Some(Array::Bool(vec![false])));
    assert_eq!(list.get(3), None);
    let Some(Array::Array(inner)) = list.get(2) else { panic!() };
    assert_eq!(inner.iter().collect::<Vec<_>>(), [Array::String(Box::new(["deep"].into_iter().collect())), Array::U8(vec![])]);
    assert_eq!(g.tensor("w").unwrap().shape(), vec![2, 64]);
    assert_eq!(g.tensor("b").unwrap().offset % 32, 0);
    let (w, rows, cols) = g.dequantize("w").unwrap();
    assert_eq!((rows, cols), (2, 64));
    assert!((w[127] - 127.0).abs() < 0.5);
}

#[test]
fn every_truncation_is_an_error() {
    let full = valid_file();
    for cut in 0..full.len() - 1 {
        // The last tensor's padding is not part of any tensor, so only cuts into real bytes fail.
        match GgufFile::from_bytes(full[..cut].to_vec()) {
            Err(Error::Gguf { .. }) => {}
            Ok(g) => {
                let end = g.data_offset + g.tensors().map(|t| t.offset + t.size).max().unwrap_or(0);
                assert!(cut as u64 >= end, "cut at {cut} parsed although tensor data ends at {end}");
            }
            Err(e) => panic!("cut at {cut}: unexpected error kind {e}"),
        }
    }
}

#[test]
fn bad_magic_and_versions() {
    gguf_err(GgufFile::from_bytes(b"GGML\x03\0\0\0".to_vec()), "bad magic");
    gguf_err(Raw::header(1, 0, 0).parse(), "unsupported GGUF version 1");
    gguf_err(Raw::header(4, 0, 0).parse(), "unsupported GGUF version 4");
    assert!(Raw::header(2, 0, 0).parse().is_ok());
}

#[test]
fn huge_counts_are_rejected_before_allocating() {
    gguf_err(Raw::header(3, u64::MAX, 0).parse(), "tensor count");
    gguf_err(Raw::header(3, 0, u64::MAX).parse(), "metadata count");
    let pad = [0u8; 64];
    gguf_err(Raw::header(3, 0, 1).u64(u64::MAX).bytes(&pad).parse(), "metadata key");
    gguf_err(Raw::header(3, 0, 1).str("k").u32(8).u64(1 << 60).bytes(&pad).parse(), "string");
    gguf_err(Raw::header(3, 0, 1).str("k").u32(9).u32(4).u64(u64::MAX / 2).bytes(&pad).parse(), "array length");
    // 8 strings need at least 64 bytes of length prefixes: 9 do not fit in 64 bytes.
    gguf_err(Raw::header(3, 0, 1).str("k").u32(9).u32(8).u64(9).bytes(&pad).parse(), "array length");
}

#[test]
fn bad_metadata_values() {
    let pad = [0u8; 16];
    gguf_err(Raw::header(3, 0, 1).str("k").u32(13).bytes(&pad).parse(), "unknown metadata value type 13");
    gguf_err(Raw::header(3, 0, 1).str("k").u32(7).bytes(&[2]).bytes(&pad).parse(), "bool value 2");
    gguf_err(Raw::header(3, 0, 2).str("k").u32(0).bytes(&[1]).str("k").u32(0).bytes(&[1]).parse(), "duplicate metadata key");
    let mut deep = Raw::header(3, 0, 1).str("k").u32(9);
    for _ in 0..20 {
        deep = deep.u32(9).u64(1);
    }
    gguf_err(deep.u32(0).u64(0).parse(), "nested deeper");
    gguf_err(Raw::header(3, 0, 1).str("general.alignment").u32(4).u32(48).parse(), "power-of-two");
    gguf_err(Raw::header(3, 0, 1).str("general.alignment").u32(4).u32(0).parse(), "power-of-two");
    gguf_err(Raw::header(3, 0, 1).str("general.alignment").u32(10).u64(32).parse(), "power-of-two");
}

#[test]
fn bad_tensor_infos() {
    let q8 = GgmlType::Q8_0.id();
    gguf_err(Raw::header(3, 1, 0).tensor("t", &[], q8, 0).data(0).parse(), "rank 0");
    gguf_err(Raw::header(3, 1, 0).tensor("t", &[32, 1, 1, 1, 1], q8, 0).data(34).parse(), "rank 5");
    gguf_err(Raw::header(3, 1, 0).tensor("t", &[32], 4, 0).data(34).parse(), "unknown ggml type id 4");
    gguf_err(Raw::header(3, 1, 0).tensor("t", &[32], 1000, 0).data(34).parse(), "unknown ggml type id 1000");
    gguf_err(Raw::header(3, 1, 0).tensor("t", &[100, 2], GgmlType::Q4_K.id(), 0).data(1000).parse(), "not a multiple of Q4_K");
    gguf_err(Raw::header(3, 1, 0).tensor("t", &[u64::MAX], 0, 0).data(0).parse(), "out of range");
    gguf_err(Raw::header(3, 1, 0).tensor("t", &[1 << 40, 1 << 30], 0, 0).data(0).parse(), "more than 2^63 elements");
    // A zero dimension makes the byte size 0, but the element count must still fit.
    gguf_err(Raw::header(3, 1, 0).tensor("t", &[0, 1 << 62, 1 << 62], 0, 0).data(0).parse(), "more than 2^63 elements");
    // 2^62 f32 elements fit in the count, not in a byte size.
    gguf_err(Raw::header(3, 1, 0).tensor("t", &[1 << 31, 1 << 31], 0, 0).data(0).parse(), "size overflows");
    gguf_err(Raw::header(3, 1, 0).tensor("t", &[32], q8, 16).data(64).parse(), "not a multiple of the alignment");
    gguf_err(Raw::header(3, 1, 0).tensor("t", &[32], q8, 32).data(40).parse(), "outside");
    gguf_err(Raw::header(3, 1, 0).tensor("t", &[32], q8, u64::MAX - 31).data(40).parse(), "outside");
    gguf_err(
        Raw::header(3, 2, 0).tensor("a", &[64], q8, 0).tensor("b", &[32], q8, 64).data(160).parse(),
        "overlap",
    );
    gguf_err(Raw::header(3, 2, 0).tensor("a", &[64], q8, 0).tensor("b", &[32], q8, 32).data(128).parse(), "overlap");
    gguf_err(Raw::header(3, 2, 0).tensor("a", &[32], q8, 0).tensor("a", &[32], q8, 64).data(128).parse(), "duplicate tensor name");
    // A size that matches the file exactly parses.
    assert!(Raw::header(3, 1, 0).tensor("t", &[32], q8, 0).data(34).parse().is_ok());
}

#[test]
fn missing_tensors_and_files_are_errors() {
    let g = GgufFile::from_bytes(valid_file()).unwrap();
    assert!(matches!(g.tensor("nope"), Err(Error::NotFound(_))));
    assert!(matches!(GgufFile::open("/nonexistent/x.gguf"), Err(Error::Io { .. })));
}

/// burn-quant's own int4 layouts are not GGUF types: the writer refuses them and the reader does
/// not accept their ids.
#[test]
fn internal_layouts_never_enter_a_gguf_file() {
    let t = WriterTensor { name: "w".into(), shape: vec![1, 128], kind: GgmlType::I4_128, data: vec![0; 68] };
    let err = GgufWriter::new().tensor(t).err().expect("refused");
    assert!(err.to_string().contains("not a GGUF type"), "{err}");
    assert!(GgmlType::from_id(GgmlType::I4_128.id()).is_err());
}

/// An error from a file on disk names the file, the byte offset and what was wrong.
#[test]
fn file_errors_name_the_file() {
    let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gguf-blocks/blocks.gguf")).unwrap();
    let path = std::env::temp_dir().join(format!("burn-quant-truncated-{}.gguf", std::process::id()));
    std::fs::write(&path, &bytes[..1000]).unwrap();
    let err = GgufFile::open(&path).err().expect("truncated file");
    let msg = err.to_string();
    let _ = std::fs::remove_file(&path);
    assert!(msg.contains(&path.display().to_string()) && msg.contains("byte"), "{msg}");
}
