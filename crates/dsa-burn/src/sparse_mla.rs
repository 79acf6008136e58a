//! Sparse MLA: exact attention of every query over its selected latent KV rows only.
//!
//! MQA mode: one latent `kv [B, S, Dqk]` (`[c | k_rope]` in DeepSeek-V3.2) shared by all
//! heads, values = its first `d_v` dims. The reference gathers the `K` selected rows of each
//! query (`[B, T, K, Dqk]`, O(T·K) memory, never O(T·S)) and runs a masked softmax in f32.

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor};

/// Reference sparse MLA; see [`DsaBackend::sparse_mla`](crate::DsaBackend::sparse_mla).
pub fn reference_sparse_mla<B: Backend>(
    q: Tensor<B, 4>,
    kv: Tensor<B, 3>,
    indices: Tensor<B, 3, Int>,
    valid: Tensor<B, 3, Bool>,
    d_v: usize,
    scale: f32,
) -> (Tensor<B, 4>, Tensor<B, 3>) {
    let [b, t, h, _] = q.dims();
    let rows = gather_rows(kv, indices);
    let scores = sparse_scores(q, rows.clone(), valid, scale);
    let max = scores.clone().max_dim(3).detach();
    let max = max.clone().mask_fill(max.equal_elem(f32::NEG_INFINITY), 0.0);
    let e = (scores - max.clone()).exp(); // masked entries: exp(-inf) = 0
    let sum = e.clone().sum_dim(3); // [B,T,H,1]
    let v = rows.narrow(3, 0, d_v); // [B,T,K,d_v]
    // A row with a valid slot has sum ≥ 1 (its max gives e = 1); an empty row has sum = 0,
    // output 0 and lse -inf. The clamps keep the gradients of empty rows finite (0, not NaN).
    let empty = sum.clone().equal_elem(0.0);
    let out = e.matmul(v) / sum.clone().clamp_min(1.0);
    let lse = (max + sum.clamp_min(f32::MIN_POSITIVE).log()).mask_fill(empty, f32::NEG_INFINITY);
    (out, lse.reshape([b, t, h]))
}

/// The selected latent rows of every query: `kv [B,S,D]`, `indices [B,T,K]` → `[B,T,K,D]`.
pub fn gather_rows<B: Backend>(kv: Tensor<B, 3>, indices: Tensor<B, 3, Int>) -> Tensor<B, 4> {
    let [b, s, d] = kv.dims();
    let [_, t, k] = indices.dims();
    let base = Tensor::<B, 1, Int>::arange(0..b as i64, &kv.device())
        .mul_scalar(s as i64)
        .reshape([b, 1, 1]);
    let flat = (indices + base).reshape([b * t * k]);
    kv.reshape([b * s, d]).select(0, flat).reshape([b, t, k, d])
}

/// The inverse of [`gather_rows`] for gradients: every row of `rows [B,T,K,D]` added into
/// row `indices[b,t,j]` of a zero `[B, s, D]`.
pub fn scatter_rows<B: Backend>(rows: Tensor<B, 4>, indices: Tensor<B, 3, Int>, s: usize) -> Tensor<B, 3> {
    let [b, t, k, d] = rows.dims();
    let device = rows.device();
    let base = Tensor::<B, 1, Int>::arange(0..b as i64, &device).mul_scalar(s as i64).reshape([b, 1, 1]);
    let flat = (indices + base).reshape([b * t * k]);
    Tensor::<B, 2>::zeros([b * s, d], &device)
        .select_assign(0, flat, rows.reshape([b * t * k, d]), burn::tensor::IndexingUpdateOp::Add)
        .reshape([b, s, d])
}

/// Scaled scores `[B,T,H,K]` of queries against their gathered rows, `-inf` where invalid.
pub fn sparse_scores<B: Backend>(q: Tensor<B, 4>, rows: Tensor<B, 4>, valid: Tensor<B, 3, Bool>, scale: f32) -> Tensor<B, 4> {
    let [b, t, h, _] = q.dims();
    let k = rows.dims()[2];
    let scores = q.matmul(rows.swap_dims(2, 3)).mul_scalar(scale);
    let invalid = valid.bool_not().unsqueeze_dim::<4>(2).expand([b, t, h, k]);
    scores.mask_fill(invalid, f32::NEG_INFINITY)
}
