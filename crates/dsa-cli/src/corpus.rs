//! The training corpus: text documents packed into sequences, plus synthetic retrieval
//! examples of the same length, split into training and validation sequences.

use std::path::PathBuf;

use clap::builder::RangedU64ValueParser;
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::data::{pack, read_documents, DataError, Document};
use crate::retrieval::{RetrievalExample, RetrievalTask};
use crate::tokenizer::TextTokenizer;
use crate::train::TrainData;

/// Seed of the retrieval examples used for training (evaluation uses other seeds).
pub const TRAIN_RETRIEVAL_SEED: u64 = 1;
/// One sequence in this many goes to validation.
const VALID_EVERY: usize = 20;

/// What to train on.
#[derive(Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataArgs {
    /// Training text: files, directories (read recursively) or JSONL files with a `text`
    /// field.
    #[arg(long, num_args = 1.., default_value = "data/devils-dictionary.txt")]
    pub data: Vec<PathBuf>,
    /// Tokens per training sequence.
    #[arg(long, default_value_t = 256, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub seq_len: usize,
    /// Synthetic retrieval examples (key–value pairs, filler from the data, the query at
    /// the end) mixed into the training sequences.
    #[arg(long, default_value_t = 0)]
    pub retrieval: usize,
    /// Key–value pairs per retrieval example.
    #[arg(long, default_value_t = 1, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub pairs: usize,
}

impl DataArgs {
    /// Reads the documents.
    pub fn documents(&self) -> Result<Vec<Document>, DataError> {
        read_documents(&self.data)
    }

    /// `n` retrieval examples from `seed`, their filler taken from `docs`, with enough
    /// filler for [`DataArgs::seq_len`] tokens.
    pub fn retrieval_examples(&self, docs: &[Document], seed: u64, n: usize) -> Vec<RetrievalExample> {
        let filler: String = docs.iter().map(|d| d.text.as_str()).collect::<Vec<_>>().join("\n");
        let mut task = RetrievalTask::new(seed, self.pairs, 16 * (self.seq_len + 1));
        (0..n).map(|_| task.example(&filler)).collect()
    }

    /// Texts to train a tokenizer on: the documents and the retrieval examples.
    pub fn tokenizer_texts(&self, docs: &[Document]) -> Vec<String> {
        let examples = self.retrieval_examples(docs, TRAIN_RETRIEVAL_SEED, self.retrieval.min(1000));
        docs.iter().map(|d| d.text.clone()).chain(examples.iter().map(|e| format!("{}{}", e.prompt(), e.answer))).collect()
    }

    /// Tokenises `docs` into sequences of `seq_len + 1` tokens, adds the retrieval
    /// examples, and sets every `VALID_EVERY`-th sequence of each kind aside for
    /// validation.
    pub fn sequences(&self, docs: &[Document], tokenizer: &TextTokenizer) -> Result<TrainData, String> {
        let len = self.seq_len + 1;
        let text = pack(docs.iter().map(|d| tokenizer.encode(&d.text)), tokenizer.eos(), self.seq_len).map_err(|e| e.to_string())?;
        let retrieval = self
            .retrieval_examples(docs, TRAIN_RETRIEVAL_SEED, self.retrieval)
            .iter()
            .map(|ex| ex.tokens(tokenizer, len).map(|(prompt, answer)| [prompt, answer].concat()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("--retrieval: {e}; raise --seq-len or lower --pairs"))?;
        let mut data = TrainData { train: Vec::new(), valid: Vec::new() };
        for kind in [text, retrieval] {
            let last = kind.len().saturating_sub(1);
            for (i, seq) in kind.into_iter().enumerate() {
                match (i % VALID_EVERY == VALID_EVERY - 1, i == last && last < VALID_EVERY - 1) {
                    (true, _) => data.valid.push(seq),
                    // Too few sequences for a validation share: validate on the last one too.
                    (false, true) => {
                        data.valid.push(seq.clone());
                        data.train.push(seq);
                    }
                    (false, false) => data.train.push(seq),
                }
            }
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_retrieval_sequences_are_split() {
        let docs: Vec<Document> = (0..100)
            .map(|i| Document { source: format!("d{i}"), text: format!("Entry {i}. Some words about the entry number {i}, and more words, and more after them.") })
            .collect();
        let args = DataArgs { data: vec![], seq_len: 64, retrieval: 25, pairs: 2 };
        let tok = TextTokenizer::train(args.tokenizer_texts(&docs), 300).unwrap();
        let data = args.sequences(&docs, &tok).unwrap();
        assert!(data.train.iter().chain(&data.valid).all(|s| s.len() == 65));
        let text = pack(docs.iter().map(|d| tok.encode(&d.text)), tok.eos(), 64).unwrap().len();
        assert!(text >= 20, "{text} text sequences");
        // One in twenty of each kind: 25 retrieval examples give one validation sequence.
        let is_retrieval = |s: &&Vec<u32>| tok.decode(s).contains("So key");
        assert_eq!(data.valid.iter().filter(is_retrieval).count(), 1);
        assert_eq!(data.train.iter().filter(is_retrieval).count(), 24);
        assert_eq!(data.valid.len(), 1 + text / 20);
        assert_eq!(data.train.len(), 24 + text - text / 20);
    }
}
