//! The lightning indexer's training losses (DeepSeek-V3.2 paper, §2.1).
//!
//! Both compare the indexer's distribution `softmax(I[t, ·])` with the main attention's
//! distribution summed over heads and L1-normalised, `p[t, ·]`, as `KL(p ‖ softmax(I))`,
//! summed over query tokens and averaged over the batch. The target `p` is always
//! detached: the indexer learns from these losses, the model does not.
//!
//! The sparse stage's loss is built from two backend operations over the `K` selected keys
//! only ([`DsaBackend::indexer_selected_scores`] with its backward, and
//! [`DsaBackend::sparse_mla_probs`]), whose reference implementations are in
//! [`crate::reference::indexer_loss`].

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, DType, Int, Tensor};

use crate::reference::{block_scores, causal_mask, row_blocks};
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

/// `Σ p · (ln p − log_softmax(i))` over entries not `masked`, for a detached target `p`.
fn kl<B: Backend>(p: Tensor<B, 3>, i: Tensor<B, 3>, masked: Tensor<B, 3, Bool>) -> Tensor<B, 1> {
    let p = p.detach();
    let log_q = log_softmax(i.mask_fill(masked.clone(), MASKED), 2).mask_fill(masked, 0.0);
    let log_p = p.clone().clamp_min(f32::MIN_POSITIVE).log();
    (p * (log_p - log_q)).sum()
}
