//! Sparse MLA forward and backward on cooperative-matrix (cmma) tensor cores: bf16/f16
//! inputs, 16×16×16 products with f32 accumulation, the contract of [`crate::sparse_mla`].
//!
//! The backward, [`sparse_mla_bwd_cmma()`], has the same layout (see its docs).
//!
//! One cube per (token, group of `hg` heads: 32 or 64), 4 or 8 planes of 32 units. The query
//! tile stays in shared memory; the selected latent rows are gathered `kc` at a time by
//! asynchronous copies, their row numbers read from a window of the selections held in shared
//! memory ([`WINDOW_SLOTS`] slots). One pass over the slots: per chunk `S = Q·Kᵀ`, the
//! unnormalised probabilities `p = exp(s·scale − m_ref)` (rounded to the input type, as
//! FlashMLA does) and `O += P·V`, where each head's reference max `m_ref` moves only when a
//! chunk's scores exceed it by more than a margin; `O / l` and `lse = m_ref + ln l` at the
//! end. The accumulators are never rescaled: if a head's reference moved after it had
//! accumulated (rare after the first chunk), a second pass redoes `O` with the exact lse.
//! The `hg`×dv output lives in cmma accumulators for the whole kernel: plane `(rg, cg)` owns
//! two row tiles, heads `32·rg..32·rg+32`, and an `hg/(32·planes)` share of the value
//! columns, so each V fragment it loads serves two products.

use cubecl::cmma;
use cubecl::prelude::*;

use cubecl::prelude::barrier::Barrier;

use super::SplitShare;
use crate::shared::atomic::atomic_add_f32;
use crate::shared::cmma::{a_tile, b_tile, chunk_scores, padded, score, score_copies, score_stride, zero_padding, zero_tile, zero_tiles, CMMA_ALIGN};
use crate::shared::gather::{gather_chunk, load_query_tile, load_window, ASYNC_GATHER_EXTRA_BYTES, WINDOW_SLOTS};

/// Heads per cube of the backward.
pub const CMMA_HEADS: usize = 64;
/// Units per cube of the backward (8 planes of 32).
pub const CMMA_UNITS: usize = 256;

