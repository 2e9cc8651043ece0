//! Qwen3 on the tiny fixture model (tests/fixtures/qwen3-tiny, from ../shared/fixtures/qwen3-tiny:
//! a random-weight Qwen3 quantized by llama-quantize Q4_K_M, and the logits llama.cpp computed
//! for two prompts). See that folder's README for what each reference is and its tolerances.

mod common;
#[path = "common/attention_ref.rs"]
mod attention_ref;

use std::sync::OnceLock;

use burn::tensor::Device;
use burn_quant::gguf::GgufFile;
use burn_quant::models::qwen3::{Qwen3, Sampler, Sampling, logits_to_vec};
use burn_quant::Error;
use common::{Ref, fixture};

const MODEL: &str = "qwen3-tiny/tiny-qwen3-Q4_K_M.gguf";

fn file() -> &'static GgufFile {
    static FILE: OnceLock<GgufFile> = OnceLock::new();
    FILE.get_or_init(|| GgufFile::open(fixture(MODEL)).expect("tiny model"))
}

fn logits_ref() -> &'static Ref {
    static REF: OnceLock<Ref> = OnceLock::new();
    REF.get_or_init(|| Ref::open("qwen3-tiny/logits-llamacpp.safetensors"))
}

fn prompt(i: usize) -> Vec<u32> {
    logits_ref().i32(&format!("prompt{i}.tokens")).0.iter().map(|&t| t as u32).collect()
}

fn argmax(row: &[f32]) -> usize {
    burn_quant::models::qwen3::sampling::argmax(row)
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn logsumexp(row: &[f32]) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    max + row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln()
}

/// Logits of every position of prompt `i`, in one forward from an empty cache.
fn prompt_logits(model: &Qwen3, i: usize) -> (Vec<f32>, usize) {
    let tokens = prompt(i);
    let mut cache = model.cache();
    let y = model.forward_tokens(&tokens, &mut cache, true).expect("forward");
    (logits_to_vec(y).expect("logits"), tokens.len())
}

/// Against llama.cpp's Q4_K_M logits (which quantize activations to 8 bits): per-row cosine
/// ≥ 0.999 and the same argmax at every position (fixture README's suggested check).
fn logits_match_llamacpp(device: Device) {
    let model = Qwen3::from_gguf(file(), &device).expect("load");
    let vocab = model.config.vocab_size;
    for i in 0..2 {
        let (ours, n) = prompt_logits(&model, i);
        let (want, shape) = logits_ref().f32(&format!("prompt{i}.logits"));
        assert_eq!(shape, vec![n, vocab]);
        for p in 0..n {
            let (a, b) = (&ours[p * vocab..(p + 1) * vocab], &want[p * vocab..(p + 1) * vocab]);
            let cos = cosine(a, b);
            assert!(cos >= 0.999, "prompt{i} position {p}: cosine {cos}");
            assert_eq!(argmax(a), argmax(b), "prompt{i} position {p}: argmax");
        }
    }
}

/// The LM head with int8 input (`with_int8_lm_head`: llama.cpp's own arithmetic for its head)
/// against llama.cpp's logits, token by token through the KV cache (the int8 kernel takes one
/// token row): per-row cosine ≥ 0.999 and the same argmax at every position of both prompts, as
/// [`logits_match_llamacpp`]; and no further than 1e-2 (relative) from the f32 head's logits.
fn int8_lm_head_logits_match_llamacpp(device: Device) {
    int8_logits_match_llamacpp(device, false)
}

/// As [`int8_lm_head_logits_match_llamacpp`] with every product's input in int8
/// (`Qwen3::with_int8_input`, llama.cpp's own arithmetic throughout its CPU decode): where the
/// int8 kernels run, the logits are llama.cpp's to within 1e-5 (relative) at every position;
/// elsewhere (wgpu, CUDA, CPUs without AVX2) the products stay f32 and only the cosine / argmax
/// checks apply. Where they run, the prompt in one forward (the many-row int8 kernels) is held to
/// the same 1e-5.
fn int8_model_logits_match_llamacpp(device: Device) {
    int8_logits_match_llamacpp(device, true)
}

