//! Sparse MLA in portable CubeCL (the contract of [`crate::sparse_mla`]; every tensor
//! contiguous), the fallback on every backend. Softmax is computed online in f32 over chunks
//! of `kc` slots.
//!
//! [`sparse_mla_fwd`]: one cube per `(b, t, head group of hg heads)`. Per chunk, the
//! cube loads the `kc` gathered latent rows into shared memory once (coalesced), computes
//! the `hg × kc` scores (one per thread), updates the running max / sum per head (one thread
//! per head), then every thread accumulates its output dims for all `hg` heads in
//! registers. Each gathered row is read once per head group instead of once per head.

use cubecl::prelude::*;

use crate::shared::atomic::atomic_add_f32;
use crate::shared::gather::{load_rows, load_slots};

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
        load_slots::<I, BL>(idx, valid, &mut ok_sh, &mut slot_sh, bt, kk, c0, kc);
        load_rows::<F>(kv, &mut kv_sh, &ok_sh, &slot_sh, b, s_len, d, kc);
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
            online_softmax_step(tid, &mut p_sh, &ok_sh, &mut m_sh, &mut l_sh, &mut alpha_sh, &mut has_sh, kc);
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

/// Sparse MLA backward, see `DsaBackend::sparse_mla_backward` in dsa-burn for the formulas.
///
/// Same grid and tiling as [`sparse_mla_fwd`]. Per chunk of `kc` slots: gathered rows to
/// shared memory; `p = exp(scale·q·kv − lse)`, `dp = d_out·v`, `ds = p·(dp − δ + d_lse)`
/// (one (head, slot) per thread); then each thread accumulates `dq` for its dims of all
/// heads of the group in registers, and adds `Σ_h scale·ds·q + p·d_out` for its dims of
/// every valid slot to `dkv` (f32, `[B,S,D]`, zeroed by the caller) atomically: a latent row
/// is selected by many queries. `has_dout` / `has_dlse` say which gradients are given
/// (absent ones are dummy tensors never read). With `with_dkv = false` only `dq` is
/// computed and [`sparse_mla_bwd_dkv`] does `dkv` with `H/hg` times fewer atomics.
#[cube(launch)]
pub fn sparse_mla_bwd<F: Float, I: Int, BL: Int, A: Int>(
    q: &Tensor<F>,
    kv: &Tensor<F>,
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
    #[comptime] d: usize,
    #[comptime] dv: usize,
    #[comptime] hg: usize,
    #[comptime] kc: usize,
    #[comptime] nt: usize,
    #[comptime] has_dout: bool,
    #[comptime] has_dlse: bool,
    #[comptime] native_atomics: bool,
    #[comptime] with_dkv: bool,
    #[define(F, I, BL, A)] _dtypes: [StorageType; 4],
) {
    let bt = crate::cube_index();
    if bt >= bt_len {
        terminate!();
    }
    let b = bt / t_len;
    let h0 = CUBE_POS_Z as usize * hg;
    let tid = UNIT_POS as usize;
    let dp = comptime!(d | 1);
    let dt = comptime!(d.div_ceil(nt));

    let mut q_sh = SharedMemory::<f32>::new(comptime!(hg * (d | 1)));
    let mut go_sh = SharedMemory::<f32>::new(comptime!(hg * dv));
    let mut kv_sh = SharedMemory::<f32>::new(comptime!(kc * (d | 1)));
    let mut p_sh = SharedMemory::<f32>::new(comptime!(hg * kc));
    let mut ds_sh = SharedMemory::<f32>::new(comptime!(hg * kc));
    let mut ok_sh = SharedMemory::<u32>::new(kc);
    let mut slot_sh = SharedMemory::<u32>::new(kc);
    let mut lse_sh = SharedMemory::<f32>::new(hg);
    let mut c_sh = SharedMemory::<f32>::new(hg); // d_lse − δ per head

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
    if has_dout {
        let mut i = tid;
        while i < hg * dv {
            let hh = i / dv;
            let e = i % dv;
            let mut v = 0.0f32;
            if h0 + hh < heads {
                v = f32::cast_from(d_out[(bt * heads + h0 + hh) * dv + e]);
            }
            go_sh[i] = v;
            i += nt;
        }
    }
    if tid < hg {
        let mut l = 0.0f32;
        let mut c = 0.0f32;
        if h0 + tid < heads {
            let row = bt * heads + h0 + tid;
            l = f32::cast_from(lse[row]);
            if has_dlse {
                c = f32::cast_from(d_lse[row]);
            }
            if has_dout {
                // δ = Σ_e d_out · out
                let mut delta = 0.0f32;
                for e in 0..dv {
                    delta += f32::cast_from(d_out[row * dv + e]) * f32::cast_from(out[row * dv + e]);
                }
                c -= delta;
            }
        }
        // Rows with nothing valid have lse = -inf and no valid slot: p stays 0.
        if f32::is_inf(l) {
            l = 0.0f32;
        }
        lse_sh[tid] = l;
        c_sh[tid] = c;
    }
    let mut acc = Array::<f32>::new(comptime!(hg * d.div_ceil(nt)));
    #[unroll]
    for a in 0..hg * dt {
        acc[a] = 0.0f32;
    }

    let mut c0 = 0usize;
    while c0 < kk {
        load_slots::<I, BL>(idx, valid, &mut ok_sh, &mut slot_sh, bt, kk, c0, kc);
        load_rows::<F>(kv, &mut kv_sh, &ok_sh, &slot_sh, b, s_len, d, kc);
        sync_cube();
        // p and ds, one (head, slot) per thread.
        let mut i = tid;
        while i < hg * kc {
            let hh = i / kc;
            let j = i % kc;
            let mut p = 0.0f32;
            let mut ds = 0.0f32;
            if ok_sh[j] == 1u32 && h0 + hh < heads {
                let mut dot = 0.0f32;
                for e in 0..d {
                    dot += q_sh[hh * dp + e] * kv_sh[j * dp + e];
                }
                p = f32::exp(dot * scale - lse_sh[hh]);
                let mut g = c_sh[hh];
                if has_dout {
                    let mut dpv = 0.0f32;
                    for e in 0..dv {
                        dpv += go_sh[hh * dv + e] * kv_sh[j * dp + e];
                    }
                    g += dpv;
                }
                ds = p * g;
            }
            p_sh[i] = p;
            ds_sh[i] = ds;
            i += nt;
        }
        sync_cube();
        // dq (registers) and dkv (atomics) for this thread's dims.
        for j in 0..kc {
            if ok_sh[j] == 1u32 {
                let row0 = (b * s_len + slot_sh[j] as usize) * d;
                #[unroll]
                for r in 0..dt {
                    let e = tid + r * nt;
                    if e < d {
                        let v = kv_sh[j * dp + e];
                        #[unroll]
                        for hh in 0..hg {
                            acc[hh * dt + r] += ds_sh[hh * kc + j] * v;
                        }
                        if with_dkv {
                            let mut g = 0.0f32;
                            #[unroll]
                            for hh in 0..hg {
                                g += ds_sh[hh * kc + j] * q_sh[hh * dp + e];
                            }
                            g *= scale;
                            if has_dout {
                                if e < dv {
                                    #[unroll]
                                    for hh in 0..hg {
                                        g += p_sh[hh * kc + j] * go_sh[hh * dv + e];
                                    }
                                }
                            }
                            atomic_add_f32::<A>(dkv, row0 + e, g, native_atomics);
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
            #[unroll]
            for r in 0..dt {
                let e = tid + r * nt;
                if e < d {
                    dq[(bt * heads + h0 + hh) * d + e] = F::cast_from(acc[hh * dt + r] * scale);
                }
            }
        }
    }
}

/// Forward, register-tiled: one cube of 16×16 threads per `(b, t, group of hg = 16·hm
/// heads)`, chunks of `kc = 16·km` slots. The group's queries and each chunk's gathered
/// rows are staged in shared memory *transposed* (`[dim][head]`, `[dim][slot]` with an odd
/// slot stride), so that in the score GEMM thread `(ty, tx)` computes heads `ty + 16·i` ×
/// slots `tx + 16·j` reading conflict-free, and in the `P·V` GEMM it owns heads
/// `ty + 16·i` × value dims `tx + 16·v` (`hm · ⌈dv/16⌉` accumulators in registers). The
/// online softmax runs one thread per head as in [`sparse_mla_fwd`]. Grid: `(grid_1d(B·T), ⌈H/hg⌉)`.
#[cube(launch)]
pub fn sparse_mla_fwd_tiled<F: Float, I: Int, BL: Int>(
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
    #[comptime] hm: usize,
    #[comptime] km: usize,
    #[define(F, I, BL)] _dtypes: [StorageType; 3],
) {
    let bt = crate::cube_index();
    if bt >= bt_len {
        terminate!();
    }
    let b = bt / t_len;
    let hg = comptime!(16 * hm);
    let kc = comptime!(16 * km);
    let hgp = comptime!(16 * hm + 1);
    let kcp = comptime!(16 * km + 1);
    let vt = comptime!(dv.div_ceil(16));
    let h0 = CUBE_POS_Z as usize * hg;
    let tid = UNIT_POS as usize;
    let ty = tid / 16;
    let tx = tid % 16;

    let mut q_sh = SharedMemory::<f32>::new(comptime!(d * (16 * hm + 1)));
    let mut kv_sh = SharedMemory::<f32>::new(comptime!(d * (16 * km + 1)));
    let mut p_sh = SharedMemory::<f32>::new(comptime!(256 * hm * km));
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
        q_sh[e * hgp + hh] = v;
        i += 256usize;
    }
    if tid < hg {
        m_sh[tid] = 0.0f32;
        l_sh[tid] = 0.0f32;
        has_sh[tid] = 0u32;
    }
    let mut acc = Array::<f32>::new(comptime!(hm * dv.div_ceil(16)));
    #[unroll]
    for a in 0..hm * vt {
        acc[a] = 0.0f32;
    }

    let mut c0 = 0usize;
    while c0 < kk {
        load_slots::<I, BL>(idx, valid, &mut ok_sh, &mut slot_sh, bt, kk, c0, kc);
        let mut i = tid;
        while i < kc * d {
            let j = i / d;
            let e = i % d;
            let mut v = 0.0f32;
            if ok_sh[j] == 1u32 {
                v = f32::cast_from(kv[(b * s_len + slot_sh[j] as usize) * d + e]);
            }
            kv_sh[e * kcp + j] = v;
            i += 256usize;
        }
        sync_cube();
        // Scores: hm × km per thread.
        let mut sc = Array::<f32>::new(comptime!(hm * km));
        #[unroll]
        for a in 0..hm * km {
            sc[a] = 0.0f32;
        }
        for e in 0..d {
            let mut qa = Array::<f32>::new(hm);
            #[unroll]
            for ii in 0..hm {
                qa[ii] = q_sh[e * hgp + ii * 16 + ty];
            }
            #[unroll]
            for jj in 0..km {
                let kvv = kv_sh[e * kcp + jj * 16 + tx];
                #[unroll]
                for ii in 0..hm {
                    sc[ii * km + jj] += qa[ii] * kvv;
                }
            }
        }
        #[unroll]
        for ii in 0..hm {
            #[unroll]
            for jj in 0..km {
                p_sh[(ii * 16 + ty) * kc + jj * 16 + tx] = sc[ii * km + jj] * scale;
            }
        }
        sync_cube();
        // Online softmax update, one thread per head.
        if tid < hg {
            online_softmax_step(tid, &mut p_sh, &ok_sh, &mut m_sh, &mut l_sh, &mut alpha_sh, &mut has_sh, kc);
        }
        sync_cube();
        // P·V: heads ty + 16·ii × dims tx + 16·vv.
        #[unroll]
        for ii in 0..hm {
            let a = alpha_sh[ii * 16 + ty];
            #[unroll]
            for vv in 0..vt {
                acc[ii * vt + vv] *= a;
            }
        }
        for j in 0..kc {
            let mut pa = Array::<f32>::new(hm);
            #[unroll]
            for ii in 0..hm {
                pa[ii] = p_sh[(ii * 16 + ty) * kc + j];
            }
            #[unroll]
            for vv in 0..vt {
                let e = vv * 16 + tx;
                if e < dv {
                    let v = kv_sh[e * kcp + j];
                    #[unroll]
                    for ii in 0..hm {
                        acc[ii * vt + vv] += pa[ii] * v;
                    }
                }
            }
        }
        sync_cube();
        c0 += kc;
    }

    #[unroll]
    for ii in 0..hm {
        let hh = ii * 16 + ty;
        if h0 + hh < heads {
            let has = has_sh[hh] == 1u32;
            let inv = 1.0f32 / l_sh[hh];
            #[unroll]
            for vv in 0..vt {
                let e = vv * 16 + tx;
                if e < dv {
                    let mut v = 0.0f32;
                    if has {
                        v = acc[ii * vt + vv] * inv;
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

/// Backward, `dkv` part: one cube per `(b, t)` and all its heads, so that each selected
/// row receives one atomic add per dim from each query ([`sparse_mla_bwd`] with `dkv` adds
/// once per head group: `H/hg` times more atomics). Per chunk of `kc` slots the gathered rows stay in shared
/// memory while the heads are walked in groups of `hb` (their `q` and `d_out` staged in
/// shared memory): `p` and `ds` are recomputed (one (head, slot) pair per thread), and
/// each thread accumulates `Σ_h scale·ds·q + p·d_out` for its dims of every slot of the
/// chunk in registers; the chunk ends with the atomic adds. `δ = Σ d_out·out` is computed
/// once per head (`hcap ≥ H` entries of shared memory). `dq` comes from
/// [`sparse_mla_bwd`] with `with_dkv = false`. Grid: `grid_1d(B·T)`, `nt` threads.
#[cube(launch)]
pub fn sparse_mla_bwd_dkv<F: Float, I: Int, BL: Int, A: Int>(
    q: &Tensor<F>,
    kv: &Tensor<F>,
    idx: &Tensor<I>,
    valid: &Tensor<BL>,
    out: &Tensor<F>,
    lse: &Tensor<F>,
    d_out: &Tensor<F>,
    d_lse: &Tensor<F>,
    dkv: &mut Tensor<Atomic<A>>,
    bt_len: usize,
    t_len: usize,
    heads: usize,
    s_len: usize,
    kk: usize,
    scale: f32,
    #[comptime] d: usize,
    #[comptime] dv: usize,
    #[comptime] hb: usize,
    #[comptime] kc: usize,
    #[comptime] nt: usize,
    #[comptime] hcap: usize,
    #[comptime] has_dout: bool,
    #[comptime] has_dlse: bool,
    #[comptime] native_atomics: bool,
    #[define(F, I, BL, A)] _dtypes: [StorageType; 4],
) {
    let bt = crate::cube_index();
    if bt >= bt_len {
        terminate!();
    }
    let b = bt / t_len;
    let tid = UNIT_POS as usize;
    let dp = comptime!(d | 1);
    let dt = comptime!(d.div_ceil(nt));

    let mut kv_sh = SharedMemory::<f32>::new(comptime!(kc * (d | 1)));
    let mut q_sh = SharedMemory::<f32>::new(comptime!(hb * (d | 1)));
    let mut go_sh = SharedMemory::<f32>::new(comptime!(hb * dv));
    let mut p_sh = SharedMemory::<f32>::new(comptime!(hb * kc));
    let mut ds_sh = SharedMemory::<f32>::new(comptime!(hb * kc));
    let mut ok_sh = SharedMemory::<u32>::new(kc);
    let mut slot_sh = SharedMemory::<u32>::new(kc);
    let mut lse_sh = SharedMemory::<f32>::new(hcap);
    let mut c_sh = SharedMemory::<f32>::new(hcap); // d_lse − δ per head

    // Per-head lse (−inf → 0: such rows have no valid slot) and d_lse − δ.
    let mut h = tid;
    while h < heads {
        let row = bt * heads + h;
        let mut l = f32::cast_from(lse[row]);
        if f32::is_inf(l) {
            l = 0.0f32;
        }
        let mut c = 0.0f32;
        if has_dlse {
            c = f32::cast_from(d_lse[row]);
        }
        if has_dout {
            let mut delta = 0.0f32;
            for e in 0..dv {
                delta += f32::cast_from(d_out[row * dv + e]) * f32::cast_from(out[row * dv + e]);
            }
            c -= delta;
        }
        lse_sh[h] = l;
        c_sh[h] = c;
        h += nt;
    }

    let mut c0 = 0usize;
    while c0 < kk {
        load_slots::<I, BL>(idx, valid, &mut ok_sh, &mut slot_sh, bt, kk, c0, kc);
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
        let mut acc = Array::<f32>::new(comptime!(kc * d.div_ceil(nt)));
        #[unroll]
        for a in 0..kc * dt {
            acc[a] = 0.0f32;
        }
        let mut g0 = 0usize;
        while g0 < heads {
            // Stage this head group's q and d_out (zeros past the last head).
            let mut i = tid;
            while i < hb * d {
                let hh = i / d;
                let e = i % d;
                let mut v = 0.0f32;
                if g0 + hh < heads {
                    v = f32::cast_from(q[(bt * heads + g0 + hh) * d + e]);
                }
                q_sh[hh * dp + e] = v;
                i += nt;
            }
            if has_dout {
                let mut i = tid;
                while i < hb * dv {
                    let hh = i / dv;
                    let e = i % dv;
                    let mut v = 0.0f32;
                    if g0 + hh < heads {
                        v = f32::cast_from(d_out[(bt * heads + g0 + hh) * dv + e]);
                    }
                    go_sh[i] = v;
                    i += nt;
                }
            }
            sync_cube();
            let mut i = tid;
            while i < hb * kc {
                let hh = i / kc;
                let j = i % kc;
                let mut p = 0.0f32;
                let mut ds = 0.0f32;
                if ok_sh[j] == 1u32 && g0 + hh < heads {
                    let mut dot = 0.0f32;
                    for e in 0..d {
                        dot += q_sh[hh * dp + e] * kv_sh[j * dp + e];
                    }
                    p = f32::exp(dot * scale - lse_sh[g0 + hh]);
                    let mut g = c_sh[g0 + hh];
                    if has_dout {
                        let mut dpv = 0.0f32;
                        for e in 0..dv {
                            dpv += go_sh[hh * dv + e] * kv_sh[j * dp + e];
                        }
                        g += dpv;
                    }
                    ds = p * g * scale;
                }
                p_sh[i] = p;
                ds_sh[i] = ds;
                i += nt;
            }
            sync_cube();
            for j in 0..kc {
                if ok_sh[j] == 1u32 {
                    #[unroll]
                    for r in 0..dt {
                        let e = tid + r * nt;
                        if e < d {
                            let mut g = 0.0f32;
                            #[unroll]
                            for hh in 0..hb {
                                g += ds_sh[hh * kc + j] * q_sh[hh * dp + e];
                            }
                            if has_dout {
                                if e < dv {
                                    #[unroll]
                                    for hh in 0..hb {
                                        g += p_sh[hh * kc + j] * go_sh[hh * dv + e];
                                    }
                                }
                            }
                            acc[j * dt + r] += g;
                        }
                    }
                }
            }
            sync_cube();
            g0 += hb;
        }
        for j in 0..kc {
            if ok_sh[j] == 1u32 {
                let row0 = (b * s_len + slot_sh[j] as usize) * d;
                #[unroll]
                for r in 0..dt {
                    let e = tid + r * nt;
                    if e < d {
                        atomic_add_f32::<A>(dkv, row0 + e, acc[j * dt + r], native_atomics);
                    }
                }
            }
        }
        sync_cube();
        c0 += kc;
    }
}

/// One step of the online softmax for head `tid` over a chunk of `kc` scores (`p_sh` row
/// `tid`, valid where `ok_sh` is 1): the running max `m_sh`, sum `l_sh` and "a score was
/// seen" `has_sh` advance; the row becomes exp(score − max) (0 where invalid) and
/// `alpha_sh[tid]` the factor that rescales the output accumulated so far. Shared by the
/// two forward kernels.
#[cube]
#[allow(clippy::too_many_arguments)]
fn online_softmax_step(
    tid: usize,
    p_sh: &mut SharedMemory<f32>,
    ok_sh: &SharedMemory<u32>,
    m_sh: &mut SharedMemory<f32>,
    l_sh: &mut SharedMemory<f32>,
    alpha_sh: &mut SharedMemory<f32>,
    has_sh: &mut SharedMemory<u32>,
    #[comptime] kc: usize,
) {
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
