//! Sparse MLA forward on tensor cores (v3): bf16/f16 inputs, cooperative-matrix (cmma)
//! 16×16×16 products with f32 accumulation. Same contract as
//! [`crate::sparse_mla::sparse_mla_fwd`]: `q [B,T,H,D]`, `kv [B,S,D]`, `idx`/`valid [B,T,K]`
//! → `out [B,T,H,dv]` (the first `dv` latent dims are the values), `lse [B,T,H]`; a query
//! with no valid slot gets `out = 0`, `lse = -inf`.
//!
//! The backward, [`sparse_mla_bwd_mma`], has the same layout (see its docs).
//!
//! One cube per (token, group of 64 heads), 8 planes of 32 units. The query tile stays in
//! shared memory; the selected latent rows are gathered `kc` at a time. Two passes over the
//! slots: the first computes each head's log-sum-exp exactly, the second the normalised
//! probabilities `p = exp(s·scale − lse)` (rounded to the input type, as FlashMLA does) and
//! `O += P·V`. The second pass recomputes `Q·Kᵀ`, but no accumulator is ever rescaled, so
//! the 64×dv output lives in cmma accumulators for the whole kernel: plane `(rg, cg)` owns
//! heads `16·rg..16·rg+16` and half of the value columns.

use cubecl::cmma;
use cubecl::prelude::*;

use crate::mma::{a_tile, b_tile, padded, stage_vector, zero_padding, zero_tile, zero_tiles};

/// Heads per cube.
pub const MMA_HEADS: usize = 64;
/// Units per cube (8 planes of 32).
pub const MMA_UNITS: usize = 256;