fn int8_logits_match_llamacpp(device: Device, all: bool) {
    let exact = Qwen3::from_gguf(file(), &device).expect("load");
    let model = Qwen3::from_gguf(file(), &device).expect("load");
    let model = if all { model.with_int8_input(true) } else { model.with_int8_lm_head(true) };
    let vocab = model.config.vocab_size;
    for i in 0..2 {
        let tokens = prompt(i);
        let (want, _) = logits_ref().f32(&format!("prompt{i}.logits"));
        let (mut cache, mut cache_exact) = (model.cache(), exact.cache());
        for (p, t) in tokens.iter().enumerate() {
            let ours = logits_to_vec(model.forward_tokens(&[*t], &mut cache, false).expect("step")).expect("logits");
            let f32_head = logits_to_vec(exact.forward_tokens(&[*t], &mut cache_exact, false).expect("step")).expect("logits");
            let b = &want[p * vocab..(p + 1) * vocab];
            let cos = cosine(&ours, b);
            assert!(cos >= 0.999, "prompt{i} position {p}: cosine {cos}");
            assert_eq!(argmax(&ours), argmax(b), "prompt{i} position {p}: argmax");
            if all && common::int8_kernels_run(&device) {
                // llama.cpp's own arithmetic throughout: its logits to f32 rounding (measured
                // ≤ 4.3e-7 here, where the f32 model is 1.8e-2 to 2.9e-2 from them).
                let e = common::rel_err(&ours, b);
                assert!(e <= 1e-5, "prompt{i} position {p}: {e:e} from llama.cpp's logits");
            } else if !all {
                let e = common::rel_err(&ours, &f32_head);
                assert!(e <= 1e-2, "prompt{i} position {p}: {e:e} from the f32 head");
            }
        }
        if all && common::int8_kernels_run(&device) {
            // The whole prompt in one forward, as llama.cpp computed these logits: every product
            // takes many token rows at once (the int8 prefill kernels), and the logits are again
            // llama.cpp's to f32 rounding at every position.
            let (ours, n) = prompt_logits(&model, i);
            for p in 0..n {
                let e = common::rel_err(&ours[p * vocab..(p + 1) * vocab], &want[p * vocab..(p + 1) * vocab]);
                assert!(e <= 1e-5, "prompt{i} position {p}, one forward: {e:e} from llama.cpp's logits");
            }
        }
    }
}

/// Against the tight reference (llama.cpp's forward on the all-F32 dequantized model, itself
/// within 2e-5 of a float64 forward): top-64 logits and logsumexp within 1e-3, same top-1.
fn logits_match_f32_dequant_reference(device: Device) {
    let model = Qwen3::from_gguf(file(), &device).expect("load");
    let vocab = model.config.vocab_size;
    for i in 0..2 {
        let (ours, n) = prompt_logits(&model, i);
        let (ids, _) = logits_ref().i32(&format!("prompt{i}.f32_dequant.top64_ids"));
        let (top, _) = logits_ref().f32(&format!("prompt{i}.f32_dequant.top64_logits"));
        let (lse, _) = logits_ref().f32(&format!("prompt{i}.f32_dequant.logsumexp"));
        let mut worst = 0f64;
        for p in 0..n {
            let row = &ours[p * vocab..(p + 1) * vocab];
            for j in 0..64 {
                let (id, want) = (ids[p * 64 + j] as usize, top[p * 64 + j] as f64);
                worst = worst.max((row[id] as f64 - want).abs());
            }
            worst = worst.max((logsumexp(row) - lse[p] as f64).abs());
            assert_eq!(argmax(row), ids[p * 64] as usize, "prompt{i} position {p}: top-1");
        }
        eprintln!("prompt{i}: max abs diff {worst:.2e} over top-64 logits and logsumexp");
        assert!(worst <= 1e-3, "prompt{i}: max abs diff {worst} over top-64 logits and logsumexp");
    }
}

