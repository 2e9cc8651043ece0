//! The GGUF reader: parses a byte buffer (usually a memory map) with every length and offset
//! checked before use.

use std::collections::HashMap;
use std::sync::Arc;
use std::path::Path;

use super::storage::Storage;
use super::value::{Array, StringArray, Value, ValueType, expect_u64};
use super::{DEFAULT_ALIGNMENT, MAGIC, MAX_ARRAY_DEPTH, MAX_DIMS};
use crate::error::{Error, Result};
use crate::format::GgmlType;

/// One tensor's description from the header.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// Tensor name.
    pub name: String,
    /// ggml dimensions, `ne[0]` (the contiguous one) first.
    pub dims: Vec<u64>,
    /// Element type.
    pub kind: GgmlType,
    /// Offset of its data from the start of the data section.
    pub offset: u64,
    /// Bytes of data (derived from `dims` and `kind`).
    pub size: u64,
}

impl TensorInfo {
    /// Row-major shape (the reverse of ggml's `dims`), e.g. `[out, in]` for a weight.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// Number of elements.
    pub fn num_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// `(rows, cols)` of the tensor viewed as a matrix whose rows are `dims[0]` long.
    pub fn matrix_shape(&self) -> (usize, usize) {
        let cols = self.dims.first().copied().unwrap_or(1) as usize;
        let rows = self.dims.iter().skip(1).product::<u64>() as usize;
        (rows, cols)
    }
}

