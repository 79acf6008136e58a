//! [`DsaAttention`]: Multi-head Latent Attention with DeepSeek Sparse Attention, as one
//! Burn module to drop into any model.
//!
//! MLA compresses keys and values into a latent `[c | k_rope]` shared by all heads. DSA adds
//! a [`LightningIndexer`] that picks, for each query, the `topk` past tokens worth attending
//! to; attention then runs over those tokens only ([`ops::sparse_mla`]). In
//! [`AttentionMode::Dense`] every causal token is attended to (the warm-up stage and the
//! baseline). Attention runs in the absorbed MQA form (queries projected into the latent
//! space), the same function as MHA with `wkv_b` expanding the latent per head.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::cache::DsaCache;
use crate::indexer::{LightningIndexer, LightningIndexerConfig};
use crate::loss::{dense_indexer_loss, sparse_indexer_loss};
use crate::norm::RmsNorm;
use crate::quant::IndexerQuant;
use crate::rope::{Rope, RopeConfig, YarnConfig};
use crate::{ops, DsaBackend};

/// Indexer scores `[B, rows, S]` computed at a time when sparse training selects keys: at
/// most about this many elements.
const SCORES_BUDGET: usize = 1 << 24;

/// Which tokens each query attends to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttentionMode {
    /// Every causal token (dense warm-up, dense baseline).
    Dense,
    /// The indexer's top-k tokens.
    #[default]
    Sparse,
}

/// Configuration of a [`DsaAttention`] layer. DeepSeek-V3.2's sizes are the defaults of
/// the optional fields; see [`DsaAttentionConfig::deepseek_v32`].
#[derive(Config, Debug)]
pub struct DsaAttentionConfig {
    /// Model width.
    pub hidden_size: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Longest sequence (positions) the layer supports.
    pub max_position_embeddings: usize,
    /// RoPE frequency base.
    #[config(default = 10000.0)]
    pub rope_theta: f64,
    /// YaRN context extension (active when `max_position_embeddings` exceeds its original length).
    #[config(default = "None")]
    pub yarn: Option<YarnConfig>,
    /// Query latent rank.
    #[config(default = 1536)]
    pub q_lora_rank: usize,
    /// KV latent rank (`c`).
    #[config(default = 512)]
    pub kv_lora_rank: usize,
    /// Per-head query/key dims without position.
    #[config(default = 128)]
    pub qk_nope_head_dim: usize,
    /// Per-head rotated dims (one shared rotated key).
    #[config(default = 64)]
    pub qk_rope_head_dim: usize,
    /// Per-head value dims.
    #[config(default = 128)]
    pub v_head_dim: usize,
    /// Indexer heads.
    #[config(default = 64)]
    pub index_n_heads: usize,
    /// Indexer head dim (power of two).
    #[config(default = 128)]
    pub index_head_dim: usize,
    /// Tokens each query attends to in sparse mode.
    #[config(default = 2048)]
    pub index_topk: usize,
    /// FP8 quantisation in the indexer.
    #[config(default = "IndexerQuant::E4m3")]
    pub index_quant: IndexerQuant,
    /// Interleaved indexer RoPE (GLM-5 style); DeepSeek-V3.2 uses rotate-half.
    #[config(default = false)]
    pub indexer_rope_interleave: bool,
    /// RMSNorm epsilon of the latents.
    #[config(default = 1e-6)]
    pub rms_norm_eps: f64,
    /// Default mode of [`DsaAttention::forward`].
    #[config(default = "AttentionMode::Sparse")]
    pub mode: AttentionMode,
    /// A layer without an indexer of its own, which attends to the selection of an earlier
    /// layer (GLM-5.2's `"shared"` layers, see `indexer_types` in dsa-model's config): it is
    /// given that selection ([`DsaAttention::forward_pinned`]), attends densely without one,
    /// caches no indexer keys and has no indexer loss.
    #[config(default = false)]
    pub shared_indexer: bool,
}

impl DsaAttentionConfig {
    /// DeepSeek-V3.2's attention: width 7168, 128 heads, YaRN ×40 over 4096 positions.
    pub fn deepseek_v32() -> Self {
        Self::new(7168, 128, 163840).with_yarn(Some(YarnConfig::new(40.0, 4096)))
    }

