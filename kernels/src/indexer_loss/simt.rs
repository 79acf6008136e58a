//! The indexer loss's kernels in portable CubeCL (every backend and float type), one unit or
//! one cube per query, the selected rows staged in f32.

use cubecl::prelude::*;

use crate::indexer::weighted_relu_score;
use crate::shared::atomic::atomic_add_f32;
use crate::shared::gather::{load_rows, load_slots, shared_dot, stage_heads};

/// `out[b,t,j] = Σ_h w[b,t,h] · ReLU(q[b,t,h] · k[b, idx[b,t,j]])`, `neg_inf` where the slot
/// is not valid. One unit per output.
///
/// Grid: `grid_1d(⌈B·T·K / units⌉)`.
#[cube(launch)]
pub fn indexer_selected_scores<F: Float, I: Int, BL: Int>(
    q: &Tensor<F>,
    w: &Tensor<F>,
    k: &Tensor<F>,
    idx: &Tensor<I>,
    valid: &Tensor<BL>,
    out: &mut Tensor<F>,
    t_len: usize,
    s_len: usize,
    kk: usize,
    heads: usize,
    d: usize,
    neg_inf: f32,
    #[define(F, I, BL)] _dtypes: [StorageType; 3],
) {
    let pos = ABSOLUTE_POS;
    if pos >= out.len() {
        terminate!();
    }
    let bt = pos / kk;
    let b = bt / t_len;
    if valid[pos] == BL::from_int(0) {
        out[pos] = F::cast_from(neg_inf);
    } else {
        let row = usize::cast_from(idx[pos]);
        out[pos] = F::cast_from(weighted_relu_score(
            q,
            w,
            k,
            bt,
            (b * s_len + row) * d,
            heads,
            d,
        ));
    }
}

