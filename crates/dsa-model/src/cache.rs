//! The decode cache of a whole [`DeepSeekV32`](crate::model::DeepSeekV32) model: one
//! [`DsaCache`] per layer (latents and indexer keys) and the position of the next token.

use burn::tensor::backend::Backend;
use dsa_burn::DsaCache;

use crate::config::DeepSeekV32Config;

/// Per-layer attention caches of a batch of sequences, all at the same position.
///
/// ```
/// # use burn::backend::NdArray;
/// # use burn::tensor::{Int, Tensor};
/// use dsa_model::{DeepSeekV32Config, ModelCache};
/// let cfg = DeepSeekV32Config::tiny(64);
/// let model = cfg.init::<NdArray>(&Default::default());
/// let mut cache = ModelCache::new(cfg.num_hidden_layers);
/// let prompt = Tensor::<NdArray, 2, Int>::from_ints([[1, 2, 3], [4, 5, 6]], &Default::default());
/// model.forward_cached(prompt, &mut cache);
/// let next = Tensor::<NdArray, 2, Int>::from_ints([[7], [8]], &Default::default());
/// let logits = model.forward_cached(next, &mut cache);
/// assert_eq!((logits.dims(), cache.position()), ([2, 1, 64], 4));
/// ```
#[derive(Debug, Clone)]
pub struct ModelCache<B: Backend> {
    layers: Vec<DsaCache<B>>,
}

impl<B: Backend> ModelCache<B> {
    /// An empty cache for a model of `num_layers` layers.
    pub fn new(num_layers: usize) -> Self {
        Self { layers: (0..num_layers).map(|_| DsaCache::new()).collect() }
    }

    /// Tokens cached per sequence: the position of the next token.
    pub fn position(&self) -> usize {
        self.layers.first().map_or(0, DsaCache::len)
    }

    /// Forgets every token from `position` on in every layer (see [`DsaCache::truncate`]).
    ///
    /// # Panics
    /// If `position` exceeds the cached tokens.
    pub fn truncate(&mut self, position: usize) {
        self.layers.iter_mut().for_each(|layer| layer.truncate(position));
    }

    /// The per-layer caches.
    pub fn layers_mut(&mut self) -> &mut [DsaCache<B>] {
        &mut self.layers
    }
}

/// Bytes per cached token (all layers, one sequence) of the two cache layouts, and the
/// numbers behind them; see [`CacheMemory::of`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheMemory {
    /// Layers with a cache.
    pub layers: usize,
    /// Layers that also cache indexer keys: all but the shared ones
    /// ([`DeepSeekV32Config::indexer_types`]).
    pub index_layers: usize,
    /// Latent values per token and layer (`kv_lora_rank + qk_rope_head_dim`).
    pub latent_dim: usize,
    /// Indexer key values per token and layer (`index_head_dim`).
    pub index_dim: usize,
    /// DeepSeek's layout: latent in `latent_elem_bytes`, indexer keys as FP8 bytes plus one
    /// f32 scale per 128 values.
    pub fp8_keys_bytes_per_token: usize,
    /// This crate's [`DsaCache`]: latent and unquantised indexer keys, both in
    /// `latent_elem_bytes`.
    pub ours_bytes_per_token: usize,
}

impl CacheMemory {
    /// The cache sizes of `cfg` with latents (and, in our layout, indexer keys) stored in
    /// `elem_bytes`-byte floats (2 for bf16, 4 for f32).
    ///
    /// ```
    /// use dsa_model::{cache::CacheMemory, DeepSeekV32Config};
    /// let m = CacheMemory::of(&DeepSeekV32Config::deepseek_v32(), 2);
    /// assert_eq!(m.fp8_keys_bytes_per_token, 61 * (576 * 2 + 128 + 4)); // 78,324 B
    /// assert_eq!(m.ours_bytes_per_token, 61 * (576 + 128) * 2); // 85,888 B
    /// ```
    pub fn of(cfg: &DeepSeekV32Config, elem_bytes: usize) -> Self {
        let latent_dim = cfg.kv_lora_rank + cfg.qk_rope_head_dim;
        let index_layers = cfg.indexer_layers();
        let latent_only = (cfg.num_hidden_layers - index_layers) * dsa_burn::cache::bytes_per_token(latent_dim, 0, elem_bytes);
        let with_keys = index_layers * dsa_burn::cache::bytes_per_token(latent_dim, cfg.index_head_dim, elem_bytes);
        Self {
            layers: cfg.num_hidden_layers,
            index_layers,
            latent_dim,
            index_dim: cfg.index_head_dim,
            fp8_keys_bytes_per_token: cfg.kv_cache_bytes_per_token(elem_bytes),
            ours_bytes_per_token: latent_only + with_keys,
        }
    }
}
