//! Lightning-indexer scores `I[b,t,s] = Σ_j w[b,t,j] · ReLU(q̂[b,t,j] · k̂[b,s])`.
//!
//! # Contract
//! Inputs `q [B,T,H,D]`, `w [B,T,H]`, `k [B,S,D]`, contiguous; `q̂`, `k̂` are `q`, `k`
//! fake-quantised by [`crate::quant`] when the indexer quantises. Output `[B,T,S]` in the
//! float type `F` of `w` (and of `q`, `k` where they are not codes); with `causal`, entries `s > t + offset` are `neg_inf` (passed at run time:
//! WGSL has no infinity literal). Per-head logits are never written to memory, and every
//! output entry is written (also those in the causal future).
//!
//! The tensor-core variants take the quantised operands factored: with one 128-wide
//! quantisation block per row (`D ≤ 128`; V3.2's is 128), `q̂[t,j] = s_q[t,j]·c_q[t,j]` and
//! `k̂[s] = s_k[s]·c_k[s]` with e4m3 codes `c` and f32 scales `s > 0`
//! ([`crate::quant::quantize_block_kernel()`]), so
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
//! | [`simt`] | [`simt::indexer_scores_naive()`] | any float dtype and shape; quantised or not (the operands fake-quantised first); every runtime. The portable path and the reference of the others. |
//! | [`simt`] | [`simt::indexer_scores_tiled()`] | as `naive`, where one query's heads fit in a tile (`H ≤ 16·rm`). |
//! | [`cmma`] | [`cmma::indexer_scores_cmma()`] | quantised, `D ≤ 128`, `H ≤ 128`; f16 16×16×16 cmma in 32-wide planes, its shared memory ([`cmma::shared_bytes`]). |
//! | [`mma`] | [`mma::indexer_scores_mma()`] | quantised, `D ≤ 128`, `D % 4 == 0`, `H ≤ 64`; f16 `mma.sync m16n8k16` in 32-wide planes (CUDA sm_80+). |
//! | [`wgmma`] | [`wgmma::launch_indexer_scores_wgmma`] | quantised, `H = 64`, `D = 128`, `w` and the output bf16 or f32; codes as f16 or e4m3 bytes; CUDA sm_90 ([`wgmma::has_wgmma`]). CUDA C++. |
//!
//! The Burn glue (`dsa_burn::cubecl`) picks the variant.

use cubecl::prelude::*;

pub mod cmma;
pub mod mma;
pub mod simt;
pub mod wgmma;

/// The sizes every scores kernel takes: `t_len` queries and `s_len` keys per batch, `heads`
/// heads, and the causal mask: with `causal`, query `t` sees keys `s ≤ t + offset` and the
/// others get `neg_inf`.
#[derive(CubeType, CubeLaunch, Clone, Copy)]
pub struct ScoreSizes {
    /// Queries per batch, `T`.
    pub t_len: usize,
    /// Keys per batch, `S`.
    pub s_len: usize,
    /// Heads, `H`.
    pub heads: usize,
    /// Query `t` sees keys `s ≤ t + offset` (with `causal`).
    pub offset: usize,
    /// The score of masked entries: `-inf` (a run-time value: WGSL has no infinity literal).
    pub neg_inf: f32,
    /// Whether the causal mask applies.
    #[cube(comptime)]
    pub causal: bool,
}

/// The launch argument of [`ScoreSizes`] for `t_len` queries × `s_len` keys of `heads` heads,
/// causal where `causal_offset` is `Some(offset)`.
pub fn score_sizes<R: Runtime>(t_len: usize, s_len: usize, heads: usize, causal_offset: Option<usize>) -> ScoreSizesLaunch<R> {
    ScoreSizesLaunch::new(t_len, s_len, heads, causal_offset.unwrap_or(0), f32::NEG_INFINITY, causal_offset.is_some())
}

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

/// The cube's block of `tq` queries (linear cube index over x and y, `⌈T/tq⌉` blocks per
/// batch): `(b, t0, live)`, its batch, its first query, and whether the cube has a block
/// (`batches` of them; the grid may round up).
#[cube]
pub(crate) fn query_block(sizes: &ScoreSizes, batches: usize, #[comptime] tq: usize) -> (usize, usize, bool) {
    let n_t = sizes.t_len.div_ceil(tq);
    let cube = crate::cube_index();
    (cube / n_t, (cube % n_t) * tq, cube < batches * n_t)
}

/// The keys of the cube's chunk (`CUBE_POS_Z`, `chunk` keys) for its `tq` queries from `t0`:
/// `(s_begin, s_end, limit)`, the chunk `s_begin..s_end` and the end of the keys that any
/// of the queries sees (`limit ≤ s_end`; later keys are in every query's causal future).
#[cube]
pub(crate) fn chunk_keys(sizes: &ScoreSizes, t0: usize, #[comptime] tq: usize, #[comptime] chunk: usize) -> (usize, usize, usize) {
    let s_begin = CUBE_POS_Z as usize * chunk;
    let mut s_end = s_begin + chunk;
    if s_end > sizes.s_len {
        s_end = sizes.s_len;
    }
    let mut t_last = t0 + tq;
    if t_last > sizes.t_len {
        t_last = sizes.t_len;
    }
    t_last -= 1;
    let mut limit = s_end;
    if sizes.causal && t_last + sizes.offset + 1 < limit {
        limit = t_last + sizes.offset + 1;
    }
    (s_begin, s_end, limit)
}

/// `neg_inf` at keys `s_done..s_end` of the `tq` queries from `t0` of batch `b`: the rest of
/// a cube's chunk, in the causal future of every query of the cube; `units` units.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn fill_future<F: Float>(
    out: &mut Tensor<F>,
    sizes: &ScoreSizes,
    b: usize,
    t0: usize,
    s_done: usize,
    s_end: usize,
    #[comptime] tq: usize,
    #[comptime] units: usize,
) {
    if s_done < s_end {
        let width = s_end - s_done;
        let mut o = UNIT_POS as usize;
        while o < tq * width {
            let t = t0 + o / width;
            if t < sizes.t_len {
                out[(b * sizes.t_len + t) * sizes.s_len + s_done + o % width] = F::cast_from(sizes.neg_inf);
            }
            o += units;
        }
    }
}
