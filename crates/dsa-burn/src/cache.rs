//! The decode cache of one [`DsaAttention`](crate::DsaAttention) layer.
//!
//! Per token it keeps what later queries read:
//!
//! * the MLA latent `[c | k_rope]` (`kv_lora_rank + qk_rope_head_dim` values), which the absorbed
//!   MQA attention uses as both key and value, and
//! * the lightning indexer's key (`index_head_dim` values), normalised, rotated and
//!   Hadamard-transformed, **before** its FP8 quantisation.
//!
//! DeepSeek's reference caches the indexer key as FP8 codes plus one f32 scale per
//! 128-block. The indexer quantises every key on its own (per token, per block), so caching
//! the unquantised key and quantising it when scoring gives bit-identical scores; the price
//! is memory: `index_head_dim` floats per token instead of `index_head_dim` bytes plus one
//! f32 per block. With `e` bytes per float this cache holds
//! `(kv_lora_rank + qk_rope_head_dim + index_head_dim) · e` bytes per token and layer
//! ([`bytes_per_token`]).
//!
//! All sequences of a batch sit at the same position. Storage grows geometrically, so a
//! decode step writes its rows in place instead of copying the whole cache.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// Cached latents and indexer keys of one attention layer for a batch of sequences.
///
/// ```
/// # use burn::backend::NdArray;
/// # use burn::tensor::{Distribution, Tensor};
/// use dsa_burn::{DsaAttentionConfig, DsaCache};
/// let dev = Default::default();
/// let attn = DsaAttentionConfig::new(64, 2, 128)
///     .with_q_lora_rank(32).with_kv_lora_rank(32).with_qk_nope_head_dim(16).with_qk_rope_head_dim(16).with_v_head_dim(16)
///     .with_index_n_heads(2).with_index_head_dim(32).with_index_topk(4)
///     .init::<NdArray>(&dev);
/// let mut cache = DsaCache::new();
/// let prompt = Tensor::<NdArray, 3>::random([2, 10, 64], Distribution::Default, &dev);
/// attn.forward_cached(prompt, &mut cache); // prefill
/// let next = Tensor::<NdArray, 3>::random([2, 1, 64], Distribution::Default, &dev);
/// let y = attn.forward_cached(next, &mut cache); // one decode step per sequence
/// assert_eq!((y.dims(), cache.len()), ([2, 1, 64], 11));
/// ```
#[derive(Debug, Clone)]
pub struct DsaCache<B: Backend> {
    /// `[B, capacity, kv_lora_rank + qk_rope_head_dim]`, rows `..len` valid.
    kv: Option<Tensor<B, 3>>,
    /// `[B, capacity, index_head_dim]`, rows `..len` valid.
    keys: Option<Tensor<B, 3>>,
    len: usize,
}

impl<B: Backend> Default for DsaCache<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B: Backend> DsaCache<B> {
    /// An empty cache; the first call of
    /// [`DsaAttention::forward_cached`](crate::DsaAttention::forward_cached) fixes its batch.
    pub fn new() -> Self {
        Self { kv: None, keys: None, len: 0 }
    }

    /// Cached tokens per sequence, i.e. the position of the next token.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every token from position `len` on, as if only the first `len` had been
    /// appended: the next token is written at `len` (speculative decoding drops the
    /// rejected draft tokens this way). The storage is kept.
    ///
    /// # Panics
    /// If `len` exceeds the cached tokens.
    pub fn truncate(&mut self, len: usize) {
        assert!(len <= self.len, "cannot truncate a cache of {} tokens to {len}", self.len);
        self.len = len;
    }

    /// Appends the latents `kv [B, T, Dkv]` and indexer keys `keys [B, T, D]` of `T` new
    /// tokens and returns everything cached so far, `[B, len, Dkv]` and `[B, len, D]`. A
    /// layer without an indexer (a shared layer, see
    /// [`DsaAttentionConfig::shared_indexer`](crate::DsaAttentionConfig::shared_indexer))
    /// appends no keys and caches none.
    ///
    /// # Panics
    /// If the batch or widths differ from those already cached.
    pub(crate) fn append(&mut self, kv: Tensor<B, 3>, keys: Option<Tensor<B, 3>>) -> (Tensor<B, 3>, Option<Tensor<B, 3>>) {
        let len = self.len;
        let kv = push(&mut self.kv, len, kv, "latent");
        let keys = keys.map(|keys| push(&mut self.keys, len, keys, "indexer key"));
        self.len = kv.dims()[1];
        (kv, keys)
    }
}

/// Bytes one token occupies in one layer's [`DsaCache`]: the latent (`kv_dim` values) and
/// the unquantised indexer key (`index_dim` values), `elem_bytes` each.
///
/// ```
/// // DeepSeek-V3.2 (latent 512 + 64, indexer key 128) in bf16.
/// assert_eq!(dsa_burn::cache::bytes_per_token(576, 128, 2), 1408);
/// ```
pub fn bytes_per_token(kv_dim: usize, index_dim: usize, elem_bytes: usize) -> usize {
    (kv_dim + index_dim) * elem_bytes
}

/// Writes `new [B, T, D]` at rows `len..len + T` of `buf` (growing it to at least twice its
/// capacity when full) and returns rows `..len + T`.
fn push<B: Backend>(buf: &mut Option<Tensor<B, 3>>, len: usize, new: Tensor<B, 3>, what: &str) -> Tensor<B, 3> {
    let [b, t, d] = new.dims();
    let store = match buf.take() {
        None => new,
        Some(old) => {
            let [ob, cap, od] = old.dims();
            assert_eq!([ob, od], [b, d], "{what} cache holds [batch, width] = [{ob}, {od}], got [{b}, {d}]");
            let old = if len + t <= cap {
                old
            } else {
                let grown = Tensor::zeros([b, (len + t).max(2 * cap), d], &new.device());
                grown.slice_assign([0..b, 0..len, 0..d], old.narrow(1, 0, len))
            };
            old.slice_assign([0..b, len..len + t, 0..d], new)
        }
    };
    *buf = Some(store.clone());
    store.narrow(1, 0, len + t)
}
