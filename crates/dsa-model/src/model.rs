//! The DeepSeek-V3.2 transformer: embedding, blocks (`h += Attn(RMSNorm(h));
//! h += FFN(RMSNorm(h))` with MLA + DSA attention and a dense MLP or MoE feed-forward),
//! final RMSNorm and LM head.
//!
//! Two execution paths share the same blocks: [`DeepSeekV32::forward`] runs whole sequences
//! without a cache, [`DeepSeekV32::forward_cached`] runs a prompt (prefill) or one new token
//! per sequence (decode) against a [`ModelCache`]. Attention always runs in the absorbed MQA
//! form over the latent `[c | k_rope]`.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor};
use dsa_burn::{ops, AttentionMode, DsaAttention, DsaBackend, DsaCache, RmsNorm, Selection};

use crate::cache::ModelCache;
use crate::config::DeepSeekV32Config;
use crate::mlp::{Mlp, MlpConfig};
use crate::moe::{Moe, MoeConfig};
use crate::mtp::MtpLayer;

/// The feed-forward of a block.
#[derive(Module, Debug)]
pub enum FeedForward<B: Backend> {
    /// Dense SwiGLU MLP (the first `first_k_dense_replace` layers).
    Dense(Mlp<B>),
    /// Mixture of experts.
    Moe(Moe<B>),
}

impl<B: DsaBackend> FeedForward<B> {
    /// Applies the feed-forward to `x [B, T, d_model]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.forward_pinned(x, None).0
    }

    /// [`FeedForward::forward`] with a MoE layer's experts given instead of chosen (see
    /// [`Moe::forward_pinned`]), and the experts that ran (`None` for a dense MLP, which
    /// ignores `experts`).
    pub fn forward_pinned(&self, x: Tensor<B, 3>, experts: Option<Tensor<B, 2, Int>>) -> (Tensor<B, 3>, Option<Tensor<B, 2, Int>>) {
        match self {
            FeedForward::Dense(mlp) => (mlp.forward(x), None),
            FeedForward::Moe(moe) => {
                let (y, chosen) = moe.forward_pinned(x, experts);
                (y, Some(chosen))
            }
        }
    }
}

/// Discrete choices forced on one block by [`DeepSeekV32::forward_pinned`]: what its
/// attention attends to and where its MoE routes, instead of what the indexer and the router
/// would choose. Runs at different precisions can then be compared without a near-tie
/// falling on different sides of a cut (conformance at bf16).
#[derive(Debug, Clone)]
pub struct LayerPins<B: Backend> {
    /// The keys each query attends to, `indices [B, T, K]` and their validity (as in
    /// [`Selection`]); used in sparse attention.
    pub selection: Option<(Tensor<B, 3, Int>, Tensor<B, 3, Bool>)>,
    /// The routed experts of every token, `[B · T, k]` (token-major); used by MoE layers.
    pub experts: Option<Tensor<B, 2, Int>>,
}

impl<B: Backend> Default for LayerPins<B> {
    fn default() -> Self {
        Self { selection: None, experts: None }
    }
}

/// Selected key positions `[B, T, K]` and their validity (as in [`Selection`]).
type Pinned<B> = (Tensor<B, 3, Int>, Tensor<B, 3, Bool>);

/// One transformer block (HF names under `model.layers.<i>`: `input_layernorm`,
/// `self_attn`, `post_attention_layernorm`, `mlp`).
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// RMSNorm before attention.
    pub input_layernorm: RmsNorm<B>,
    /// MLA with DeepSeek Sparse Attention.
    pub self_attn: DsaAttention<B>,
    /// RMSNorm before the feed-forward.
    pub post_attention_layernorm: RmsNorm<B>,
    /// Dense MLP or MoE.
    pub mlp: FeedForward<B>,
}

impl<B: DsaBackend> Block<B> {
    /// `h += Attn(RMSNorm(h)); h += FFN(RMSNorm(h))`, with the attention's selection (sparse
    /// mode).
    pub fn forward(&self, h: Tensor<B, 3>, cache: Option<&mut DsaCache<B>>) -> (Tensor<B, 3>, Option<Selection<B>>) {
        let (out, trace) = self.forward_pinned(h, cache, LayerPins::default());
        (out, trace.selection)
    }

