//! The lightning indexer: a few ReLU heads that score every past token cheaply.
//!
//! `I[t,s] = Σ_j w[t,j] · ReLU(q̂[t,j] · k̂[s])` with `q̂`, `k̂` the FP8-quantised, Hadamard-
//! rotated query and key (one key per token, shared by all indexer heads). This file holds
//! the [`LightningIndexer`] module that produces the inputs of [`DsaBackend::indexer_scores`]
//! (whose reference is [`crate::reference::indexer`]) and the Hadamard rotation it applies.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::quant::IndexerQuant;
use crate::rope::Rope;
use crate::DsaBackend;

/// The Sylvester Hadamard rotation `x · H / sqrt(n)` over the last dim (a power of two).
///
/// Rounded as DeepSeek's reference rounds it (`(x @ H.t()) * n ** -0.5` in float32): the
/// product with the ±1 matrix, then one multiplication by `fl(n^-1/2)`. Folding the norm
/// into the matrix (`x · (H / sqrt(n))`) rounds every term and moves the result by a few
/// ulps, enough to flip the FP8 rounding of the values that sit near an e4m3 midpoint.
pub fn hadamard<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let dims = x.dims();
    let n = dims[D - 1];
    assert!(n.is_power_of_two(), "Hadamard rotation needs a power-of-two dim, got {n}");
    let norm = (n as f64).powf(-0.5) as f32;
    let h: Vec<f32> = (0..n * n)
        .map(|i| if ((i / n) & (i % n)).count_ones().is_multiple_of(2) { 1.0 } else { -1.0 })
        .collect();
    let h = Tensor::<B, 2>::from_data(TensorData::new(h, [n, n]), &x.device());
    let rows = x.shape().num_elements() / n;
    x.reshape([rows, n]).matmul(h).mul_scalar(norm).reshape(dims)
}

/// Configuration of a [`LightningIndexer`].
#[derive(Config, Debug)]
pub struct LightningIndexerConfig {
    /// Model width (input `x`).
    pub hidden_size: usize,
    /// Width of the normalised query latent `qr`.
    pub q_lora_rank: usize,
    /// Indexer heads (64 in DeepSeek-V3.2).
    #[config(default = 64)]
    pub index_n_heads: usize,
    /// Indexer head dim (128 in DeepSeek-V3.2), a power of two.
    #[config(default = 128)]
    pub index_head_dim: usize,
    /// Rotated dims at the start of each head (the model's `qk_rope_head_dim`).
    #[config(default = 64)]
    pub qk_rope_head_dim: usize,
    /// Tokens selected per query.
    #[config(default = 2048)]
    pub index_topk: usize,
    /// FP8 quantisation of queries and keys.
    #[config(default = "IndexerQuant::E4m3")]
    pub index_quant: IndexerQuant,
    /// Interleaved RoPE (GLM-5 style); DeepSeek-V3.2 rotates half (false).
    #[config(default = false)]
    pub indexer_rope_interleave: bool,
    /// LayerNorm epsilon of the key.
    #[config(default = 1e-6)]
    pub norm_eps: f64,
}

impl LightningIndexerConfig {
    /// Creates the indexer with random weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> LightningIndexer<B> {
        assert!(self.qk_rope_head_dim <= self.index_head_dim, "indexer qk_rope_head_dim exceeds index_head_dim");
        let linear = |i, o| LinearConfig::new(i, o).with_bias(false).init(device);
        LightningIndexer {
            wq_b: linear(self.q_lora_rank, self.index_n_heads * self.index_head_dim),
            wk: linear(self.hidden_size, self.index_head_dim),
            k_norm: LayerNormConfig::new(self.index_head_dim).with_epsilon(self.norm_eps).init(device),
            weights_proj: linear(self.hidden_size, self.index_n_heads),
            n_heads: self.index_n_heads,
            head_dim: self.index_head_dim,
            rope_dim: self.qk_rope_head_dim,
            topk: self.index_topk,
            quant: self.index_quant,
            rope_interleaved: self.indexer_rope_interleave,
        }
    }
}

/// The lightning indexer of one DSA layer (HF names: `wq_b`, `wk`, `k_norm`,
/// `weights_proj` under `self_attn.indexer`).
#[derive(Module, Debug)]
pub struct LightningIndexer<B: Backend> {
    /// Query projection from the q latent: `[q_lora_rank, n_heads · head_dim]`.
    pub wq_b: Linear<B>,
    /// Key projection from the model input: `[d_model, head_dim]`.
    pub wk: Linear<B>,
    /// Key LayerNorm (with bias).
    pub k_norm: LayerNorm<B>,
    /// Per-head weights from the model input: `[d_model, n_heads]`.
    pub weights_proj: Linear<B>,
    n_heads: usize,
    head_dim: usize,
    rope_dim: usize,
    topk: usize,
    #[module(skip)]
    quant: IndexerQuant,
    rope_interleaved: bool,
}