/// A parsed GGUF file: metadata, tensor infos and access to each tensor's bytes.
pub struct GgufFile {
    storage: Arc<Storage>,
    path: Option<std::path::PathBuf>,
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    /// Data-section alignment.
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    index: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps and parses a file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io = |source| Error::Io { path: path.display().to_string(), source };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only; as with every mmap-based reader, the file must not be
        // truncated by another process while mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        // Errors name the file as well as the offset and the tensor or key.
        let mut file = Self::parse(Arc::new(Storage::Mmap(map))).map_err(|e| match e {
            Error::Gguf { offset, context } => Error::Gguf { offset, context: format!("{}: {context}", path.display()) },
            e => e,
        })?;
        file.path = Some(path.to_path_buf());
        // Everything in the header was copied out while parsing: its pages are not needed.
        file.release_range(0, usize::try_from(file.data_offset).unwrap_or(0).min(file.bytes().len()));
        Ok(file)
    }

    /// Parses a file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::parse(Arc::new(Storage::Owned(bytes)))
    }

    fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    fn parse(storage: Arc<Storage>) -> Result<Self> {
        let bytes: &[u8] = storage.bytes();
        let mut c = Cursor { pos: 0, storage: &storage };
        if c.take(4, "magic")? != MAGIC {
            return Err(Error::gguf(0, "not a GGUF file (bad magic)"));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(Error::gguf(4, format!("unsupported GGUF version {version} (2 and 3 are)")));
        }
        let n_tensors = c.count("tensor count", 24)?;
        let n_kv = c.count("metadata count", 13)?;

        // Counts were checked against the bytes left (each item's smallest size in the file); the
        // space reserved up front is also capped by those bytes, so a count the file does not
        // back with items costs at most the file's size. Past that, vectors grow with the items.
        let mut metadata = Vec::with_capacity(capacity::<(String, Value)>(n_kv, c.remaining()));
        let mut seen = HashMap::new(); // hash tables round their reservations up: grown by items
        for _ in 0..n_kv {
            let at = c.pos as u64;
            let key = c.string("metadata key")?;
            let ty = c.value_type("metadata value type")?;
            let value = c.value(ty, 0)?;
            if seen.insert(key.clone(), ()).is_some() {
                return Err(Error::gguf(at, format!("duplicate metadata key {key:?}")));
            }
            metadata.push((key, value));
        }

        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, Value::U32(a))) if *a != 0 && a.is_power_of_two() => *a as u64,
            Some((_, v)) => return Err(Error::gguf(0, format!("general.alignment must be a power-of-two u32, got {v:?}"))),
        };

        let mut tensors = Vec::with_capacity(capacity::<TensorInfo>(n_tensors, c.remaining()));
        let mut index = HashMap::new();
        for i in 0..n_tensors {
            let at = c.pos as u64;
            let name = c.string("tensor name")?;
            let n_dims = c.u32("tensor rank")? as usize;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(Error::gguf(at, format!("tensor {name}: rank {n_dims} (1..={MAX_DIMS} allowed)")));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                let d = c.u64("tensor dimension")?;
                if d > i64::MAX as u64 {
                    return Err(Error::gguf(at, format!("tensor {name}: dimension {d} out of range")));
                }
                dims.push(d);
            }
            let type_id = c.u32("tensor type")?;
            let kind = GgmlType::from_id(type_id)
                .map_err(|_| Error::gguf(at, format!("tensor {name}: unknown ggml type id {type_id}")))?;
            let offset = c.u64("tensor offset")?;
            let size = tensor_size(&name, &dims, kind).map_err(|e| Error::gguf(at, e))?;
            if offset.checked_rem(alignment) != Some(0) {
                return Err(Error::gguf(at, format!("tensor {name}: offset {offset} is not a multiple of the alignment {alignment}")));
            }
            if index.insert(name.clone(), i).is_some() {
                return Err(Error::gguf(at, format!("duplicate tensor name {name:?}")));
            }
            tensors.push(TensorInfo { name, dims, kind, offset, size });
        }

        let data_offset = (c.pos as u64).div_ceil(alignment).saturating_mul(alignment);
        let data_len = (bytes.len() as u64).saturating_sub(data_offset);
        if !tensors.is_empty() && data_offset > bytes.len() as u64 {
            return Err(Error::gguf(c.pos as u64, "file ends before the data section"));
        }
        let mut ranges: Vec<(u64, u64, &str)> = Vec::with_capacity(tensors.len());
        for t in &tensors {
            let end = t.offset.checked_add(t.size).filter(|&e| e <= data_len).ok_or_else(|| {
                Error::gguf(
                    data_offset.saturating_add(t.offset),
                    format!("tensor {}: bytes {}..{}+{} lie outside the {} bytes of data", t.name, t.offset, t.offset, t.size, data_len),
                )
            })?;
            ranges.push((t.offset, end, &t.name));
        }
        ranges.sort_unstable();
        for w in ranges.windows(2) {
            if let [a, b] = w {
                if b.0 < a.1 {
                    return Err(Error::gguf(data_offset.saturating_add(b.0), format!("tensors {} and {} overlap", a.2, b.2)));
                }
            }
        }

        Ok(GgufFile { storage, path: None, version, metadata, tensors, alignment, data_offset, index })
    }

    /// The file it was opened from (`None` for [`from_bytes`](Self::from_bytes)).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// `"{file}: tensor {name}"` (or `"tensor {name}"` in memory): how errors name a tensor.
    pub fn describe(&self, name: &str) -> String {
        match &self.path {
            Some(p) => format!("{}: tensor {name}", p.display()),
            None => format!("tensor {name}"),
        }
    }

    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A metadata value that must be a non-negative integer; `Ok(None)` when absent.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        expect_u64(key, self.get(key))
    }

    /// A tensor's info by name.
    pub fn tensor(&self, name: &str) -> Result<&TensorInfo> {
        self.index
            .get(name)
            .and_then(|&i| self.tensors.get(i))
            .ok_or_else(|| Error::NotFound(format!("tensor {name}")))
    }

    /// Where tensor `name`'s bytes lie in the file.
    fn tensor_range(&self, name: &str) -> Result<std::ops::Range<usize>> {
        let t = self.tensor(name)?;
        // Bounds were validated at parse time.
        let start = usize::try_from(self.data_offset.saturating_add(t.offset)).unwrap_or(usize::MAX);
        let end = usize::try_from(t.size).ok().and_then(|n| start.checked_add(n)).unwrap_or(usize::MAX);
        match end <= self.bytes().len() {
            true => Ok(start..end),
            false => Err(Error::gguf(start as u64, format!("tensor {name} out of range"))),
        }
    }

    /// A tensor's raw bytes (the blocks as stored).
    pub fn tensor_data(&self, name: &str) -> Result<&[u8]> {
        let range = self.tensor_range(name)?;
        self.bytes().get(range).ok_or_else(|| Error::gguf(0, format!("tensor {name} out of range")))
    }

    /// Copies tensor `name`'s bytes into `dst` (exactly its size), telling the OS chunk by chunk
    /// that a mapped file's copied pages are not needed again: they leave the process's resident
    /// set (touching them later re-reads the file), so loading a large tensor never holds both
    /// the file's pages and the copy.
    pub fn copy_tensor(&self, name: &str, dst: &mut [u8]) -> Result<()> {
        const CHUNK: usize = 1 << 20;
        let range = self.tensor_range(name)?;
        if range.len() != dst.len() {
            return Err(Error::ByteLength { what: format!("tensor {name}"), expected: range.len(), got: dst.len() });
        }
        for (at, d) in range.step_by(CHUNK).zip(dst.chunks_mut(CHUNK)) {
            let s = self.bytes().get(at..at.saturating_add(d.len())).unwrap_or_default();
            d.copy_from_slice(s);
            self.release_range(at, d.len());
        }
        Ok(())
    }

    fn release_range(&self, start: usize, len: usize) {
        #[cfg(unix)]
        if let Storage::Mmap(map) = &*self.storage {
            // SAFETY: the map is a read-only file mapping that nothing writes to, so
            // MADV_DONTNEED only drops clean pages, which later reads fault in from the file
            // again; callers pass ranges inside the map. The advice is best-effort: an error
            // changes nothing.
            let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len) };
        }
        #[cfg(not(unix))]
        let _ = (start, len);
    }

    /// A tensor dequantized to row-major f32, with its matrix shape `(rows, cols)`.
    pub fn dequantize(&self, name: &str) -> Result<(Vec<f32>, usize, usize)> {
        let t = self.tensor(name)?;
        let (rows, cols) = t.matrix_shape();
        let data = crate::format::dequantize(t.kind, self.tensor_data(name)?, rows, cols)?;
        Ok((data, rows, cols))
    }
}

