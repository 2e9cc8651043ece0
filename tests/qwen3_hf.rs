//! Qwen3 loaded from the tiny GPTQ and AWQ checkpoints (tests/fixtures/{gptq,awq}) against the
//! logits llama.cpp computed on the same weights dequantized to F32 (see those READMEs).

mod common;

use burn::tensor::Device;
use burn_quant::import::HfCheckpoint;
use burn_quant::models::qwen3::{Qwen3, Sampler, Sampling, logits_to_vec};
use common::{Ref, fixture};

fn check(dir: &str, device: &Device) {
    let ckpt = HfCheckpoint::open(fixture(dir)).expect("checkpoint");
    let model = Qwen3::from_hf(&ckpt, device).expect("load");
    assert!(model.lm_head.is_none(), "the fixture ties its embeddings");
    let refs = Ref::open(&format!("{dir}/reference.safetensors"));
    let tokens: Vec<u32> = refs.i32("tokens").0.iter().map(|&t| t as u32).collect();
    let (want, shape) = refs.f32("logits");
    assert_eq!(shape, vec![tokens.len(), model.config.vocab_size]);
    let mut cache = model.cache();
    let got = logits_to_vec(model.forward_tokens(&tokens, &mut cache, true).expect("forward")).expect("logits");
    let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    eprintln!("{dir}: max abs diff {worst:.2e} (logits up to {scale:.1})");
    assert!(worst <= 1e-3, "{dir}: max abs diff {worst} (logits up to {scale})");
    let greedy: Vec<u32> = refs.i32("greedy_tokens").0.iter().map(|&t| t as u32).collect();
    let mut sampler = Sampler::new(Sampling::Greedy, 0);
    let out = model.generate(&tokens, greedy.len(), &mut sampler, &[], |_| Ok(true)).expect("generate");
    assert_eq!(out.tokens, greedy, "{dir}: greedy tokens");
}

fn gptq_logits_match_reference(device: Device) {
    check("gptq", &device);
}

fn awq_logits_match_reference(device: Device) {
    check("awq", &device);
}

backend_tests!(gptq_logits_match_reference, awq_logits_match_reference);
