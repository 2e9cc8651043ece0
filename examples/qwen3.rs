//! Generates text with a quantized Qwen3.
//!
//! ```sh
//! cargo run --release --example qwen3                       # the tiny Qwen3 shipped in tests/fixtures
//! cargo run --release --example qwen3 -- --model Qwen3-8B-Q4_K_M.gguf --prompt "Why is the sky blue?" --chat
//! ```
//!
//! Options: `--model FILE.gguf|DIR` (a GGUF file, or a Hugging Face GPTQ/AWQ checkpoint directory), `--prompt TEXT` or `--tokens 1,2,3`, `--chat` (ChatML template),
//! `--max-tokens N` (default 32), `--backend flex|ndarray|wgpu|cuda`, `--temperature T` and
//! `--top-p P` (default greedy), `--seed S`, `--tokenizer tokenizer.json` (else the GGUF's own),
//! `--dump-logits OUT.safetensors` (logits `[n_prompt, vocab]` of one forward over the prompt),
//! `--no-tokenizer` (don't build one: give `--tokens`, token ids are printed; the tokenizer of a
//! 151k vocabulary takes about 50 MB), `--int8` (on the CPU backends, one-token products of
//! Q4_K / Q6_K weights take their input rounded to int8 as llama.cpp does: `Qwen3::with_int8_input`).

use std::collections::HashMap;
use std::io::Write;

use burn_quant::device::device_by_name;
use burn_quant::gguf::GgufFile;
use burn_quant::import::HfCheckpoint;
use burn_quant::models::qwen3::{Qwen3, Sampler, Sampling, logits_to_vec};
use burn_quant::tokenizer::{TextStream, Tokenizer};
use burn_quant::{Error, Result};

const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/qwen3-tiny/tiny-qwen3-Q4_K_M.gguf");
const FLAGS: [&str; 3] = ["chat", "no-tokenizer", "int8"];
const OPTIONS: [&str; 10] =
    ["model", "prompt", "tokens", "max-tokens", "backend", "temperature", "top-p", "seed", "tokenizer", "dump-logits"];

fn parse_args() -> Result<HashMap<String, String>> {
    let mut map = HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let name = a.strip_prefix("--").ok_or_else(|| Error::Invalid(format!("unexpected argument {a:?}")))?;
        if FLAGS.contains(&name) {
            map.insert(name.to_string(), String::new());
        } else if OPTIONS.contains(&name) {
            let v = it.next().ok_or_else(|| Error::Invalid(format!("--{name} needs a value")))?;
            map.insert(name.to_string(), v);
        } else {
            return Err(Error::Invalid(format!("unknown option --{name}")));
        }
    }
    Ok(map)
}

fn num<T: std::str::FromStr>(args: &HashMap<String, String>, key: &str, default: T) -> Result<T> {
    match args.get(key) {
        Some(v) => v.parse().map_err(|_| Error::Invalid(format!("--{key} {v:?} is not a number"))),
        None => Ok(default),
    }
}

fn run() -> Result<()> {
    let args = parse_args()?;
    let device = device_by_name(args.get("backend").map_or("flex", |s| s.as_str()))?;
    let path = args.get("model").map_or(TINY, |s| s.as_str());
    let (model, mut tokenizer) = if std::path::Path::new(path).is_dir() {
        // A Hugging Face checkpoint directory (GPTQ / AWQ / dense safetensors).
        let ckpt = HfCheckpoint::open(path)?;
        let tok = std::path::Path::new(path).join("tokenizer.json");
        let tok = if tok.exists() && !args.contains_key("no-tokenizer") { Some(Tokenizer::from_file(tok)?) } else { None };
        (Qwen3::from_hf(&ckpt, &device)?, tok)
    } else {
        let file = GgufFile::open(path)?;
        let model = Qwen3::from_gguf(&file, &device)?;
        (model, if args.contains_key("no-tokenizer") { None } else { Tokenizer::from_gguf(&file)? })
    };
    let model = model.with_int8_input(args.contains_key("int8"));
    if let Some(p) = args.get("tokenizer") {
        tokenizer = Some(Tokenizer::from_file(p)?);
    }
    let c = &model.config;
    eprintln!(
        "{path}: Qwen3, {} layers, hidden {}, {} heads / {} kv heads, vocab {}",
        c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.vocab_size,
    );

    let prompt: Vec<u32> = match (args.get("tokens"), args.get("prompt"), &tokenizer) {
        (Some(t), _, _) => t
            .split(',')
            .map(|s| s.trim().parse().map_err(|_| Error::Invalid(format!("--tokens: {s:?} is not a token id"))))
            .collect::<Result<_>>()?,
        (None, p, Some(tok)) => {
            let text = p.map_or("Hello world, this is a test", |s| s.as_str());
            let text = if args.contains_key("chat") { Tokenizer::chat_prompt(text) } else { text.to_string() };
            tok.encode(&text)?
        }
        (None, _, None) => return Err(Error::Invalid("this model has no tokenizer: pass --tokens 1,2,3 or --tokenizer".into())),
    };
    eprintln!("prompt: {} tokens {prompt:?}", prompt.len());

    if let Some(out) = args.get("dump-logits") {
        let mut cache = model.cache();
        let logits = logits_to_vec(model.forward_tokens(&prompt, &mut cache, true)?)?;
        let bytes: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![prompt.len(), c.vocab_size], &bytes)
            .map_err(|e| Error::SafeTensors(e.to_string()))?;
        safetensors::serialize_to_file([("logits", view)], None, std::path::Path::new(out))
            .map_err(|e| Error::SafeTensors(format!("{out}: {e}")))?;
        eprintln!("wrote logits [{}, {}] to {out}", prompt.len(), c.vocab_size);
        return Ok(());
    }

    let temperature: f32 = num(&args, "temperature", 0.0)?;
    let sampling = if temperature > 0.0 {
        Sampling::TopP { temperature, top_p: num(&args, "top-p", 0.95)? }
    } else {
        Sampling::Greedy
    };
    let mut sampler = Sampler::new(sampling, num(&args, "seed", 42)?);
    let max_new: usize = num(&args, "max-tokens", 32)?;
    let stop = tokenizer.as_ref().map(|t| t.eos.clone()).unwrap_or_default();
    let mut stream = TextStream::default();
    let mut stdout = std::io::stdout();
    if let Some(tok) = &tokenizer {
        print!("{}", tok.decode(&prompt)?);
    }
    let out = model.generate(&prompt, max_new, &mut sampler, &stop, |id| {
        match &tokenizer {
            Some(tok) => print!("{}", stream.push(tok, id)?),
            None => print!("{id} "),
        }
        let _ = stdout.flush();
        Ok(true)
    })?;
    println!();
    let gen_tokens = out.timed_steps;
    let recorded = if out.record_time.is_zero() {
        String::new()
    } else {
        format!(" (after recording the decode graph: {:.1} ms)", out.record_time.as_secs_f64() * 1e3)
    };
    eprintln!(
        "prompt: {} tokens in {:.1} ms ({:.1} tokens/s); generation: {} tokens in {:.1} ms ({:.1} tokens/s){recorded}",
        prompt.len(),
        out.prompt_time.as_secs_f64() * 1e3,
        prompt.len() as f64 / out.prompt_time.as_secs_f64(),
        gen_tokens,
        out.generation_time.as_secs_f64() * 1e3,
        gen_tokens as f64 / out.generation_time.as_secs_f64().max(1e-9),
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    burn_quant::error::exit_code(run())
}
