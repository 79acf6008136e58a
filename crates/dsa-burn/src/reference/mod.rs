//! The reference implementations of the [`DsaBackend`](crate::DsaBackend) operations, one
//! file per operation, in Burn tensor operations only: they run on every Burn backend, are
//! the trait's default methods, and are the oracle the kernels are tested against.
//!
//! | operation | reference |
//! | --- | --- |
//! | [`indexer_scores`](crate::ops::indexer_scores) | [`indexer::reference_scores`] |
//! | [`topk_select`](crate::ops::topk_select) | [`topk::reference_topk`] |
//! | [`sparse_mla`](crate::ops::sparse_mla) and its backward | [`sparse_mla`] |
//! | [`indexer_selected_scores`](crate::ops::indexer_selected_scores), [`sparse_mla_probs`](crate::ops::sparse_mla_probs) | [`indexer_loss`] |
//! | [`dense_attention`](crate::ops::dense_attention) and its backward | [`dense_attention`] |
//! | [`rms_norm`](crate::ops::rms_norm) | [`norm`] |
//! | [`rope`](crate::ops::rope) | [`rope::reference_rope`] |
//! | [`swiglu`](crate::ops::swiglu) | [`swiglu`] |
//! | [`grouped_matmul`](crate::ops::grouped_matmul) | [`grouped_matmul`] |
//! | [`adamw_step`](crate::ops::adamw_step) | [`adamw::reference_adamw_step`] |
//! | the indexer's FP8 quantisation | [`quant::fake_quant`] |
//!
//! The helpers several of them share (the causal mask, the gather and scatter of selected
//! rows, the blocks of a causal pass) live here.

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor};

pub mod adamw;
pub mod dense_attention;
pub mod grouped_matmul;
pub mod indexer;
pub mod indexer_loss;
pub mod norm;
pub mod quant;
pub mod rope;
pub mod sparse_mla;
pub mod swiglu;
pub mod topk;

/// `[T, S]` mask, true where key `s` lies in the future of query `t` (`s > t + offset`).
pub fn causal_mask<B: Backend>(t: usize, s: usize, offset: usize, device: &B::Device) -> Tensor<B, 2, Bool> {
    let rows = Tensor::<B, 1, Int>::arange(0..t as i64, device).reshape([t, 1]).add_scalar(offset as i64);
    let cols = Tensor::<B, 1, Int>::arange(0..s as i64, device).reshape([1, s]);
    cols.expand([t, s]).greater(rows.expand([t, s]))
}

/// The selected latent rows of every query: `kv [B,S,D]`, `indices [B,T,K]` → `[B,T,K,D]`.
pub fn gather_rows<B: Backend>(kv: Tensor<B, 3>, indices: Tensor<B, 3, Int>) -> Tensor<B, 4> {
    let [b, s, d] = kv.dims();
    let [_, t, k] = indices.dims();
    let flat = flat_rows(indices, s, &kv.device());
    kv.reshape([b * s, d]).select(0, flat).reshape([b, t, k, d])
}

/// The inverse of [`gather_rows`] for gradients: every row of `rows [B,T,K,D]` added into
/// row `indices[b,t,j]` of a zero `[B, s, D]`.
pub fn scatter_rows<B: Backend>(rows: Tensor<B, 4>, indices: Tensor<B, 3, Int>, s: usize) -> Tensor<B, 3> {
    let [b, t, k, d] = rows.dims();
    let device = rows.device();
    let flat = flat_rows(indices, s, &device);
    Tensor::<B, 2>::zeros([b * s, d], &device)
        .select_assign(0, flat, rows.reshape([b * t * k, d]), burn::tensor::IndexingUpdateOp::Add)
        .reshape([b, s, d])
}

/// `indices [B,T,K]` into the rows of `[B·s, D]`: `b·s + indices[b,t,j]`, flattened.
fn flat_rows<B: Backend>(indices: Tensor<B, 3, Int>, s: usize, device: &B::Device) -> Tensor<B, 1, Int> {
    let [b, t, k] = indices.dims();
    let base = Tensor::<B, 1, Int>::arange(0..b as i64, device).mul_scalar(s as i64).reshape([b, 1, 1]);
    (indices + base).reshape([b * t * k])
}

/// Scaled scores `[B,T,H,K]` of queries against their gathered rows, `-inf` where invalid.
pub fn sparse_scores<B: Backend>(q: Tensor<B, 4>, rows: Tensor<B, 4>, valid: Tensor<B, 3, Bool>, scale: f32) -> Tensor<B, 4> {
    let [b, t, h, _] = q.dims();
    let k = rows.dims()[2];
    let scores = q.matmul(rows.swap_dims(2, 3)).mul_scalar(scale);
    let invalid = valid.bool_not().unsqueeze_dim::<4>(2).expand([b, t, h, k]);
    scores.mask_fill(invalid, f32::NEG_INFINITY)
}

/// Scores `[B, H, rows, keys]` held at a time by the blockwise computations: at most about
/// this many f32 elements (256 MiB).
const SCORES_BUDGET: usize = 1 << 26;

/// The query blocks of a causal pass: `(first row, rows, visible keys)` for `t` queries at
/// positions `causal_offset..` over `s` keys, with `heads` score rows per query.
pub(crate) fn row_blocks(b: usize, heads: usize, t: usize, s: usize, causal_offset: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    blocks_within(SCORES_BUDGET, b, heads, t, s, causal_offset)
}

/// [`row_blocks`] with at most about `budget` scores per block.
fn blocks_within(budget: usize, b: usize, heads: usize, t: usize, s: usize, causal_offset: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    let rows = (budget / (b * heads * s).max(1)).clamp(1, t.max(1));
    (0..t).step_by(rows).map(move |t0| {
        let len = rows.min(t - t0);
        (t0, len, (causal_offset + t0 + len).min(s))
    })
}

/// Scaled f32 scores `[B, H, len, keys]` of the query block `q [B, H, len, D]` (f32, rows at
/// positions `position..`) against `k [B, H, keys, D]` (f32), `-inf` for future keys.
pub(crate) fn block_scores<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, position: usize, scale: f32) -> Tensor<B, 4> {
    let [b, h, len, _] = q.dims();
    let keys = k.dims()[2];
    let future = causal_mask::<B>(len, keys, position, &q.device()).reshape([1, 1, len, keys]).expand([b, h, len, keys]);
    q.matmul(k.swap_dims(2, 3)).mul_scalar(scale).mask_fill(future, f32::NEG_INFINITY)
}
