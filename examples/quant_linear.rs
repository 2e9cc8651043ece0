//! Runs `QuantLinear` on every GGUF type of the embedded gguf-blocks fixture (64×512 weights made
//! by ggml's own quantizer) and checks each output against the float64 reference.
//!
//! `cargo run --release --example quant_linear [-- --backend flex|ndarray]`

use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use burn_quant::QuantLinear;
use burn_quant::gguf::GgufFile;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gguf-blocks");

#[allow(deprecated)]
fn device(name: &str) -> Device {
    match name {
        #[cfg(feature = "ndarray")]
        "ndarray" => Device::ndarray(),
        #[cfg(feature = "flex")]
        "flex" => Device::flex(),
        other => panic!("backend {other} not compiled in"),
    }
}

fn f32s(st: &safetensors::SafeTensors, name: &str) -> Vec<f32> {
    let t = st.tensor(name).expect("fixture tensor");
    t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let backend = args.iter().position(|a| a == "--backend").and_then(|i| args.get(i + 1)).map_or("flex", |s| s.as_str());
    let device = device(backend);
    let file = GgufFile::open(format!("{DIR}/blocks.gguf"))?;
    let refs = std::fs::read(format!("{DIR}/blocks-ref.safetensors"))?;
    let refs = safetensors::SafeTensors::deserialize(&refs)?;
    let m = 17;
    let x = Tensor::<2>::from_data(TensorData::new(f32s(&refs, "x.m17"), [m, 512]), &device);

    println!("QuantLinear on {backend}: y = x · Wᵀ, x {m}x512, W 64x512\n");
    println!("{:<8} {:>10} {:>12} {:>14} {:>10}", "type", "bytes", "f32 bytes", "rel. error", "µs");
    for t in file.tensors() {
        let (rows, cols) = t.matrix_shape();
        let layer = QuantLinear::from_gguf_bytes(t.kind, file.tensor_data(&t.name)?, rows, cols, &device)?;
        let start = Instant::now();
        let y = layer.forward(x.clone()).into_data().convert::<f32>().try_to_vec::<f32>().map_err(|e| format!("{e:?}"))?;
        let us = start.elapsed().as_secs_f64() * 1e6;
        let want = f32s(&refs, &format!("{}.y.m17", t.name));
        let num: f64 = y.iter().zip(&want).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum();
        let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
        let err = (num / den).sqrt();
        println!("{:<8} {:>10} {:>12} {:>14.2e} {:>10.1}", t.kind.name(), layer.num_bytes(), rows * cols * 4, err, us);
        if err > 1e-5 {
            return Err(format!("{}: relative error {err:e} above 1e-5", t.name).into());
        }
    }
    println!("\nall 13 types within 1e-5 of the float64 reference");
    Ok(())
}