/// Grid: `grid_1d(B·T)` cubes × `⌈H/hg⌉ · splits` in z, `32·planes` units, plane size 32.
/// `N`: vector width of the `q`/`kv` loads (`D % N == 0`). `kc`: slots per chunk, 32 or 64.
/// `hg`: heads per cube, 32 or 64; `planes`: 4 or 8 (`hg/16` must divide it and
/// `32·planes/hg` must divide `kc`).
/// `q` and `kv` are read at their strides (the last one 1, the others multiples of `N`), so
/// CUDA's pitched rows (a `[.., 576]` bf16 tensor has rows of 640) need no copy.
///
/// Split over the slots (for decode, where `B·T` cubes cannot fill the device): cube
/// `z = g + groups·i` takes head group `g` and slots `i·split_len .. (i+1)·split_len`
/// (`split_len` a multiple of `kc`) and writes that split's normalised output and lse at
/// `out [splits,B,T,H,dv]`, `lse [splits,B,T,H]` (type `O`: f32 for [`super::combine_splits()`]);
/// with one split (`split_len ≥ K`) these are the final `out`, `lse`.
#[cube(launch_unchecked, fast_math = crate::FAST_EXP)]
#[allow(clippy::too_many_arguments)]
pub fn sparse_mla_fwd_cmma<F: Float, I: Int, BL: Int, O: Float, N: Size>(
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
    #[comptime] hg: usize,
    #[comptime] planes: usize,
    #[define(F, I, BL, O)] _dtypes: [StorageType; 4],
) {
    let bt = crate::cube_index();
    if bt >= bt_len {
        terminate!();
    }
    let share = SplitShare::new(bt, bt_len, kk, groups, split_len, hg);
    let b = bt / t_len;
    let h0 = share.h0;
    let c_begin = share.begin;
    let c_end = share.end;
    let row = share.row;
    let dp = comptime!(padded(d));
    let kcp = comptime!(kc + 8);
    // `O += P·V`: plane (rg, cg) accumulates `rpp` row tiles (heads `16·rpp·rg..`) × `nvt`
    // column tiles (`16·nvt·cg..`), so each V fragment it loads serves `rpp` products.
    let rpp = comptime!((hg / 16).min(2));
    let rgs = comptime!(hg / 16 / rpp);
    let vtiles = comptime!(dv.div_ceil(16));
    let nvt = comptime!(dv.div_ceil(16).div_ceil(planes / rgs));
    // Softmax statistics: `uph` units per head; unit `tid` owns row `r`, columns
    // `part, part + uph, ..` of every chunk.
    let uph = comptime!(32 * planes / hg);
    let per = comptime!(kc / uph);
    let copies = comptime!(score_copies(hg, kc, planes));
    let ss = comptime!(score_stride(hg, kc, planes));
    let tid = UNIT_POS as usize;
    let plane = tid / 32;
    let rg = plane % rgs;
    let cg = plane / rgs;
    let r = tid / uph;
    let part = tid % uph;

    let mut q_sh = SharedMemory::<F>::new_aligned(comptime!(hg * dp), CMMA_ALIGN);
    let mut kv_sh = SharedMemory::<F>::new_aligned(comptime!(kc * dp), CMMA_ALIGN);
    // The score copies, and the planes' 256-float output staging at the end.
    let mut s_sh = SharedMemory::<f32>::new_aligned(comptime!((copies * hg * ss).max(256 * planes)), CMMA_ALIGN);
    let mut p_sh = SharedMemory::<F>::new_aligned(comptime!(hg * kcp), CMMA_ALIGN);
    let mut ok_sh = SharedMemory::<u32>::new(kc);
    let mut row_sh = SharedMemory::<u32>::new(kc);
    let mut win_sh = SharedMemory::<u32>::new(WINDOW_SLOTS);
    // Per head: the factor its output row is multiplied by when written.
    let mut alpha_sh = SharedMemory::<f32>::new(hg);
    // Whether some head's reference max moved after the head had accumulated (see below).
    let mut late_sh = SharedMemory::<u32>::new(1usize);
    if tid == 0 {
        late_sh[0] = 0u32;
    }

    // Completes the copies of the query tile and of each chunk (see `gather_chunk`).
    let barrier = Barrier::shared(CUBE_DIM, UNIT_POS == 0);
    load_query_tile::<F, N>(q, &mut q_sh, &mut kv_sh, bt / t_len, bt % t_len, h0, heads, d, kc, hg);

    // Pass 0 over the slots: each head's scores are exponentiated against a reference max
    // `m_ref` that moves only when a chunk's max exceeds it by more than RESCALE_MARGIN (so
    // `P ≤ e^8`), and `O += P·V`; `l_t`, this unit's part of the head's sum of
    // `exp(s·scale − m_ref)`, follows the moves exactly (the `uph` units of a head are
    // adjacent lanes). The accumulators are never rescaled: if a head's reference moved
    // after the head had accumulated (rare: `late_sh`), its `O` mixes two scales, and pass 1
    // redoes every head's `O` with `P` normalised by the exact lse that pass 0 found.
    let acc = zero_tiles(comptime!(rpp * nvt));
    let mut pa = Sequence::<cmma::Matrix<F>>::new();
    #[unroll]
    for _ in 0..rpp {
        pa.push(a_tile::<F>(cmma::MatrixLayout::RowMajor));
    }
    let vb = b_tile::<F>(cmma::MatrixLayout::RowMajor);
    let mut m_ref = neg_inf;
    let mut l_t = 0.0f32;
    let mut lse_r = neg_inf;
    let mut pass: u32 = 0u32;
    while pass < 2u32 {
        let mut c0 = c_begin;
        while c0 < c_end {
            // Pass 1 reuses pass 0's window when the split fits in one.
            if (c0 - c_begin) % WINDOW_SLOTS == 0 && (pass == 0u32 || c_end - c_begin > WINDOW_SLOTS) {
                load_window::<I, BL>(idx, valid, &mut win_sh, bt, kk, c0, c_end, kc);
            }
            gather_chunk::<F, N>(kv, &win_sh, &mut kv_sh, &mut ok_sh, &mut row_sh, &barrier, b, (c0 - c_begin) % WINDOW_SLOTS, d, kc, comptime!(32 * planes));
            chunk_scores::<F>(&q_sh, &kv_sh, &mut s_sh, plane, d, d, kc, hg, planes);
            sync_cube();
            let mut m_use = lse_r;
            if pass == 0u32 {
                let mut m_c = neg_inf;
                for jj in 0..per {
                    let j = jj * uph + part;
                    if ok_sh[j] == 1u32 {
                        m_c = f32::max(m_c, score(&s_sh, r * ss + j, hg * ss, copies) * scale);
                    }
                }
                m_c = head_reduce(m_c, uph, false);
                if m_c > m_ref + RESCALE_MARGIN {
                    if m_ref > neg_inf {
                        late_sh[0] = 1u32;
                    }
                    // From m_ref = -inf (nothing accumulated yet) the factor is 0.
                    l_t *= f32::exp(m_ref - m_c);
                    m_ref = m_c;
                }
                m_use = m_ref;
            }
            for jj in 0..per {
                let j = jj * uph + part;
                let mut p = 0.0f32;
                if ok_sh[j] == 1u32 {
                    p = f32::exp(score(&s_sh, r * ss + j, hg * ss, copies) * scale - m_use);
                }
                if pass == 0u32 {
                    l_t += p;
                }
                p_sh[r * kcp + j] = F::cast_from(p);
            }
            sync_cube();
            #[unroll]
            for ks in 0..kc / 16 {
                #[unroll]
                for u in 0..rpp {
                    cmma::load(
                        pa.index(u),
                        &p_sh.slice((rg * rpp + u) * 16 * kcp + ks * 16, hg * kcp),
                        comptime!(kcp as u32),
                    );
                }
                #[unroll]
                for t in 0..nvt {
                    let ct = cg * nvt + t;
                    if ct < vtiles {
                        cmma::load(
                            &vb,
                            &kv_sh.slice(ks * 16 * dp + ct * 16, kc * dp),
                            comptime!(dp as u32),
                        );
                        #[unroll]
                        for u in 0..rpp {
                            let a = acc.index(u * nvt + t);
                            cmma::execute::<F, F, f32, f32>(pa.index(u), &vb, a, a);
                        }
                    }
                }
            }
            sync_cube();
            c0 += kc;
        }
        if pass == 0u32 {
            // lse = m_ref + ln l; the output is O / l, or O itself after pass 1 (0 and -inf
            // for a head with no valid slot).
            let l = head_reduce(l_t, uph, true);
            let mut inv = 0.0f32;
            if l > 0.0f32 {
                lse_r = m_ref + f32::ln(l);
                inv = 1.0f32 / l;
            }
            pass = 2u32;
            if late_sh[0] == 1u32 {
                pass = 1u32;
                inv = 1.0f32;
                #[unroll]
                for t in 0..rpp * nvt {
                    cmma::fill(acc.index(t), 0.0f32);
                }
            }
            if part == 0 {
                alpha_sh[r] = inv;
                if h0 + r < heads {
                    lse[row * heads + h0 + r] = O::cast_from(lse_r);
                }
            }
        } else {
            pass = 2u32;
        }
    }
    sync_cube();
    // Output: each plane stages one 16×16 tile at a time in its part of s_sh.
    #[unroll]
    for u in 0..rpp {
        let r0 = (rg * rpp + u) * 16;
        #[unroll]
        for t in 0..nvt {
            let ct = cg * nvt + t;
            if ct < vtiles {
                write_head_tile::<O>(acc.index(u * nvt + t), &mut s_sh, plane * 256, &alpha_sh, r0, true, out, row, heads, h0 + r0, ct, dv);
            }
        }
    }
}