/// How many `T` to reserve up front for `n` items when `bytes` bytes of input remain: never more
/// than those bytes could hold as `T`s.
fn capacity<T>(n: usize, bytes: usize) -> usize {
    n.min(bytes.checked_div(std::mem::size_of::<T>()).unwrap_or(bytes))
}

/// Bytes of a tensor of `dims` and `kind`, with overflow and block-alignment checks. The element
/// count must fit in an `i64` (as in ggml), and so must the product of the non-zero dimensions
/// (a zero dimension makes the size 0, but the other dimensions still become a row count).
fn tensor_size(name: &str, dims: &[u64], kind: GgmlType) -> std::result::Result<u64, String> {
    dims.iter()
        .filter(|&&d| d != 0)
        .try_fold(1u64, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(|| format!("tensor {name}: dimensions {dims:?} hold more than 2^63 elements"))?;
    let cols = dims.first().copied().unwrap_or(1);
    let block = kind.block_elems() as u64;
    if cols.checked_rem(block) != Some(0) {
        return Err(format!("tensor {name}: {cols} columns is not a multiple of {kind}'s {block}"));
    }
    let mut size = cols
        .checked_div(block)
        .unwrap_or(0)
        .checked_mul(kind.block_bytes() as u64)
        .ok_or_else(|| format!("tensor {name}: size overflows"))?;
    for &d in dims.iter().skip(1) {
        size = size.checked_mul(d).ok_or_else(|| format!("tensor {name}: size overflows"))?;
    }
    Ok(size)
}

/// A bounds-checked reader over the file's bytes.
struct Cursor<'a> {
    pos: usize,
    storage: &'a Arc<Storage>,
}