    /// [`Block::forward`] with the choices in `pins` forced, recording what the block did
    /// (the trace's `hidden` is the output).
    pub fn forward_pinned(&self, h: Tensor<B, 3>, cache: Option<&mut DsaCache<B>>, pins: LayerPins<B>) -> (Tensor<B, 3>, LayerTrace<B>) {
        self.step(h, cache, pins, true)
    }

    /// [`Block::forward_pinned`]; with `select` false the attention may skip the indexer
    /// where its selection would be every key ([`DsaAttention::forward_selecting`]), and
    /// the trace then has no selection. A shared layer (no indexer) attends to the pinned
    /// selection, the one it reuses, and its trace has none.
    fn step(&self, h: Tensor<B, 3>, cache: Option<&mut DsaCache<B>>, pins: LayerPins<B>, select: bool) -> (Tensor<B, 3>, LayerTrace<B>) {
        let x = self.input_layernorm.forward(h.clone());
        let (attn, selection) = match select {
            true => self.self_attn.forward_pinned(x, cache, pins.selection),
            false => self.self_attn.forward_selecting(x, cache, pins.selection),
        };
        let h = h + attn;
        let (ffn, experts) = self.mlp.forward_pinned(self.post_attention_layernorm.forward(h.clone()), pins.experts);
        let out = h + ffn;
        (out.clone(), LayerTrace { hidden: out, selection, experts })
    }

    /// Training forward over whole sequences in `mode`: the block's output and its
    /// attention's indexer loss (see [`DsaAttention::forward_train`]: the loss trains the
    /// indexer alone, the output never reaches it).
    pub fn forward_train(&self, h: Tensor<B, 3>, mode: AttentionMode) -> (Tensor<B, 3>, Tensor<B, 1>) {
        let (out, loss, _) = self.forward_train_reusing(h, mode, None);
        (out, loss)
    }

    /// [`Block::forward_train`] of a block whose attention may be shared (see
    /// [`DsaAttention::forward_train_reusing`]: a shared layer attends to `reused` in
    /// sparse mode and has no indexer loss), also returning the selection its attention
    /// attended to (sparse mode).
    pub fn forward_train_reusing(&self, h: Tensor<B, 3>, mode: AttentionMode, reused: Option<Pinned<B>>) -> (Tensor<B, 3>, Tensor<B, 1>, Option<Pinned<B>>) {
        let attn = self.self_attn.forward_train_reusing(self.input_layernorm.forward(h.clone()), mode, reused);
        (self.feed_forward(h + attn.output), attn.indexer_loss, attn.selection)
    }

    /// The block with its attention's default mode set to `mode`.
    fn with_attention_mode(mut self, mode: AttentionMode) -> Self {
        self.self_attn = self.self_attn.with_mode(mode);
        self
    }

    /// `h + FFN(RMSNorm(h))`.
    fn feed_forward(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        h.clone() + self.mlp.forward(self.post_attention_layernorm.forward(h))
    }
}

/// The DeepSeek-V3.2 language model, with its MTP modules (`num_nextn_predict_layers`,
/// see [`crate::mtp`]).
///
/// ```
/// # use burn::backend::NdArray;
/// # use burn::tensor::{Int, Tensor};
/// use dsa_model::DeepSeekV32Config;
/// let model = DeepSeekV32Config::tiny(64).init::<NdArray>(&Default::default());
/// let tokens = Tensor::<NdArray, 2, Int>::from_ints([[1, 2, 3, 4]], &Default::default());
/// assert_eq!(model.forward(tokens).dims(), [1, 4, 64]);
/// ```
#[derive(Module, Debug)]
pub struct DeepSeekV32<B: Backend> {
    /// Token embedding `[vocab, d_model]` (`model.embed_tokens`).
    pub embed_tokens: Embedding<B>,
    /// The blocks (`model.layers`).
    pub layers: Vec<Block<B>>,
    /// Final RMSNorm (`model.norm`).
    pub norm: RmsNorm<B>,
    /// LM head `[d_model, vocab]` (`lm_head`).
    pub lm_head: Linear<B>,
    /// The MTP modules (`model.layers.<num_hidden_layers + k>`), `None` when the config
    /// has no `num_nextn_predict_layers` (an `Option`, so that records saved before the
    /// field existed still load); see [`DeepSeekV32::mtp_layers`].
    pub mtp: Option<Vec<MtpLayer<B>>>,
}

