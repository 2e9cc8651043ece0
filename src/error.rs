//! The crate's error type: every failure caused by a file or a caller's argument is one of these.

use crate::format::GgmlType;

/// Errors returned by burn-quant. Nothing reachable from file contents or caller arguments panics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error, with the path it happened on.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The GGUF data is malformed; `context` names the section and `offset` the byte position.
    #[error("malformed GGUF at byte {offset}: {context}")]
    Gguf {
        /// Byte offset in the file where the problem was found.
        offset: u64,
        /// What was wrong.
        context: String,
    },
    /// A ggml type id this crate does not know.
    #[error("unknown ggml type id {0}")]
    UnknownType(u32),
    /// A known ggml type that this crate cannot decode or multiply (e.g. IQ types).
    #[error("ggml type {0} is not supported")]
    UnsupportedType(GgmlType),
    /// A row length that is not a whole number of blocks.
    #[error("{cols} columns is not a multiple of {kind}'s block of {block}")]
    NotBlockAligned {
        /// The format.
        kind: GgmlType,
        /// Elements per row given.
        cols: usize,
        /// Elements per block of the format.
        block: usize,
    },
    /// A byte buffer whose length does not match the shape and format.
    #[error("{what}: expected {expected} bytes, got {got}")]
    ByteLength {
        /// What the buffer is.
        what: String,
        /// Bytes the shape and format require.
        expected: usize,
        /// Bytes supplied.
        got: usize,
    },
    /// A weight block whose scale (or value) is NaN or infinite.
    #[error("{kind} block at row {row}, column {column} has a NaN or infinite scale")]
    NonFinite {
        /// The format.
        kind: GgmlType,
        /// Row of the bad block.
        row: usize,
        /// First column of the bad block.
        column: usize,
    },
    /// An error with what it happened to: a file, a tensor (`"{file}: tensor {name}"`).
    #[error("{what}: {source}")]
    Context {
        /// The file, tensor or layer involved.
        what: String,
        /// The error.
        source: Box<Error>,
    },
    /// A shape that does not fit the operation.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A size computation overflowed.
    #[error("size overflow: {0}")]
    Overflow(String),
    /// A tensor or key that was looked up is absent.
    #[error("not found: {0}")]
    NotFound(String),
    /// A safetensors file could not be read.
    #[error("safetensors: {0}")]
    SafeTensors(String),
    /// A model file whose architecture or hyper-parameters this crate cannot run.
    #[error("unsupported model: {0}")]
    UnsupportedModel(String),
    /// The tokenizer could not be built or could not encode/decode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Anything else a caller supplied that cannot be used.
    #[error("invalid argument: {0}")]
    Invalid(String),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A GGUF error at `offset`.
    pub(crate) fn gguf(offset: u64, context: impl Into<String>) -> Self {
        Error::Gguf { offset, context: context.into() }
    }

    /// This error wrapped in [`Error::Context`] with what it happened to.
    pub fn within(self, what: String) -> Error {
        Error::Context { what, source: Box::new(self) }
    }

    /// The innermost error under any [`Error::Context`] layers.
    pub fn root(&self) -> &Error {
        match self {
            Error::Context { source, .. } => source.root(),
            e => e,
        }
    }
}

/// Adds what an error happened to (`.context(|| format!("{file}: tensor {name}"))`).
pub trait ResultExt<T> {
    /// Wraps the error, if any, in [`Error::Context`] with `what()`.
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| e.within(what()))
    }
}

/// The exit status of a command-line program's `run()`: success, or the error printed on one line
/// of stderr (`error: …`) and a failure status. Shared by the CLI and the examples.
pub fn exit_code(result: Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