impl<'a> Cursor<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.storage.bytes()
    }

    fn remaining(&self) -> usize {
        self.bytes().len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::gguf(
                self.pos as u64,
                format!("truncated: {what} needs {n} bytes, {} left", self.remaining()),
            ));
        }
        let end = self.pos.saturating_add(n);
        let s = self.bytes().get(self.pos..end).unwrap_or_default();
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Reads a u64 count of items each at least `min_size` bytes, rejecting counts the rest of
    /// the file cannot hold (so nothing is ever allocated from an unchecked number).
    fn count(&mut self, what: &str, min_size: usize) -> Result<usize> {
        let at = self.pos as u64;
        let n = self.u64(what)?;
        let fits = self.remaining().checked_div(min_size).unwrap_or(usize::MAX) as u64;
        if n > fits {
            return Err(Error::gguf(at, format!("{what} {n} exceeds what the remaining {} bytes can hold", self.remaining())));
        }
        Ok(n as usize)
    }

    fn str(&mut self, what: &str) -> Result<&'a str> {
        let len = self.count(what, 1)?;
        let at = self.pos as u64;
        std::str::from_utf8(self.take(len, what)?)
            .map_err(|e| Error::gguf(at, format!("{what} is not valid UTF-8 ({e})")))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        self.str(what).map(str::to_string)
    }

    /// `n` strings, left in the file: the array records where each one starts (validated as
    /// UTF-8 here, read in place later).
    fn strings(&mut self, n: usize) -> Result<StringArray> {
        let first = self.pos;
        let mut offsets = Vec::with_capacity(n);
        for _ in 0..n {
            let at = self.pos.saturating_sub(first);
            offsets.push(u32::try_from(at).map_err(|_| Error::gguf(self.pos as u64, "a string array larger than 4 GiB"))?);
            self.str("string")?;
        }
        Ok(StringArray::in_file(Arc::clone(self.storage), first, offsets))
    }

    fn value_type(&mut self, what: &str) -> Result<ValueType> {
        let at = self.pos as u64;
        let id = self.u32(what)?;
        ValueType::from_id(id).ok_or_else(|| Error::gguf(at, format!("unknown metadata value type {id}")))
    }

    fn value(&mut self, ty: ValueType, depth: usize) -> Result<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>("u8")?[0]),
            ValueType::I8 => Value::I8(self.array::<1>("i8")?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array("u16")?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array("i16")?)),
            ValueType::U32 => Value::U32(self.u32("u32")?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array("i32")?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array("f32")?)),
            ValueType::Bool => Value::Bool(self.bool()?),
            ValueType::String => Value::String(self.string("string")?),
            ValueType::U64 => Value::U64(self.u64("u64")?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array("i64")?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array("f64")?)),
            ValueType::Array => Value::Array(self.array_value(depth)?),
        })
    }

    fn bool(&mut self) -> Result<bool> {
        let at = self.pos as u64;
        match self.array::<1>("bool")?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(Error::gguf(at, format!("bool value {b} is neither 0 nor 1"))),
        }
    }

    fn array_value(&mut self, depth: usize) -> Result<Array> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(Error::gguf(self.pos as u64, format!("arrays nested deeper than {MAX_ARRAY_DEPTH}")));
        }
        let ty = self.value_type("array element type")?;
        let n = self.count("array length", ty.min_size())?;
        fn fixed<T, const N: usize>(c: &mut Cursor, n: usize, f: fn([u8; N]) -> T) -> Result<Vec<T>> {
            let raw = c.take(n.saturating_mul(N), "array elements")?;
            Ok(raw.chunks_exact(N).map(|b| f(b.try_into().unwrap_or([0; N]))).collect())
        }
        Ok(match ty {
            ValueType::U8 => Array::U8(self.take(n, "array elements")?.to_vec()),
            ValueType::I8 => Array::I8(fixed(self, n, |b: [u8; 1]| b[0] as i8)?),
            ValueType::U16 => Array::U16(fixed(self, n, u16::from_le_bytes)?),
            ValueType::I16 => Array::I16(fixed(self, n, i16::from_le_bytes)?),
            ValueType::U32 => Array::U32(fixed(self, n, u32::from_le_bytes)?),
            ValueType::I32 => Array::I32(fixed(self, n, i32::from_le_bytes)?),
            ValueType::F32 => Array::F32(fixed(self, n, f32::from_le_bytes)?),
            ValueType::U64 => Array::U64(fixed(self, n, u64::from_le_bytes)?),
            ValueType::I64 => Array::I64(fixed(self, n, i64::from_le_bytes)?),
            ValueType::F64 => Array::F64(fixed(self, n, f64::from_le_bytes)?),
            ValueType::Bool => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.bool()?);
                }
                Array::Bool(v)
            }
            ValueType::String => Array::String(Box::new(self.strings(n)?)),
            ValueType::Array => {
                let mut v = Vec::with_capacity(capacity::<Array>(n, self.remaining()));
                for _ in 0..n {
                    v.push(self.array_value(depth.saturating_add(1))?);
                }
                Array::Array(v)
            }
        })
    }
}
