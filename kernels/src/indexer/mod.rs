//! Lightning-indexer scores `I[b,t,s] = Σ_j w[b,t,j] · ReLU(q̂[b,t,j] · k̂[b,s])`.
//!
//! # Contract
//! Inputs `q [B,T,H,D]`, `w [B,T,H]`, `k [B,S,D]`, contiguous; `q̂`, `k̂` are `q`, `k`
//! fake-quantised by [`crate::quant`] when the indexer quantises. Output `[B,T,S]` in the
//! dtype of `w`; with `causal`, entries `s > t + offset` are `neg_inf` (passed at run time:
//! WGSL has no infinity literal). Per-head logits are never written to memory, and every
//! output entry is written (also those in the causal future).
//!
//! The tensor-core variants take the quantised operands factored: with one 128-wide
//! quantisation block per row (`D ≤ 128`; V3.2's is 128), `q̂[t,j] = s_q[t,j]·c_q[t,j]` and
//! `k̂[s] = s_k[s]·c_k[s]` with e4m3 codes `c` and f32 scales `s > 0`
//! ([`crate::quant::quantize_block_kernel`]), so
//!
//! `I[t,s] = s_k[s] · Σ_j w[t,j]·s_q[t,j] · ReLU(c_q[t,j] · c_k[s])`
//!
//! (a positive scale passes through the ReLU). Each product of two e4m3 values is exact in
//! f32 (and in f16 operands), the sums accumulate in f32, as the reference's f32 dot of the
//! dequantised values does (up to summation order).
//!
//! # Variants, by instruction family
//! | module | kernel | supports |
//! | --- | --- | --- |
//! | [`simt`] | [`simt::indexer_scores_naive`] | any float dtype and shape; quantised or not (the operands fake-quantised first); every runtime. The portable path and the reference of the others. |
//! | [`simt`] | [`simt::indexer_scores_tiled`] | as `naive`, where one query's heads fit in a tile (`H ≤ 16·rm`). |
//! | [`cmma`] | [`cmma::indexer_scores_cmma`] | quantised, `D ≤ 128`, `H ≤ 128`; f16 16×16×16 cmma in 32-wide planes, its shared memory ([`cmma::shared_bytes`]). |
//! | [`mma`] | [`mma::indexer_scores_mma`] | quantised, `D ≤ 128`, `D % 4 == 0`, `H ≤ 64`; f16 `mma.sync m16n8k16` in 32-wide planes (CUDA sm_80+). |
//! | [`wgmma`] | [`wgmma::launch_indexer_scores_wgmma`] | quantised, `H = 64`, `D = 128`, `w` and the output bf16 or f32; codes as f16 or e4m3 bytes; CUDA sm_90 ([`wgmma::has_wgmma`]). CUDA C++. |
//!
//! The Burn glue (`dsa_burn::cubecl`) picks the variant.

use cubecl::prelude::*;

pub mod cmma;
pub mod mma;
pub mod simt;
pub mod wgmma;

/// `Σ_j w[bt,j] · ReLU(q[bt,j] · k[k0..k0+d])`: the score of query `bt` (flattened `b·T + t`)
/// against the key starting at `k0`, reading global memory.
#[cube]
pub fn weighted_relu_score<F: Float>(
    q: &Tensor<F>,
    w: &Tensor<F>,
    k: &Tensor<F>,
    bt: usize,
    k0: usize,
    heads: usize,
    d: usize,
) -> f32 {
    let mut acc = 0.0f32;
    for j in 0..heads {
        let q0 = (bt * heads + j) * d;
        let mut dot = 0.0f32;
        for e in 0..d {
            dot += f32::cast_from(q[q0 + e]) * f32::cast_from(k[k0 + e]);
        }
        acc += f32::cast_from(w[bt * heads + j]) * f32::max(dot, 0.0f32);
    }
    acc
}

/// The keys of the cube's chunk (`CUBE_POS_Z`, `chunk` keys) for its `tq` queries from `t0`:
/// `(s_begin, s_end, limit)`, the chunk `s_begin..s_end` and the end of the keys that any
/// of the queries sees (`limit ≤ s_end`; later keys are in every query's causal future).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn chunk_keys(
    t0: usize,
    t_len: usize,
    s_len: usize,
    offset: usize,
    #[comptime] tq: usize,
    #[comptime] chunk: usize,
    #[comptime] causal: bool,
) -> (usize, usize, usize) {
    let s_begin = CUBE_POS_Z as usize * chunk;
    let mut s_end = s_begin + chunk;
    if s_end > s_len {
        s_end = s_len;
    }
    let mut t_last = t0 + tq;
    if t_last > t_len {
        t_last = t_len;
    }
    t_last -= 1;
    let mut limit = s_end;
    if causal && t_last + offset + 1 < limit {
        limit = t_last + offset + 1;
    }
    (s_begin, s_end, limit)
}

/// `neg_inf` at keys `s_done..s_end` of the `tq` queries from `t0` of batch `b`: the rest of
/// a cube's chunk, in the causal future of every query of the cube; `units` units.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn fill_future<F: Float>(
    out: &mut Tensor<F>,
    b: usize,
    t0: usize,
    t_len: usize,
    s_len: usize,
    s_done: usize,
    s_end: usize,
    neg_inf: f32,
    #[comptime] tq: usize,
    #[comptime] units: usize,
) {
    if s_done < s_end {
        let width = s_end - s_done;
        let mut o = UNIT_POS as usize;
        while o < tq * width {
            let t = t0 + o / width;
            if t < t_len {
                out[(b * t_len + t) * s_len + s_done + o % width] = F::cast_from(neg_inf);
            }
            o += units;
        }
    }
}
