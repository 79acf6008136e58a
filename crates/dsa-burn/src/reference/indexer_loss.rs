//! The two operations the sparse stage's indexer loss ([`crate::loss::sparse_indexer_loss`])
//! is built from, over the `K` selected keys of every query only: the indexer's scores at
//! those keys with their backward, and sparse MLA's head-averaged attention probabilities
//! there (the loss's target, not differentiated).

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor};

use super::quant::fake_quant;
use super::{gather_rows, scatter_rows, sparse_scores};
use crate::quant::IndexerQuant;

/// Reference indexer scores at the selected keys; see
/// [`DsaBackend::indexer_selected_scores`](crate::DsaBackend::indexer_selected_scores).
pub fn reference_selected_scores<B: Backend>(q: Tensor<B, 4>, w: Tensor<B, 3>, k: Tensor<B, 3>, quant: IndexerQuant, indices: Tensor<B, 3, Int>, valid: Tensor<B, 3, Bool>) -> Tensor<B, 3> {
    let [b, t, _, _] = q.dims();
    let kk = indices.dims()[2];
    let (_, _, logits) = selected_logits(q, k, quant, indices);
    let scores = (logits.clamp_min(0.0) * w.unsqueeze_dim(3)).sum_dim(2).reshape([b, t, kk]);
    scores.mask_fill(valid.bool_not(), f32::NEG_INFINITY)
}

/// Reference backward of the selected scores; see
/// [`DsaBackend::indexer_selected_scores_backward`](crate::DsaBackend::indexer_selected_scores_backward).
#[allow(clippy::too_many_arguments)]
pub fn reference_selected_scores_backward<B: Backend>(q: Tensor<B, 4>, w: Tensor<B, 3>, k: Tensor<B, 3>, quant: IndexerQuant, indices: Tensor<B, 3, Int>, valid: Tensor<B, 3, Bool>, grad: Tensor<B, 3>) -> (Tensor<B, 4>, Tensor<B, 3>, Tensor<B, 3>) {
    let [b, t, h, _] = q.dims();
    let s = k.dims()[1];
    let kk = indices.dims()[2];
    let (q, rows, logits) = selected_logits(q, k, quant, indices.clone());
    let g = grad.mask_fill(valid.bool_not(), 0.0).reshape([b, t, 1, kk]);
    let gate = logits.clone().greater_elem(0.0).float();
    let c = gate * g.clone() * w.reshape([b, t, h, 1]); // [B,T,H,K]
    let dw = (logits.clamp_min(0.0) * g).sum_dim(3).reshape([b, t, h]);
    let dq = c.clone().matmul(rows);
    let dk = scatter_rows(c.swap_dims(2, 3).matmul(q), indices, s);
    (dq, dw, dk)
}

/// The quantised queries `q̂`, the selected quantised keys `[B,T,K,D]` and the per-head
/// logits `q̂ · k̂ᵀ` `[B,T,H,K]` of the selected scores.
fn selected_logits<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 3>, quant: IndexerQuant, indices: Tensor<B, 3, Int>) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
    let q = fake_quant(q, quant);
    let rows = gather_rows(fake_quant(k, quant), indices);
    let logits = q.clone().matmul(rows.clone().swap_dims(2, 3));
    (q, rows, logits)
}

/// Reference head-averaged sparse attention probabilities; see
/// [`DsaBackend::sparse_mla_probs`](crate::DsaBackend::sparse_mla_probs).
pub fn reference_sparse_mla_probs<B: Backend>(q: Tensor<B, 4>, kv: Tensor<B, 3>, indices: Tensor<B, 3, Int>, valid: Tensor<B, 3, Bool>, lse: Tensor<B, 3>, scale: f32) -> Tensor<B, 3> {
    let [b, t, h, _] = q.dims();
    let kk = indices.dims()[2];
    let scores = sparse_scores(q, gather_rows(kv, indices), valid, scale); // -inf where invalid
    let lse = lse.clone().mask_fill(lse.is_inf(), 0.0).reshape([b, t, h, 1]);
    (scores - lse).exp().sum_dim(2).reshape([b, t, kk]).div_scalar(h as f32)
}
