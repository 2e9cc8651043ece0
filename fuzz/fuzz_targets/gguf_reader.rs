//! The GGUF reader on arbitrary bytes: header, metadata, tensor infos, then every tensor decoded,
//! the metadata read back, and — when the file declares a Qwen3 — the whole model loaded on the
//! CPU. Nothing may panic or hang, and neither one allocation nor the live heap may exceed twice
//! the input plus the largest decoded tensor (f32).

#![no_main]

use burn::tensor::Device;
use burn_quant::gguf::GgufFile;
use burn_quant::models::qwen3::{Qwen3, Qwen3Config};
use burn_quant_fuzz::{PeakAlloc, PeakScope, check_bounds};

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let device = Device::flex();
    let scope = PeakScope::start();
    let mut declared = 0usize;
    if let Ok(file) = GgufFile::from_bytes(data.to_vec()) {
        for t in file.tensors() {
            let elems = usize::try_from(t.num_elements()).unwrap_or(usize::MAX);
            declared = declared.max(elems.saturating_mul(4));
            let bytes = file.tensor_data(&t.name).expect("a parsed tensor's bytes are in range");
            assert_eq!(bytes.len() as u64, t.size);
            if let Ok((v, rows, cols)) = file.dequantize(&t.name) {
                assert_eq!(v.len(), rows * cols);
            }
        }
        assert_eq!(file.tensors().count(), file.tensor_count());
        assert_eq!(file.metadata().count(), file.metadata_len());
        for (key, value) in file.metadata() {
            let _ = value.summary();
            if let Some(burn_quant::gguf::Array::Array(list)) = value.as_array() {
                assert_eq!(list.iter().count(), list.len());
            }
            assert_eq!(file.get(key).map(|v| v.value_type()), Some(value.value_type()));
        }
        if Qwen3Config::from_gguf(&file).is_ok() {
            // Loading copies the quantized bytes once more into the layers' tensors.
            declared = declared.saturating_add(data.len());
            let _ = Qwen3::from_gguf(&file, &device);
        }
    }
    check_bounds(&scope, data.len(), declared);
});
