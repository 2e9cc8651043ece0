//! The GGUF reader: validates a byte buffer (usually a memory map) with every length and offset
//! checked before use, and keeps only where each metadata entry and tensor info starts. Values
//! and infos are built from the file's bytes when asked for, so parsing costs 12 bytes of heap
//! per entry or tensor (its offset and its place in a sorted index), never more than the file.

use std::path::Path;
use std::sync::Arc;

use super::cursor::{Cursor, InfoRef};
use super::storage::Storage;
use super::value::{Value, expect_u64};
use super::{DEFAULT_ALIGNMENT, MAGIC};
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

impl From<InfoRef<'_>> for TensorInfo {
    fn from(t: InfoRef<'_>) -> Self {
        Self { name: t.name.to_string(), dims: t.dims().to_vec(), kind: t.kind, offset: t.offset, size: t.size }
    }
}

/// A parsed GGUF file: metadata, tensor infos and access to each tensor's bytes.
///
/// Everything was validated when it was parsed; metadata values and tensor infos are then built
/// from the file on each access ([`get`](Self::get), [`metadata`](Self::metadata),
/// [`tensor`](Self::tensor), [`tensors`](Self::tensors)).
pub struct GgufFile {
    storage: Arc<Storage>,
    path: Option<std::path::PathBuf>,
    /// Format version (2 or 3).
    pub version: u32,
    /// Data-section alignment.
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    /// Where each metadata entry starts, in file order.
    entries: Vec<usize>,
    /// Indices into `entries`, sorted by key.
    by_key: Vec<u32>,
    /// Where each tensor info starts, in file order.
    infos: Vec<usize>,
    /// Indices into `infos`, sorted by name.
    by_name: Vec<u32>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("metadata", &self.entries.len())
            .field("tensors", &self.infos.len())
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
        // The parse walked the whole header; a lookup faults back in only the pages it reads.
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
        let mut c = Cursor::at(&storage, 0);
        if c.take(4, "magic")? != MAGIC {
            return Err(Error::gguf(0, "not a GGUF file (bad magic)"));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(Error::gguf(4, format!("unsupported GGUF version {version} (2 and 3 are)")));
        }
        // Counts are checked against the bytes left (each item's smallest size in the file:
        // 13 bytes an entry, 32 a tensor info), so what is reserved for them is below the
        // file's size even when the file does not back them with items.
        let n_tensors = c.count("tensor count", 32)?;
        let n_kv = c.count("metadata count", 13)?;

        let mut entries = Vec::with_capacity(n_kv);
        for _ in 0..n_kv {
            let at = c.pos;
            let (_, ty) = c.entry_head()?;
            c.skip_value(ty, 0)?;
            entries.push(at);
        }
        let key = |i: u32| entry_key(&storage, entries.get(i as usize).copied().unwrap_or(0));
        let by_key = sorted_index(entries.len(), key, |a, b| {
            let at = entries.get(a.max(b) as usize).copied().unwrap_or(0);
            Error::gguf(at as u64, format!("duplicate metadata key {:?}", key(a)))
        })?;

        let alignment = match lookup(&by_key, key, "general.alignment").and_then(|i| entries.get(i)) {
            None => DEFAULT_ALIGNMENT,
            Some(&at) => match entry_value(&storage, at) {
                Some(Value::U32(a)) if a != 0 && a.is_power_of_two() => a as u64,
                v => return Err(Error::gguf(at as u64, format!("general.alignment must be a power-of-two u32, got {v:?}"))),
            },
        };

        // Each info's data range (offset, size) with its index, for the range and overlap checks.
        let mut infos = Vec::with_capacity(n_tensors);
        let mut ranges: Vec<(u64, u64, u32)> = Vec::with_capacity(n_tensors);
        for i in 0..n_tensors {
            let at = c.pos;
            let t = c.tensor_info(alignment)?;
            infos.push(at);
            ranges.push((t.offset, t.size, u32::try_from(i).unwrap_or(u32::MAX)));
        }
        let name = |i: u32| info_name(&storage, infos.get(i as usize).copied().unwrap_or(0));
        let by_name = sorted_index(infos.len(), name, |a, b| {
            let at = infos.get(a.max(b) as usize).copied().unwrap_or(0);
            Error::gguf(at as u64, format!("duplicate tensor name {:?}", name(a)))
        })?;