/// Backward of [`indexer_selected_scores()`] given `grad [B,T,K]` (ignored where not valid):
/// with `dot = q[h]·k[row_j]` and `c[h,j] = grad_j · w[h] · 1[dot > 0]`,
/// `dq[h] = Σ_j c[h,j] · k[row_j]`, `dw[h] = Σ_j grad_j · ReLU(dot)`, and every selected
/// key row gets `Σ_h c[h,j] · q[h]` added to `dk` (f32 `[B,S,D]`, zeroed by the caller;
/// atomically: many queries select the same key).
///
/// One cube per (query, group of `hg` heads): the group's queries in shared memory, the
/// selected keys in chunks of `kc` rows; `dq` and `dw` accumulate in place (each entry
/// owned by one unit, written first with 0). Grid: `grid_1d(B·T)` × `⌈H/hg⌉` on z.
#[cube(launch)]
pub fn indexer_selected_scores_bwd<F: Float, I: Int, BL: Int, A: Int>(
    q: &Tensor<F>,
    w: &Tensor<F>,
    k: &Tensor<F>,
    idx: &Tensor<I>,
    valid: &Tensor<BL>,
    grad: &Tensor<F>,
    dq: &mut Tensor<F>,
    dw: &mut Tensor<F>,
    dk: &mut Tensor<Atomic<A>>,
    bt_len: usize,
    t_len: usize,
    s_len: usize,
    kk: usize,
    heads: usize,
    #[comptime] d: usize,
    #[comptime] hg: usize,
    #[comptime] kc: usize,
    #[comptime] native_atomics: bool,
    #[define(F, I, BL, A)] _dtypes: [StorageType; 4],
) {
    let bt = crate::cube_index();
    if bt >= bt_len {
        terminate!();
    }
    let b = bt / t_len;
    let h0 = CUBE_POS_Z as usize * hg;
    let tid = UNIT_POS as usize;
    let nt = CUBE_DIM as usize;
    let dp = comptime!(d | 1);

    let mut q_sh = SharedMemory::<f32>::new(comptime!(hg * (d | 1)));
    let mut k_sh = SharedMemory::<f32>::new(comptime!(kc * (d | 1)));
    let mut c_sh = SharedMemory::<f32>::new(comptime!(hg * kc)); // grad·w·1[dot > 0]
    let mut r_sh = SharedMemory::<f32>::new(comptime!(hg * kc)); // grad·ReLU(dot)
    let mut w_sh = SharedMemory::<f32>::new(hg);
    let mut g_sh = SharedMemory::<f32>::new(kc);
    let mut ok_sh = SharedMemory::<u32>::new(kc);
    let mut slot_sh = SharedMemory::<u32>::new(kc);

    // The group's queries and weights (0 past the last head), and 0 in this cube's dq, dw.
    let mut i = tid;
    while i < hg * d {
        let hh = i / d;
        let mut v = 0.0f32;
        if h0 + hh < heads {
            let at = (bt * heads + h0 + hh) * d + i % d;
            v = f32::cast_from(q[at]);
            dq[at] = F::cast_from(0.0f32);
        }
        q_sh[hh * dp + i % d] = v;
        i += nt;
    }
    let mut hh = tid;
    while hh < hg {
        let mut v = 0.0f32;
        if h0 + hh < heads {
            v = f32::cast_from(w[bt * heads + h0 + hh]);
            dw[bt * heads + h0 + hh] = F::cast_from(0.0f32);
        }
        w_sh[hh] = v;
        hh += nt;
    }

    let mut c0 = 0usize;
    while c0 < kk {
        let mut j = tid;
        while j < kc {
            let mut g = 0.0f32;
            if c0 + j < kk {
                g = f32::cast_from(grad[bt * kk + c0 + j]);
            }
            g_sh[j] = g;
            j += nt;
        }
        load_slots(idx, valid, &mut ok_sh, &mut slot_sh, bt, kk, c0, kc);
        load_rows::<F>(k, &mut k_sh, &ok_sh, &slot_sh, b, s_len, d, kc, dp, 1usize);
        sync_cube();

        // Per (head, slot): the ReLU's gate and value, times the incoming gradient.
        let mut i = tid;
        while i < hg * kc {
            let hh = i / kc;
            let j = i % kc;
            let mut c = 0.0f32;
            let mut r = 0.0f32;
            if ok_sh[j] == 1u32 {
                let dot = shared_dot(&q_sh, hh * dp, &k_sh, j * dp, d);
                if dot > 0.0f32 {
                    c = g_sh[j] * w_sh[hh];
                    r = g_sh[j] * dot;
                }
            }
            c_sh[i] = c;
            r_sh[i] = r;
            i += nt;
        }
        sync_cube();

        let mut i = tid;
        while i < hg * d {
            let hh = i / d;
            let e = i % d;
            if h0 + hh < heads {
                let mut acc = 0.0f32;
                for j in 0..kc {
                    acc += c_sh[hh * kc + j] * k_sh[j * dp + e];
                }
                let at = (bt * heads + h0 + hh) * d + e;
                dq[at] = F::cast_from(f32::cast_from(dq[at]) + acc);
            }
            i += nt;
        }
        let mut hh = tid;
        while hh < hg {
            if h0 + hh < heads {
                let mut acc = 0.0f32;
                for j in 0..kc {
                    acc += r_sh[hh * kc + j];
                }
                let at = bt * heads + h0 + hh;
                dw[at] = F::cast_from(f32::cast_from(dw[at]) + acc);
            }
            hh += nt;
        }
        let mut i = tid;
        while i < kc * d {
            let j = i / d;
            let e = i % d;
            if ok_sh[j] == 1u32 {
                let mut acc = 0.0f32;
                for hh in 0..hg {
                    acc += c_sh[hh * kc + j] * q_sh[hh * dp + e];
                }
                atomic_add_f32(
                    dk,
                    (b * s_len + slot_sh[j] as usize) * d + e,
                    acc,
                    native_atomics,
                );
            }
            i += nt;
        }
        sync_cube();
        c0 += kc;
    }
}

