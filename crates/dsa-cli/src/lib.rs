//! The pieces of `dsa-cli` that other programs may reuse: training data, tokenizers, the
//! synthetic retrieval task, training with Burn's learner, and generation.

#![warn(missing_docs)]

pub mod batcher;
pub mod checkpoint;
pub mod commands;
pub mod corpus;
pub mod data;
pub mod demo;
pub mod generate;
pub mod loader;
pub mod metrics;
pub mod presets;
pub mod progress;
pub mod retrieval;
pub mod sampling;
pub mod tokenizer;
pub mod train;