    /// `(qk_nope + qk_rope)^-1/2`, times `m²` when YaRN is active.
    pub fn softmax_scale(&self) -> f64 {
        let m = self.rope().active_yarn().map_or(1.0, |y| y.attention_factor());
        ((self.qk_nope_head_dim + self.qk_rope_head_dim) as f64).powf(-0.5) * m * m
    }

    /// The rotary embedding of the `qk_rope_head_dim` dims (shared by MLA and the indexer).
    pub fn rope(&self) -> RopeConfig {
        RopeConfig::new(self.qk_rope_head_dim, self.max_position_embeddings)
            .with_theta(self.rope_theta)
            .with_yarn(self.yarn.clone())
    }

    /// Creates the layer with random weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> DsaAttention<B> {
        let linear = |i, o| LinearConfig::new(i, o).with_bias(false).init(device);
        let norm = |d| RmsNorm::new(d, self.rms_norm_eps, device);
        let h = self.num_attention_heads;
        DsaAttention {
            wq_a: linear(self.hidden_size, self.q_lora_rank),
            q_norm: norm(self.q_lora_rank),
            wq_b: linear(self.q_lora_rank, h * (self.qk_nope_head_dim + self.qk_rope_head_dim)),
            wkv_a: linear(self.hidden_size, self.kv_lora_rank + self.qk_rope_head_dim),
            kv_norm: norm(self.kv_lora_rank),
            wkv_b: linear(self.kv_lora_rank, h * (self.qk_nope_head_dim + self.v_head_dim)),
            wo: linear(h * self.v_head_dim, self.hidden_size),
            indexer: (!self.shared_indexer).then(|| {
                LightningIndexerConfig::new(self.hidden_size, self.q_lora_rank)
                    .with_index_n_heads(self.index_n_heads)
                    .with_index_head_dim(self.index_head_dim)
                    .with_qk_rope_head_dim(self.qk_rope_head_dim)
                    .with_index_topk(self.index_topk)
                    .with_index_quant(self.index_quant)
                    .with_indexer_rope_interleave(self.indexer_rope_interleave)
                    .init(device)
            }),
            rope: self.rope().init(),
            num_attention_heads: h,
            kv_lora_rank: self.kv_lora_rank,
            qk_nope_head_dim: self.qk_nope_head_dim,
            qk_rope_head_dim: self.qk_rope_head_dim,
            v_head_dim: self.v_head_dim,
            softmax_scale: self.softmax_scale() as f32,
            mode: self.mode,
        }
    }
}

/// MLA + DSA attention layer (HF names under `self_attn`: `q_a_proj`, `q_a_layernorm`,
/// `q_b_proj`, `kv_a_proj_with_mqa`, `kv_a_layernorm`, `kv_b_proj`, `o_proj`, `indexer`;
/// a shared layer, [`DsaAttentionConfig::shared_indexer`], has no `indexer`).
///
/// ```
/// # use burn::backend::NdArray;
/// # use burn::tensor::{Distribution, Tensor};
/// use dsa_burn::{AttentionMode, DsaAttentionConfig};
/// let dev = Default::default();
/// let attn = DsaAttentionConfig::new(64, 2, 128)
///     .with_q_lora_rank(32).with_kv_lora_rank(32).with_qk_nope_head_dim(16).with_qk_rope_head_dim(16).with_v_head_dim(16)
///     .with_index_n_heads(2).with_index_head_dim(32).with_index_topk(4)
///     .init::<NdArray>(&dev);
/// let x = Tensor::<NdArray, 3>::random([2, 10, 64], Distribution::Default, &dev);
/// let y = attn.forward(x.clone());
/// assert_eq!(y.dims(), [2, 10, 64]);
/// let train = attn.forward_train(x, AttentionMode::Sparse);
/// assert!(train.indexer_loss.into_scalar() >= 0.0);
/// ```
#[derive(Module, Debug)]
pub struct DsaAttention<B: Backend> {
    /// Query down-projection `[d_model, q_lora_rank]`.
    pub wq_a: Linear<B>,
    /// Query latent RMSNorm.
    pub q_norm: RmsNorm<B>,
    /// Query up-projection `[q_lora_rank, H·(nope+rope)]`.
    pub wq_b: Linear<B>,
    /// KV down-projection `[d_model, kv_lora_rank + rope]`.
    pub wkv_a: Linear<B>,
    /// KV latent RMSNorm.
    pub kv_norm: RmsNorm<B>,
    /// KV up-projection `[kv_lora_rank, H·(nope+v)]`.
    pub wkv_b: Linear<B>,
    /// Output projection `[H·v, d_model]`.
    pub wo: Linear<B>,
    /// The lightning indexer; `None` in a shared layer
    /// ([`DsaAttentionConfig::shared_indexer`]), which attends to the selection it is given.
    pub indexer: Option<LightningIndexer<B>>,
    #[module(skip)]
    rope: Rope,
    num_attention_heads: usize,
    kv_lora_rank: usize,
    qk_nope_head_dim: usize,
    qk_rope_head_dim: usize,
    v_head_dim: usize,
    #[module(skip)]
    softmax_scale: f32,
    #[module(skip)]
    mode: AttentionMode,
}

