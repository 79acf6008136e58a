//! The pieces of `dsa-cli` that other programs may reuse: training data, tokenizers, the
//! synthetic retrieval task, training with Burn's learner, generation, the training benchmark and
//! the kernel benchmark's cost-curve plot.

#![warn(missing_docs)]

pub mod batcher;
pub mod bench;
pub mod checkpoint;
pub mod commands;
pub mod corpus;
pub mod data;
pub mod demo;
pub mod driver;
pub mod generate;
pub mod interrupt;
pub mod loader;
pub mod lock;
pub mod metrics;
pub mod plot;
pub mod presets;
pub mod progress;
pub mod retrieval;
pub mod sampling;
pub mod tokenizer;
pub mod train;
pub mod weights;