        let data_offset = (c.pos as u64).div_ceil(alignment).saturating_mul(alignment);
        let data_len = (bytes.len() as u64).saturating_sub(data_offset);
        if !infos.is_empty() && data_offset > bytes.len() as u64 {
            return Err(Error::gguf(c.pos as u64, "file ends before the data section"));
        }
        for r in ranges.iter_mut() {
            let (offset, size, i) = *r;
            r.1 = offset.checked_add(size).filter(|&e| e <= data_len).ok_or_else(|| {
                Error::gguf(
                    data_offset.saturating_add(offset),
                    format!("tensor {}: bytes {offset}..{offset}+{size} lie outside the {data_len} bytes of data", name(i)),
                )
            })?;
        }
        ranges.sort_unstable();
        for w in ranges.windows(2) {
            if let [a, b] = w
                && b.0 < a.1
            {
                return Err(Error::gguf(data_offset.saturating_add(b.0), format!("tensors {} and {} overlap", name(a.2), name(b.2))));
            }
        }
        drop(ranges);

        Ok(GgufFile { storage, path: None, version, alignment, data_offset, entries, by_key, infos, by_name })
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

    /// Number of metadata entries.
    pub fn metadata_len(&self) -> usize {
        self.entries.len()
    }

    /// The metadata entries in file order, each value built from the file as it is reached.
    pub fn metadata(&self) -> impl Iterator<Item = (&str, Value)> + '_ {
        self.entries.iter().filter_map(|&at| Some((entry_key(&self.storage, at), entry_value(&self.storage, at)?)))
    }

    fn entry(&self, key: &str) -> Option<usize> {
        let i = lookup(&self.by_key, |i| entry_key(&self.storage, self.entries.get(i as usize).copied().unwrap_or(0)), key)?;
        self.entries.get(i).copied()
    }

    /// A metadata value by key, built from the file.
    pub fn get(&self, key: &str) -> Option<Value> {
        entry_value(&self.storage, self.entry(key)?)
    }

    /// A metadata string by key, read in place; `None` when absent or not a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        let mut c = Cursor::at(&self.storage, self.entry(key)?);
        match c.entry_head().ok()? {
            (_, super::ValueType::String) => c.str("string").ok(),
            _ => None,
        }
    }

    /// A metadata value that must be a non-negative integer; `Ok(None)` when absent.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        expect_u64(key, self.get(key).as_ref())
    }

    /// A numeric metadata value as an f64; `None` when absent or not a number.
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key)?.as_f64()
    }

    /// Number of tensors.
    pub fn tensor_count(&self) -> usize {
        self.infos.len()
    }

    /// The tensor infos in file order, each built from the file as it is reached.
    pub fn tensors(&self) -> impl Iterator<Item = TensorInfo> + '_ {
        self.infos.iter().filter_map(|&at| self.info_at(at).ok().map(TensorInfo::from))
    }

    fn info_at(&self, at: usize) -> Result<InfoRef<'_>> {
        Cursor::at(&self.storage, at).tensor_info(self.alignment)
    }

    fn info(&self, name: &str) -> Result<InfoRef<'_>> {
        lookup(&self.by_name, |i| info_name(&self.storage, self.infos.get(i as usize).copied().unwrap_or(0)), name)
            .and_then(|i| self.infos.get(i))
            .ok_or_else(|| Error::NotFound(format!("tensor {name}")))
            .and_then(|&at| self.info_at(at))
    }

    /// A tensor's info by name.
    pub fn tensor(&self, name: &str) -> Result<TensorInfo> {
        self.info(name).map(TensorInfo::from)
    }

    /// Where tensor `name`'s bytes lie in the file.
    fn tensor_range(&self, name: &str) -> Result<std::ops::Range<usize>> {
        self.range_of(&self.info(name)?)
    }

    /// Where a tensor's bytes lie in the file (bounds were validated at parse time).
    fn range_of(&self, t: &InfoRef<'_>) -> Result<std::ops::Range<usize>> {
        let start = usize::try_from(self.data_offset.saturating_add(t.offset)).unwrap_or(usize::MAX);
        let end = usize::try_from(t.size).ok().and_then(|n| start.checked_add(n)).unwrap_or(usize::MAX);
        match end <= self.bytes().len() {
            true => Ok(start..end),
            false => Err(Error::gguf(start as u64, format!("tensor {} out of range", t.name))),
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
            self.release_read(at, d.len());
        }
        Ok(())
    }

    /// Releases the pages of `start..start + len` after a read, with the pages around it that
    /// the kernel maps on a fault ("fault-around", 64 KiB by default): without the margin, each
    /// tensor read leaves up to 128 KiB of its neighbours resident.
    fn release_read(&self, start: usize, len: usize) {
        const FAULT_AROUND: usize = 64 << 10;
        let lo = start.saturating_sub(FAULT_AROUND);
        let hi = start.saturating_add(len).saturating_add(FAULT_AROUND).min(self.bytes().len());
        self.release_range(lo, hi.saturating_sub(lo));
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

    /// A tensor dequantized to row-major f32, with its matrix shape `(rows, cols)`. The file's
    /// pages it read are released, as [`copy_tensor`](Self::copy_tensor)'s are.
    pub fn dequantize(&self, name: &str) -> Result<(Vec<f32>, usize, usize)> {
        let info = self.info(name)?;
        let range = self.range_of(&info)?;
        let t = TensorInfo::from(info);
        let (rows, cols) = t.matrix_shape();
        let data = crate::format::dequantize(t.kind, self.bytes().get(range.clone()).unwrap_or_default(), rows, cols)?;
        self.release_read(range.start, range.len());
        Ok((data, rows, cols))
    }
}