/// Greedy generation through the KV cache gives the f32-dequant reference's 8 tokens (which equal
/// llama.cpp's Q4_K_M greedy tokens).
fn greedy_tokens_match(device: Device) {
    let model = Qwen3::from_gguf(file(), &device).expect("load");
    for i in 0..2 {
        let want: Vec<u32> = logits_ref().i32(&format!("prompt{i}.f32_dequant.greedy_tokens")).0.iter().map(|&t| t as u32).collect();
        let q4: Vec<u32> = logits_ref().i32(&format!("prompt{i}.greedy_tokens")).0.iter().map(|&t| t as u32).collect();
        assert_eq!(want, q4, "fixture: the two references agree");
        let mut sampler = Sampler::new(Sampling::Greedy, 0);
        let got = model.generate(&prompt(i), 8, &mut sampler, &[], |_| Ok(true)).expect("generate");
        assert_eq!(got.tokens, want, "prompt{i}");
    }
}

/// Running a prompt token by token through the cache gives the same last-row logits as one
/// forward over the whole prompt.
fn incremental_decoding_matches_full_forward(device: Device) {
    let model = Qwen3::from_gguf(file(), &device).expect("load");
    let tokens = prompt(1);
    let mut cache = model.cache();
    let full = logits_to_vec(model.forward_tokens(&tokens, &mut cache, false).expect("full")).expect("logits");
    let mut cache = model.cache();
    let mut last = Vec::new();
    for chunk in tokens.chunks(5) {
        last = logits_to_vec(model.forward_tokens(chunk, &mut cache, false).expect("step")).expect("logits");
    }
    assert_eq!(cache.len(), tokens.len());
    let err = common::rel_err(&last, &full);
    assert!(err <= 1e-5, "chunked vs full forward: rel. error {err}");
}

/// The KV cache keeps buffers of power-of-two capacity (256 first). Decoding a sequence that
/// outgrows the first capacity, with attention over exactly the positions held and with static
/// shapes (the whole buffer and a mask, as on the cube backends), gives the full forward's logits.
fn decoding_across_cache_growth_matches_full_forward(device: Device) {
    let model = Qwen3::from_gguf(file(), &device).expect("load");
    let tokens: Vec<u32> = (0..262u32).map(|i| (i * 7919 + 13) % 150_000).collect();
    let exact = model.cache().with_static_shapes(false);
    let full = logits_to_vec(model.forward_tokens(&tokens, &mut { exact }, false).expect("full")).expect("logits");
    for static_shapes in [false, true] {
        let mut cache = model.cache().with_static_shapes(static_shapes);
        let mut last = logits_to_vec(model.forward_tokens(&tokens[..250], &mut cache, false).expect("prefix")).expect("logits");
        // 250 → 257 crosses 256 inside one chunk; then one token, then four.
        for chunk in [&tokens[250..257], &tokens[257..258], &tokens[258..262]] {
            last = logits_to_vec(model.forward_tokens(chunk, &mut cache, false).expect("step")).expect("logits");
        }
        assert_eq!(cache.len(), tokens.len());
        let err = common::rel_err(&last, &full);
        assert!(err <= 1e-5, "static shapes {static_shapes}: decoded across growth vs full forward: rel. error {err}");
    }
    // A short prompt with static shapes (240 of its 256 positions masked) equals the exact one.
    let short = &tokens[..16];
    let a = logits_to_vec(model.forward_tokens(short, &mut model.cache().with_static_shapes(false), true).expect("exact")).expect("logits");
    let b = logits_to_vec(model.forward_tokens(short, &mut model.cache().with_static_shapes(true), true).expect("static")).expect("logits");
    let err = common::rel_err(&b, &a);
    assert!(err <= 1e-5, "static vs exact shapes on a 16-token prompt: rel. error {err}");
}