/// What [`DeepSeekV32::forward_traced`] returns: the logits and what every block did.
#[derive(Debug, Clone)]
pub struct Trace<B: Backend> {
    /// Logits `[B, T, vocab]`.
    pub logits: Tensor<B, 3>,
    /// One entry per block.
    pub layers: Vec<LayerTrace<B>>,
}

/// One block's part of a [`Trace`].
#[derive(Debug, Clone)]
pub struct LayerTrace<B: Backend> {
    /// The residual stream after the block, `[B, T, d_model]`.
    pub hidden: Tensor<B, 3>,
    /// The indexer's scores and selection (`None` for dense attention).
    pub selection: Option<Selection<B>>,
    /// The routed experts of every token, `[B · T, k]` (token-major, best first; `None` for
    /// a dense MLP).
    pub experts: Option<Tensor<B, 2, Int>>,
}

impl DeepSeekV32Config {
    /// Creates the model with random weights (initialised lazily, on first use).
    pub fn init<B: Backend>(&self, device: &B::Device) -> DeepSeekV32<B> {
        let norm = || RmsNorm::new(self.hidden_size, self.rms_norm_eps, device);
        // MTP modules follow the blocks' dense / MoE rule at their own layer index.
        let block = |layer| Block {
            input_layernorm: norm(),
            self_attn: self.layer_attention(layer).init(device),
            post_attention_layernorm: norm(),
            mlp: if self.is_moe_layer(layer) {
                FeedForward::Moe(MoeConfig::from_config(self).init(device))
            } else {
                FeedForward::Dense(MlpConfig::new(self.hidden_size, self.intermediate_size).init(device))
            },
        };
        let mtp_layers = self.num_hidden_layers..self.num_hidden_layers + self.num_nextn_predict_layers;
        DeepSeekV32 {
            embed_tokens: EmbeddingConfig::new(self.vocab_size, self.hidden_size).init(device),
            layers: (0..self.num_hidden_layers).map(block).collect(),
            norm: norm(),
            lm_head: LinearConfig::new(self.hidden_size, self.vocab_size).with_bias(false).init(device),
            mtp: (!mtp_layers.is_empty()).then(|| mtp_layers.map(|layer| MtpLayer::new(self.hidden_size, self.rms_norm_eps, block(layer), device)).collect()),
        }
    }
}

