//! Lightning-indexer scores `I[b,t,s] = Σ_j w[b,t,j] · ReLU(q̂[b,t,j] · k̂[b,s])`.
//!
//! Inputs are contiguous `q [B,T,H,D]`, `w [B,T,H]`, `k [B,S,D]` (already fake-quantised
//! by [`crate::quant`] when the indexer quantises); output `[B,T,S]`. With `causal`,
//! entries `s > t + offset` are `neg_inf` (passed at run time: WGSL has no infinity
//! literal). Per-head logits are never written to memory.

use cubecl::prelude::*;

/// v1, the simplest kernel: one unit per output score, loops over heads and dims reading
/// global memory (cached). Reference for the tiled versions; fine for small shapes.
#[cube(launch)]
pub fn indexer_scores_naive<F: Float>(
    q: &Tensor<F>,
    w: &Tensor<F>,
    k: &Tensor<F>,
    out: &mut Tensor<F>,
    t_len: usize,
    s_len: usize,
    heads: usize,
    d: usize,
    offset: usize,
    neg_inf: f32,
    #[comptime] causal: bool,
    #[define(F)] _dtype: StorageType,
) {
    let pos = ABSOLUTE_POS;
    if pos >= out.len() {
        terminate!();
    }
    let s = pos % s_len;
    let bt = pos / s_len;
    let t = bt % t_len;
    let b = bt / t_len;
    if causal && s > t + offset {
        out[pos] = F::cast_from(neg_inf);
    } else {
        let k0 = (b * s_len + s) * d;
        let mut acc = 0.0f32;
        for j in 0..heads {
            let q0 = (bt * heads + j) * d;
            let mut dot = 0.0f32;
            for e in 0..d {
                dot += f32::cast_from(q[q0 + e]) * f32::cast_from(k[k0 + e]);
            }
            acc += f32::cast_from(w[bt * heads + j]) * f32::max(dot, 0.0f32);
        }
        out[pos] = F::cast_from(acc);
    }
}