/// Decoding through a [`DecodeGraph`] (recorded and replayed on the cube backends, whose graphs
/// replay at any position since the position lives on the device; eager steps on the CPU ones)
/// gives the logits of eager steps through a static-shape cache, token after token.
fn decode_graph_matches_eager_steps(device: Device) {
    let model = Qwen3::from_gguf(file(), &device).expect("load");
    let tokens = prompt(1);
    let (head, tail) = tokens.split_at(4);
    assert!(tail.len() >= 4, "the prompt has {} tokens", tokens.len());
    let mut eager = model.cache().with_static_shapes(true);
    let mut graphed = model.cache().with_static_shapes(true);
    model.forward_tokens(head, &mut eager, false).expect("prompt");
    model.forward_tokens(head, &mut graphed, false).expect("prompt");
    // The prompt's tail fed from the host, then greedy steps fed on the device.
    const GREEDY: usize = 3;
    let mut graph = model.decode_graph(graphed, tokens.len() + GREEDY).expect("graph");
    assert!(graph.capacity() >= tokens.len() + GREEDY);
    assert!(graph.fed_token().is_err(), "no step yet");
    let mut next = 0;
    for i in 0..tail.len() + GREEDY {
        let t = if i < tail.len() { tail[i] } else { next };
        let want = logits_to_vec(model.forward_tokens(&[t], &mut eager, false).expect("eager step")).expect("logits");
        let got = logits_to_vec(graph.step(t).expect("graph step")).expect("logits");
        let err = common::rel_err(&got, &want);
        assert!(err <= 1e-5, "step {i} (position {}): graph vs eager rel. error {err}", head.len() + i);
        // The argmax the step left on the device is the host's argmax of the eager logits.
        next = graph.fed_token().expect("fed token");
        assert_eq!(next as usize, argmax(&want), "step {i}: the device's argmax");
    }
    assert_eq!(graph.len(), tokens.len() + GREEDY);
    assert_eq!(graph.is_recorded(), burn_quant::device::compiles_kernels(&device));
    assert!(matches!(graph.step(151_936), Err(Error::Invalid(_))));
    // A graph needs a prompt in a static-shape cache.
    assert!(model.decode_graph(model.cache().with_static_shapes(true), 8).is_err());
    assert!(model.decode_graph(model.cache().with_static_shapes(false), 8).is_err());
}

/// Bad token ids and non-Qwen3 files are typed errors.
fn bad_inputs_are_errors(device: Device) {
    let model = Qwen3::from_gguf(file(), &device).expect("load");
    let mut cache = model.cache();
    let err = model.forward_tokens(&[1, 151936], &mut cache, false).unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    assert!(model.forward_tokens(&[], &mut cache, false).is_err());
    let blocks = GgufFile::open(fixture("gguf-blocks/blocks.gguf")).expect("blocks fixture");
    let err = Qwen3::from_gguf(&blocks, &device).unwrap_err();
    assert!(matches!(err, Error::UnsupportedModel(_)), "{err}");
}

/// `rms_norm` against float64 over rows of several lengths, three rows each (a leading batch
/// dim): 4,096 and 1,028 values (the cube kernel that holds a row in registers: 4 full steps, and
/// a last step with one vector), 12 (fewer vectors than a plane has lanes), 6 (not whole 4-float
/// vectors) and 20,000 (too long to hold: the two-pass kernel).
fn rms_norm_matches_reference(device: Device) {
    use burn::tensor::{Tensor, TensorData};
    for n in [4096usize, 1028, 12, 6, 20_000] {
        let rows = 3;
        let x: Vec<f32> = (0..rows * n).map(|i| ((i * 37) % 41) as f32 * 0.05 - 1.0 + (i / n) as f32).collect();
        let gamma: Vec<f32> = (0..n).map(|j| 0.25 + (j % 7) as f32 * 0.2).collect();
        let eps = 1e-6;
        let mut want = vec![0f32; x.len()];
        for r in 0..rows {
            let row = &x[r * n..][..n];
            let inv = 1.0 / (row.iter().map(|v| *v as f64 * *v as f64).sum::<f64>() / n as f64 + eps).sqrt();
            for j in 0..n {
                want[r * n + j] = (row[j] as f64 * inv * gamma[j] as f64) as f32;
            }
        }
        let got = burn_quant::ops::rms_norm(
            Tensor::<3>::from_data(TensorData::new(x, [rows, 1, n]), &device),
            Tensor::<1>::from_data(TensorData::new(gamma, [n]), &device),
            eps,
        );
        let got = got.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let e = common::rel_err(&got, &want);
        assert!(e <= 1e-5, "n = {n}: relative error {e:e}");
        let bad = got.iter().zip(&want).position(|(a, b)| (a - b).abs() > 1e-5 * (1.0 + b.abs()));
        assert!(bad.is_none(), "n = {n}: element {bad:?} differs");
    }
}

