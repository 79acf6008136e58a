//! Model size presets for new models (`--model micro|tiny|small`).

use clap::ValueEnum;
use dsa_model::DeepSeekV32Config;

/// A model size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// About 0.5M parameters (with a 512-token vocabulary): width 128, 2 layers (1 dense, 1
    /// MoE with 4 experts), indexer 2 heads, top-k 16, 512 positions. Trains in minutes on
    /// two CPU cores (`dsa-cli demo`).
    Micro,
    /// About 5M parameters (with a 1K vocabulary): width 256, 4 layers (1 dense, 3 MoE
    /// with 8 experts), indexer top-k 64, 2048 positions. Trains on a CPU.
    Tiny,
    /// About 100M parameters (with an 8K vocabulary): width 768, 8 layers (1 dense, 7 MoE
    /// with 8 experts, 2 active + 1 shared), indexer 8 heads, top-k 512, 16384 positions.
    /// For a GPU.
    Small,
}

impl Preset {
    /// The configuration of the preset for a vocabulary of `vocab_size` tokens.
    ///
    /// ```
    /// use dsa_cli::presets::Preset;
    /// for preset in [Preset::Micro, Preset::Tiny, Preset::Small] {
    ///     preset.config(512).validate().unwrap();
    /// }
    /// let small = Preset::Small.config(8192);
    /// assert!(small.parameter_count().total > 50_000_000 && small.max_position_embeddings >= 8192);
    /// ```
    pub fn config(self, vocab_size: usize) -> DeepSeekV32Config {
        let tiny = DeepSeekV32Config::tiny(vocab_size);
        match self {
            Preset::Micro => DeepSeekV32Config {
                hidden_size: 128,
                intermediate_size: 256,
                moe_intermediate_size: 64,
                num_hidden_layers: 2,
                num_attention_heads: 2,
                num_key_value_heads: 2,
                n_routed_experts: 4,
                q_lora_rank: 64,
                kv_lora_rank: 64,
                qk_nope_head_dim: 32,
                qk_rope_head_dim: 16,
                v_head_dim: 32,
                index_n_heads: 2,
                index_topk: 16,
                max_position_embeddings: 512,
                ..tiny
            },
            Preset::Tiny => tiny,
            Preset::Small => DeepSeekV32Config {
                hidden_size: 768,
                intermediate_size: 2048,
                moe_intermediate_size: 512,
                num_hidden_layers: 8,
                num_attention_heads: 12,
                num_key_value_heads: 12,
                q_lora_rank: 384,
                kv_lora_rank: 256,
                max_position_embeddings: 16384,
                index_n_heads: 8,
                index_topk: 512,
                ..tiny
            },
        }
    }
}
