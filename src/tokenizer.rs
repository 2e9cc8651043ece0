//! Byte-level BPE tokenizers (GPT-2 style, as Qwen uses) built with the `tokenizers` crate, from
//! a GGUF file's `tokenizer.ggml.*` metadata or from a Hugging Face `tokenizer.json`, plus Qwen's
//! ChatML chat template.

use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::gguf::{Array, StringArray, Value};

/// The pre-tokenizer regex of Qwen2/Qwen3 (llama.cpp's `qwen2` pre-tokenizer).
pub const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// ggml token types (`tokenizer.ggml.token_type`).
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// A text tokenizer with the special ids a generator needs.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// End-of-sequence ids (generation stops at any of them).
    pub eos: Vec<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokenizer({} tokens, eos {:?})", self.inner.get_vocab_size(true), self.eos)
    }
}

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

fn strings(file: &GgufFile, key: &str) -> Result<StringArray> {
    match file.get(key) {
        Some(Value::Array(Array::String(v))) => Ok(*v),
        Some(other) => Err(Error::Tokenizer(format!("GGUF key {key} is {}, expected an array of strings", other.summary()))),
        None => Err(Error::NotFound(format!("GGUF key {key}"))),
    }
}

impl Tokenizer {
    /// Builds the tokenizer a GGUF file describes (`tokenizer.ggml.model` = `gpt2`, pre-tokenizer
    /// `qwen2`): BPE over the file's tokens and merges, control and user-defined tokens as added
    /// tokens. `Ok(None)` when the file has no tokenizer metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<Option<Self>> {
        let Some(model) = file.get("tokenizer.ggml.model") else { return Ok(None) };
        let model = model.as_str().unwrap_or("");
        if model != "gpt2" {
            return Err(Error::Tokenizer(format!("tokenizer.ggml.model {model:?} is not supported (only gpt2 byte-level BPE)")));
        }
        let pre = file.get_str("tokenizer.ggml.pre").unwrap_or("default");
        if !matches!(pre, "qwen2" | "default") {
            return Err(Error::Tokenizer(format!("tokenizer.ggml.pre {pre:?} is not supported (qwen2)")));
        }
        let tokens = strings(file, "tokenizer.ggml.tokens")?;
        let merges = strings(file, "tokenizer.ggml.merges")?;
        let types: Vec<i64> = match file.get("tokenizer.ggml.token_type").as_ref().and_then(|v| v.as_array()) {
            Some(a) => (0..a.len()).map(|i| a.get_i64(i).unwrap_or(1)).collect(),
            None => vec![1; tokens.len()],
        };
        let vocab: tokenizers::models::bpe::Vocab = tokens.iter().enumerate().map(|(i, t)| (t.to_string(), i as u32)).collect();
        let merges = merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| Error::Tokenizer(format!("merge {m:?} is not two tokens")))
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(tok_err)?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_normalizer(Some(NFC)).map_err(tok_err)?;
        let split = Split::new(SplitPattern::Regex(QWEN2_PATTERN.into()), SplitDelimiterBehavior::Isolated, false).map_err(tok_err)?;
        let pre: Vec<PreTokenizerWrapper> = vec![split.into(), ByteLevel::new(false, false, false).into()];
        inner.with_pre_tokenizer(Some(Sequence::new(pre)));
        inner.with_decoder(Some(ByteLevelDecoder::new(false, false, false)));
        let added: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, t)| matches!(**t, CONTROL | USER_DEFINED))
            .map(|(s, &t)| AddedToken::from(s.to_string(), t == CONTROL).normalized(false))
            .collect();
        let _added_count = inner.add_special_tokens(added).map_err(tok_err)?;
        let mut eos = Vec::new();
        if let Some(id) = file.get_u64("tokenizer.ggml.eos_token_id")? {
            eos.push(id as u32);
        }
        Ok(Some(Self::with_eos(inner, eos)))
    }

    /// Loads a Hugging Face `tokenizer.json`; eos is `<|im_end|>` and `<|endoftext|>` when present.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Self::with_eos(inner, Vec::new()))
    }

    fn with_eos(inner: tokenizers::Tokenizer, mut eos: Vec<u32>) -> Self {
        for t in ["<|im_end|>", "<|endoftext|>"] {
            if let Some(id) = inner.token_to_id(t)
                && !eos.contains(&id)
            {
                eos.push(id);
            }
        }
        Self { inner, eos }
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Token ids of `text` (no BOS is added: Qwen does not use one; special tokens written in the
    /// text, e.g. `<|im_start|>`, are recognised).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.inner.encode(text, false).map_err(tok_err)?.get_ids().to_vec())
    }

    /// The text of `ids` (special tokens included).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(tok_err)
    }

    /// Qwen's ChatML template for one user turn, ending where the assistant's reply starts.
    pub fn chat_prompt(user: &str) -> String {
        format!("<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
    }
}

/// Streams decoded text token by token, holding back incomplete UTF-8 sequences.
#[derive(Debug, Default)]
pub struct TextStream {
    ids: Vec<u32>,
    printed: usize,
}

impl TextStream {
    /// Adds a token and returns the newly completed text (empty while a character is split).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = tokenizer.decode(&self.ids)?;
        if text.ends_with('\u{FFFD}') || text.len() < self.printed {
            return Ok(String::new());
        }
        let new = text[self.printed..].to_string();
        self.printed = text.len();
        Ok(new)
    }
}