/// The decode step's q/k prologue with q's and k's scales in one call (`qk_norm_rope`: heads
/// below `first` take the first scale) against a float64 per-head RMSNorm + NEOX RoPE computed
/// here, at two tokens with different device-held positions.
fn qk_norm_rope_matches_reference(device: Device) {
    use burn::tensor::{Int, Tensor, TensorData};
    let (tokens, heads, first, d, positions) = (2usize, 5usize, 3usize, 8usize, 4usize);
    let x: Vec<f32> = (0..tokens * heads * d).map(|i| ((i * 29) % 23) as f32 * 0.1 - 1.1).collect();
    let gq: Vec<f32> = (0..d).map(|j| 0.5 + j as f32 * 0.1).collect();
    let gk: Vec<f32> = (0..d).map(|j| 1.5 - j as f32 * 0.05).collect();
    let half = d / 2;
    let angle = |p: usize, j: usize| p as f64 * 10000f64.powf(-(2.0 * j as f64) / d as f64);
    let cos: Vec<f32> = (0..positions * half).map(|i| angle(i / half, i % half).cos() as f32).collect();
    let sin: Vec<f32> = (0..positions * half).map(|i| angle(i / half, i % half).sin() as f32).collect();
    let pos = [3usize, 1];
    let eps = 1e-6;
    let mut want = vec![0f32; x.len()];
    for t in 0..tokens {
        for h in 0..heads {
            let row = &x[(t * heads + h) * d..][..d];
            let g = if h < first { &gq } else { &gk };
            let inv = 1.0 / (row.iter().map(|v| *v as f64 * *v as f64).sum::<f64>() / d as f64 + eps).sqrt();
            let n: Vec<f64> = row.iter().zip(g).map(|(v, g)| *v as f64 * inv * *g as f64).collect();
            for j in 0..half {
                let (c, s) = (angle(pos[t], j).cos(), angle(pos[t], j).sin());
                want[(t * heads + h) * d + j] = (n[j] * c - n[j + half] * s) as f32;
                want[(t * heads + h) * d + j + half] = (n[j + half] * c + n[j] * s) as f32;
            }
        }
    }
    let got = burn_quant::ops::qk_norm_rope(
        Tensor::<4>::from_data(TensorData::new(x, [1, tokens, heads, d]), &device),
        Tensor::<1>::from_data(TensorData::new(gq, [d]), &device),
        Tensor::<1>::from_data(TensorData::new(gk, [d]), &device),
        first,
        Tensor::<2>::from_data(TensorData::new(cos, [positions, half]), &device),
        Tensor::<2>::from_data(TensorData::new(sin, [positions, half]), &device),
        Tensor::<1, Int>::from_data(TensorData::new(pos.iter().map(|&p| p as i64).collect::<Vec<_>>(), [tokens]), &device),
        eps,
    );
    let got = got.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    let e = common::rel_err(&got, &want);
    assert!(e <= 1e-5, "relative error {e:e}");
}


