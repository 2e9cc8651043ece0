//! What the fuzz targets share: an allocator that records the peak of live heap bytes (so a
//! target can check that no input makes the library allocate more than its size allows), and
//! the byte encodings of the targets' inputs (used by `make_seeds` to write the seed corpus).

pub use burn_quant::alloc_meter::{PeakAlloc, PeakScope};

/// Checks the allocation bounds of `scope` for an input of `input` bytes whose tensors declare
/// `declared` bytes (decoded to f32): neither one allocation nor the live heap above
/// `2 × input + declared + FIXED_SLACK` (tests/alloc_bounds.rs checks `2 × input` alone on the
/// worst files for the parsers, megabytes large).
pub fn check_bounds(scope: &PeakScope, input: usize, declared: usize) {
    let limit = 2 * input + declared + FIXED_SLACK;
    let largest = scope.largest();
    assert!(largest <= limit, "one allocation of {largest} B > {limit} B for a {input} B input");
    let peak = scope.peak();
    assert!(peak <= limit, "peak heap {peak} B > {limit} B for a {input} B input");
}

/// Fixed allowance for what any call allocates whatever its input: error messages, the
/// thread-local buffers of the CPU kernel's first call on a thread.
pub const FIXED_SLACK: usize = 64 * 1024;

/// The `hf_import` input: `u16` little-endian length of `config.json`, its text, then the bytes
/// of one `model.safetensors`.
pub fn encode_hf(config_json: &str, safetensors: &[u8]) -> Vec<u8> {
    let len = u16::try_from(config_json.len()).unwrap_or(u16::MAX);
    let mut v = len.to_le_bytes().to_vec();
    v.extend_from_slice(&config_json.as_bytes()[..usize::from(len)]);
    v.extend_from_slice(safetensors);
    v
}

/// Splits an `hf_import` input into the config text and the safetensors bytes.
pub fn decode_hf(data: &[u8]) -> Option<(&str, &[u8])> {
    let (len, rest) = data.split_first_chunk::<2>()?;
    let (config, st) = rest.split_at_checked(usize::from(u16::from_le_bytes(*len)))?;
    Some((std::str::from_utf8(config).ok()?, st))
}

/// The `quant_linear` input header: which type (index into `GgmlType::all()`), a second type for
/// a fused second part, the input features, flags, then the weight bytes.
#[derive(Clone, Copy, Debug)]
pub struct LinearHeader {
    /// Index of the (first) part's type in `GgmlType::all()`, modulo its length.
    pub kind: u8,
    /// Index of the second part's type (used when `FUSED` is set).
    pub kind2: u8,
    /// Input features.
    pub in_features: u16,
    /// Flags: see the `FLAG_*` constants.
    pub flags: u8,
    /// Where the bytes split between the two parts (fused), or the declared rows (`EXPLICIT_ROWS`).
    pub split: u16,
}

/// Two parts of (possibly) different types, fused into one layer.
pub const FLAG_FUSED: u8 = 1;
/// Rows are taken from `split` instead of derived from the byte count (exercises length errors).
pub const FLAG_EXPLICIT_ROWS: u8 = 2;
/// Add a bias built from the input.
pub const FLAG_BIAS: u8 = 4;
/// Add an input permutation read from the input (often not a permutation: an error then).
pub const FLAG_PERM: u8 = 8;
/// Batch of three input rows instead of one.
pub const FLAG_BATCH: u8 = 16;

/// Header bytes of a `quant_linear` input.
pub const LINEAR_HEADER: usize = 7;

impl LinearHeader {
    /// Encodes the header followed by `bytes`.
    pub fn encode(&self, bytes: &[u8]) -> Vec<u8> {
        let mut v = vec![self.kind, self.kind2];
        v.extend_from_slice(&self.in_features.to_le_bytes());
        v.push(self.flags);
        v.extend_from_slice(&self.split.to_le_bytes());
        v.extend_from_slice(bytes);
        v
    }

    /// Decodes a header and the bytes after it.
    pub fn decode(data: &[u8]) -> Option<(Self, &[u8])> {
        let (h, rest) = data.split_first_chunk::<LINEAR_HEADER>()?;
        let h = Self {
            kind: h[0],
            kind2: h[1],
            in_features: u16::from_le_bytes([h[2], h[3]]),
            flags: h[4],
            split: u16::from_le_bytes([h[5], h[6]]),
        };
        Some((h, rest))
    }
}
