//! The Qwen2/Qwen3 tokenizer built from the tiny model's GGUF metadata (its vocab and merges are
//! llama.cpp's `models/ggml-vocab-qwen2.gguf`) against llama.cpp's qwen2 tokenizer test vectors
//! (tests/fixtures/tokenizer, copied from ../shared/fixtures/tokenizer).

mod common;

use burn_quant::gguf::GgufFile;
use burn_quant::tokenizer::{TextStream, Tokenizer};
use common::fixture;

fn tokenizer() -> Tokenizer {
    let file = GgufFile::open(fixture("qwen3-tiny/tiny-qwen3-Q4_K_M.gguf")).expect("tiny model");
    Tokenizer::from_gguf(&file).expect("tokenizer").expect("the GGUF has tokenizer metadata")
}

fn vectors() -> Vec<(String, Vec<u32>)> {
    let inp = std::fs::read_to_string(fixture("tokenizer/ggml-vocab-qwen2.gguf.inp")).expect("inp");
    let out = std::fs::read_to_string(fixture("tokenizer/ggml-vocab-qwen2.gguf.out")).expect("out");
    let mut texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    assert_eq!(texts.pop(), Some(""), "the file ends with a separator");
    let ids: Vec<Vec<u32>> = out.lines().map(|l| l.split_whitespace().map(|t| t.parse().expect("id")).collect()).collect();
    assert_eq!(texts.len(), 46);
    assert_eq!(texts.len(), ids.len());
    texts.into_iter().map(String::from).zip(ids).collect()
}

#[test]
fn gguf_tokenizer_reproduces_llamacpp_vectors() {
    let tok = tokenizer();
    for (text, want) in vectors() {
        assert_eq!(tok.encode(&text).expect("encode"), want, "text {text:?}");
    }
}

#[test]
fn decode_round_trips_and_streams() {
    let tok = tokenizer();
    for (text, ids) in vectors() {
        assert_eq!(tok.decode(&ids).expect("decode"), text);
        let mut stream = TextStream::default();
        let streamed: String = ids.iter().map(|&id| stream.push(&tok, id).expect("push")).collect();
        assert_eq!(streamed, text);
    }
}

#[test]
fn fixture_prompts_and_chat_template() {
    let tok = tokenizer();
    assert_eq!(tok.encode("Hello world, this is a test").unwrap(), [9707, 1879, 11, 419, 374, 264, 1273]);
    let chat = Tokenizer::chat_prompt("Write a haiku about 4-bit GGUF k-quants in Rust.");
    let want = [
        151644, 872, 198, 7985, 264, 6386, 38242, 911, 220, 19, 15257, 56698, 20538, 595, 73701, 1783, 304, 33789, 13, 151645,
        198, 151644, 77091, 198,
    ];
    assert_eq!(tok.encode(&chat).unwrap(), want);
    assert!(tok.eos.contains(&151645));
}

/// The same tokenizer saved as a Hugging Face tokenizer.json and loaded back encodes alike.
#[test]
fn tokenizer_json_round_trip() {
    let tok = tokenizer();
    let dir = std::env::temp_dir().join(format!("burn-quant-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokenizer.json");
    tok.inner().save(&path, false).expect("save");
    let back = Tokenizer::from_file(&path).expect("load tokenizer.json");
    for (text, want) in vectors() {
        assert_eq!(back.encode(&text).unwrap(), want, "text {text:?}");
    }
    assert!(back.eos.contains(&151645));
    let _ = std::fs::remove_dir_all(&dir);
}