/// A prompt's whole attention (`attention_prompt`: q/k norm + RoPE of every token, the cache
/// writes and causal attention in one op) against float64: two sequences of 4 query heads over
/// 2 KV heads, `d` = 32. The first call puts 40 tokens after 3 positions already held (80 query
/// rows per KV head: several row blocks, the last partial; 43 positions: two key tiles); the
/// second puts 9 more after them on the written caches, a clone of which is held meanwhile and
/// must keep its contents. Positions past the prompt hold large values that attention must not
/// see.
fn attention_prompt_matches_reference(device: Device) {
    use burn::tensor::{Tensor, TensorData};
    let (b, h, kvh, d, cap) = (2usize, 4usize, 2usize, 32usize, 64usize);
    let (half, eps) = (d / 2, 1e-6f64);
    let val = |i: usize, s: usize| ((i * s + 7) % 37) as f32 * 0.05 - 0.9;
    let gq: Vec<f32> = (0..d).map(|j| 0.5 + j as f32 * 0.03).collect();
    let gk: Vec<f32> = (0..d).map(|j| 1.5 - j as f32 * 0.02).collect();
    let width = (h + 2 * kvh) * d;
    let mut kc: Vec<f32> = (0..b * kvh * cap * d).map(|i| val(i, 13)).collect();
    let mut vc: Vec<f32> = (0..b * kvh * cap * d).map(|i| val(i, 17)).collect();
    for (i, (k, v)) in kc.iter_mut().zip(vc.iter_mut()).enumerate() {
        if (i / d) % cap >= 3 {
            (*k, *v) = (50.0, 50.0);
        }
    }
    let tensor4 = |x: &[f32]| Tensor::<4>::from_data(TensorData::new(x.to_vec(), [b, kvh, cap, d]), &device);
    let to_vec = |t: Tensor<4>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    let (mut k_dev, mut v_dev) = (tensor4(&kc), tensor4(&vc));
    let mut kept = None;
    for (step, (start, s)) in [(3usize, 40usize), (43, 9)].into_iter().enumerate() {
        // Before the second call, a clone of the written key cache is held (the op must not
        // write it in place then).
        if step == 1 {
            kept = Some((to_vec(k_dev.clone()), k_dev.clone()));
        }
        let qkv: Vec<f32> = (0..b * s * width).map(|i| val(i, 29 + step)).collect();
        let (cos, sin) = attention_ref::rope_tables(start, s, d);
        let want = attention_ref::prompt_attention(&qkv, [&gq, &gk], [&mut kc, &mut vc], [b, s, h, kvh, d, cap], start, eps);
        let (out, k_new, v_new) = burn_quant::ops::attention_prompt(
            Tensor::<3>::from_data(TensorData::new(qkv, [b, s, width]), &device),
            Tensor::<1>::from_data(TensorData::new(gq.clone(), [d]), &device),
            Tensor::<1>::from_data(TensorData::new(gk.clone(), [d]), &device),
            Tensor::<2>::from_data(TensorData::new(cos, [s, half]), &device),
            Tensor::<2>::from_data(TensorData::new(sin, [s, half]), &device),
            (k_dev, v_dev),
            start,
            [h, kvh],
            eps,
            1.0 / (d as f32).sqrt(),
        );
        assert_eq!(out.dims(), [b, s, h * d]);
        let got = out.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let e = common::rel_err(&got, &want);
        assert!(e <= 1e-5, "start {start}: attention rel. error {e:e}");
        let (gk_, gv_) = (to_vec(k_new.clone()), to_vec(v_new.clone()));
        assert!(common::rel_err(&gk_, &kc) <= 1e-5, "start {start}: key cache");
        assert_eq!(gv_, vc, "start {start}: value cache");
        (k_dev, v_dev) = (k_new, v_new);
    }
    let (before, clone) = kept.unwrap();
    assert_eq!(to_vec(clone), before, "a clone of the cache taken before changed");
}

