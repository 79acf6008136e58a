//! Sparse MLA in MQA mode: every head of query `(b, t)` attends to the `K` selected rows of
//! the shared latent `kv [B,S,D]`; values are the first `dv` dims of each row.
//!
//! Layouts (contiguous): `q [B,T,H,D]`, `kv [B,S,D]`, `idx [B,T,K]` (int), `valid [B,T,K]`
//! (bool as int), `out [B,T,H,dv]`, `lse [B,T,H]`. Softmax is computed online in f32 over
//! chunks of `kc` slots; rows with nothing valid get a zero output and `lse = neg_inf`.
//!
//! v1 (`sparse_mla_fwd`): one cube per `(b, t, head group of hg heads)`. Per chunk, the
//! cube loads the `kc` gathered latent rows into shared memory once (coalesced), computes
//! the `hg × kc` scores (one per thread), updates the running max / sum per head (one thread
//! per head), then every thread accumulates its output dims for all `hg` heads in
//! registers. Each gathered row is read once per head group instead of once per head.

use cubecl::prelude::*;

/// Sparse MLA forward, see the module doc. Grid: `(grid_1d(B·T), H / hg)`; `nt` threads.
#[cube(launch)]
pub fn sparse_mla_fwd<F: Float, I: Int, BL: Int>(
    q: &Tensor<F>,
    kv: &Tensor<F>,
    idx: &Tensor<I>,
    valid: &Tensor<BL>,
    out: &mut Tensor<F>,
    lse: &mut Tensor<F>,
    bt_len: usize,
    t_len: usize,
    heads: usize,
    s_len: usize,
    kk: usize,
    scale: f32,
    neg_inf: f32,
    #[comptime] d: usize,
    #[comptime] dv: usize,
    #[comptime] hg: usize,
    #[comptime] kc: usize,
    #[comptime] nt: usize,
    #[define(F, I, BL)] _dtypes: [StorageType; 3],
) {
    let bt = crate::cube_index();
    if bt >= bt_len {
        terminate!();
    }
    let b = bt / t_len;
    let h0 = CUBE_POS_Z as usize * hg;
    let tid = UNIT_POS as usize;
    let dp = comptime!(d | 1); // odd row stride: rows read by neighbouring threads hit distinct banks
    let dvt = comptime!(dv.div_ceil(nt));

    let mut q_sh = SharedMemory::<f32>::new(comptime!(hg * (d | 1)));
    let mut kv_sh = SharedMemory::<f32>::new(comptime!(kc * (d | 1)));
    let mut p_sh = SharedMemory::<f32>::new(comptime!(hg * kc));
    let mut ok_sh = SharedMemory::<u32>::new(kc);
    let mut slot_sh = SharedMemory::<u32>::new(kc);
    let mut m_sh = SharedMemory::<f32>::new(hg);
    let mut l_sh = SharedMemory::<f32>::new(hg);
    let mut alpha_sh = SharedMemory::<f32>::new(hg);
    let mut has_sh = SharedMemory::<u32>::new(hg);

    let mut i = tid;
    while i < hg * d {
        let hh = i / d;
        let e = i % d;
        let mut v = 0.0f32;
        if h0 + hh < heads {
            v = f32::cast_from(q[(bt * heads + h0 + hh) * d + e]);
        }
        q_sh[hh * dp + e] = v;
        i += nt;
    }
    if tid < hg {
        m_sh[tid] = 0.0f32;
        l_sh[tid] = 0.0f32;
        has_sh[tid] = 0u32;
    }
    let mut acc = Array::<f32>::new(comptime!(hg * dv.div_ceil(nt)));
    #[unroll]
    for a in 0..hg * dvt {
        acc[a] = 0.0f32;
    }

    let mut c0 = 0usize;
    while c0 < kk {
        // Which slots of the chunk are valid, and their rows.
        let mut j = tid;
        while j < kc {
            let slot = c0 + j;
            let mut ok = 0u32;
            let mut row = 0u32;
            if slot < kk {
                if valid[bt * kk + slot] != BL::from_int(0) {
                    ok = 1u32;
                    row = u32::cast_from(idx[bt * kk + slot]);
                }
            }
            ok_sh[j] = ok;
            slot_sh[j] = row;
            j += nt;
        }
        sync_cube();
        let mut i = tid;
        while i < kc * d {
            let j = i / d;
            let e = i % d;
            let mut v = 0.0f32;
            if ok_sh[j] == 1u32 {
                v = f32::cast_from(kv[(b * s_len + slot_sh[j] as usize) * d + e]);
            }
            kv_sh[j * dp + e] = v;
            i += nt;
        }
        sync_cube();
        // Scores, one per thread.
        let mut i = tid;
        while i < hg * kc {
            let hh = i / kc;
            let j = i % kc;
            let mut dot = 0.0f32;
            for e in 0..d {
                dot += q_sh[hh * dp + e] * kv_sh[j * dp + e];
            }
            p_sh[i] = dot * scale;
            i += nt;
        }
        sync_cube();
        // Online softmax update, one thread per head.
        if tid < hg {
            let mut cm = 0.0f32;
            let mut cany = false;
            for j in 0..kc {
                if ok_sh[j] == 1u32 {
                    let v = p_sh[tid * kc + j];
                    if !cany || v > cm {
                        cm = v;
                    }
                    cany = true;
                }
            }
            let mut alpha = 1.0f32;
            if cany {
                let mut m_new = cm;
                if has_sh[tid] == 1u32 {
                    m_new = f32::max(m_sh[tid], cm);
                    alpha = f32::exp(m_sh[tid] - m_new);
                } else {
                    alpha = 0.0f32;
                }
                let mut sum = 0.0f32;
                for j in 0..kc {
                    let mut p = 0.0f32;
                    if ok_sh[j] == 1u32 {
                        p = f32::exp(p_sh[tid * kc + j] - m_new);
                    }
                    p_sh[tid * kc + j] = p;
                    sum += p;
                }
                l_sh[tid] = l_sh[tid] * alpha + sum;
                m_sh[tid] = m_new;
                has_sh[tid] = 1u32;
            } else {
                for j in 0..kc {
                    p_sh[tid * kc + j] = 0.0f32;
                }
            }
            alpha_sh[tid] = alpha;
        }
        sync_cube();
        // Rescale and accumulate this thread's output dims for every head of the group.
        #[unroll]
        for hh in 0..hg {
            let a = alpha_sh[hh];
            #[unroll]
            for r in 0..dvt {
                acc[hh * dvt + r] *= a;
            }
        }
        for j in 0..kc {
            if ok_sh[j] == 1u32 {
                #[unroll]
                for r in 0..dvt {
                    let e = tid + r * nt;
                    if e < dv {
                        let v = kv_sh[j * dp + e];
                        #[unroll]
                        for hh in 0..hg {
                            acc[hh * dvt + r] += p_sh[hh * kc + j] * v;
                        }
                    }
                }
            }
        }
        sync_cube();
        c0 += kc;
    }

    #[unroll]
    for hh in 0..hg {
        if h0 + hh < heads {
            let has = has_sh[hh] == 1u32;
            let inv = 1.0f32 / l_sh[hh];
            #[unroll]
            for r in 0..dvt {
                let e = tid + r * nt;
                if e < dv {
                    let mut v = 0.0f32;
                    if has {
                        v = acc[hh * dvt + r] * inv;
                    }
                    out[(bt * heads + h0 + hh) * dv + e] = F::cast_from(v);
                }
            }
        }
    }
    if tid < hg && h0 + tid < heads {
        let mut v = neg_inf;
        if has_sh[tid] == 1u32 {
            v = m_sh[tid] + f32::ln(l_sh[tid]);
        }
        lse[bt * heads + h0 + tid] = F::cast_from(v);
    }
}
