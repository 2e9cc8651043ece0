//! The Hugging Face checkpoint importer on an arbitrary `config.json` and `model.safetensors`
//! (encoding in `burn_quant_fuzz::decode_hf`): every quantized linear repacked and multiplied on
//! the CPU, every float tensor read, and a Qwen3 loaded when the config declares one. Nothing may
//! panic or hang; the heap peak is bounded as in `gguf_reader`.

#![no_main]

use burn::tensor::{Device, Tensor};
use burn_quant::QuantLinear;
use burn_quant::import::HfCheckpoint;
use burn_quant::models::qwen3::Qwen3;
use burn_quant_fuzz::{PeakAlloc, PeakScope, check_bounds, decode_hf};

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((config, safetensors)) = decode_hf(data) else { return };
    let device = Device::flex();
    let scope = PeakScope::start();
    let mut declared = 0usize;
    if let Ok(ckpt) = HfCheckpoint::from_memory(config, None, vec![("model.safetensors".into(), safetensors.to_vec())]) {
        for (name, _, shape) in ckpt.tensors() {
            if let Ok((v, s)) = ckpt.tensor_f32(name) {
                declared = declared.max(v.len() * 4);
                assert_eq!(s, shape);
                assert_eq!(v.len(), s.iter().product::<usize>());
            }
        }
        for prefix in ckpt.quantized_linears() {
            let Ok(w) = ckpt.linear(prefix) else { continue };
            // What the shapes declare: the weight decoded to f32.
            declared = declared.max(w.out_features.saturating_mul(w.in_features).saturating_mul(4));
            if let Ok(layer) = QuantLinear::from_linear_weights(&w, &device) {
                let x = Tensor::<2>::ones([1, w.in_features], &device);
                let y = layer.try_forward(x).expect("a built layer accepts its own input width");
                assert_eq!(y.dims(), [1, w.out_features]);
            }
        }
        if ckpt.config().get("model_type").and_then(|t| t.as_str()) == Some("qwen3") {
            declared = declared.saturating_add(data.len());
            let _ = Qwen3::from_hf(&ckpt, &device);
        }
    }
    check_bounds(&scope, data.len(), declared);
});