/// Grid: `grid_1d(B·T)` cubes × `⌈H/64⌉ · splits` in z, [`MMA_UNITS`] units, plane size 32.
/// `N`: vector width of the `q`/`kv` loads (`D % N == 0`). `kc`: slots per chunk, 32 or 64.
/// `q` and `kv` are read at their strides (the last one 1, the others multiples of `N`), so
/// CUDA's pitched rows (a `[.., 576]` bf16 tensor has rows of 640) need no copy.
///
/// Split over the slots (for decode, where `B·T` cubes cannot fill the device): cube
/// `z = g + groups·i` takes head group `g` and slots `i·split_len .. (i+1)·split_len`
/// (`split_len` a multiple of `kc`) and writes that split's normalised output and lse at
/// `out [splits,B,T,H,dv]`, `lse [splits,B,T,H]` (type `O`: f32 for [`combine_splits`]);
/// with one split (`split_len ≥ K`) these are the final `out`, `lse`.
#[cube(launch_unchecked)]
pub fn sparse_mla_fwd_mma<F: Float, I: Int, BL: Int, O: Float, N: Size>(
    q: &Tensor<Vector<F, N>>,
    kv: &Tensor<Vector<F, N>>,
    idx: &Tensor<I>,
    valid: &Tensor<BL>,
    out: &mut Tensor<O>,
    lse: &mut Tensor<O>,
    bt_len: usize,
    t_len: usize,
    heads: usize,
    kk: usize,
    groups: usize,
    split_len: usize,
    scale: f32,
    neg_inf: f32,
    #[comptime] d: usize,
    #[comptime] dv: usize,
    #[comptime] kc: usize,
    #[define(F, I, BL, O)] _dtypes: [StorageType; 4],
) {
    let bt = crate::cube_index();
    if bt >= bt_len {
        terminate!();
    }
    let b = bt / t_len;
    let split = CUBE_POS_Z as usize / groups;
    let c_begin = split * split_len;
    let mut c_end = c_begin + split_len;
    if c_end > kk {
        c_end = kk;
    }
    // Row of this split's outputs (`bt` when there is one split).
    let row = split * bt_len + bt;
    let dp = comptime!(padded(d));
    let kcp = comptime!(kc + 8);
    let vtiles = comptime!(dv.div_ceil(16));
    let nvt = comptime!(dv.div_ceil(16).div_ceil(2));
    let per = comptime!(kc / 4);
    let h0 = (CUBE_POS_Z as usize % groups) * MMA_HEADS;
    let tid = UNIT_POS as usize;
    let plane = tid / 32;
    let rg = plane % 4;
    let cg = plane / 4;
    // Softmax statistics: unit `tid` owns row `r`, columns `part·per..` of every chunk.
    let r = tid / 4;
    let part = tid % 4;

    let mut q_sh = SharedMemory::<F>::new(comptime!(MMA_HEADS * dp));
    let mut kv_sh = SharedMemory::<F>::new(comptime!(kc * dp));
    let mut s_sh = SharedMemory::<f32>::new(comptime!(MMA_HEADS * kc));
    let mut p_sh = SharedMemory::<F>::new(comptime!(MMA_HEADS * kcp));
    let mut ok_sh = SharedMemory::<u32>::new(kc);
    let mut row_sh = SharedMemory::<u32>::new(kc);
    let mut lse_sh = SharedMemory::<f32>::new(MMA_HEADS);
    let mut ml_sh = SharedMemory::<f32>::new(comptime!(2 * MMA_UNITS));

    load_query_tile::<F, N>(q, &mut q_sh, &mut kv_sh, bt / t_len, bt % t_len, h0, heads, d, kc);

    // Pass 1: per-unit running max and sum over its columns of every chunk.
    let mut m_t = neg_inf;
    let mut l_t = 0.0f32;
    let mut c0 = c_begin;
    while c0 < c_end {
        gather_chunk::<F, I, BL, N>(
            kv,
            idx,
            valid,
            &mut kv_sh,
            &mut ok_sh,
            &mut row_sh,
            b,
            bt,
            kk,
            c0,
            d,
            kc,
        );
        chunk_scores::<F>(&q_sh, &kv_sh, &mut s_sh, rg, cg, d, d, kc);
        sync_cube();
        for jj in 0..per {
            let j = part * per + jj;
            if ok_sh[j] == 1u32 {
                let s = s_sh[r * kc + j] * scale;
                if s > m_t {
                    l_t = l_t * f32::exp(m_t - s) + 1.0f32;
                    m_t = s;
                } else {
                    l_t += f32::exp(s - m_t);
                }
            }
        }
        sync_cube();
        c0 += kc;
    }
    ml_sh[tid] = m_t;
    ml_sh[MMA_UNITS + tid] = l_t;
    sync_cube();
    if tid < MMA_HEADS {
        let mut m = neg_inf;
        for p in 0..4usize {
            m = f32::max(m, ml_sh[tid * 4 + p]);
        }
        let mut l = 0.0f32;
        for p in 0..4usize {
            let lp = ml_sh[MMA_UNITS + tid * 4 + p];
            if lp > 0.0f32 {
                l += lp * f32::exp(ml_sh[tid * 4 + p] - m);
            }
        }
        let mut v = neg_inf;
        if l > 0.0f32 {
            v = m + f32::ln(l);
        }
        lse_sh[tid] = v;
        if h0 + tid < heads {
            lse[row * heads + h0 + tid] = O::cast_from(v);
        }
    }
    sync_cube();

    // Pass 2: O += P·V with P normalised by the final lse.
    let acc = zero_tiles(nvt);
    let pa = a_tile::<F>(cmma::MatrixLayout::RowMajor);
    let vb = b_tile::<F>(cmma::MatrixLayout::RowMajor);
    let row_lse = lse_sh[r];
    let mut c0 = c_begin;
    while c0 < c_end {
        gather_chunk::<F, I, BL, N>(
            kv,
            idx,
            valid,
            &mut kv_sh,
            &mut ok_sh,
            &mut row_sh,
            b,
            bt,
            kk,
            c0,
            d,
            kc,
        );
        chunk_scores::<F>(&q_sh, &kv_sh, &mut s_sh, rg, cg, d, d, kc);
        sync_cube();
        for jj in 0..per {
            let j = part * per + jj;
            let mut p = 0.0f32;
            if ok_sh[j] == 1u32 && row_lse > neg_inf {
                p = f32::exp(s_sh[r * kc + j] * scale - row_lse);
            }
            p_sh[r * kcp + j] = F::cast_from(p);
        }
        sync_cube();
        #[unroll]
        for ks in 0..kc / 16 {
            cmma::load(
                &pa,
                &p_sh.slice(rg * 16 * kcp + ks * 16, MMA_HEADS * kcp),
                comptime!(kcp as u32),
            );
            #[unroll]
            for t in 0..nvt {
                let ct = cg * nvt + t;
                if ct < vtiles {
                    cmma::load(
                        &vb,
                        &kv_sh.slice(ks * 16 * dp + ct * 16, kc * dp),
                        comptime!(dp as u32),
                    );
                    let a = acc.index(t);
                    cmma::execute::<F, F, f32, f32>(&pa, &vb, a, a);
                }
            }
        }
        sync_cube();
        c0 += kc;
    }

    // Output: each plane stages one 16×16 tile at a time in its part of s_sh.
    #[unroll]
    for t in 0..nvt {
        let ct = cg * nvt + t;
        if ct < vtiles {
            write_head_tile::<O>(acc.index(t), &mut s_sh, plane * 256, out, row, heads, h0 + rg * 16, ct, dv);
        }
    }
}