/// How far (natural-log units) a head's score may exceed the forward's reference max before
/// the reference moves: the unnormalised probabilities stay below `e^8`.
const RESCALE_MARGIN: f32 = 8.0;

/// The max (`sum = false`) or sum of `v` over the `n` adjacent lanes (a power of two) that
/// share a head, in every one of them.
#[cube]
fn head_reduce(v: f32, #[comptime] n: usize, #[comptime] sum: bool) -> f32 {
    let mut x = v;
    let mut mask = 1u32;
    while mask < comptime!(n as u32) {
        let y = plane_shuffle_xor(x, mask);
        if sum {
            x += y;
        } else {
            x = f32::max(x, y);
        }
        mask *= 2u32;
    }
    x
}

/// Writes the f32 accumulator `acc`, the 16×16 tile of heads `h0..h0+16` and columns
/// `16·ct..`, to `dst [.., heads, width]` at query row `row` (heads past `heads` and columns
/// past `width` are not written), through the plane's 256 floats of `stage` from `at`; with
/// `scaled`, the tile's row `i` multiplied by `row_scale[s0 + i]` (else `row_scale` is not read).
#[cube]
#[allow(clippy::too_many_arguments)]
fn write_head_tile<O: Float>(
    acc: &cmma::Matrix<f32>,
    stage: &mut SharedMemory<f32>,
    at: usize,
    row_scale: &SharedMemory<f32>,
    s0: usize,
    #[comptime] scaled: bool,
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
            let mut v = stage[at + k];
            if scaled {
                v *= row_scale[s0 + k / 16];
            }
            dst[(row * heads + h) * width + col] = O::cast_from(v);
        }
    }
    sync_plane();
}

