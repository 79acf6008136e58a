//! The lightning indexer's training losses (DeepSeek-V3.2 paper, §2.1).
//!
//! Both compare the indexer's distribution `softmax(I[t, ·])` with the main attention's
//! distribution summed over heads and L1-normalised, `p[t, ·]`, as `KL(p ‖ softmax(I))`,
//! summed over query tokens and averaged over the batch. The target `p` is always
//! detached: the indexer learns from these losses, the model does not.
//!
//! The sparse stage's loss is built from two backend operations over the `K` selected keys
//! only ([`DsaBackend::indexer_selected_scores`] with its backward, and
//! [`DsaBackend::sparse_mla_probs`]); their reference implementations live here.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, DType, Int, Tensor};

use crate::dense_attention::{block_scores, row_blocks};
use crate::indexer::causal_mask;
use crate::quant::{fake_quant, IndexerQuant};
use crate::sparse_mla::{gather_rows, scatter_rows, sparse_scores};
use crate::DsaBackend;

/// Finite stand-in for `-inf` in the indexer's masked logits (keeps empty rows NaN-free).
const MASKED: f32 = -1e30;

/// Dense warm-up loss `Σ_t KL(p[t,:] ‖ softmax(I[t,:]))` over causal keys, with `p` the
/// probabilities of the dense MHA attention of `q [B,H,T,D]` over `k [B,H,S,D]` (`scale`;
/// query `t` sits at position `t + causal_offset`) whose log-sum-exp `lse [B,H,T]`
/// [`dense_attention`](crate::ops::dense_attention) returned, averaged over heads.
/// `index_scores [B,T,S]`. Rows run in the blocks of the attention's reference, so the
/// per-head probabilities are never all in memory at once.
pub fn dense_indexer_loss<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    lse: Tensor<B, 3>,
    scale: f32,
    index_scores: Tensor<B, 3>,
    causal_offset: usize,
) -> Tensor<B, 1> {
    let [b, h, t, _] = q.dims();
    let s = k.dims()[2];
    let device = q.device();
    let (q, k, lse) = (q.detach().cast(DType::F32), k.detach().cast(DType::F32), lse.detach());
    let mut total = Tensor::<B, 1>::zeros([1], &device);
    for (t0, len, keys) in row_blocks(b, h, t, s, causal_offset) {
        let scores = block_scores(q.clone().narrow(2, t0, len), k.clone().narrow(2, 0, keys), causal_offset + t0, scale);
        let p = (scores - lse.clone().narrow(2, t0, len).unsqueeze_dim::<4>(3)).exp();
        let p = p.sum_dim(1).reshape([b, len, keys]).div_scalar(h as f32);
        let future = causal_mask::<B>(len, keys, causal_offset + t0, &device).unsqueeze::<3>().expand([b, len, keys]);
        // Keys past the block's last row are future keys of every row: leaving them out
        // changes neither side of the KL.
        let i = index_scores.clone().narrow(1, t0, len).narrow(2, 0, keys);
        total = total + kl(p, i, future);
    }
    total.div_scalar(b as f32)
}

/// Sparse-stage loss `Σ_t KL(p[t,S_t] ‖ softmax(I[t,S_t]))` over each query's selected set
/// `S_t` (`indices`, `valid` from top-k): `p` from the sparse attention of `q` over `kv`
/// whose log-sum-exp `lse [B,T,H]` [`sparse_mla`](crate::ops::sparse_mla) returned
/// ([`sparse_mla_probs`](crate::ops::sparse_mla_probs)), `I` the indexer's scores at the
/// selected keys `selected_scores [B,T,K]`
/// ([`indexer_selected_scores`](crate::ops::indexer_selected_scores)). Memory is `O(T·K)`.
pub fn sparse_indexer_loss<B: DsaBackend>(
    q: Tensor<B, 4>,
    kv: Tensor<B, 3>,
    scale: f32,
    lse: Tensor<B, 3>,
    selected_scores: Tensor<B, 3>,
    indices: Tensor<B, 3, Int>,
    valid: Tensor<B, 3, Bool>,
) -> Tensor<B, 1> {
    let b = q.dims()[0];
    let p = crate::ops::sparse_mla_probs(q.detach(), kv.detach(), indices, valid.clone(), lse.detach(), scale);
    let p = p.clone() / p.sum_dim(2).clamp_min(f32::MIN_POSITIVE);
    kl(p, selected_scores, valid.bool_not()).div_scalar(b as f32)
}

/// Reference indexer scores at the selected keys; see
/// [`DsaBackend::indexer_selected_scores`].
pub fn reference_selected_scores<B: Backend>(
    q: Tensor<B, 4>,
    w: Tensor<B, 3>,
    k: Tensor<B, 3>,
    quant: IndexerQuant,
    indices: Tensor<B, 3, Int>,
    valid: Tensor<B, 3, Bool>,
) -> Tensor<B, 3> {
    let [b, t, _, _] = q.dims();
    let kk = indices.dims()[2];
    let (_, _, logits) = selected_logits(q, k, quant, indices);
    let scores = (logits.clamp_min(0.0) * w.unsqueeze_dim(3)).sum_dim(2).reshape([b, t, kk]);
    scores.mask_fill(valid.bool_not(), f32::NEG_INFINITY)
}

/// Reference backward of the selected scores; see
/// [`DsaBackend::indexer_selected_scores_backward`].
pub fn reference_selected_scores_backward<B: Backend>(
    q: Tensor<B, 4>,
    w: Tensor<B, 3>,
    k: Tensor<B, 3>,
    quant: IndexerQuant,
    indices: Tensor<B, 3, Int>,
    valid: Tensor<B, 3, Bool>,
    grad: Tensor<B, 3>,
) -> (Tensor<B, 4>, Tensor<B, 3>, Tensor<B, 3>) {
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
fn selected_logits<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 3>,
    quant: IndexerQuant,
    indices: Tensor<B, 3, Int>,
) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
    let q = fake_quant(q, quant);
    let rows = gather_rows(fake_quant(k, quant), indices);
    let logits = q.clone().matmul(rows.clone().swap_dims(2, 3));
    (q, rows, logits)
}

/// Reference head-averaged sparse attention probabilities; see
/// [`DsaBackend::sparse_mla_probs`].
pub fn reference_sparse_mla_probs<B: Backend>(
    q: Tensor<B, 4>,
    kv: Tensor<B, 3>,
    indices: Tensor<B, 3, Int>,
    valid: Tensor<B, 3, Bool>,
    lse: Tensor<B, 3>,
    scale: f32,
) -> Tensor<B, 3> {
    let [b, t, h, _] = q.dims();
    let kk = indices.dims()[2];
    let scores = sparse_scores(q, gather_rows(kv, indices), valid, scale); // -inf where invalid
    let lse = lse.clone().mask_fill(lse.is_inf(), 0.0).reshape([b, t, h, 1]);
    (scores - lse).exp().sum_dim(2).reshape([b, t, kk]).div_scalar(h as f32)
}

/// `Σ p · (ln p − log_softmax(i))` over entries not `masked`, for a detached target `p`.
fn kl<B: Backend>(p: Tensor<B, 3>, i: Tensor<B, 3>, masked: Tensor<B, 3, Bool>) -> Tensor<B, 1> {
    let p = p.detach();
    let log_q = log_softmax(i.mask_fill(masked.clone(), MASKED), 2).mask_fill(masked, 0.0);
    let log_p = p.clone().clamp_min(f32::MIN_POSITIVE).log();
    (p * (log_p - log_q)).sum()
}