impl<B: DsaBackend> LightningIndexer<B> {
    /// Tokens selected per query.
    pub fn topk(&self) -> usize {
        self.topk
    }

    /// The FP8 quantisation used for scores.
    pub fn quant(&self) -> IndexerQuant {
        self.quant
    }

    /// RoPE on the first `rope_dim` dims of each head (`[rope | nope]` order).
    fn rotate(&self, x: Tensor<B, 4>, rope: &Rope, start: usize) -> Tensor<B, 4> {
        let pe = x.clone().narrow(3, 0, self.rope_dim);
        let nope = x.narrow(3, self.rope_dim, self.head_dim - self.rope_dim);
        Tensor::cat(vec![rope.apply(pe, start, self.rope_interleaved), nope], 3)
    }
}

impl<B: DsaBackend> LightningIndexer<B> {
    /// Queries `[B, T, H_I, D]` (rotated) and head weights `[B, T, H_I]` (with the
    /// `H_I^-1/2 · D^-1/2` scales folded in) for tokens at `start..`.
    pub fn queries(&self, x: Tensor<B, 3>, qr: Tensor<B, 3>, rope: &Rope, start: usize) -> (Tensor<B, 4>, Tensor<B, 3>) {
        let [b, t, _] = qr.dims();
        let q = crate::ops::project(&self.wq_b, qr).reshape([b, t, self.n_heads, self.head_dim]);
        let q = hadamard(self.rotate(q, rope, start));
        let scale = ((self.n_heads * self.head_dim) as f64).sqrt().recip();
        let w = crate::ops::project(&self.weights_proj, x).mul_scalar(scale);
        (q, w)
    }

    /// Keys `[B, T, D]` (normalised, rotated) for tokens at `start..`.
    pub fn keys(&self, x: Tensor<B, 3>, rope: &Rope, start: usize) -> Tensor<B, 3> {
        let [b, t, _] = x.dims();
        let k = self.k_norm.forward(crate::ops::project(&self.wk, x)).reshape([b, t, 1, self.head_dim]);
        hadamard(self.rotate(k, rope, start)).reshape([b, t, self.head_dim])
    }

    /// Causal scores `[B, T, S]` of the `T` tokens of `x` (at positions `start..`) against
    /// `keys [B, S, D]` (all tokens up to the last one of `x`).
    pub fn scores(&self, x: Tensor<B, 3>, qr: Tensor<B, 3>, keys: Tensor<B, 3>, rope: &Rope, start: usize) -> Tensor<B, 3> {
        let (q, w) = self.queries(x, qr, rope, start);
        crate::ops::indexer_scores(q, w, keys, self.quant(), Some(start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn hadamard_is_orthonormal_and_symmetric() {
        let eye = Tensor::<NdArray, 2>::eye(16, &Default::default());
        let h = hadamard(eye);
        let hh = h.clone().matmul(h.clone().transpose());
        hh.into_data().assert_approx_eq::<f32>(&Tensor::<NdArray, 2>::eye(16, &Default::default()).into_data(), Default::default());
        // Sylvester construction: first row all positive, row 1 alternates.
        let d = h.to_data().to_vec::<f32>().unwrap();
        assert!(d[..16].iter().all(|v| *v > 0.0));
        assert!(d[16] > 0.0 && d[17] < 0.0);
    }

    /// The rotation rounds as the reference's `(x @ H.t()) * n ** -0.5`: on integer inputs
    /// every ±1 sum is exact in f32 (whatever the summation order), so each output must be
    /// exactly `fl(S · fl(128^-1/2))` with `S` the integer sum. Scaling each term first
    /// (`x · (H/√n)`) rounds 128 products and misses this for most outputs.
    #[test]
    fn hadamard_rounds_as_the_reference() {
        let n = 128usize;
        let rows = 6;
        let x: Vec<i64> = (0..rows * n).map(|i| ((i * 7919 + 13) % 2001) as i64 - 1000).collect();
        let xt = Tensor::<NdArray, 2>::from_data(
            TensorData::new(x.iter().map(|v| *v as f32).collect::<Vec<_>>(), [rows, n]),
            &Default::default(),
        );
        let got = hadamard(xt).to_data().to_vec::<f32>().unwrap();
        let norm = (n as f64).powf(-0.5) as f32;
        for r in 0..rows {
            for j in 0..n {
                let sum: i64 = (0..n)
                    .map(|i| if (i & j).count_ones().is_multiple_of(2) { x[r * n + i] } else { -x[r * n + i] })
                    .sum();
                assert_eq!(got[r * n + j], sum as f32 * norm, "row {r} col {j}");
            }
        }
    }
}
