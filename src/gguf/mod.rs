//! GGUF (v2/v3) files: a hardened reader over mmap and a writer.
//!
//! The reader validates everything before it allocates: counts and lengths are checked against
//! the bytes left in the file, ranks and nesting depths are capped, tensor byte ranges must lie
//! inside the data section, be aligned and not overlap. It returns raw bytes plus type and
//! shape; turning them into tensors is the job of [`crate::module`].

#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

mod cursor;
mod reader;
mod storage;
mod value;
mod writer;

pub use reader::{GgufFile, TensorInfo};
pub use value::{Array, ArrayList, StringArray, Value, ValueType};
pub use writer::{GgufWriter, WriterTensor};

/// The four magic bytes at the start of every GGUF file.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// Data-section alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a tensor may have (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;
/// Deepest nesting of arrays the reader accepts.
pub const MAX_ARRAY_DEPTH: usize = 8;