/// What [`DsaAttention::forward_train`] returns.
#[derive(Debug)]
pub struct DsaOutput<B: Backend> {
    /// Attention output `[B, T, d_model]`.
    pub output: Tensor<B, 3>,
    /// The indexer's KL loss (dense warm-up loss in dense mode, sparse-stage loss in
    /// sparse mode). Its gradient reaches the indexer's parameters only.
    pub indexer_loss: Tensor<B, 1>,
    /// In sparse mode, the selected token indices `[B, T, K]` and their validity.
    pub selection: Option<(Tensor<B, 3, Int>, Tensor<B, 3, Bool>)>,
}

/// What the sparse attention of a block of `T` query tokens read.
#[derive(Debug, Clone)]
pub struct Selection<B: Backend> {
    /// Causal indexer scores `[B, T, S]` against all `S` keys so far (`-inf` for future
    /// keys).
    pub scores: Tensor<B, 3>,
    /// Selected key positions `[B, T, K]`, best first.
    pub indices: Tensor<B, 3, Int>,
    /// Which entries of `indices` are real (a row with fewer than `K` candidates pads).
    pub valid: Tensor<B, 3, Bool>,
}

/// Latent projections of a block of tokens.
struct Latents<B: Backend> {
    /// Normalised query latent `[B,T,q_lora]` (the indexer's input).
    qr: Tensor<B, 3>,
    /// Per-head queries without position `[B,T,H,nope]`.
    q_nope: Tensor<B, 4>,
    /// Per-head rotated queries `[B,T,H,rope]`.
    q_pe: Tensor<B, 4>,
    /// Latent keys/values `[c | k_rope]` `[B,T,kv_lora+rope]`.
    kv: Tensor<B, 3>,
}

impl<B: DsaBackend> DsaAttention<B> {
    /// The rotary embedding shared with the indexer.
    pub fn rope(&self) -> &Rope {
        &self.rope
    }

    /// The mode of [`DsaAttention::forward`] and [`DsaAttention::forward_cached`].
    pub fn mode(&self) -> AttentionMode {
        self.mode
    }

    /// The layer with [`DsaAttention::forward`] and [`DsaAttention::forward_cached`] in
    /// `mode` (e.g. a sparse-trained layer evaluated densely).
    pub fn with_mode(mut self, mode: AttentionMode) -> Self {
        self.mode = mode;
        self
    }

