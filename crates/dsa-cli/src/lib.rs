//! The pieces of `dsa-cli` that other programs may reuse: training data and tokenizers.

pub mod data;
pub mod tokenizer;
