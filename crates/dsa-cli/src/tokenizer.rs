//! Text ↔ tokens: a HuggingFace `tokenizer.json`, or a byte-level BPE trained on the
//! training text with the `tokenizers` crate (`dsa-cli tokenizer train`).

use std::path::Path;

use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer, TokenizerBuilder};

/// End-of-text token of tokenizers trained here.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// The smallest vocabulary of a trained tokenizer: the 256 bytes and [`END_OF_TEXT`]
/// (the lower bound of `--vocab`).
pub const MIN_VOCAB: u64 = 257;
/// Tokens other tokenizers use to end a text, tried in order.
const EOS_CANDIDATES: [&str; 4] = [END_OF_TEXT, "<｜end▁of▁sentence｜>", "</s>", "<eos>"];

/// A tokenizer with a known end-of-text token.
#[derive(Clone, Debug)]
pub struct TextTokenizer {
    inner: Tokenizer,
    eos: u32,
}

/// Tokenizer errors, with the file concerned.
pub type TokenizerError = Box<dyn std::error::Error + Send + Sync>;

impl TextTokenizer {
    /// Loads a `tokenizer.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| format!("cannot load tokenizer {}: {e}", path.display()))?;
        Self::from_bytes(&bytes, path)
    }

    /// A tokenizer from the bytes of a `tokenizer.json`, named `origin` in errors.
    ///
    /// ```
    /// use dsa_cli::tokenizer::TextTokenizer;
    /// let err = TextTokenizer::from_bytes(b"{}", "upload.json").unwrap_err();
    /// assert!(err.to_string().starts_with("cannot load tokenizer upload.json: "));
    /// ```
    pub fn from_bytes(bytes: &[u8], origin: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let origin = origin.as_ref();
        let cannot = |e: &dyn std::fmt::Display| format!("cannot load tokenizer {}: {e}", origin.display());
        // The tokenizers crate panics on some malformed JSON (an `expect` in its decoder
        // deserialisation): the encoding and syntax are checked first, and a panic is still
        // an error.
        let text = std::str::from_utf8(bytes).map_err(|e| cannot(&format!("not valid UTF-8 ({e})")))?;
        serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(|e| cannot(&e))?;
        let inner = std::panic::catch_unwind(|| Tokenizer::from_bytes(bytes))
            .map_err(|panic| cannot(&format!("the tokenizers crate failed on it ({})", panic_message(&panic))))?
            .map_err(|e| cannot(&e))?;
        Self::new(inner).map_err(|e| format!("{}: {e}", origin.display()).into())
    }

    fn new(inner: Tokenizer) -> Result<Self, TokenizerError> {
        let eos = EOS_CANDIDATES
            .iter()
            .find_map(|t| inner.token_to_id(t))
            .ok_or_else(|| format!("the tokenizer has no end-of-text token (one of {EOS_CANDIDATES:?})"))?;
        Ok(Self { inner, eos })
    }

    /// Trains a byte-level BPE of `vocab_size` tokens (including [`END_OF_TEXT`]) on `texts`.
    ///
    /// ```
    /// use dsa_cli::tokenizer::TextTokenizer;
    /// let tok = TextTokenizer::train(["the cat sat on the mat", "the dog sat"], 300).unwrap();
    /// let ids = tok.encode("the cat sat");
    /// assert_eq!(tok.decode(&ids), "the cat sat");
    /// ```
    pub fn train<S: AsRef<str> + Send>(texts: impl IntoIterator<Item = S, IntoIter: Send>, vocab_size: usize) -> Result<Self, TokenizerError> {
        let mut trainer = BpeTrainerBuilder::new()
            .show_progress(false)
            .vocab_size(vocab_size)
            .min_frequency(2)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .special_tokens(vec![AddedToken::from(END_OF_TEXT, true)])
            .build();
        let mut tokenizer = TokenizerBuilder::new()
            .with_model(BPE::default())
            .with_normalizer(None::<tokenizers::NormalizerWrapper>)
            .with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)))
            .with_post_processor(Some(ByteLevel::default()))
            .with_decoder(Some(ByteLevel::default()))
            .build()?;
        tokenizer.train(&mut trainer, texts.into_iter())?;
        Self::new(Tokenizer::from(tokenizer))
    }

    /// Writes `tokenizer.json`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), TokenizerError> {
        let path = path.as_ref();
        self.inner.save(path, false).map_err(|e| format!("cannot write {}: {e}", path.display()).into())
    }

    /// Token ids of `text` (no special tokens added).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.inner.encode(text, false).map(|e| e.get_ids().to_vec()).unwrap_or_default()
    }

    /// The text of `ids` (special tokens skipped).
    pub fn decode(&self, ids: &[u32]) -> String {
        self.inner.decode(ids, true).unwrap_or_default()
    }

    /// The id of the token whose text is `token` (added tokens included), if any.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The end-of-text token.
    pub fn eos(&self) -> u32 {
        self.eos
    }

    /// Vocabulary size, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// The message of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic.downcast_ref::<String>().map(String::as_str).or_else(|| panic.downcast_ref::<&str>().copied()).unwrap_or("a panic")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trained_tokenizer_round_trips_and_saves() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/devils-dictionary.txt")).unwrap();
        let tok = TextTokenizer::train(text.lines().take(2000), 512).unwrap();
        assert_eq!(tok.vocab_size(), 512);
        let sample = "ABSURDITY, n.  A statement or belief manifestly inconsistent with one's own opinion. Ünïcödé ✓";
        let ids = tok.encode(sample);
        assert!(ids.len() < sample.len(), "BPE merges shorten the text");
        assert_eq!(tok.decode(&ids), sample);
        let path = std::env::temp_dir().join(format!("dsa-tok-{}.json", std::process::id()));
        tok.save(&path).unwrap();
        let back = TextTokenizer::from_file(&path).unwrap();
        assert_eq!(back.encode(sample), ids);
        assert_eq!(back.eos(), tok.eos());
        std::fs::remove_file(path).unwrap();
        assert!(TextTokenizer::from_file("/nonexistent/tokenizer.json").unwrap_err().to_string().contains("/nonexistent/tokenizer.json"));
    }

    /// Malformed JSON inside the decoder made the tokenizers crate panic (found by
    /// `tests/fuzz.rs`); it is an error naming the file.
    #[test]
    fn malformed_json_is_an_error_not_a_panic() {
        let json = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":null,"post_processor":null,"decoder":{"type":"ByteLevel","use_regex":true[[[[,"model":{"type":"WordLevel","vocab":{},"unk_token":"x"}}"#;
        let err = TextTokenizer::from_bytes(json.as_bytes(), "bad.json").unwrap_err().to_string();
        assert!(err.starts_with("cannot load tokenizer bad.json: ") && err.contains("line 1"), "{err}");
        // A byte that is not UTF-8 in a key.
        let mut bytes = json.as_bytes().to_vec();
        let at = bytes.iter().position(|&b| b == b'_').unwrap();
        bytes[at] = 0x90;
        let err = TextTokenizer::from_bytes(&bytes, "bad.json").unwrap_err().to_string();
        assert!(err.starts_with("cannot load tokenizer bad.json: not valid UTF-8"), "{err}");
    }
}