/// `out[b,t,j] = (1/H) Σ_h exp(scale · q[b,t,h] · kv[b, idx[b,t,j]] − lse[b,t,h])`, 0 where
/// the slot is not valid: the head-averaged attention probabilities of sparse MLA at its
/// selected rows (each head's sum to 1 over the valid slots).
///
/// One cube per query: the selected rows in chunks of `kc` in shared memory, the heads in
/// groups of `hg` against each chunk, the chunk's sums over heads in shared memory.
/// Grid: `grid_1d(B·T)`.
#[cube(launch)]
pub fn sparse_mla_probs<F: Float, I: Int, BL: Int>(
    q: &Tensor<F>,
    kv: &Tensor<F>,
    idx: &Tensor<I>,
    valid: &Tensor<BL>,
    lse: &Tensor<F>,
    out: &mut Tensor<F>,
    bt_len: usize,
    t_len: usize,
    s_len: usize,
    kk: usize,
    heads: usize,
    scale: f32,
    #[comptime] d: usize,
    #[comptime] hg: usize,
    #[comptime] kc: usize,
    #[define(F, I, BL)] _dtypes: [StorageType; 3],
) {
    let bt = crate::cube_index();
    if bt >= bt_len {
        terminate!();
    }
    let b = bt / t_len;
    let tid = UNIT_POS as usize;
    let nt = CUBE_DIM as usize;
    let dp = comptime!(d | 1);

    let mut q_sh = SharedMemory::<f32>::new(comptime!(hg * (d | 1)));
    let mut kv_sh = SharedMemory::<f32>::new(comptime!(kc * (d | 1)));
    let mut e_sh = SharedMemory::<f32>::new(comptime!(hg * kc));
    let mut lse_sh = SharedMemory::<f32>::new(hg);
    let mut p_sh = SharedMemory::<f32>::new(kc);
    let mut ok_sh = SharedMemory::<u32>::new(kc);
    let mut slot_sh = SharedMemory::<u32>::new(kc);
    let inv_heads = 1.0f32 / f32::cast_from(heads);

    let mut c0 = 0usize;
    while c0 < kk {
        let mut j = tid;
        while j < kc {
            p_sh[j] = 0.0f32;
            j += nt;
        }
        load_slots(idx, valid, &mut ok_sh, &mut slot_sh, bt, kk, c0, kc);
        load_rows::<F>(kv, &mut kv_sh, &ok_sh, &slot_sh, b, s_len, d, kc, dp, 1usize);
        let mut h0 = 0usize;
        while h0 < heads {
            stage_heads::<F>(q, &mut q_sh, bt, h0, heads, hg, d, dp, 1usize);
            let mut hh = tid;
            while hh < hg {
                let mut l = 0.0f32;
                if h0 + hh < heads {
                    l = f32::cast_from(lse[bt * heads + h0 + hh]);
                }
                lse_sh[hh] = l;
                hh += nt;
            }
            sync_cube();
            let mut i = tid;
            while i < hg * kc {
                let hh = i / kc;
                let j = i % kc;
                let mut v = 0.0f32;
                // A valid slot means every head's lse is finite.
                #[allow(clippy::collapsible_if)]
                if ok_sh[j] == 1u32 {
                    if h0 + hh < heads {
                        v = f32::exp(scale * shared_dot(&q_sh, hh * dp, &kv_sh, j * dp, d) - lse_sh[hh]);
                    }
                }
                e_sh[i] = v;
                i += nt;
            }
            sync_cube();
            let mut j = tid;
            while j < kc {
                let mut acc = 0.0f32;
                for hh in 0..hg {
                    acc += e_sh[hh * kc + j];
                }
                p_sh[j] += acc;
                j += nt;
            }
            sync_cube();
            h0 += hg;
        }
        let mut j = tid;
        while j < kc {
            if c0 + j < kk {
                out[bt * kk + c0 + j] = F::cast_from(p_sh[j] * inv_heads);
            }
            j += nt;
        }
        sync_cube();
        c0 += kc;
    }
}

/// Heads per cube and selected rows per chunk `(hg, kc)` of the cube-per-query kernels
/// ([`indexer_selected_scores_bwd()`] with `pairs = 2`, [`sparse_mla_probs()`] with `pairs = 1`)
/// for `heads` heads and rows of `d` dims: the largest pair whose shared memory (`(hg + kc)`
/// padded rows of `d`, `pairs` floats per (head, slot), a few per head and slot) fits in
/// `max_shared` bytes.
pub fn tiles(heads: usize, d: usize, pairs: usize, max_shared: usize) -> (usize, usize) {
    let bytes = |hg: usize, kc: usize| 4 * ((hg + kc) * (d | 1) + pairs * hg * kc + hg + 3 * kc);
    [(64, 32), (64, 16), (32, 32), (32, 16), (16, 16), (16, 8), (8, 8), (8, 4), (4, 4), (2, 2)]
        .into_iter()
        .map(|(hg, kc)| (hg.min(heads.max(1)), kc))
        .find(|&(hg, kc)| bytes(hg, kc) <= max_shared)
        .unwrap_or((1, 1))
}
