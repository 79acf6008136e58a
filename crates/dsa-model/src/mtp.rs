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
use burn::nn::loss::CrossEntropyLossConfig;
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

/// The MTP loss of DeepSeek-V3 §2.2 before its weight λ: the mean over the depths of the
/// cross-entropy of each depth's logits ([`DeepSeekV32::mtp_logits`](crate::DeepSeekV32::mtp_logits))
/// against `targets [B, T]` (token `i + 1` of the sequence at `i`, as for the LM loss)
/// shifted by the depth: depth `k`'s entry `i` predicts `targets[i + k]`. `None` without
/// MTP depths.
pub fn mtp_loss<B: Backend>(logits: Vec<Tensor<B, 3>>, targets: Tensor<B, 2, Int>) -> Option<Tensor<B, 1>> {
    let depths = logits.len();
    let [_, t] = targets.dims();
    let ce = CrossEntropyLossConfig::new().init(&targets.device());
    let losses = logits.into_iter().zip(1..).map(|(logits, depth)| {
        let [b, n, vocab] = logits.dims();
        assert_eq!(n, t - depth, "depth {depth}'s logits cover {n} positions of {t}");
        ce.forward(logits.reshape([b * n, vocab]), targets.clone().narrow(1, depth, n).reshape([b * n]))
    });
    losses.reduce(|a, b| a + b).map(|sum| sum.div_scalar(depths as f32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeepSeekV32Config;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::activation::log_softmax;

    type A = Autodiff<NdArray<f32>>;

    /// The MTP loss of two depths equals a direct computation: each module run by hand on
    /// the previous representation and the embeddings one token further on, and the
    /// negative log-probability of the token `depth + 1` ahead in the whole sequence,
    /// picked by index; its gradient reaches every MTP module and the shared embedding.
    #[test]
    fn the_mtp_loss_predicts_the_tokens_depth_ahead() {
        let dev = Default::default();
        let mut cfg = DeepSeekV32Config::tiny(48);
        cfg.num_hidden_layers = 2;
        cfg.num_nextn_predict_layers = 2;
        cfg.index_topk = 3;
        let model = cfg.init::<A>(&dev);
        let seq: [[i64; 9]; 2] = [[3, 1, 4, 1, 5, 9, 2, 6, 5], [35, 8, 9, 7, 9, 3, 23, 8, 4]];
        let all = Tensor::<A, 2, Int>::from_ints(seq, &dev);
        let t = 8;
        let (inputs, targets) = (all.clone().narrow(1, 0, t), all.narrow(1, 1, t));
        let (_, _, logits) = model.forward_train_mtp(inputs.clone(), AttentionMode::Sparse);
        assert_eq!(logits.iter().map(|l| l.dims()).collect::<Vec<_>>(), [[2, 7, 48], [2, 6, 48]]);
        let loss = mtp_loss(logits, targets).expect("two depths");

        let mut h = model.forward_hidden(inputs.clone());
        let mut direct = 0.0;
        for (layer, depth) in model.mtp_layers().iter().zip(1..) {
            let n = t - depth;
            h = layer.forward(h.narrow(1, 0, n), model.embed_tokens.forward(inputs.clone().narrow(1, depth, n)), None);
            let logp = log_softmax(layer.logits(h.clone(), &model.lm_head), 2).into_data().to_vec::<f32>().unwrap();
            let mut nll = 0.0;
            for (b, row) in seq.iter().enumerate() {
                for i in 0..n {
                    nll -= logp[(b * n + i) * 48 + row[i + depth + 1] as usize] as f64;
                }
            }
            direct += nll / (2 * n) as f64 / 2.0;
        }
        let got = loss.clone().into_scalar() as f64;
        assert!((got - direct).abs() < 1e-4 * direct, "MTP loss {got}, direct {direct}");

        let grads = loss.backward();
        for mtp in model.mtp_layers() {
            assert!(mtp.eh_proj.weight.grad(&grads).is_some() && mtp.enorm.gamma.grad(&grads).is_some() && mtp.norm.gamma.grad(&grads).is_some());
            assert!(mtp.block.self_attn.wq_a.weight.grad(&grads).is_some());
        }
        assert!(model.embed_tokens.weight.grad(&grads).is_some());
    }
}
