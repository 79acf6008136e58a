//! The lightning indexer's scores `I[b,t,s] = Σ_j w[b,t,j] · ReLU(q̂[b,t,j] · k̂[b,s])` over
//! every key, with `q̂`, `k̂` the fake-quantised ([`super::quant::fake_quant`]) queries and
//! keys, in blocks of query rows so that the per-head logits stay bounded.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::causal_mask;
use super::quant::fake_quant;
use crate::quant::IndexerQuant;

/// Query rows scored per step, so that the per-head logits `[B, rows, H_I, S]` stay
/// within about this many elements.
const LOGITS_BUDGET: usize = 1 << 24;

/// Reference indexer scores; see [`DsaBackend::indexer_scores`](crate::DsaBackend::indexer_scores).
pub fn reference_scores<B: Backend>(q: Tensor<B, 4>, w: Tensor<B, 3>, k: Tensor<B, 3>, quant: IndexerQuant, causal_offset: Option<usize>) -> Tensor<B, 3> {
    let [b, t, h, d] = q.dims();
    let [_, s, dk] = k.dims();
    assert_eq!(d, dk, "indexer query dim {d} != key dim {dk}");
    assert_eq!(w.dims(), [b, t, h], "indexer weights must be [B, T, H_I]");
    let q = fake_quant(q, quant);
    let k_t = fake_quant(k, quant).swap_dims(1, 2).unsqueeze_dim::<4>(1); // [B,1,D,S]
    let rows = (LOGITS_BUDGET / (b * h * s).max(1)).clamp(1, t.max(1));
    let mut blocks = Vec::with_capacity(t.div_ceil(rows));
    let mut start = 0;
    while start < t {
        let len = rows.min(t - start);
        let logits = q.clone().narrow(1, start, len).matmul(k_t.clone()); // [B,len,H,S]
        let weighted = logits.clamp_min(0.0) * w.clone().narrow(1, start, len).unsqueeze_dim(3);
        blocks.push(weighted.sum_dim(2).reshape([b, len, s]));
        start += len;
    }
    let scores = Tensor::cat(blocks, 1);
    match causal_offset {
        Some(offset) => scores.mask_fill(causal_mask::<B>(t, s, offset, &w.device()).unsqueeze(), f32::NEG_INFINITY),
        None => scores,
    }
}
