//! Reference implementation of dense causal attention in MHA form
//! ([`DsaBackend::dense_attention`](crate::DsaBackend::dense_attention)): the dense baseline's
//! and the indexer warm-up's attention over whole sequences.
//!
//! Query rows run in blocks, each against the keys it can see, so that only one block's
//! scores `[B, H, rows, keys]` exist at a time (never the `T × S` matrix of every head);
//! the forward keeps the log-sum-exp, and the backward recomputes each block's
//! probabilities from it. Scores, softmax and gradients are computed in f32 whatever the
//! inputs' dtype (bf16 scores would round the softmax's logits); results are cast back.

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor, TensorPrimitive};

use super::{block_scores, blocks_within, SCORES_BUDGET};

/// Dense causal attention: every head of `q [B, H, T, Dqk]` (query `t` at position
/// `t + causal_offset`) attends to the keys `s ≤ t + causal_offset` of `k [B, H, S, Dqk]`
/// with values `v [B, H, S, Dv]`. Returns the output `[B, H, T, Dv]` (the inputs' dtype) and
/// the log-sum-exp of the scaled scores `[B, H, T]` (f32).
pub fn reference_dense_attention<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>, causal_offset: usize, scale: f32) -> (Tensor<B, 4>, Tensor<B, 3>) {
    forward(SCORES_BUDGET, q, k, v, causal_offset, scale)
}

/// [`reference_dense_attention`] in blocks of at most about `budget` scores.
fn forward<B: Backend>(budget: usize, q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>, causal_offset: usize, scale: f32) -> (Tensor<B, 4>, Tensor<B, 3>) {
    let [b, h, t, _] = q.dims();
    let s = k.dims()[2];
    let dtype = q.dtype();
    let (q, k, v) = (q.cast(DType::F32), k.cast(DType::F32), v.cast(DType::F32));
    let (mut outs, mut lses) = (Vec::new(), Vec::new());
    for (t0, len, keys) in blocks_within(budget, b, h, t, s, causal_offset) {
        let scores = block_scores(q.clone().narrow(2, t0, len), k.clone().narrow(2, 0, keys), causal_offset + t0, scale);
        let max = scores.clone().max_dim(3);
        let p = (scores - max.clone()).exp();
        let sum = p.clone().sum_dim(3);
        outs.push(p.matmul(v.clone().narrow(2, 0, keys)) / sum.clone());
        lses.push((max + sum.log()).reshape([b, h, len]));
    }
    (Tensor::cat(outs, 2).cast(dtype), Tensor::cat(lses, 2))
}

/// Gradients `(dq, dk, dv)` of [`reference_dense_attention`] (each in its input's dtype)
/// from the forward's `out` and `lse` and the output gradient `d_out [B, H, T, Dv]`: with
/// `p = exp(scale·q·kᵀ − lse)` and `δ = Σ d_out·out`, `ds = p·(d_out·vᵀ − δ)`,
/// `dq = scale·ds·k`, `dk = scale·dsᵀ·q`, `dv = pᵀ·d_out`.
#[allow(clippy::too_many_arguments)]
pub fn reference_dense_attention_backward<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    out: Tensor<B, 4>,
    lse: Tensor<B, 3>,
    d_out: Tensor<B, 4>,
    causal_offset: usize,
    scale: f32,
) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
    backward(SCORES_BUDGET, [q, k, v, out, d_out], lse, causal_offset, scale)
}

