//! DeepSeek-V3.2 model.
//!
//! - [`config`]: the model configuration ([`DeepSeekV32Config`]), read from HuggingFace or
//!   DeepSeek-reference `config.json` files.
//! - [`hf`]: HuggingFace checkpoint names → Burn modules.
//! - [`loading`]: memory-mapped safetensors checkpoints ([`Checkpoint`]), with FP8 e4m3
//!   block dequantisation.

pub mod config;
pub mod hf;
pub mod loading;

#[cfg(test)]
mod test_util;

pub use config::{ConfigError, DeepSeekV32Config};
pub use loading::{Checkpoint, LoadError};