impl<B: DsaBackend> DeepSeekV32<B> {
    /// Logits `[B, T, vocab]` of every position of `tokens [B, T]` (whole sequences, no
    /// cache).
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.logits(self.run(tokens, None, None, Vec::new()))
    }

    /// The final-normed hidden states `[B, T, d_model]` of `tokens [B, T]` (whole
    /// sequences, no cache): what the LM head and the first MTP module read.
    pub fn forward_hidden(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.run(tokens, None, None, Vec::new())
    }

    /// The logits `[B, T, vocab]` of final-normed hidden states `[B, T, d_model]`.
    pub fn logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        ops::project(&self.lm_head, hidden)
    }

    /// Logits `[B, T, vocab]` of `T` new tokens per sequence at positions
    /// `cache.position()..`, which are appended to `cache`: a prompt (prefill) or one token
    /// per sequence (decode).
    pub fn forward_cached(&self, tokens: Tensor<B, 2, Int>, cache: &mut ModelCache<B>) -> Tensor<B, 3> {
        self.logits(self.forward_cached_hidden(tokens, cache))
    }

    /// [`DeepSeekV32::forward_cached`]'s final-normed hidden states `[B, T, d_model]`
    /// instead of the logits ([`DeepSeekV32::logits`] turns them into those).
    pub fn forward_cached_hidden(&self, tokens: Tensor<B, 2, Int>, cache: &mut ModelCache<B>) -> Tensor<B, 3> {
        self.run(tokens, Some(cache), None, Vec::new())
    }

    /// The model with every layer's [`DeepSeekV32::forward`] and
    /// [`DeepSeekV32::forward_cached`] attention in `mode` (sparse by default).
    pub fn with_attention_mode(mut self, mode: AttentionMode) -> Self {
        self.layers = self.layers.into_iter().map(|block| block.with_attention_mode(mode)).collect();
        self.mtp = self.mtp.map(|layers| {
            layers
                .into_iter()
                .map(|mut mtp| {
                    mtp.block = mtp.block.with_attention_mode(mode);
                    mtp
                })
                .collect()
        });
        self
    }

    /// The MTP modules (none without `num_nextn_predict_layers`).
    pub fn mtp_layers(&self) -> &[MtpLayer<B>] {
        self.mtp.as_deref().unwrap_or_default()
    }

    /// Training forward of `tokens [B, T]` with every layer's attention in `mode`: the
    /// logits `[B, T, vocab]` and the indexer KL loss summed over the layers (dense warm-up
    /// loss in [`AttentionMode::Dense`], sparse-stage loss in [`AttentionMode::Sparse`]).
    /// The indexers see detached inputs, so the loss trains them alone, and the logits'
    /// gradient never reaches them.
    pub fn forward_train(&self, tokens: Tensor<B, 2, Int>, mode: AttentionMode) -> (Tensor<B, 3>, Tensor<B, 1>) {
        let (hidden, indexer_loss) = self.train_hidden(tokens, mode);
        (self.logits(hidden), indexer_loss)
    }

    /// [`DeepSeekV32::forward_train`] with the MTP modules: the logits, the indexer loss
    /// (the MTP blocks' included) and the MTP logits of every depth (see
    /// [`DeepSeekV32::mtp_logits`]).
    pub fn forward_train_mtp(&self, tokens: Tensor<B, 2, Int>, mode: AttentionMode) -> (Tensor<B, 3>, Tensor<B, 1>, Vec<Tensor<B, 3>>) {
        let (hidden, mut indexer_loss) = self.train_hidden(tokens.clone(), mode);
        let mtp = self.mtp_chain(hidden.clone(), tokens, |layer, h, emb| {
            let (out, loss) = layer.forward_train(h, emb, mode);
            indexer_loss = indexer_loss.clone() + loss;
            out
        });
        (self.logits(hidden), indexer_loss, mtp)
    }

    /// The logits of the MTP modules over whole sequences `tokens [B, T]`, given the main
    /// model's final-normed hidden states `hidden [B, T, d_model]`
    /// ([`DeepSeekV32::forward_hidden`]): depth `k` (from 1, one entry per module while
    /// `k < T`) gives `[B, T - k, vocab]`, whose entry `i` predicts token `i + k + 1` of
    /// the sequence that `tokens` begins (see [`crate::mtp::mtp_loss`]).
    pub fn mtp_logits(&self, hidden: Tensor<B, 3>, tokens: Tensor<B, 2, Int>) -> Vec<Tensor<B, 3>> {
        self.mtp_chain(hidden, tokens, |layer, h, emb| layer.forward(h, emb, None))
    }

    /// Runs the MTP modules in sequence with `step(module, h, emb)` (the module's output),
    /// each on the previous one's output, and returns each module's logits.
    fn mtp_chain(
        &self,
        hidden: Tensor<B, 3>,
        tokens: Tensor<B, 2, Int>,
        mut step: impl FnMut(&MtpLayer<B>, Tensor<B, 3>, Tensor<B, 3>) -> Tensor<B, 3>,
    ) -> Vec<Tensor<B, 3>> {
        let t = tokens.dims()[1];
        let mut h = hidden;
        let mut logits = Vec::new();
        for (layer, depth) in self.mtp_layers().iter().zip(1..t) {
            let emb = layer.embed(tokens.clone().narrow(1, depth, t - depth), &self.embed_tokens);
            h = step(layer, h.narrow(1, 0, t - depth), emb);
            logits.push(layer.logits(h.clone(), &self.lm_head));
        }
        logits
    }

    /// The training forward's final-normed hidden states and summed indexer loss.
    fn train_hidden(&self, tokens: Tensor<B, 2, Int>, mode: AttentionMode) -> (Tensor<B, 3>, Tensor<B, 1>) {
        let mut h = self.embed_tokens.forward(tokens);
        let mut indexer_loss = Tensor::zeros([1], &h.device());
        // The selection of the latest layer with an indexer, which shared layers reuse.
        let mut reused = None;
        for block in &self.layers {
            let (out, loss, selection) = block.forward_train_reusing(h, mode, reused.clone());
            if block.self_attn.indexer.is_some() {
                reused = selection;
            }
            h = out;
            indexer_loss = indexer_loss + loss;
        }
        (self.norm.forward(h), indexer_loss)
    }

    /// [`DeepSeekV32::forward`] (no cache) or [`DeepSeekV32::forward_cached`], recording
    /// every block's output and selection.
    pub fn forward_traced(&self, tokens: Tensor<B, 2, Int>, cache: Option<&mut ModelCache<B>>) -> Trace<B> {
        self.forward_pinned(tokens, cache, Vec::new())
    }

    /// [`DeepSeekV32::forward_traced`] with block `i`'s discrete choices forced to
    /// `pins[i]` (blocks past the end of `pins` choose for themselves; see [`LayerPins`]).
    pub fn forward_pinned(&self, tokens: Tensor<B, 2, Int>, cache: Option<&mut ModelCache<B>>, pins: Vec<LayerPins<B>>) -> Trace<B> {
        let mut layers = Vec::with_capacity(self.layers.len());
        let logits = self.logits(self.run(tokens, cache, Some(&mut layers), pins));
        Trace { logits, layers }
    }

    /// The final-normed hidden states of `tokens`.
    fn run(
        &self,
        tokens: Tensor<B, 2, Int>,
        cache: Option<&mut ModelCache<B>>,
        mut trace: Option<&mut Vec<LayerTrace<B>>>,
        pins: Vec<LayerPins<B>>,
    ) -> Tensor<B, 3> {
        let mut caches: Vec<Option<&mut DsaCache<B>>> = match cache {
            Some(cache) => {
                let layers = cache.layers_mut();
                assert_eq!(layers.len(), self.layers.len(), "the cache was made for {} layers, the model has {}", layers.len(), self.layers.len());
                layers.iter_mut().map(Some).collect()
            }
            None => self.layers.iter().map(|_| None).collect(),
        };
        let mut pins = pins.into_iter();
        let mut h = self.embed_tokens.forward(tokens);
        // The selection of the latest layer with an indexer (`None`: it attended densely),
        // which a shared layer attends to unless pinned otherwise; a shared layer's trace
        // records the selection it attended to, with its source's scores.
        let mut reused: Option<Selection<B>> = None;
        for (block, cache) in self.layers.iter().zip(caches.iter_mut()) {
            let mut pin = pins.next().unwrap_or_default();
            let shared = block.self_attn.indexer.is_none();
            if shared {
                pin.selection = pin.selection.or_else(|| reused.as_ref().map(|s| (s.indices.clone(), s.valid.clone())));
            }
            let attended = pin.selection.clone().filter(|_| shared && block.self_attn.mode() == AttentionMode::Sparse);
            let (out, mut layer) = block.step(h, cache.as_deref_mut(), pin, trace.is_some());
            match (shared, attended) {
                (false, _) => reused = layer.selection.clone(),
                (true, Some((indices, valid))) => {
                    let scores = reused.as_ref().map(|s| s.scores.clone());
                    layer.selection = scores.map(|scores| Selection { scores, indices, valid });
                }
                (true, None) => {}
            }
            h = out;
            if let Some(trace) = trace.as_deref_mut() {
                trace.push(layer);
            }
        }
        self.norm.forward(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::{Distribution, Tolerance};

    type B = NdArray<f32>;

    /// Prefill then single-token decode equals one forward over the whole sequence, for a
    /// batch of prompts, with top-k smaller than the sequence (the selection matters).
    #[test]
    fn cached_decode_equals_full_forward() {
        let mut cfg = DeepSeekV32Config::tiny(96);
        cfg.index_topk = 4;
        assert_cached_decode_equals_full_forward(&cfg);
    }

    /// The same with shared indexers: prefill and decode reuse the source layer's selection
    /// as the whole-sequence forward does.
    #[test]
    fn cached_decode_with_shared_indexers_equals_full_forward() {
        use crate::config::IndexerType::{Full, Shared};
        let mut cfg = DeepSeekV32Config::tiny(96);
        cfg.index_topk = 4;
        cfg.indexer_types = vec![Full, Shared, Full, Shared];
        assert_cached_decode_equals_full_forward(&cfg);
    }

    /// Prefill of 7 tokens, then 4 single-token decode steps, against one forward of the 11.
    fn assert_cached_decode_equals_full_forward(cfg: &DeepSeekV32Config) {
        let dev = Default::default();
        let model = cfg.init::<B>(&dev);
        let (prompt, total) = (7, 11);
        let tokens = Tensor::<B, 2, Int>::random([2, total], Distribution::Uniform(0.0, cfg.vocab_size as f64), &dev);
        let full = model.forward(tokens.clone());

        let mut cache = ModelCache::new(cfg.num_hidden_layers);
        let mut steps = vec![model.forward_cached(tokens.clone().narrow(1, 0, prompt), &mut cache)];
        for pos in prompt..total {
            steps.push(model.forward_cached(tokens.clone().narrow(1, pos, 1), &mut cache));
        }
        assert_eq!(cache.position(), total);
        Tensor::cat(steps, 1).into_data().assert_approx_eq::<f32>(&full.into_data(), Tolerance::rel_abs(1e-4, 1e-5));
    }

    /// A shared layer computes what the same layer with an indexer computes when pinned to
    /// its source layer's selection, in the prefill and in decode steps; its trace records
    /// that selection.
    #[test]
    fn a_shared_layer_equals_a_full_layer_pinned_to_its_source() {
        use crate::config::IndexerType::{Full, Shared};
        let dev = Default::default();
        let mut cfg = DeepSeekV32Config::tiny(64);
        cfg.index_topk = 3;
        cfg.num_hidden_layers = 3;
        cfg.indexer_types = vec![Full, Full, Shared];
        let shared = cfg.init::<B>(&dev);
        let tokens = Tensor::<B, 2, Int>::from_ints([[3, 1, 4, 1, 5, 9, 2, 6], [6, 5, 3, 5, 8, 9, 7, 9]], &dev);
        // Initialises the lazy parameters, which clones then share.
        let free_shared = shared.forward(tokens.clone());
        let mut full = shared.clone();
        full.layers[2].self_attn.indexer = full.layers[0].self_attn.indexer.clone();
        let (mut shared_cache, mut full_cache) = (ModelCache::new(3), ModelCache::new(3));
        for (start, len) in [(0, 6), (6, 1), (7, 1)] {
            let step = tokens.clone().narrow(1, start, len);
            let ours = shared.forward_traced(step.clone(), Some(&mut shared_cache));
            let source = ours.layers[1].selection.clone().expect("layer 1 selects");
            let reused = ours.layers[2].selection.clone().expect("layer 2 records its selection");
            reused.indices.to_data().assert_eq(&source.indices.to_data(), true);
            reused.scores.to_data().assert_eq(&source.scores.to_data(), true);
            let pins = vec![LayerPins::default(), LayerPins::default(), LayerPins { selection: Some((source.indices, source.valid)), experts: None }];
            let pinned = full.forward_pinned(step, Some(&mut full_cache), pins);
            pinned.logits.into_data().assert_approx_eq::<f32>(&ours.logits.into_data(), Tolerance::default());
        }
        // Free-running, the full layer attends to its own top-k instead, which differs.
        let free = full.forward(tokens);
        assert!((free - free_shared).abs().max().into_scalar() > 1e-4);
    }

    /// Training with shared layers: the logits are inference's; the shared layer attends to
    /// its source's selection and has no indexer loss, so only the full layers' indexers
    /// learn, in the dense warm-up too.
    #[test]
    fn forward_train_reuses_the_selection_in_shared_layers() {
        use crate::config::IndexerType::{Full, Shared};
        type A = burn::backend::Autodiff<B>;
        let dev = Default::default();
        let mut cfg = DeepSeekV32Config::tiny(48);
        cfg.index_topk = 3;
        cfg.num_hidden_layers = 3;
        cfg.indexer_types = vec![Full, Shared, Full];
        let model = cfg.init::<A>(&dev);
        let tokens = Tensor::<A, 2, Int>::from_ints([[3, 1, 4, 1, 5, 9, 2], [6, 5, 3, 5, 8, 9, 7]], &dev);
        for mode in [AttentionMode::Sparse, AttentionMode::Dense] {
            let (logits, loss) = model.forward_train(tokens.clone(), mode);
            let inference = model.clone().with_attention_mode(mode).forward(tokens.clone());
            logits.into_data().assert_approx_eq::<f32>(&inference.into_data(), Tolerance::default());
            let grads = loss.backward();
            for layer in [0, 2] {
                let ix = model.layers[layer].self_attn.indexer.as_ref().expect("a full layer");
                assert!(ix.wk.weight.grad(&grads).is_some(), "{mode:?}: layer {layer}'s indexer learns");
            }
            assert!(model.layers[1].self_attn.wq_a.weight.grad(&grads).is_none());
        }
        // The shared layer's sparse attention is its source's selection.
        let h = model.embed_tokens.forward(tokens);
        let (h, _, source) = model.layers[0].forward_train_reusing(h, AttentionMode::Sparse, None);
        let x = model.layers[1].input_layernorm.forward(h);
        let out = model.layers[1].self_attn.forward_train_reusing(x.clone(), AttentionMode::Sparse, source.clone());
        assert_eq!(out.indexer_loss.into_scalar(), 0.0);
        let (indices, valid) = source.expect("sparse mode selects");
        let pinned = model.layers[1].self_attn.forward_pinned(x, None, Some((indices, valid))).0;
        out.output.into_data().assert_approx_eq::<f32>(&pinned.into_data(), Tolerance::default());
    }

    /// The training forward computes the same logits as inference; its indexer loss trains
    /// the indexers alone, and the logits never reach them.
    #[test]
    fn forward_train_separates_the_indexer_gradients() {
        type A = burn::backend::Autodiff<B>;
        let dev = Default::default();
        let mut cfg = DeepSeekV32Config::tiny(48);
        cfg.index_topk = 3;
        let model = cfg.init::<A>(&dev);
        let tokens = Tensor::<A, 2, Int>::from_ints([[3, 1, 4, 1, 5, 9, 2], [6, 5, 3, 5, 8, 9, 7]], &dev);
        let (logits, loss) = model.forward_train(tokens.clone(), AttentionMode::Sparse);
        logits.clone().into_data().assert_approx_eq::<f32>(&model.forward(tokens.clone()).into_data(), Tolerance::default());
        assert!(loss.clone().into_scalar() > 0.0);

        let attn = &model.layers[1].self_attn;
        let grads = loss.backward();
        assert!(attn.indexer.as_ref().expect("an indexer").wk.weight.grad(&grads).is_some() && attn.indexer.as_ref().expect("an indexer").weights_proj.weight.grad(&grads).is_some());
        assert!(attn.wq_a.weight.grad(&grads).is_none() && model.embed_tokens.weight.grad(&grads).is_none());
        let grads = logits.sum().backward();
        assert!(attn.wq_a.weight.grad(&grads).is_some() && model.embed_tokens.weight.grad(&grads).is_some());
        assert!(attn.indexer.as_ref().expect("an indexer").wk.weight.grad(&grads).is_none() && attn.indexer.as_ref().expect("an indexer").wq_b.weight.grad(&grads).is_none());

        let (dense_logits, dense_loss) = model.forward_train(tokens.clone(), AttentionMode::Dense);
        assert!(dense_loss.into_scalar() > 0.0);
        let dense = model.with_attention_mode(AttentionMode::Dense);
        dense_logits.into_data().assert_approx_eq::<f32>(&dense.forward(tokens).into_data(), Tolerance::default());
    }

    /// A record saved before the model had MTP modules (without the `mtp` field, as
    /// dsa-cli run directories of earlier versions) still loads.
    #[test]
    fn records_without_the_mtp_field_load() {
        use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
        #[derive(Module, Debug)]
        struct Before<B: Backend> {
            embed_tokens: Embedding<B>,
            layers: Vec<Block<B>>,
            norm: RmsNorm<B>,
            lm_head: Linear<B>,
        }
        let dev = Default::default();
        let cfg = DeepSeekV32Config::tiny(32);
        let model = cfg.init::<B>(&dev);
        let tokens = Tensor::<B, 2, Int>::from_ints([[3, 1, 4, 1, 5]], &dev);
        // Initialises the lazy parameters, which clones then share.
        let logits = model.forward(tokens.clone());
        let before = Before { embed_tokens: model.embed_tokens.clone(), layers: model.layers.clone(), norm: model.norm.clone(), lm_head: model.lm_head.clone() };
        let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
        let bytes = recorder.record(before.into_record(), ()).expect("record");
        let loaded = cfg.init::<B>(&dev).load_record(recorder.load(bytes, &dev).expect("an old record loads"));
        assert!(loaded.mtp.is_none());
        loaded.forward(tokens).into_data().assert_eq(&logits.into_data(), true);
    }

    /// Pins equal to the model's own choices change nothing; other pins are what runs.
    #[test]
    fn pins_replace_the_choices() {
        let dev = Default::default();
        let mut cfg = DeepSeekV32Config::tiny(32);
        cfg.index_topk = 3;
        let model = cfg.init::<B>(&dev);
        let tokens = Tensor::<B, 2, Int>::from_ints([[3, 1, 4, 1, 5, 9, 2], [6, 5, 3, 5, 8, 9, 7]], &dev);
        let free = model.forward_traced(tokens.clone(), None);
        let own: Vec<LayerPins<B>> = (free.layers.iter())
            .map(|l| LayerPins {
                selection: l.selection.as_ref().map(|s| (s.indices.clone(), s.valid.clone())),
                experts: l.experts.clone(),
            })
            .collect();
        let same = model.forward_pinned(tokens.clone(), None, own.clone());
        same.logits.into_data().assert_eq(&free.logits.clone().into_data(), true);

        // Layer 0 attends to token 0 alone; layer 1 (MoE) routes every token to experts 0, 1.
        let mut other = own;
        let only_first = Tensor::<B, 3, Int>::zeros([2, 7, 3], &dev);
        let valid = Tensor::<B, 1, Int>::from_ints([1, 0, 0], &dev).reshape([1, 1, 3]).repeat_dim(1, 7).repeat_dim(0, 2).equal_elem(1);
        other[0].selection = Some((only_first.clone(), valid));
        assert!(cfg.is_moe_layer(1));
        let first_two = Tensor::<B, 1, Int>::from_ints([0, 1], &dev).reshape([1, 2]).repeat_dim(0, 14);
        other[1].experts = Some(first_two.clone());
        let pinned = model.forward_pinned(tokens, None, other);
        let sel = pinned.layers[0].selection.as_ref().expect("sparse attention");
        sel.indices.to_data().assert_eq(&only_first.into_data(), true);
        let experts = pinned.layers[1].experts.clone().expect("a MoE layer");
        experts.into_data().assert_eq(&first_two.into_data(), true);
        let diff = (pinned.logits - free.logits).abs().max().into_scalar();
        assert!(diff > 1e-3, "pinned logits moved by {diff}");
    }

    #[test]
    fn trace_records_every_layer() {
        let dev = Default::default();
        let cfg = DeepSeekV32Config::tiny(32);
        let model = cfg.init::<B>(&dev);
        let tokens = Tensor::<B, 2, Int>::from_ints([[3, 1, 4, 1, 5]], &dev);
        let trace = model.forward_traced(tokens.clone(), None);
        assert_eq!(trace.layers.len(), cfg.num_hidden_layers);
        let last = trace.layers.last().expect("layers").hidden.clone();
        // The logits are the LM head of the normalised last hidden state.
        let logits = model.lm_head.forward(model.norm.forward(last));
        logits.into_data().assert_approx_eq::<f32>(&trace.logits.clone().into_data(), Tolerance::default());
        trace.logits.into_data().assert_approx_eq::<f32>(&model.forward(tokens).into_data(), Tolerance::default());
        let sel = trace.layers[0].selection.as_ref().expect("sparse attention");
        assert_eq!(sel.scores.dims(), [1, 5, 5]);
    }
}