/// One token's whole attention step (`attention_step`: q/k norm + RoPE, the cache writes and
/// attention in one op) against a float64 reference computed here: two sequences of 4 query
/// heads over 2 KV heads, the token at position 5 of 8. Positions after it hold large values
/// that attention must not see; a clone of the caches taken before keeps its contents (the op
/// writes in place only what nothing else holds), and a second call on the written caches at
/// the next position agrees too.
fn attention_step_matches_reference(device: Device) {
    use burn::tensor::{Int, Tensor, TensorData};
    let (b, h, kvh, d, cap) = (2usize, 4usize, 2usize, 8usize, 8usize);
    let (half, g, eps) = (d / 2, h / kvh, 1e-6f64);
    let val = |i: usize, s: usize| ((i * s + 7) % 37) as f32 * 0.05 - 0.9;
    let gq: Vec<f32> = (0..d).map(|j| 0.5 + j as f32 * 0.1).collect();
    let gk: Vec<f32> = (0..d).map(|j| 1.5 - j as f32 * 0.05).collect();
    let angle = |p: usize, j: usize| p as f64 * 10000f64.powf(-(2.0 * j as f64) / d as f64);
    let cos: Vec<f32> = (0..cap * half).map(|i| angle(i / half, i % half).cos() as f32).collect();
    let sin: Vec<f32> = (0..cap * half).map(|i| angle(i / half, i % half).sin() as f32).collect();
    let width = (h + 2 * kvh) * d;
    let rotate = |x: &[f32], gamma: &[f32], p: usize| attention_ref::norm_rope(x, gamma, p, eps);
    let mut kc: Vec<f32> = (0..b * kvh * cap * d).map(|i| val(i, 13)).collect();
    let mut vc: Vec<f32> = (0..b * kvh * cap * d).map(|i| val(i, 17)).collect();
    for (i, (k, v)) in kc.iter_mut().zip(vc.iter_mut()).enumerate() {
        if (i / d) % cap > 5 {
            (*k, *v) = (50.0, 50.0);
        }
    }
    let tensor4 = |x: &[f32]| Tensor::<4>::from_data(TensorData::new(x.to_vec(), [b, kvh, cap, d]), &device);
    let to_vec = |t: Tensor<4>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    let (mut k_dev, mut v_dev) = (tensor4(&kc), tensor4(&vc));
    let kept = k_dev.clone();
    for (step, p) in [5usize, 6].into_iter().enumerate() {
        let qkv: Vec<f32> = (0..b * width).map(|i| val(i, 29 + step)).collect();
        // The reference: write the new keys/values, then attend positions 0..=p.
        let mut want = vec![0f32; b * h * d];
        for bi in 0..b {
            let row = &qkv[bi * width..][..width];
            for kh in 0..kvh {
                let kn = rotate(&row[(h + kh) * d..][..d], &gk, p);
                let at = ((bi * kvh + kh) * cap + p) * d;
                for j in 0..d {
                    kc[at + j] = kn[j] as f32;
                    vc[at + j] = row[(h + kvh + kh) * d + j];
                }
            }
            for hq in 0..h {
                let q = rotate(&row[hq * d..][..d], &gq, p);
                let base = (bi * kvh + hq / g) * cap * d;
                let o = attention_ref::attend(&q, &kc[base..], &vc[base..], p + 1);
                for j in 0..d {
                    want[(bi * h + hq) * d + j] = o[j] as f32;
                }
            }
        }
        let (out, k_new, v_new) = burn_quant::ops::attention_step(
            Tensor::<3>::from_data(TensorData::new(qkv, [b, 1, width]), &device),
            Tensor::<1>::from_data(TensorData::new(gq.clone(), [d]), &device),
            Tensor::<1>::from_data(TensorData::new(gk.clone(), [d]), &device),
            Tensor::<2>::from_data(TensorData::new(cos.clone(), [cap, half]), &device),
            Tensor::<2>::from_data(TensorData::new(sin.clone(), [cap, half]), &device),
            Tensor::<1, Int>::from_data(TensorData::new(vec![p as i64], [1]), &device),
            (k_dev, v_dev),
            [h, kvh],
            eps,
            1.0 / (d as f32).sqrt(),
        );
        assert_eq!(out.dims(), [b, 1, h * d]);
        let got = out.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let e = common::rel_err(&got, &want);
        assert!(e <= 1e-5, "position {p}: attention rel. error {e:e}");
        let (gk_, gv_) = (to_vec(k_new.clone()), to_vec(v_new.clone()));
        assert!(common::rel_err(&gk_, &kc) <= 1e-5, "position {p}: key cache");
        assert_eq!(gv_, vc, "position {p}: value cache");
        (k_dev, v_dev) = (k_new, v_new);
    }
    let before: Vec<f32> = (0..b * kvh * cap * d).map(|i| if (i / d) % cap > 5 { 50.0 } else { val(i, 13) }).collect();
    assert_eq!(to_vec(kept), before, "a clone of the cache taken before changed");
}

