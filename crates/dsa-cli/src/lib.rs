//! The pieces of `dsa-cli` that other programs may reuse: training data, tokenizers and
//! the synthetic retrieval task.

pub mod data;
pub mod retrieval;
pub mod tokenizer;