/// Sparse MLA backward on tensor cores, the contract of
/// [`crate::sparse_mla::simt::sparse_mla_bwd()`] with half-precision `q`, `kv`: from the forward's
/// `out`, `lse` and the gradients `d_out [B,T,H,dv]` / `d_lse [B,T,H]` (`has_dout` /
/// `has_dlse`: absent ones are never read), `dq [B,T,H,D]` and `dkv [B,S,D]` (f32, zeroed
/// by the caller: a latent row is selected by many queries, its gradient is added
/// atomically; `native` as in [`atomic_add_f32()`]).
///
/// One cube per (token, 64 heads), 8 planes; `q`'s and `d_out`'s tiles stay in shared
/// memory. Per chunk of `kc` selected rows: `S = Q·Kᵀ` and `dP = dO·Vᵀ` (cmma),
/// `P = exp(S·scale − lse)`, `dS = scale·P·(dP − δ + d_lse)` with `δ = Σ d_out·out`, both
/// rounded to the input type (as FlashAttention's backward does); `dQ += dS·K` in cmma
/// accumulators for the whole kernel (plane `(rg, cg)`: heads `32·rg..`, quarter `cg` of the
/// dims), and the chunk's `dKV = dSᵀ·Q + Pᵀ·dO`, one 16×16 tile at a time per plane, added
/// to `dkv` (one atomic add per (row, dim) per head group).
///
/// Grid: `grid_1d(B·T)` cubes × `⌈H/64⌉` in z, [`CMMA_UNITS`] units, plane size 32. `kc`
/// is 32. `q` and `kv` are read at their strides as in [`sparse_mla_fwd_cmma()`] (vectors of
/// `N`); `out`, `d_out`, `d_lse`, `lse` are contiguous.
#[cube(launch_unchecked, fast_math = crate::FAST_EXP)]
#[allow(clippy::too_many_arguments)]
pub fn sparse_mla_bwd_cmma<F: Float, I: Int, BL: Int, A: Int, N: Size>(
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
    // dQ: plane (rg, cg) accumulates two row tiles (heads `32·rg..`) × `nqt` column tiles,
    // so each K fragment it loads serves two products.
    let nqt = comptime!(d.div_ceil(16).div_ceil(4));
    let per = comptime!(kc / 4);
    let ss = comptime!(score_stride(CMMA_HEADS, kc, 8));
    let h0 = CUBE_POS_Z as usize * CMMA_HEADS;
    let tid = UNIT_POS as usize;
    let plane = tid / 32;
    let lane = tid % 32;
    let rg = plane % 2;
    let cg = plane / 2;
    let r = tid / 4;
    let part = tid % 4;

    let mut q_sh = SharedMemory::<F>::new_aligned(comptime!(CMMA_HEADS * dp), CMMA_ALIGN);
    let mut go_sh = SharedMemory::<F>::new_aligned(comptime!(CMMA_HEADS * dvp), CMMA_ALIGN);
    let mut kv_sh = SharedMemory::<F>::new_aligned(comptime!(kc * dp), CMMA_ALIGN);
    let mut s_sh = SharedMemory::<f32>::new_aligned(comptime!(CMMA_HEADS * ss), CMMA_ALIGN);
    let mut g_sh = SharedMemory::<f32>::new_aligned(comptime!(CMMA_HEADS * ss), CMMA_ALIGN);
    let mut p_sh = SharedMemory::<F>::new_aligned(comptime!(CMMA_HEADS * kcp), CMMA_ALIGN);
    let mut ds_sh = SharedMemory::<F>::new_aligned(comptime!(CMMA_HEADS * kcp), CMMA_ALIGN);
    let mut ok_sh = SharedMemory::<u32>::new(kc);
    let mut row_sh = SharedMemory::<u32>::new(kc);
    let mut win_sh = SharedMemory::<u32>::new(WINDOW_SLOTS);
    let mut lse_sh = SharedMemory::<f32>::new(CMMA_HEADS);
    let mut c_sh = SharedMemory::<f32>::new(CMMA_HEADS);

    // Completes the copies of the query tile and of each chunk (see `gather_chunk`).
    let barrier = Barrier::shared(CUBE_DIM, UNIT_POS == 0);
    load_query_tile::<F, N>(q, &mut q_sh, &mut kv_sh, b, bt % t_len, h0, heads, d, kc, CMMA_HEADS);
    if has_dout {
        let mut i = tid;
        while i < CMMA_HEADS * dv {
            let hh = i / dv;
            let mut v = F::from_int(0);
            if h0 + hh < heads {
                v = d_out[(bt * heads + h0) * dv + i];
            }
            go_sh[hh * dvp + i % dv] = v;
            i += CMMA_UNITS;
        }
        zero_padding::<F>(&mut go_sh, F::from_int(0), CMMA_HEADS, dv, 1usize);
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
    if tid < CMMA_HEADS {
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

    let acc = zero_tiles(comptime!(2 * nqt));
    let dsa = a_tile::<F>(cmma::MatrixLayout::RowMajor);
    let dsb = a_tile::<F>(cmma::MatrixLayout::RowMajor);
    // dSᵀ and Pᵀ: the [head][slot] tiles read column-major.
    let ta = a_tile::<F>(cmma::MatrixLayout::ColMajor);
    let rb = b_tile::<F>(cmma::MatrixLayout::RowMajor);
    let tile_acc = zero_tile();
    let row_lse = lse_sh[r];
    let row_c = c_sh[r];
    let stage = plane * 256;
    let mut c0 = 0usize;
    while c0 < kk {
        if c0 % WINDOW_SLOTS == 0 {
            load_window::<I, BL>(idx, valid, &mut win_sh, bt, kk, c0, kk, kc);
        }
        gather_chunk::<F, N>(kv, &win_sh, &mut kv_sh, &mut ok_sh, &mut row_sh, &barrier, b, c0 % WINDOW_SLOTS, d, kc, CMMA_UNITS);
        chunk_scores::<F>(&q_sh, &kv_sh, &mut s_sh, plane, d, d, kc, CMMA_HEADS, 8usize);
        if has_dout {
            chunk_scores::<F>(&go_sh, &kv_sh, &mut g_sh, plane, d, dv, kc, CMMA_HEADS, 8usize);
        }
        sync_cube();
        for jj in 0..per {
            let j = jj * 4 + part;
            let mut p = 0.0f32;
            let mut ds = 0.0f32;
            if ok_sh[j] == 1u32 && row_lse > neg_inf {
                p = f32::exp(s_sh[r * ss + j] * scale - row_lse);
                let mut g = row_c;
                if has_dout {
                    g += g_sh[r * ss + j];
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
            cmma::load(&dsa, &ds_sh.slice(rg * 32 * kcp + ks * 16, CMMA_HEADS * kcp), comptime!(kcp as u32));
            cmma::load(&dsb, &ds_sh.slice((rg * 32 + 16) * kcp + ks * 16, CMMA_HEADS * kcp), comptime!(kcp as u32));
            #[unroll]
            for t in 0..nqt {
                let ct = cg * nqt + t;
                if ct < dtiles {
                    cmma::load(&rb, &kv_sh.slice(ks * 16 * dp + ct * 16, kc * dp), comptime!(dp as u32));
                    let a = acc.index(t);
                    cmma::execute::<F, F, f32, f32>(&dsa, &rb, a, a);
                    let a = acc.index(nqt + t);
                    cmma::execute::<F, F, f32, f32>(&dsb, &rb, a, a);
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
            for hs in 0..CMMA_HEADS / 16 {
                cmma::load(&ta, &ds_sh.slice(hs * 16 * kcp + jt * 16, CMMA_HEADS * kcp), comptime!(kcp as u32));
                cmma::load(&rb, &q_sh.slice(hs * 16 * dp + ct * 16, CMMA_HEADS * dp), comptime!(dp as u32));
                cmma::execute::<F, F, f32, f32>(&ta, &rb, &tile_acc, &tile_acc);
            }
            if has_dout {
                if ct < vtiles {
                    #[unroll]
                    for hs in 0..CMMA_HEADS / 16 {
                        cmma::load(&ta, &p_sh.slice(hs * 16 * kcp + jt * 16, CMMA_HEADS * kcp), comptime!(kcp as u32));
                        cmma::load(&rb, &go_sh.slice(hs * 16 * dvp + ct * 16, CMMA_HEADS * dvp), comptime!(dvp as u32));
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
                    atomic_add_f32(dkv, (b * s_len + row) * d + col, s_sh[stage + k], native);
                }
            }
            sync_plane();
            tile += 8;
        }
        sync_cube();
        c0 += kc;
    }

    #[unroll]
    for u in 0..2usize {
        #[unroll]
        for t in 0..nqt {
            let ct = cg * nqt + t;
            if ct < dtiles {
                write_head_tile::<F>(acc.index(u * nqt + t), &mut s_sh, stage, &lse_sh, 0usize, false, dq, bt, heads, h0 + rg * 32 + u * 16, ct, d);
            }
        }
    }
}

/// The tile of a cube of [`sparse_mla_fwd_cmma()`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MlaTile {
    /// Query heads per cube: 32 or 64.
    pub heads: usize,
    /// Planes of 32 units per cube: 4 or 8.
    pub planes: usize,
    /// Selected rows gathered per chunk: 32 or 64.
    pub slots: usize,
}

impl MlaTile {
    /// Whether [`sparse_mla_fwd_cmma()`] supports the tile.
    pub fn supported(self) -> bool {
        [32, 64].contains(&self.heads)
            && [4, 8].contains(&self.planes)
            && [32, 64].contains(&self.slots)
            && self.planes.is_multiple_of(self.heads / 16)
            && self.slots.is_multiple_of(32 * self.planes / self.heads)
    }

    /// Shared memory of the forward's buffers for rows of `d` dims: the query tile and the
    /// chunk's rows (half precision, padded rows), the score copies (or the output staging),
    /// `P`, the per-slot and per-head buffers, and [`ASYNC_GATHER_EXTRA_BYTES`].
    pub fn shared_bytes(self, d: usize) -> usize {
        let (hg, kc) = (self.heads, self.slots);
        let copies = score_copies(hg, kc, self.planes);
        let ss = score_stride(hg, kc, self.planes);
        let scores = (copies * hg * ss).max(256 * self.planes);
        2 * ((hg + kc) * padded(d) + hg * (kc + 8)) + 4 * scores + 8 * kc + 4 * hg + 4 + ASYNC_GATHER_EXTRA_BYTES
    }
}

/// The forward's tiles in the order they are tried (the first that fits in shared memory is
/// taken): 32 heads × 8 planes × 32 slots is the fastest measured (128 registers per unit,
/// 96 KB of shared memory, two cubes per SM).
pub const FWD_TILES: [MlaTile; 3] = [
    MlaTile { heads: 32, planes: 8, slots: 32 },
    MlaTile { heads: 64, planes: 8, slots: 64 },
    MlaTile { heads: 64, planes: 8, slots: 32 },
];

/// The forward's tile for rows of `d` dims in `max_shared` bytes: `forced` if it fits, else
/// (none forced) the first of [`FWD_TILES`] that fits.
pub fn fwd_tile(forced: Option<MlaTile>, d: usize, max_shared: usize) -> Option<MlaTile> {
    let fits = |t: &MlaTile| t.shared_bytes(d) <= max_shared;
    match forced {
        Some(tile) => Some(tile).filter(fits),
        None => FWD_TILES.into_iter().find(fits),
    }
}

/// Slots per chunk of [`sparse_mla_bwd_cmma()`].
pub const BWD_CHUNK: usize = 32;

/// Shared memory of [`sparse_mla_bwd_cmma()`] for rows of `d` dims, `dv` of them values: its
/// tiles (`q`, `d_out` and a chunk of rows; scores, `dP`, `P`, `dS`), the per-slot and
/// per-head buffers, and [`ASYNC_GATHER_EXTRA_BYTES`].
pub fn bwd_shared_bytes(d: usize, dv: usize) -> usize {
    let (heads, kc) = (CMMA_HEADS, BWD_CHUNK);
    let ss = score_stride(heads, kc, 8);
    let halves = (heads + kc) * padded(d) + heads * padded(dv) + 2 * heads * (kc + 8);
    2 * halves + 4 * (2 * heads * ss + 2 * heads) + 8 * kc + ASYNC_GATHER_EXTRA_BYTES
}