/// Writes the f32 accumulator `acc`, the 16×16 tile of heads `h0..h0+16` and columns
/// `16·ct..`, to `dst [.., heads, width]` at query row `row` (heads past `heads` and columns
/// past `width` are not written), through the plane's 256 floats of `stage` from `at`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn write_head_tile<O: Float>(
    acc: &cmma::Matrix<f32>,
    stage: &mut SharedMemory<f32>,
    at: usize,
    dst: &mut Tensor<O>,
    row: usize,
    heads: usize,
    h0: usize,
    ct: usize,
    #[comptime] width: usize,
) {
    let lane = UNIT_POS as usize % 32;
    cmma::store(&mut stage.slice_mut(at, at + 256), acc, 16u32, cmma::MatrixLayout::RowMajor);
    sync_plane();
    #[unroll]
    for e in 0..8usize {
        let k = lane * 8 + e;
        let h = h0 + k / 16;
        let col = ct * 16 + k % 16;
        if h < heads && col < width {
            dst[(row * heads + h) * width + col] = O::cast_from(stage[at + k]);
        }
    }
    sync_plane();
}

/// Sparse MLA backward on tensor cores (v3), the contract of
/// [`crate::sparse_mla::sparse_mla_bwd`] with half-precision `q`, `kv`: from the forward's
/// `out`, `lse` and the gradients `d_out [B,T,H,dv]` / `d_lse [B,T,H]` (`has_dout` /
/// `has_dlse`: absent ones are never read), `dq [B,T,H,D]` and `dkv [B,S,D]` (f32, zeroed
/// by the caller: a latent row is selected by many queries, its gradient is added
/// atomically; `native` as in [`crate::sparse_mla::atomic_add_f32`]).
///
/// One cube per (token, 64 heads), 8 planes; `q`'s and `d_out`'s tiles stay in shared
/// memory. Per chunk of `kc` selected rows: `S = Q·Kᵀ` and `dP = dO·Vᵀ` (cmma),
/// `P = exp(S·scale − lse)`, `dS = scale·P·(dP − δ + d_lse)` with `δ = Σ d_out·out`, both
/// rounded to the input type (as FlashAttention's backward does); `dQ += dS·K` in cmma
/// accumulators for the whole kernel (plane `(rg, cg)`: heads `16·rg..`, half `cg` of the
/// dims), and the chunk's `dKV = dSᵀ·Q + Pᵀ·dO`, one 16×16 tile at a time per plane, added
/// to `dkv` (one atomic add per (row, dim) per head group).
///
/// Grid: `grid_1d(B·T)` cubes × `⌈H/64⌉` in z, [`MMA_UNITS`] units, plane size 32. `kc`
/// is 32. `q` and `kv` are read at their strides as in [`sparse_mla_fwd_mma`] (vectors of
/// `N`); `out`, `d_out`, `d_lse`, `lse` are contiguous.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn sparse_mla_bwd_mma<F: Float, I: Int, BL: Int, A: Int, N: Size>(
    q: &Tensor<Vector<F, N>>,
    kv: &Tensor<Vector<F, N>>,
    idx: &Tensor<I>,
    valid: &Tensor<BL>,
    out: &Tensor<F>,
    lse: &Tensor<F>,
    d_out: &Tensor<F>,
    d_lse: &Tensor<F>,
    dq: &mut Tensor<F>,
    dkv: &mut Tensor<Atomic<A>>,
    bt_len: usize,
    t_len: usize,
    heads: usize,
    s_len: usize,
    kk: usize,
    scale: f32,
    neg_inf: f32,
    #[comptime] d: usize,
    #[comptime] dv: usize,
    #[comptime] kc: usize,
    #[comptime] has_dout: bool,
    #[comptime] has_dlse: bool,
    #[comptime] native: bool,
    #[define(F, I, BL, A)] _dtypes: [StorageType; 4],
) {
    let bt = crate::cube_index();
    if bt >= bt_len {
        terminate!();
    }
    let b = bt / t_len;
    let dp = comptime!(padded(d));
    let dvp = comptime!(padded(dv));
    let kcp = comptime!(kc + 8);
    let dtiles = comptime!(d.div_ceil(16));
    let vtiles = comptime!(dv.div_ceil(16));
    let nqt = comptime!(d.div_ceil(16).div_ceil(2));
    let per = comptime!(kc / 4);
    let h0 = CUBE_POS_Z as usize * MMA_HEADS;
    let tid = UNIT_POS as usize;
    let plane = tid / 32;
    let lane = tid % 32;
    let rg = plane % 4;
    let cg = plane / 4;
    let r = tid / 4;
    let part = tid % 4;

    let mut q_sh = SharedMemory::<F>::new(comptime!(MMA_HEADS * dp));
    let mut go_sh = SharedMemory::<F>::new(comptime!(MMA_HEADS * dvp));
    let mut kv_sh = SharedMemory::<F>::new(comptime!(kc * dp));
    let mut s_sh = SharedMemory::<f32>::new(comptime!(MMA_HEADS * kc));
    let mut g_sh = SharedMemory::<f32>::new(comptime!(MMA_HEADS * kc));
    let mut p_sh = SharedMemory::<F>::new(comptime!(MMA_HEADS * kcp));
    let mut ds_sh = SharedMemory::<F>::new(comptime!(MMA_HEADS * kcp));
    let mut ok_sh = SharedMemory::<u32>::new(kc);
    let mut row_sh = SharedMemory::<u32>::new(kc);
    let mut lse_sh = SharedMemory::<f32>::new(MMA_HEADS);
    let mut c_sh = SharedMemory::<f32>::new(MMA_HEADS);

    load_query_tile::<F, N>(q, &mut q_sh, &mut kv_sh, b, bt % t_len, h0, heads, d, kc);
    if has_dout {
        let mut i = tid;
        while i < MMA_HEADS * dv {
            let hh = i / dv;
            let mut v = F::from_int(0);
            if h0 + hh < heads {
                v = d_out[(bt * heads + h0) * dv + i];
            }
            go_sh[hh * dvp + i % dv] = v;
            i += MMA_UNITS;
        }
        zero_padding::<F>(&mut go_sh, F::from_int(0), MMA_HEADS, dv, 1usize);
    }
    sync_cube();
    // δ = Σ d_out·out per head, 4 units per head (partial sums in s_sh).
    let mut delta = 0.0f32;
    if has_dout && h0 + r < heads {
        let mut e = part;
        while e < dv {
            delta += f32::cast_from(go_sh[r * dvp + e]) * f32::cast_from(out[(bt * heads + h0 + r) * dv + e]);
            e += 4;
        }
    }
    s_sh[tid] = delta;
    sync_cube();
    if tid < MMA_HEADS {
        let mut l = neg_inf;
        let mut c = 0.0f32;
        if h0 + tid < heads {
            let row = bt * heads + h0 + tid;
            l = f32::cast_from(lse[row]);
            if has_dlse {
                c = f32::cast_from(d_lse[row]);
            }
            #[unroll]
            for p in 0..4usize {
                c -= s_sh[tid * 4 + p];
            }
        }
        lse_sh[tid] = l;
        c_sh[tid] = c;
    }
    sync_cube();

    let acc = zero_tiles(nqt);
    let dsa = a_tile::<F>(cmma::MatrixLayout::RowMajor);
    // dSᵀ and Pᵀ: the [head][slot] tiles read column-major.
    let ta = a_tile::<F>(cmma::MatrixLayout::ColMajor);
    let rb = b_tile::<F>(cmma::MatrixLayout::RowMajor);
    let tile_acc = zero_tile();
    let row_lse = lse_sh[r];
    let row_c = c_sh[r];
    let stage = plane * 256;
    let mut c0 = 0usize;
    while c0 < kk {
        gather_chunk::<F, I, BL, N>(
            kv,
            idx,
            valid,
            &mut kv_sh,
            &mut ok_sh,
            &mut row_sh,
            b,
            bt,
            kk,
            c0,
            d,
            kc,
        );
        chunk_scores::<F>(&q_sh, &kv_sh, &mut s_sh, rg, cg, d, d, kc);
        if has_dout {
            chunk_scores::<F>(&go_sh, &kv_sh, &mut g_sh, rg, cg, d, dv, kc);
        }
        sync_cube();
        for jj in 0..per {
            let j = part * per + jj;
            let mut p = 0.0f32;
            let mut ds = 0.0f32;
            if ok_sh[j] == 1u32 && row_lse > neg_inf {
                p = f32::exp(s_sh[r * kc + j] * scale - row_lse);
                let mut g = row_c;
                if has_dout {
                    g += g_sh[r * kc + j];
                }
                ds = p * g * scale;
            }
            p_sh[r * kcp + j] = F::cast_from(p);
            ds_sh[r * kcp + j] = F::cast_from(ds);
        }
        sync_cube();
        // dQ += dS·K.
        #[unroll]
        for ks in 0..kc / 16 {
            cmma::load(&dsa, &ds_sh.slice(rg * 16 * kcp + ks * 16, MMA_HEADS * kcp), comptime!(kcp as u32));
            #[unroll]
            for t in 0..nqt {
                let ct = cg * nqt + t;
                if ct < dtiles {
                    cmma::load(&rb, &kv_sh.slice(ks * 16 * dp + ct * 16, kc * dp), comptime!(dp as u32));
                    let a = acc.index(t);
                    cmma::execute::<F, F, f32, f32>(&dsa, &rb, a, a);
                }
            }
        }
        // dKV of the chunk's rows, tile (row tile jt, dim tile ct) by tile.
        let mut tile = plane;
        while tile < comptime!(kc / 16 * d.div_ceil(16)) {
            let jt = tile / dtiles;
            let ct = tile % dtiles;
            cmma::fill(&tile_acc, 0.0f32);
            #[unroll]
            for hs in 0..MMA_HEADS / 16 {
                cmma::load(&ta, &ds_sh.slice(hs * 16 * kcp + jt * 16, MMA_HEADS * kcp), comptime!(kcp as u32));
                cmma::load(&rb, &q_sh.slice(hs * 16 * dp + ct * 16, MMA_HEADS * dp), comptime!(dp as u32));
                cmma::execute::<F, F, f32, f32>(&ta, &rb, &tile_acc, &tile_acc);
            }
            if has_dout {
                if ct < vtiles {
                    #[unroll]
                    for hs in 0..MMA_HEADS / 16 {
                        cmma::load(&ta, &p_sh.slice(hs * 16 * kcp + jt * 16, MMA_HEADS * kcp), comptime!(kcp as u32));
                        cmma::load(&rb, &go_sh.slice(hs * 16 * dvp + ct * 16, MMA_HEADS * dvp), comptime!(dvp as u32));
                        cmma::execute::<F, F, f32, f32>(&ta, &rb, &tile_acc, &tile_acc);
                    }
                }
            }
            cmma::store(&mut s_sh.slice_mut(stage, stage + 256), &tile_acc, 16u32, cmma::MatrixLayout::RowMajor);
            sync_plane();
            #[unroll]
            for e in 0..8usize {
                let k = lane * 8 + e;
                let j = jt * 16 + k / 16;
                let col = ct * 16 + k % 16;
                let row = row_sh[j] as usize;
                if ok_sh[j] == 1u32 && row < s_len && col < d {
                    crate::sparse_mla::atomic_add_f32(dkv, (b * s_len + row) * d + col, s_sh[stage + k], native);
                }
            }
            sync_plane();
            tile += 8;
        }
        sync_cube();
        c0 += kc;
    }

    #[unroll]
    for t in 0..nqt {
        let ct = cg * nqt + t;
        if ct < dtiles {
            write_head_tile::<F>(acc.index(t), &mut s_sh, stage, dq, bt, heads, h0 + rg * 16, ct, d);
        }
    }
}

