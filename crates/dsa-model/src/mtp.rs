//! Multi-token prediction (DeepSeek-V3 §2.2): the `num_nextn_predict_layers` MTP modules
//! stored after the blocks (HF names under `model.layers.<num_hidden_layers + k>`).
//!
//! MTP module `k` (depth `k + 1`) combines the representation `h_i` of position `i` (the
//! main model's final-normed hidden state for the first module, as vLLM's and SGLang's
//! DeepSeek MTP take it; the previous module's output for the next) with the embedding of
//! token `t_{i+k+1}`, and predicts token `t_{i+k+2}`:
//!
//! ```text
//! h'_i = eh_proj([enorm(Emb(t_{i+k+1})) ; hnorm(h_i)])
//! out_i = Block(h'_i)                      (a full block: attention with its own cache, MLP / MoE)
//! logits_i = head(shared_head.norm(out_i))
//! ```
//!
//! The embedding and the head are the main model's unless the checkpoint holds the module's
//! own copies (`embed_tokens`, `shared_head.head`). Training adds the modules'
//! cross-entropy as an extra loss; generation uses the first module as the draft model of
//! self-speculative decoding ([`crate::speculative`]).

use burn::module::Module;
use burn::nn::{Embedding, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use dsa_burn::{ops, AttentionMode, DsaBackend, DsaCache, RmsNorm};

use crate::model::Block;

/// One MTP module (HF names under `model.layers.<num_hidden_layers + k>`).
#[derive(Module, Debug)]
pub struct MtpLayer<B: Backend> {
    /// RMSNorm of the next token's embedding (`enorm`).
    pub enorm: RmsNorm<B>,
    /// RMSNorm of the incoming representation (`hnorm`).
    pub hnorm: RmsNorm<B>,
    /// Projection of `[enorm(emb) ; hnorm(h)]` (2·d_model → d_model, `eh_proj`).
    pub eh_proj: Linear<B>,
    /// The module's transformer block (its `input_layernorm`, `self_attn`,
    /// `post_attention_layernorm`, `mlp`).
    pub block: Block<B>,
    /// RMSNorm before the output head (`shared_head.norm`).
    pub norm: RmsNorm<B>,
    /// The module's own copy of the embedding (`embed_tokens`), if the checkpoint has one;
    /// otherwise the main model's is used.
    pub embed_tokens: Option<Embedding<B>>,
    /// The module's own copy of the output head (`shared_head.head`), if the checkpoint has
    /// one; otherwise the main model's `lm_head` is used.
    pub head: Option<Linear<B>>,
}

impl<B: Backend> MtpLayer<B> {
    /// A module of width `d_model` around `block`, sharing the main model's embedding and
    /// head (random weights, initialised lazily).
    pub fn new(d_model: usize, eps: f64, block: Block<B>, device: &B::Device) -> Self {
        let norm = || RmsNorm::new(d_model, eps, device);
        Self {
            enorm: norm(),
            hnorm: norm(),
            eh_proj: LinearConfig::new(2 * d_model, d_model).with_bias(false).init(device),
            block,
            norm: norm(),
            embed_tokens: None,
            head: None,
        }
    }
}

impl<B: DsaBackend> MtpLayer<B> {
    /// The block's input `eh_proj([enorm(emb) ; hnorm(h)])` from `h [B, T, d]` and the
    /// embeddings `emb [B, T, d]` of the tokens that follow.
    fn combine(&self, h: Tensor<B, 3>, emb: Tensor<B, 3>) -> Tensor<B, 3> {
        ops::project(&self.eh_proj, Tensor::cat(vec![self.enorm.forward(emb), self.hnorm.forward(h)], 2))
    }

    /// The module's output `[B, T, d]` (before `shared_head.norm`) from the representations
    /// `h [B, T, d]` and the embeddings `emb [B, T, d]` of the tokens one step ahead; with a
    /// cache, the `T` entries are appended to it (positions `cache.len()..`).
    pub fn forward(&self, h: Tensor<B, 3>, emb: Tensor<B, 3>, cache: Option<&mut DsaCache<B>>) -> Tensor<B, 3> {
        self.block.forward(self.combine(h, emb), cache).0
    }

    /// [`MtpLayer::forward`] for training in `mode` (no cache), with the block's indexer
    /// loss (see [`Block::forward_train`]).
    pub fn forward_train(&self, h: Tensor<B, 3>, emb: Tensor<B, 3>, mode: AttentionMode) -> (Tensor<B, 3>, Tensor<B, 1>) {
        self.block.forward_train(self.combine(h, emb), mode)
    }

    /// The embeddings of `tokens`, with the module's own table or else `shared`.
    pub fn embed(&self, tokens: Tensor<B, 2, Int>, shared: &Embedding<B>) -> Tensor<B, 3> {
        self.embed_tokens.as_ref().unwrap_or(shared).forward(tokens)
    }

    /// Logits `[B, T, vocab]` of the module's output `out`, with its own head or else
    /// `shared`.
    pub fn logits(&self, out: Tensor<B, 3>, shared: &Linear<B>) -> Tensor<B, 3> {
        ops::project(self.head.as_ref().unwrap_or(shared), self.norm.forward(out))
    }
}
