//! Top-k selection of the indexer scores: which past tokens each query attends to.
//!
//! The reference runs on the host: it reads the scores, selects each row's best keys with
//! a total order (higher score first, then lower index, so ties are deterministic), and
//! uploads the result. Selection has no gradient.

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};

/// Reference top-k; see [`DsaBackend::topk_select`](crate::DsaBackend::topk_select).
pub fn reference_topk<B: Backend>(
    scores: Tensor<B, 3>,
    k: usize,
    causal_offset: Option<usize>,
) -> (Tensor<B, 3, Int>, Tensor<B, 3, Bool>) {
    let [b, t, s] = scores.dims();
    let device = scores.device();
    let kk = k.min(s);
    let values = scores
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("scores are readable as f32");
    let mut indices = vec![0i64; b * t * kk];
    let mut valid = vec![false; b * t * kk];
    let mut order: Vec<usize> = Vec::with_capacity(s);
    for row in 0..b * t {
        let limit = match causal_offset {
            Some(o) => (row % t + o + 1).min(s),
            None => s,
        };
        let vals = &values[row * s..row * s + limit];
        order.clear();
        order.extend(0..limit);
        let better = |a: &usize, c: &usize| rank(vals[*c]).total_cmp(&rank(vals[*a])).then(a.cmp(c));
        let n = kk.min(limit);
        if n < limit {
            order.select_nth_unstable_by(n, better);
            order.truncate(n);
        }
        order.sort_unstable_by(better);
        for (j, &i) in order.iter().enumerate() {
            indices[row * kk + j] = i as i64;
            valid[row * kk + j] = true;
        }
    }
    (
        Tensor::from_data(TensorData::new(indices, [b, t, kk]), &device),
        Tensor::from_data(TensorData::new(valid, [b, t, kk]), &device),
    )
}

/// NaN ranks below every number; `-0.0` ties with `0.0`.
fn rank(v: f32) -> f32 {
    if v.is_nan() {
        f32::NEG_INFINITY
    } else {
        v + 0.0
    }
}