/// The key of the metadata entry at `at` (validated by the parse).
fn entry_key(storage: &Arc<Storage>, at: usize) -> &str {
    Cursor::at(storage, at).str("metadata key").unwrap_or_default()
}

/// The value of the metadata entry at `at`, built from the file.
fn entry_value(storage: &Arc<Storage>, at: usize) -> Option<Value> {
    let mut c = Cursor::at(storage, at);
    let (_, ty) = c.entry_head().ok()?;
    c.value(ty, 0).ok()
}

/// The name of the tensor info at `at` (validated by the parse).
fn info_name(storage: &Arc<Storage>, at: usize) -> &str {
    Cursor::at(storage, at).str("tensor name").unwrap_or_default()
}

/// `0..n` sorted by `name`, with `duplicate(a, b)` as the error when two names are equal.
fn sorted_index<'s>(n: usize, name: impl Fn(u32) -> &'s str, duplicate: impl Fn(u32, u32) -> Error) -> Result<Vec<u32>> {
    let n = u32::try_from(n).map_err(|_| Error::gguf(0, format!("{n} entries (at most 2^32 are read)")))?;
    let mut index: Vec<u32> = (0..n).collect();
    index.sort_unstable_by(|&a, &b| name(a).cmp(name(b)));
    for w in index.windows(2) {
        if let [a, b] = *w
            && name(a) == name(b)
        {
            return Err(duplicate(a, b));
        }
    }
    Ok(index)
}

/// Where `key` is, by binary search of an index sorted by `name`.
fn lookup<'s>(index: &[u32], name: impl Fn(u32) -> &'s str, key: &str) -> Option<usize> {
    let i = index.binary_search_by(|&i| name(i).cmp(key)).ok()?;
    index.get(i).map(|&i| i as usize)
}
