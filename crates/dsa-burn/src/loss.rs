//! The lightning indexer's training losses (DeepSeek-V3.2 paper, §2.1).
//!
//! Both compare the indexer's distribution `softmax(I[t, ·])` with the main attention's
//! distribution summed over heads and L1-normalised, `p[t, ·]`, as `KL(p ‖ softmax(I))`,
//! summed over query tokens and averaged over the batch. The target `p` is always
//! detached: the indexer learns from these losses, the model does not.

use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor};

use crate::indexer::causal_mask;
use crate::sparse_mla::{gather_rows, sparse_scores};

/// Query rows whose dense per-head probabilities `[B, rows, H, S]` are held at a time:
/// at most about this many elements.
const PROBS_BUDGET: usize = 1 << 24;
/// Finite stand-in for `-inf` in the indexer's masked logits (keeps empty rows NaN-free).
const MASKED: f32 = -1e30;

/// Dense warm-up loss `Σ_t KL(p[t,:] ‖ softmax(I[t,:]))` over causal keys, with `p` from
/// MQA attention of `q [B,T,H,D]` over `kv [B,S,D]` (`scale`; query `t` sits at position
/// `t + causal_offset`). `index_scores [B,T,S]`. Rows are processed in blocks, so the
/// per-head probabilities are never all in memory at once.
pub fn dense_indexer_loss<B: Backend>(
    q: Tensor<B, 4>,
    kv: Tensor<B, 3>,
    scale: f32,
    index_scores: Tensor<B, 3>,
    causal_offset: usize,
) -> Tensor<B, 1> {
    let [b, t, h, d] = q.dims();
    let s = kv.dims()[1];
    let device = q.device();
    let q = q.detach();
    let kv_t = kv.detach().swap_dims(1, 2); // [B,D,S]
    let future = causal_mask::<B>(t, s, causal_offset, &device);
    let rows = (PROBS_BUDGET / (b * h * s).max(1)).clamp(1, t.max(1));
    let mut total = Tensor::<B, 1>::zeros([1], &device);
    let mut start = 0;
    while start < t {
        let len = rows.min(t - start);
        let mask = future.clone().narrow(0, start, len).unsqueeze::<3>().expand([b, len, s]);
        let logits = q.clone().narrow(1, start, len).reshape([b, len * h, d]).matmul(kv_t.clone());
        let logits = logits.reshape([b, len, h, s]).mul_scalar(scale);
        let logits = logits.mask_fill(mask.clone().unsqueeze_dim::<4>(2).expand([b, len, h, s]), f32::NEG_INFINITY);
        let p = softmax(logits, 3).sum_dim(2).reshape([b, len, s]).div_scalar(h as f32);
        let i = index_scores.clone().narrow(1, start, len);
        total = total + kl(p, i, mask);
        start += len;
    }
    total.div_scalar(b as f32)
}

/// Sparse-stage loss `Σ_t KL(p[t,S_t] ‖ softmax(I[t,S_t]))` over each query's selected set
/// `S_t` (`indices`, `valid` from top-k), with `p` from the sparse attention of `q` over
/// `kv` whose log-sum-exp `lse [B,T,H]` [`sparse_mla`](crate::ops::sparse_mla) returned.
pub fn sparse_indexer_loss<B: Backend>(
    q: Tensor<B, 4>,
    kv: Tensor<B, 3>,
    scale: f32,
    lse: Tensor<B, 3>,
    index_scores: Tensor<B, 3>,
    indices: Tensor<B, 3, Int>,
    valid: Tensor<B, 3, Bool>,
) -> Tensor<B, 1> {
    let [b, t, _, _] = q.dims();
    let k = indices.dims()[2];
    let rows = gather_rows(kv.detach(), indices.clone());
    let scores = sparse_scores(q.detach(), rows, valid.clone(), scale);
    let lse = lse.detach();
    let lse = lse.clone().mask_fill(lse.equal_elem(f32::NEG_INFINITY), 0.0);
    let p = (scores - lse.unsqueeze_dim(3)).exp().sum_dim(2).reshape([b, t, k]);
    let p = p.clone() / p.sum_dim(2).clamp_min(f32::MIN_POSITIVE);
    let i = index_scores.gather(2, indices);
    kl(p, i, valid.bool_not()).div_scalar(b as f32)
}

/// `Σ p · (ln p − log_softmax(i))` over entries not `masked`, for a detached target `p`.
fn kl<B: Backend>(p: Tensor<B, 3>, i: Tensor<B, 3>, masked: Tensor<B, 3, Bool>) -> Tensor<B, 1> {
    let p = p.detach();
    let log_q = log_softmax(i.mask_fill(masked.clone(), MASKED), 2).mask_fill(masked, 0.0);
    let log_p = p.clone().clamp_min(f32::MIN_POSITIVE).log();
    (p * (log_p - log_q)).sum()
}
