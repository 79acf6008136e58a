//! The `dsa-cli` binary's commands, and the pieces its tests reuse: training data,
//! tokenizers, training with Burn's learner, checkpoints, the training benchmark and the
//! kernel benchmark's cost-curve plot. Generation and sampling are `dsa-model`'s
//! ([`dsa_model::generation`], [`dsa_model::sampling`]).

#![warn(missing_docs)]

pub mod batcher;
pub mod bench;
pub mod checkpoint;
pub mod commands;
pub mod corpus;
pub mod data;
pub mod demo;
pub mod driver;
pub mod interrupt;
mod loader;
mod lock;
mod metrics;
pub mod plot;
pub mod presets;
mod progress;
mod retrieval;
pub mod tokenizer;
pub mod train;
mod weights;
