//! The bytes a parsed GGUF file lives in, shared (by `Arc`) between the file and the metadata
//! arrays that point into it.

/// A memory map of the file, or the file's bytes handed over in memory.
pub(crate) enum Storage {
    /// A read-only map of the file.
    Mmap(memmap2::Mmap),
    /// Bytes in memory.
    Owned(Vec<u8>),
}

impl Storage {
    /// All the bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mmap(m) => m,
            Storage::Owned(v) => v,
        }
    }
}
