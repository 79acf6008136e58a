//! The indexer loss's sums over heads at the selected rows on cooperative-matrix (cmma)
//! tensor cores.

use cubecl::prelude::barrier::Barrier;
use cubecl::prelude::*;

use crate::shared::atomic::atomic_add_f32;
use crate::shared::cmma::{chunk_scores, padded, score_stride, CMMA_ALIGN};
use crate::shared::gather::{gather_chunk, load_query_tile, load_window, ASYNC_GATHER_EXTRA_BYTES, WINDOW_SLOTS};

/// Heads per cube of [`selected_head_sums_cmma()`].
pub const CMMA_HEADS: usize = 64;
/// Units per cube of [`selected_head_sums_cmma()`] (8 planes of 32).
pub const CMMA_UNITS: usize = 256;

/// At each query's selected rows, a sum over heads of a function of the heads' scores
/// `s_h = q_h · kv[idx_j]` (the cmma gather and score tile of [`crate::shared`], so
/// half-precision inputs), written for both of the sparse stage's indexer-loss inputs:
///
/// - `relu = false`, the attention probabilities: `out[b,t,j] = (1/H) Σ_h exp(scale·s_h −
///   hw[h])` with `hw` = the forward's `lse` (same contract as
///   [`super::simt::sparse_mla_probs()`]; 0 at invalid slots). `hs`, `ks` are not read.
/// - `relu = true`, the indexer's selected scores from e4m3 codes (`q`, `kv` the f16 codes
///   of one quantisation block per row): `out[b,t,j] = ks[idx_j] · Σ_h hw[h]·hs[h]·ReLU(s_h)`
///   with `hw` = the weights `w`, `hs` = the query scales, `ks` `[B,S]` = the key scales
///   (contract of [`super::simt::indexer_selected_scores()`]; `neg_inf` at invalid slots).
///
/// One cube per (token, 64 heads); each adds its heads' share to `out` (f32 `[B,T,K]`,
/// zeroed by the caller) with one atomic add per slot (`native`: a float atomic add, else a
/// compare-and-swap loop, as [`atomic_add_f32()`]).
///
/// Grid: `grid_1d(B·T)` cubes × `⌈H/64⌉` in z, [`CMMA_UNITS`] units, plane size 32. `q` and
/// `kv` are read at their strides, as in [`crate::sparse_mla::cmma::sparse_mla_fwd_cmma()`].
#[cube(launch_unchecked, fast_math = crate::FAST_EXP)]
#[allow(clippy::too_many_arguments)]
pub fn selected_head_sums_cmma<F: Float, I: Int, BL: Int, A: Int, W: Float, SC: Float, N: Size>(
    q: &Tensor<Vector<F, N>>,
    kv: &Tensor<Vector<F, N>>,
    idx: &Tensor<I>,
    valid: &Tensor<BL>,
    hw: &Tensor<W>,
    hs: &Tensor<SC>,
    ks: &Tensor<SC>,
    out: &mut Tensor<Atomic<A>>,
    bt_len: usize,
    heads: usize,
    t_len: usize,
    s_len: usize,
    kk: usize,
    scale: f32,
    neg_inf: f32,
    #[comptime] d: usize,
    #[comptime] kc: usize,
    #[comptime] native: bool,
    #[comptime] relu: bool,
    #[define(F, I, BL, A, W, SC)] _dtypes: [StorageType; 6],
) {
    let bt = crate::cube_index();
    if bt >= bt_len {
        terminate!();
    }
    let b = bt / t_len;
    let dp = comptime!(padded(d));
    // Each slot's 64 heads are summed by `parts` units of `64/parts` heads each.
    let parts = comptime!(CMMA_UNITS / kc);
    let hpp = comptime!(CMMA_HEADS / (CMMA_UNITS / kc));
    let h0 = CUBE_POS_Z as usize * CMMA_HEADS;
    let tid = UNIT_POS as usize;
    let plane = tid / 32;
    let j = tid % kc;
    let part = tid / kc;

    let mut q_sh = SharedMemory::<F>::new_aligned(comptime!(CMMA_HEADS * dp), CMMA_ALIGN);
    let mut kv_sh = SharedMemory::<F>::new_aligned(comptime!(kc * dp), CMMA_ALIGN);
    let ss = comptime!(score_stride(CMMA_HEADS, kc, 8));
    let mut s_sh = SharedMemory::<f32>::new_aligned(comptime!(CMMA_HEADS * ss), CMMA_ALIGN);
    let mut ok_sh = SharedMemory::<u32>::new(kc);
    let mut row_sh = SharedMemory::<u32>::new(kc);
    let mut win_sh = SharedMemory::<u32>::new(WINDOW_SLOTS);
    let mut hw_sh = SharedMemory::<f32>::new(CMMA_HEADS);
    let mut red_sh = SharedMemory::<f32>::new(CMMA_UNITS);

    // Completes the copies of the query tile and of each chunk (see `gather_chunk`).
    let barrier = Barrier::shared(CUBE_DIM, UNIT_POS == 0);
    load_query_tile::<F, N>(q, &mut q_sh, &mut kv_sh, bt / t_len, bt % t_len, h0, heads, d, kc, CMMA_HEADS);
    if tid < CMMA_HEADS {
        let mut v = 0.0f32;
        if h0 + tid < heads {
            let i = bt * heads + h0 + tid;
            v = f32::cast_from(hw[i]);
            if relu {
                v *= f32::cast_from(hs[i]);
            }
        }
        hw_sh[tid] = v;
    }
    let inv_heads = 1.0f32 / f32::cast_from(heads);
    let mut c0 = 0usize;
    while c0 < kk {
        if c0 % WINDOW_SLOTS == 0 {
            load_window::<I, BL>(idx, valid, &mut win_sh, bt, kk, c0, kk, kc);
        }
        gather_chunk::<F, N>(kv, &win_sh, &mut kv_sh, &mut ok_sh, &mut row_sh, &barrier, b, c0 % WINDOW_SLOTS, d, kc, CMMA_UNITS);
        chunk_scores::<F>(&q_sh, &kv_sh, &mut s_sh, plane, d, d, kc, CMMA_HEADS, 8usize);
        sync_cube();
        // A valid slot means every head's lse is finite.
        let mut v = 0.0f32;
        if ok_sh[j] == 1u32 {
            #[unroll]
            for u in 0..hpp {
                let hh = part * hpp + u;
                if h0 + hh < heads {
                    let sc = s_sh[hh * ss + j];
                    if relu {
                        v += hw_sh[hh] * f32::max(sc, 0.0f32);
                    } else {
                        v += f32::exp(sc * scale - hw_sh[hh]);
                    }
                }
            }
        }
        red_sh[tid] = v;
        sync_cube();
        if tid < kc && c0 + tid < kk {
            let mut sum = 0.0f32;
            #[unroll]
            for p in 0..parts {
                sum += red_sh[p * kc + tid];
            }
            let mut add = sum * inv_heads;
            if relu {
                let row = row_sh[tid] as usize;
                add = 0.0f32;
                if row < s_len {
                    add = sum * f32::cast_from(ks[b * s_len + row]);
                }
                if ok_sh[tid] == 0u32 {
                    // -inf once (from the first head group): the sum stays -inf.
                    add = 0.0f32;
                    if h0 == 0 {
                        add = neg_inf;
                    }
                }
            }
            atomic_add_f32(out, bt * kk + c0 + tid, add, native);
        }
        c0 += kc;
    }
}

/// Slots per chunk (64 or 32) of [`selected_head_sums_cmma()`] for rows of `d` dims (its tiles
/// of `q`, a chunk of rows and the scores; head weights and partial sums) in `max_shared`
/// bytes, or `None` when they do not fit.
pub fn head_sums_chunk(d: usize, max_shared: usize) -> Option<usize> {
    let dp = padded(d);
    let bytes = |kc: usize| {
        2 * (CMMA_HEADS + kc) * dp + 4 * CMMA_HEADS * score_stride(CMMA_HEADS, kc, 8) + 8 * kc + 4 * (CMMA_HEADS + CMMA_UNITS) + ASYNC_GATHER_EXTRA_BYTES
    };
    [64, 32].into_iter().find(|&kc| bytes(kc) <= max_shared)
}
