#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod adamw;
pub mod attention;
mod autodiff;
pub mod cache;
#[cfg(feature = "cubecl-backend")]
pub mod cubecl;
pub mod indexer;
#[cfg(feature = "cubecl-backend")]
pub mod kernel_cache;
pub mod loss;
pub mod master_weights;
pub mod matmul;
pub mod norm;
pub mod ops;
pub mod quant;
pub mod reference;
pub mod rope;

pub use adamw::{AdamWStep, FusedAdamW, FusedAdamWConfig, FusedAdamWState};
pub use attention::{AttentionMode, DsaAttention, DsaAttentionConfig, DsaOutput, Selection};
pub use cache::DsaCache;
pub use indexer::{LightningIndexer, LightningIndexerConfig};
pub use master_weights::MasterWeights;
pub use norm::RmsNorm;
pub use ops::DsaBackend;
pub use quant::IndexerQuant;
pub use rope::{Rope, RopeConfig, YarnConfig};
