//! DeepSeek-V3.2 model.
//!
//! - [`config`]: the model configuration ([`DeepSeekV32Config`]), read from HuggingFace or
//!   DeepSeek-reference `config.json` files.
//! - [`model`]: the transformer ([`DeepSeekV32`]) with prefill and cached decode;
//!   [`mlp`] and [`moe`]: its feed-forwards; [`cache`]: its decode cache ([`ModelCache`]).
//! - [`hf`]: HuggingFace checkpoint names → Burn modules ([`hf::load`] for a whole model).
//! - [`loading`]: memory-mapped safetensors checkpoints ([`Checkpoint`]), with FP8 e4m3
//!   block dequantisation.
//! - [`mtp`]: the multi-token-prediction modules ([`mtp::MtpLayer`]), trained as an extra
//!   loss; [`speculative`]: exact self-speculative greedy decoding with the first of them.
//! - [`generation`]: prefill and cached decode of token prompts ([`generation::generate`]),
//!   each token chosen by [`sampling`] (greedy, or temperature / top-k / top-p from a seed).
//! - [`chat`]: a checkpoint's chat template, BOS and stop tokens (`tokenizer_config.json`,
//!   `generation_config.json`).
//! - [`conformance`]: runs a conformance case (DeepSeek reference outputs) and reports the
//!   measured errors.

pub mod cache;
pub mod chat;
pub mod config;
pub mod conformance;
pub mod generation;
pub mod hf;
pub mod loading;
pub mod mlp;
pub mod model;
pub mod moe;
pub mod mtp;
pub mod sampling;
pub mod speculative;

#[cfg(test)]
mod test_util;

pub use cache::ModelCache;
pub use config::{ConfigError, DeepSeekV32Config};
pub use model::DeepSeekV32;
pub use loading::{Checkpoint, LoadError};