    /// Causal self-attention over the whole sequence `x [B, T, d_model]` in the configured
    /// mode (no indexer loss).
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.attend(x, None, None, false).0
    }

    /// Attention of `T` new tokens `x [B, T, d_model]` at positions `cache.len()..`: their
    /// latents and indexer keys are appended to `cache`, and they attend to everything
    /// cached. Serves prefill (`T` prompt tokens, empty cache), chunked prefill, and decode
    /// (`T = 1`, one new token per sequence); the result equals [`DsaAttention::forward`]
    /// over the whole sequence, restricted to the new tokens.
    ///
    /// In sparse mode, while no query's causal prefix is longer than `index_topk` (prefill
    /// of a short prompt, decode of a short context), the top-k would select every key: the
    /// indexer's scores and the selection are skipped and the keys attended densely, which is
    /// the same attention (the indexer's keys are still cached for the later sparse steps).
    /// [`DsaAttention::forward`] does the same; [`DsaAttention::forward_with_selection`],
    /// which returns the scores, does not.
    pub fn forward_cached(&self, x: Tensor<B, 3>, cache: &mut DsaCache<B>) -> Tensor<B, 3> {
        self.attend(x, Some(cache), None, false).0
    }

    /// [`DsaAttention::forward`] (no cache) or [`DsaAttention::forward_cached`], also
    /// returning the indexer's scores and selection in sparse mode (`None` in dense mode).
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
    /// let x = Tensor::<NdArray, 3>::random([1, 6, 64], Distribution::Default, &dev);
    /// let (_, sel) = attn.forward_with_selection(x, Some(&mut cache));
    /// let sel = sel.expect("sparse mode");
    /// assert_eq!((sel.scores.dims(), sel.indices.dims()), ([1, 6, 6], [1, 6, 4]));
    /// ```
    pub fn forward_with_selection(&self, x: Tensor<B, 3>, cache: Option<&mut DsaCache<B>>) -> (Tensor<B, 3>, Option<Selection<B>>) {
        self.forward_pinned(x, cache, None)
    }

    /// [`DsaAttention::forward_with_selection`] with the keys each query attends to given
    /// instead of chosen: in sparse mode, `pinned` (`indices [B, T, K]` and their validity,
    /// as [`Selection`]'s) replaces the indexer's top-k, while the indexer's scores are still
    /// computed and returned. This pins a discrete choice when comparing runs at different
    /// precisions, where a near-tie may fall on either side of the cut (`None`: the indexer
    /// chooses). Ignored in dense mode.
    ///
    /// A shared layer (no indexer, [`DsaAttentionConfig::shared_indexer`]) attends to
    /// `pinned`, the selection of the layer it reuses, and densely when `None` (that layer
    /// attended densely); it returns no selection.
    ///
    /// ```
    /// # use burn::backend::NdArray;
    /// # use burn::tensor::{Bool, Distribution, Int, Tensor};
    /// use dsa_burn::DsaAttentionConfig;
    /// let dev = Default::default();
    /// let attn = DsaAttentionConfig::new(64, 2, 128)
    ///     .with_q_lora_rank(32).with_kv_lora_rank(32).with_qk_nope_head_dim(16).with_qk_rope_head_dim(16).with_v_head_dim(16)
    ///     .with_index_n_heads(2).with_index_head_dim(32).with_index_topk(2)
    ///     .init::<NdArray>(&dev);
    /// let x = Tensor::<NdArray, 3>::random([1, 3, 64], Distribution::Default, &dev);
    /// // Every query attends to token 0 only.
    /// let indices = Tensor::<NdArray, 3, Int>::zeros([1, 3, 2], &dev);
    /// let valid = Tensor::<NdArray, 3, Bool>::from_bool([[[true, false]; 3]].into(), &dev);
    /// let (y, sel) = attn.forward_pinned(x, None, Some((indices, valid)));
    /// assert_eq!((y.dims(), sel.unwrap().scores.dims()), ([1, 3, 64], [1, 3, 3]));
    /// ```
    pub fn forward_pinned(
        &self,
        x: Tensor<B, 3>,
        cache: Option<&mut DsaCache<B>>,
        pinned: Option<(Tensor<B, 3, Int>, Tensor<B, 3, Bool>)>,
    ) -> (Tensor<B, 3>, Option<Selection<B>>) {
        self.attend(x, cache, pinned, true)
    }

    /// [`DsaAttention::forward`] (no cache) or [`DsaAttention::forward_cached`] with
    /// `pinned` as in [`DsaAttention::forward_pinned`], returning the selection attended
    /// to: `None` where attention was dense, the short-context shortcut of
    /// [`DsaAttention::forward_cached`] included. A model whose shared layers reuse this
    /// layer's selection runs it this way.
    pub fn forward_selecting(
        &self,
        x: Tensor<B, 3>,
        cache: Option<&mut DsaCache<B>>,
        pinned: Option<(Tensor<B, 3, Int>, Tensor<B, 3, Bool>)>,
    ) -> (Tensor<B, 3>, Option<Selection<B>>) {
        self.attend(x, cache, pinned, false)
    }

    /// [`DsaAttention::forward_pinned`]; with `select` false and nothing pinned, a sparse
    /// step whose queries' causal prefixes all fit in `index_topk` attends densely (see
    /// [`DsaAttention::forward_cached`]) and returns no selection.
    fn attend(
        &self,
        x: Tensor<B, 3>,
        cache: Option<&mut DsaCache<B>>,
        pinned: Option<(Tensor<B, 3, Int>, Tensor<B, 3, Bool>)>,
        select: bool,
    ) -> (Tensor<B, 3>, Option<Selection<B>>) {
        let start = cache.as_ref().map_or(0, |c| c.len());
        let lat = self.latents(x.clone(), start);
        let Some(indexer) = &self.indexer else {
            let kv = match cache {
                Some(cache) => cache.append(lat.kv.clone(), None).0,
                None => lat.kv.clone(),
            };
            let out = match (self.mode, pinned) {
                (AttentionMode::Sparse, Some((indices, valid))) => self.sparse(&lat, kv, indices, valid),
                _ => self.dense(&lat, kv, start),
            };
            return (out, None);
        };
        let every_key = !select && pinned.is_none() && start + x.dims()[1] <= indexer.topk();
        let dense = self.mode == AttentionMode::Dense || every_key;
        // Dense attention without a cache never needs the indexer's keys; a cache keeps
        // them for a later sparse step.
        if dense && cache.is_none() {
            return (self.dense(&lat, lat.kv.clone(), start), None);
        }
        let keys = indexer.keys(x.clone(), &self.rope, start);
        let (kv, keys) = match cache {
            Some(cache) => {
                let (kv, keys) = cache.append(lat.kv.clone(), Some(keys));
                (kv, keys.expect("the cache returns the keys it was given"))
            }
            None => (lat.kv.clone(), keys),
        };
        if dense {
            return (self.dense(&lat, kv, start), None);
        }
        let scores = indexer.scores(x, lat.qr.clone(), keys, &self.rope, start);
        let (indices, valid) = match pinned {
            Some(pinned) => pinned,
            None => ops::topk_select(scores.clone(), indexer.topk(), Some(start)),
        };
        let out = self.sparse(&lat, kv, indices.clone(), valid.clone());
        (out, Some(Selection { scores, indices, valid }))
    }

    /// Sparse attention of the queries of `lat` to the keys `indices` (where `valid`) of the
    /// latent `kv [B,S,D]`, projected out.
    fn sparse(&self, lat: &Latents<B>, kv: Tensor<B, 3>, indices: Tensor<B, 3, Int>, valid: Tensor<B, 3, Bool>) -> Tensor<B, 3> {
        let q = self.absorbed_queries(lat);
        self.project_out(ops::sparse_mla(q, kv, indices, valid, self.kv_lora_rank, self.softmax_scale).0)
    }

    /// Training forward over the whole sequence: the output and the indexer's KL loss.
    /// The indexer sees detached inputs, so its loss trains the indexer alone, and the
    /// output's gradient never reaches the indexer. In sparse mode nothing of size `T×S`
    /// is kept: the selection runs in blocks of query rows without gradient, and the loss
    /// needs the indexer's scores and the attention probabilities at the selected keys only.
    ///
    /// # Panics
    /// In sparse mode, for a shared layer ([`DsaAttentionConfig::shared_indexer`]): it
    /// needs the selection it reuses, see [`DsaAttention::forward_train_reusing`].
    pub fn forward_train(&self, x: Tensor<B, 3>, mode: AttentionMode) -> DsaOutput<B> {
        self.forward_train_reusing(x, mode, None)
    }

    /// [`DsaAttention::forward_train`] of a layer that may be shared: a shared layer
    /// ([`DsaAttentionConfig::shared_indexer`]) attends densely in dense mode and to
    /// `reused` (the selection, [`DsaOutput::selection`], of the layer it reuses) in sparse
    /// mode, and its indexer loss is 0; a layer with an indexer ignores `reused`.
    ///
    /// # Panics
    /// In sparse mode, for a shared layer without `reused`.
    pub fn forward_train_reusing(
        &self,
        x: Tensor<B, 3>,
        mode: AttentionMode,
        reused: Option<(Tensor<B, 3, Int>, Tensor<B, 3, Bool>)>,
    ) -> DsaOutput<B> {
        let [b, t, _] = x.dims();
        let lat = self.latents(x.clone(), 0);
        let scale = self.softmax_scale;
        let Some(indexer) = &self.indexer else {
            let indexer_loss = Tensor::zeros([1], &x.device());
            return match mode {
                AttentionMode::Dense => DsaOutput { output: self.dense(&lat, lat.kv.clone(), 0), indexer_loss, selection: None },
                AttentionMode::Sparse => {
                    let (idx, valid) = reused.expect("a shared layer (no indexer) attends to the selection of the layer it reuses");
                    let output = self.sparse(&lat, lat.kv.clone(), idx.clone(), valid.clone());
                    DsaOutput { output, indexer_loss, selection: Some((idx, valid)) }
                }
            };
        };
        let (iq, iw) = indexer.queries(x.clone().detach(), lat.qr.clone().detach(), &self.rope, 0);
        let ik = indexer.keys(x.detach(), &self.rope, 0);
        let quant = indexer.quant();
        match mode {
            AttentionMode::Dense => {
                let scores = ops::indexer_scores(iq, iw, ik, quant, Some(0));
                let (q, k, v) = self.heads(&lat, lat.kv.clone());
                let (out, lse) = ops::dense_attention(q.clone(), k.clone(), v, 0, scale);
                let loss = dense_indexer_loss(q, k, lse, scale, scores, 0);
                DsaOutput { output: self.project_heads(out.swap_dims(1, 2)), indexer_loss: loss, selection: None }
            }
            AttentionMode::Sparse => {
                let q = self.absorbed_queries(&lat);
                let rows = (SCORES_BUDGET / (b * t).max(1)).max(1);
                let (idx, valid) = ops::indexer_topk(
                    iq.clone().detach(),
                    iw.clone().detach(),
                    ik.clone().detach(),
                    quant,
                    indexer.topk(),
                    Some(0),
                    rows,
                );
                let (out, lse) = ops::sparse_mla(q.clone(), lat.kv.clone(), idx.clone(), valid.clone(), self.kv_lora_rank, scale);
                let picked = ops::indexer_selected_scores(iq, iw, ik, quant, idx.clone(), valid.clone());
                let loss = sparse_indexer_loss(q, lat.kv, scale, lse, picked, idx.clone(), valid.clone());
                DsaOutput { output: self.project_out(out), indexer_loss: loss, selection: Some((idx, valid)) }
            }
        }
    }

    /// The query latent, per-head queries and the latent KV of tokens at positions
    /// `start..`.
    fn latents(&self, x: Tensor<B, 3>, start: usize) -> Latents<B> {
        let [b, t, _] = x.dims();
        let (h, nope, rope_d, r) = (self.num_attention_heads, self.qk_nope_head_dim, self.qk_rope_head_dim, self.kv_lora_rank);
        let qr = self.q_norm.forward(ops::project(&self.wq_a, x.clone()));
        let q = ops::project(&self.wq_b, qr.clone()).reshape([b, t, h, nope + rope_d]);
        let q_pe = self.rope.apply(q.clone().narrow(3, nope, rope_d), start, true);
        let kv = ops::project(&self.wkv_a, x);
        let c = self.kv_norm.forward(kv.clone().narrow(2, 0, r));
        let k_pe = self.rope.apply(kv.narrow(2, r, rope_d).reshape([b, t, 1, rope_d]), start, true);
        Latents { qr, q_nope: q.narrow(3, 0, nope), q_pe, kv: Tensor::cat(vec![c, k_pe.reshape([b, t, rope_d])], 2) }
    }

    /// Queries absorbed into the latent space (MQA form) `[B,T,H,kv_lora+rope]`: `q_nope`
    /// times `wkv_b`'s key part per head, then the rotated part.
    fn absorbed_queries(&self, lat: &Latents<B>) -> Tensor<B, 4> {
        // q_nope [B,H,T,nope] · W_uk [1,H,nope,r].
        let w_uk = self.wkv_b_part(0, self.qk_nope_head_dim).swap_dims(1, 2).unsqueeze::<4>();
        let q_c = lat.q_nope.clone().swap_dims(1, 2).matmul(w_uk).swap_dims(1, 2);
        Tensor::cat(vec![q_c, lat.q_pe.clone()], 3)
    }

    /// The MHA form (`wkv_b` expands the latent `kv [B,S,kv_lora+rope]` into per-head keys
    /// and values): queries `[B,H,T,nope+rope]`, keys `[B,H,S,nope+rope]` (the rotated
    /// part shared by all heads) and values `[B,H,S,v]`. Cheaper than the MQA form when
    /// every query attends to every key (the heads' dims are smaller than the latent's).
    fn heads(&self, lat: &Latents<B>, kv: Tensor<B, 3>) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
        let [b, s, _] = kv.dims();
        let (h, nope, rope_d, r, dv) = (self.num_attention_heads, self.qk_nope_head_dim, self.qk_rope_head_dim, self.kv_lora_rank, self.v_head_dim);
        let q = Tensor::cat(vec![lat.q_nope.clone(), lat.q_pe.clone()], 3).swap_dims(1, 2);
        let expanded = ops::project(&self.wkv_b, kv.clone().narrow(2, 0, r)).reshape([b, s, h, nope + dv]).swap_dims(1, 2);
        let k_pe = kv.narrow(2, r, rope_d).reshape([b, 1, s, rope_d]).expand([b, h, s, rope_d]);
        let k = Tensor::cat(vec![expanded.clone().narrow(3, 0, nope), k_pe], 3);
        (q, k, expanded.narrow(3, nope, dv))
    }

    /// Per-head slice `[H, r, len]` of `wkv_b` at column offset `from` within each head.
    fn wkv_b_part(&self, from: usize, len: usize) -> Tensor<B, 3> {
        let (h, r) = (self.num_attention_heads, self.kv_lora_rank);
        let w = self.wkv_b.weight.val().reshape([r, h, self.qk_nope_head_dim + self.v_head_dim]);
        w.narrow(2, from, len).swap_dims(0, 1)
    }

    /// Dense causal attention of the queries of `lat` (at positions `start..`) over the
    /// latent `kv [B,S,D]`, projected out. One query per sequence (decode) runs in the MQA
    /// form ([`ops::dense_mla`]), which reads the latent once; more run in the MHA form
    /// ([`ops::dense_attention`]), whose per-head dims are smaller.
    fn dense(&self, lat: &Latents<B>, kv: Tensor<B, 3>, start: usize) -> Tensor<B, 3> {
        if lat.q_nope.dims()[1] == 1 {
            let q = self.absorbed_queries(lat);
            return self.project_out(ops::dense_mla(q, kv, start, self.kv_lora_rank, self.softmax_scale));
        }
        let (q, k, v) = self.heads(lat, kv);
        self.project_heads(ops::dense_attention(q, k, v, start, self.softmax_scale).0.swap_dims(1, 2))
    }

    /// Latent attention output `[B,T,H,r]` → values per head (W_uv) → `wo`.
    fn project_out(&self, o: Tensor<B, 4>) -> Tensor<B, 3> {
        let w_uv = self.wkv_b_part(self.qk_nope_head_dim, self.v_head_dim).unsqueeze::<4>(); // [1,H,r,v]
        self.project_heads(o.swap_dims(1, 2).matmul(w_uv).swap_dims(1, 2))
    }

    /// Per-head values `[B,T,H,v]` → `wo`.
    fn project_heads(&self, v: Tensor<B, 4>) -> Tensor<B, 3> {
        let [b, t, h, dv] = v.dims();
        ops::project(&self.wo, v.reshape([b, t, h * dv]))
    }
}