/// Merges the splits of [`sparse_mla_fwd_mma`]: with `m = max_i lse_i` and `w_i =
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

/// Kernel 6 on tensor cores: at each query's selected rows, a sum over heads of a function
/// of the heads' scores `s_h = q_h · kv[idx_j]` (v3's `gather_chunk` / `chunk_scores`, so
/// half-precision inputs), written for both of the sparse stage's indexer-loss inputs:
///
/// - `relu = false`, the attention probabilities: `out[b,t,j] = (1/H) Σ_h exp(scale·s_h −
///   hw[h])` with `hw` = the forward's `lse` (same contract as
///   `indexer_loss::sparse_mla_probs`; 0 at invalid slots). `hs`, `ks` are not read.
/// - `relu = true`, the indexer's selected scores from e4m3 codes (`q`, `kv` the f16 codes
///   of one quantisation block per row): `out[b,t,j] = ks[idx_j] · Σ_h hw[h]·hs[h]·ReLU(s_h)`
///   with `hw` = the weights `w`, `hs` = the query scales, `ks` `[B,S]` = the key scales
///   (contract of `indexer_loss::indexer_selected_scores`; `neg_inf` at invalid slots).
///
/// One cube per (token, 64 heads); each adds its heads' share to `out` (f32 `[B,T,K]`,
/// zeroed by the caller) with one atomic add per slot (`native`: a float atomic add, else a
/// compare-and-swap loop, as [`crate::sparse_mla::atomic_add_f32`]).
///
/// Grid: `grid_1d(B·T)` cubes × `⌈H/64⌉` in z, [`MMA_UNITS`] units, plane size 32. `q` and
/// `kv` are read at their strides, as in [`sparse_mla_fwd_mma`].
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn selected_head_sums_mma<F: Float, I: Int, BL: Int, A: Int, W: Float, SC: Float, N: Size>(
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
    let parts = comptime!(MMA_UNITS / kc);
    let hpp = comptime!(MMA_HEADS / (MMA_UNITS / kc));
    let h0 = CUBE_POS_Z as usize * MMA_HEADS;
    let tid = UNIT_POS as usize;
    let plane = tid / 32;
    let rg = plane % 4;
    let cg = plane / 4;
    let j = tid % kc;
    let part = tid / kc;

    let mut q_sh = SharedMemory::<F>::new(comptime!(MMA_HEADS * dp));
    let mut kv_sh = SharedMemory::<F>::new(comptime!(kc * dp));
    let mut s_sh = SharedMemory::<f32>::new(comptime!(MMA_HEADS * kc));
    let mut ok_sh = SharedMemory::<u32>::new(kc);
    let mut row_sh = SharedMemory::<u32>::new(kc);
    let mut hw_sh = SharedMemory::<f32>::new(MMA_HEADS);
    let mut red_sh = SharedMemory::<f32>::new(MMA_UNITS);

    load_query_tile::<F, N>(q, &mut q_sh, &mut kv_sh, bt / t_len, bt % t_len, h0, heads, d, kc);
    if tid < MMA_HEADS {
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
        gather_chunk::<F, I, BL, N>(
            kv,
            idx,
            valid,
            &mut kv_sh,
            &mut ok_sh,
            &mut row_sh,
            b,
            bt,
            kk,
            c0,
            d,
            kc,
        );
        chunk_scores::<F>(&q_sh, &kv_sh, &mut s_sh, rg, cg, d, d, kc);
        sync_cube();
        // A valid slot means every head's lse is finite.
        let mut v = 0.0f32;
        if ok_sh[j] == 1u32 {
            #[unroll]
            for u in 0..hpp {
                let hh = part * hpp + u;
                if h0 + hh < heads {
                    let sc = s_sh[hh * kc + j];
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
            crate::sparse_mla::atomic_add_f32(out, bt * kk + c0 + tid, add, native);
        }
        c0 += kc;
    }
}

/// The query tile of heads `h0..h0+64` of token `(b, t)` into `q_sh` (rows past H and dims
/// past D are zero), and the zero padding of `kv_sh`'s dims past D. No barrier: the first
/// [`gather_chunk`] ends with one.
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_query_tile<F: Float, N: Size>(
    q: &Tensor<Vector<F, N>>,
    q_sh: &mut SharedMemory<F>,
    kv_sh: &mut SharedMemory<F>,
    b: usize,
    t: usize,
    h0: usize,
    heads: usize,
    #[comptime] d: usize,
    #[comptime] kc: usize,
) {
    let nv = N::value();
    let dvec = comptime!(d / nv);
    let dp = comptime!(padded(d));
    let mut i = UNIT_POS as usize;
    while i < MMA_HEADS * dvec {
        let hh = i / dvec;
        let c = i % dvec;
        let at = (b * q.stride(0) + t * q.stride(1) + (h0 + hh) * q.stride(2)) / nv + c;
        stage_vector::<F, N>(q, at, h0 + hh < heads, q_sh, hh * dp + c * nv);
        i += MMA_UNITS;
    }
    zero_padding::<F>(q_sh, F::from_int(0), MMA_HEADS, d, 1usize);
    zero_padding::<F>(kv_sh, F::from_int(0), kc, d, 1usize);
}

/// Gathers the rows of slots `c0..c0+kc` into `kv_sh` (zero for invalid or past-the-end
/// slots) and their validity into `ok_sh`. Ends with a cube barrier.
#[cube]
#[allow(clippy::too_many_arguments)]
fn gather_chunk<F: Float, I: Int, BL: Int, N: Size>(
    kv: &Tensor<Vector<F, N>>,
    idx: &Tensor<I>,
    valid: &Tensor<BL>,
    kv_sh: &mut SharedMemory<F>,
    ok_sh: &mut SharedMemory<u32>,
    row_sh: &mut SharedMemory<u32>,
    b: usize,
    bt: usize,
    kk: usize,
    c0: usize,
    #[comptime] d: usize,
    #[comptime] kc: usize,
) {
    let nv = N::value();
    let dvec = comptime!(d / nv);
    let dp = comptime!(padded(d));
    let tid = UNIT_POS as usize;
    crate::sparse_mla::load_slots::<I, BL>(idx, valid, ok_sh, row_sh, bt, kk, c0, kc);
    let mut i = tid;
    while i < kc * dvec {
        let j = i / dvec;
        let c = i % dvec;
        let at = (b * kv.stride(0) + row_sh[j] as usize * kv.stride(1)) / nv + c;
        // A row past the latent (a bad index) reads as zeros: launches are unchecked.
        let ok = ok_sh[j] == 1u32 && (row_sh[j] as usize) < kv.shape(1);
        stage_vector::<F, N>(kv, at, ok, kv_sh, j * dp + c * nv);
        i += MMA_UNITS;
    }
    sync_cube();
}

/// `s_sh[h, j] = a_h · kv_j` over the first `depth` dims (`a` = `q` with `depth = d`, or
/// `d_out` with `depth = dv`, staged at row stride `padded(depth)`, zero past `depth`) for
/// the 64 × `kc` tile: plane `(rg, cg)` computes rows `16·rg..` and `kc/32` column tiles of
/// half `cg`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn chunk_scores<F: Float>(
    a_sh: &SharedMemory<F>,
    kv_sh: &SharedMemory<F>,
    s_sh: &mut SharedMemory<f32>,
    rg: usize,
    cg: usize,
    #[comptime] d: usize,
    #[comptime] depth: usize,
    #[comptime] kc: usize,
) {
    let dp = comptime!(padded(d));
    let ap = comptime!(padded(depth));
    let nk = comptime!(depth.div_ceil(16));
    let ns = comptime!(kc / 32);
    let qa = a_tile::<F>(cmma::MatrixLayout::RowMajor);
    let kb = b_tile::<F>(cmma::MatrixLayout::ColMajor);
    #[unroll]
    for s in 0..ns {
        let n0 = (cg * ns + s) * 16;
        let acc = zero_tile();
        for ks in 0..nk {
            cmma::load(
                &qa,
                &a_sh.slice(rg * 16 * ap + ks * 16, MMA_HEADS * ap),
                comptime!(ap as u32),
            );
            cmma::load(
                &kb,
                &kv_sh.slice(n0 * dp + ks * 16, kc * dp),
                comptime!(dp as u32),
            );
            cmma::execute::<F, F, f32, f32>(&qa, &kb, &acc, &acc);
        }
        cmma::store(
            &mut s_sh.slice_mut(rg * 16 * kc + n0, MMA_HEADS * kc),
            &acc,
            comptime!(kc as u32),
            cmma::MatrixLayout::RowMajor,
        );
    }
}