/// [`reference_dense_attention_backward`] in blocks of at most about `budget` scores, from
/// `[q, k, v, out, d_out]` and `lse`.
fn backward<B: Backend>(budget: usize, [q, k, v, out, d_out]: [Tensor<B, 4>; 5], lse: Tensor<B, 3>, causal_offset: usize, scale: f32) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
    let [b, h, t, _] = q.dims();
    let s = k.dims()[2];
    let dtypes = (q.dtype(), k.dtype(), v.dtype());
    let [q, k, v, out, d_out] = [q, k, v, out, d_out].map(|x| x.cast(DType::F32));
    let delta = (d_out.clone() * out).sum_dim(3); // [B,H,T,1]
    let (mut dk, mut dv) = (k.zeros_like(), v.zeros_like());
    let mut dqs = Vec::new();
    for (t0, len, keys) in blocks_within(budget, b, h, t, s, causal_offset) {
        let q_blk = q.clone().narrow(2, t0, len);
        let (k_blk, v_blk) = (k.clone().narrow(2, 0, keys), v.clone().narrow(2, 0, keys));
        let scores = block_scores(q_blk.clone(), k_blk.clone(), causal_offset + t0, scale);
        let p = (scores - lse.clone().narrow(2, t0, len).unsqueeze_dim::<4>(3)).exp();
        let do_blk = d_out.clone().narrow(2, t0, len);
        let dp = do_blk.clone().matmul(v_blk.swap_dims(2, 3));
        let ds = p.clone() * (dp - delta.clone().narrow(2, t0, len));
        dqs.push(ds.clone().matmul(k_blk).mul_scalar(scale));
        // The block's keys are a prefix of all keys: accumulate into that prefix.
        let ranges = [0..b, 0..h, 0..keys];
        let dk_blk = dk.clone().slice(ranges.clone()) + ds.swap_dims(2, 3).matmul(q_blk).mul_scalar(scale);
        dk = dk.slice_assign(ranges.clone(), dk_blk);
        let dv_blk = dv.clone().slice(ranges.clone()) + p.swap_dims(2, 3).matmul(do_blk);
        dv = dv.slice_assign(ranges, dv_blk);
    }
    (Tensor::cat(dqs, 2).cast(dtypes.0), dk.cast(dtypes.1), dv.cast(dtypes.2))
}

/// [`reference_dense_attention`] on primitives (the trait's default, and the fallback of
/// backends that override it).
pub(crate) fn reference_primitive<B: Backend>(q: FloatTensor<B>, k: FloatTensor<B>, v: FloatTensor<B>, causal_offset: usize, scale: f32) -> (FloatTensor<B>, FloatTensor<B>) {
    let float = |t| Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(t));
    let (out, lse) = reference_dense_attention(float(q), float(k), float(v), causal_offset, scale);
    (out.into_primitive().tensor(), lse.into_primitive().tensor())
}

/// [`reference_dense_attention_backward`] on primitives: `q, k, v, out, lse, d_out`.
pub(crate) fn reference_backward_primitive<B: Backend>([q, k, v, out, lse, d_out]: [FloatTensor<B>; 6], causal_offset: usize, scale: f32) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let float = |t| Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(t));
    let lse = Tensor::<B, 3>::from_primitive(TensorPrimitive::Float(lse));
    let (dq, dk, dv) = reference_dense_attention_backward(float(q), float(k), float(v), float(out), lse, float(d_out), causal_offset, scale);
    (dq.into_primitive().tensor(), dk.into_primitive().tensor(), dv.into_primitive().tensor())
}

#[cfg(all(test, feature = "ndarray"))]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::Distribution;

    /// Blocks of one query row give the same output, log-sum-exp and gradients as one
    /// block of every row (the f64 checks in `tests/ops.rs` run on single blocks).
    #[test]
    fn blocks_of_rows_match_one_block() {
        let dev = Default::default();
        let (b, h, t, d, dv, offset) = (2, 3, 7, 5, 4, 3);
        let s = t + offset;
        let r = |shape: [usize; 4]| Tensor::<NdArray, 4>::random(shape, Distribution::Normal(0.0, 1.0), &dev);
        let (q, k, v, d_out) = (r([b, h, t, d]), r([b, h, s, d]), r([b, h, s, dv]), r([b, h, t, dv]));
        let run = |budget| {
            let (out, lse) = forward(budget, q.clone(), k.clone(), v.clone(), offset, 0.4);
            let grads = backward(budget, [q.clone(), k.clone(), v.clone(), out.clone(), d_out.clone()], lse.clone(), offset, 0.4);
            (out, lse, grads)
        };
        assert_eq!(blocks_within(1, b, h, t, s, offset).count(), t);
        let (one, many) = (run(usize::MAX), run(1));
        let tol = burn::tensor::Tolerance::<f32>::absolute(1e-5);
        one.0.into_data().assert_approx_eq::<f32>(&many.0.into_data(), tol);
        one.1.into_data().assert_approx_eq::<f32>(&many.1.into_data(), tol);
        for (a, b) in [(one.2 .0, many.2 .0), (one.2 .1, many.2 .1), (one.2 .2, many.2 .2)] {
            a.into_data().assert_approx_eq::<f32>(&b.into_data(), tol);
        }
    }
}
