//! Sparse MLA in MQA mode: every head of query `(b, t)` attends to the `K` selected rows of
//! the shared latent `kv [B,S,D]`; the values are the first `dv` dims of each row.
//!
//! Contract of every variant. Inputs: `q [B,T,H,D]`, `kv [B,S,D]`, `idx [B,T,K]` (int),
//! `valid [B,T,K]` (bool as int), softmax scale `scale`. Forward: `out [B,T,H,dv]` and
//! `lse [B,T,H]`; a query with no valid slot gets `out = 0` and `lse = -inf`. Backward: from
//! `out`, `lse` and the gradients `d_out [B,T,H,dv]` / `d_lse [B,T,H]` (either may be
//! absent), `dq [B,T,H,D]` and `dkv [B,S,D]` (f32, zeroed by the caller: a latent row is
//! selected by many queries, so its gradient is added atomically). Softmax and sums in f32.
//!
//! Variants, by instruction family (which one runs is `dsa_burn`'s dispatch):
//! - [`simt`]: portable CubeCL on every backend and float type; the forward one thread per
//!   (head, slot) score ([`simt::sparse_mla_fwd()`]) or register-tiled
//!   ([`simt::sparse_mla_fwd_tiled()`]), the backward with `dkv` per head group or per token;
//! - [`cmma`]: CubeCL cooperative-matrix products (bf16/f16 inputs, any `D`, `dv`), forward
//!   and backward;
//! - [`mma`]: the forward on `mma.sync` with the softmax in registers (CUDA, bf16/f16);
//! - [`wgmma`]: CUDA C++ on Hopper's `wgmma` at DeepSeek-V3.2's sizes (`D = 576`,
//!   `dv = 512`, bf16), forward and backward.
//!
//! The tensor-core forwards can split the slots over several cubes per query (for decode);
//! [`combine_splits()`] merges the splits.

use cubecl::prelude::*;

pub mod cmma;
pub mod mma;
pub mod simt;
pub mod wgmma;

/// A cube's share of a forward split over the slots (see [`cmma::sparse_mla_fwd_cmma`]): cube
/// `z = g + groups·i` of token row `bt` takes heads `h0 = g·hg..`, slots `begin..end` of split
/// `i`, and writes row `row` of the split outputs (`bt` when there is one split).
#[derive(CubeType, Clone, Copy)]
pub(crate) struct SplitShare {
    pub h0: usize,
    pub begin: usize,
    pub end: usize,
    pub row: usize,
}

#[cube]
impl SplitShare {
    pub fn new(bt: usize, bt_len: usize, kk: usize, groups: usize, split_len: usize, #[comptime] hg: usize) -> SplitShare {
        let z = CUBE_POS_Z as usize;
        let split = z / groups;
        let begin = split * split_len;
        let mut end = begin + split_len;
        if end > kk {
            end = kk;
        }
        SplitShare { h0: (z % groups) * hg, begin, end, row: split * bt_len + bt }
    }
}

/// Merges the splits of [`cmma::sparse_mla_fwd_cmma()`] and [`mma::sparse_mla_fwd_mma()`]: with `m = max_i lse_i` and `w_i =
/// exp(lse_i − m)`, `out = Σ w_i·out_i / Σ w_i` and `lse = m + ln Σ w_i` (`out = 0`, `lse =
/// neg_inf` where no split had a valid slot). `out_s [splits, n, dv]`, `lse_s [splits, n]`
/// (f32) → `out [n, dv]`, `lse [n]`, `n = B·T·H`. One unit per output entry.
/// Grid: `grid_1d(⌈n·dv / 256⌉)`, 256 units.
#[cube(launch_unchecked)]
pub fn combine_splits<F: Float, O: Float>(
    out_s: &Tensor<O>,
    lse_s: &Tensor<O>,
    out: &mut Tensor<F>,
    lse: &mut Tensor<F>,
    n: usize,
    splits: usize,
    neg_inf: f32,
    #[comptime] dv: usize,
    #[define(F, O)] _dtypes: [StorageType; 2],
) {
    let pos = crate::cube_index() * 256 + UNIT_POS as usize;
    if pos >= n * dv {
        terminate!();
    }
    let r = pos / dv;
    let mut m = neg_inf;
    for i in 0..splits {
        m = f32::max(m, f32::cast_from(lse_s[i * n + r]));
    }
    let mut o = 0.0f32;
    let mut l = neg_inf;
    if m > neg_inf {
        let mut wsum = 0.0f32;
        for i in 0..splits {
            let li = f32::cast_from(lse_s[i * n + r]);
            if li > neg_inf {
                let w = f32::exp(li - m);
                wsum += w;
                o += w * f32::cast_from(out_s[i * n * dv + pos]);
            }
        }
        o /= wsum;
        l = m + f32::ln(wsum);
    }
    out[pos] = F::cast_from(o);
    if pos % dv == 0 {
        lse[r] = F::cast_from(l);
    }
}
