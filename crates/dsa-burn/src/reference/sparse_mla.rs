//! Sparse MLA: exact attention of every query over its selected latent KV rows only.
//!
//! MQA mode: one latent `kv [B, S, Dqk]` (`[c | k_rope]` in DeepSeek-V3.2) shared by all
//! heads, values = its first `d_v` dims. The reference gathers the `K` selected rows of each
//! query (`[B, T, K, Dqk]`, O(T·K) memory, never O(T·S)) and runs a masked softmax in f32;
//! the backward recomputes the probabilities from the log-sum-exp.

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor};

use super::{gather_rows, scatter_rows, sparse_scores};

/// Reference sparse MLA; see [`DsaBackend::sparse_mla`](crate::DsaBackend::sparse_mla).
pub fn reference_sparse_mla<B: Backend>(q: Tensor<B, 4>, kv: Tensor<B, 3>, indices: Tensor<B, 3, Int>, valid: Tensor<B, 3, Bool>, d_v: usize, scale: f32) -> (Tensor<B, 4>, Tensor<B, 3>) {
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

/// Reference backward of sparse MLA with Burn tensor operations; see
/// [`DsaBackend::sparse_mla_backward`](crate::DsaBackend::sparse_mla_backward).
#[allow(clippy::too_many_arguments)]
pub fn reference_sparse_mla_backward<B: Backend>(
    q: Tensor<B, 4>,
    kv: Tensor<B, 3>,
    indices: Tensor<B, 3, Int>,
    valid: Tensor<B, 3, Bool>,
    out: Tensor<B, 4>,
    lse: Tensor<B, 3>,
    d_out: Option<Tensor<B, 4>>,
    d_lse: Option<Tensor<B, 3>>,
    d_v: usize,
    scale: f32,
) -> (Tensor<B, 4>, Tensor<B, 3>) {
    let [b, t, h, d] = q.dims();
    let [_, s, _] = kv.dims();
    let k = indices.dims()[2];
    let device = q.device();
    if d_out.is_none() && d_lse.is_none() {
        return (q.zeros_like(), kv.zeros_like());
    }
    let rows = gather_rows(kv, indices.clone()); // [B,T,K,D]
    let scores = sparse_scores(q.clone(), rows.clone(), valid, scale); // -inf where invalid
    let lse = lse.clone().mask_fill(lse.is_inf(), 0.0).reshape([b, t, h, 1]);
    let p = (scores - lse).exp(); // [B,T,H,K], 0 where invalid
    let mut g: Option<Tensor<B, 4>> = None;
    if let Some(go) = d_out.clone() {
        let dp = go.clone().matmul(rows.clone().narrow(3, 0, d_v).swap_dims(2, 3));
        let delta = (go * out).sum_dim(3);
        g = Some(dp - delta);
    }
    if let Some(gl) = d_lse {
        let gl = gl.reshape([b, t, h, 1]);
        g = Some(match g {
            Some(g) => g + gl,
            None => gl.expand([b, t, h, k]),
        });
    }
    let ds = p.clone() * g.expect("a gradient"); // [B,T,H,K]
    let dq = ds.clone().matmul(rows).mul_scalar(scale);
    let mut drows = ds.swap_dims(2, 3).matmul(q).mul_scalar(scale); // [B,T,K,D]
    if let Some(go) = d_out {
        let dvals = p.swap_dims(2, 3).matmul(go); // [B,T,K,d_v]
        let dvals = if d_v < d { Tensor::cat(vec![dvals, Tensor::zeros([b, t, k, d - d_v], &device)], 3) } else { dvals };
        drows = drows + dvals;
    }
    (dq, scatter_rows(drows, indices, s))
}