/// One token's attention with the same tensor as keys and values (`attention_decode`): the
/// result equals that of two distinct copies.
fn attention_decode_takes_one_tensor_as_keys_and_values(device: Device) {
    use burn::tensor::{Int, Tensor, TensorData};
    let (kvh, g, cap, d) = (2usize, 2usize, 8usize, 8usize);
    let q: Vec<f32> = (0..kvh * g * d).map(|i| ((i * 7) % 11) as f32 * 0.1 - 0.5).collect();
    let kv: Vec<f32> = (0..kvh * cap * d).map(|i| ((i * 13) % 17) as f32 * 0.1 - 0.8).collect();
    let q = Tensor::<4>::from_data(TensorData::new(q, [1, kvh, g, d]), &device);
    let kv = Tensor::<4>::from_data(TensorData::new(kv, [1, kvh, cap, d]), &device);
    let pos = Tensor::<1, Int>::from_data(TensorData::new(vec![5i64], [1]), &device);
    let same = burn_quant::ops::attention_decode(q.clone(), kv.clone(), kv.clone(), pos.clone(), 0.35);
    let copies = burn_quant::ops::attention_decode(q, kv.clone(), kv.clone() * 1.0, pos, 0.35);
    let to_vec = |t: Tensor<4>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    assert_eq!(to_vec(same), to_vec(copies));
}

/// `greedy_feed`: the argmax of a row of logits as the next token (the lowest index on ties,
/// NaNs never chosen) and the position advanced by one, against the host's argmax: a tie of the
/// maximum split across the kernel's cubes (1,024 values each), NaNs and infinities, a row of
/// all -inf and one all NaN (index 0 both), a vocabulary-sized row and a short one.
fn greedy_feed_matches_host_argmax(device: Device) {
    use burn::tensor::{Int, Tensor, TensorData};
    let noise = |n: usize, seed: u64| -> Vec<f32> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 24) as f32 * 8.0 - 4.0
            })
            .collect()
    };
    let mut tied = noise(3000, 1);
    for i in [2999, 2500, 1500, 1025] {
        tied[i] = 9.5;
    }
    let mut nans = noise(2100, 2);
    nans[0] = f32::NAN;
    nans[700] = f32::INFINITY;
    nans[701] = f32::NAN;
    nans[1800] = f32::INFINITY;
    let rows = [tied, nans, vec![f32::NEG_INFINITY; 1500], vec![f32::NAN; 1030], noise(151_936, 3), vec![0.25; 7]];
    // The device's default integers, and 8-byte ones (written as a low and a high word).
    for wide in [false, true] {
        for (r, row) in rows.iter().enumerate() {
            let want = argmax(row);
            let n = row.len();
            let logits = Tensor::<2>::from_data(TensorData::new(row.clone(), [1, n]), &device);
            let int = |v: i64| match wide {
                true => Tensor::<1, Int>::from_data(TensorData::new(vec![v], [1]), (&device, burn::tensor::DType::I64)),
                false => Tensor::<1, Int>::from_data(TensorData::new(vec![v], [1]), &device),
            };
            // With 8-byte ids, a high word that must be cleared.
            let (token, pos) = burn_quant::ops::greedy_feed(logits, int(if wide { 5 + (7 << 32) } else { 5 }), int(41));
            let read = |t: Tensor<1, Int>| t.into_data().convert::<i64>().try_to_vec::<i64>().unwrap();
            assert_eq!(read(token), vec![want as i64], "row {r} (8-byte ids {wide}): argmax");
            assert_eq!(read(pos), vec![42], "row {r} (8-byte ids {wide}): position");
        }
    }
}

backend_tests!(
    greedy_feed_matches_host_argmax,
    rms_norm_matches_reference,
    qk_norm_rope_matches_reference,
    attention_decode_takes_one_tensor_as_keys_and_values,
    attention_step_matches_reference,
    attention_prompt_matches_reference,
    logits_match_llamacpp,
    int8_lm_head_logits_match_llamacpp,
    int8_model_logits_match_llamacpp,
    logits_match_f32_dequant_reference,
    greedy_tokens_match,
    incremental_decoding_matches_full_forward,
    decoding_across_cache_growth_matches_full_forward,
    decode_graph_matches_eager_steps,
    bad_inputs_are_errors,
);
