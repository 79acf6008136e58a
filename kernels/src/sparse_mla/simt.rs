//! Sparse MLA in portable CubeCL (the contract of [`crate::sparse_mla`]; every tensor
//! contiguous), the fallback on every backend. Softmax is computed online in f32 over chunks
//! of `kc` slots.
//!
//! [`sparse_mla_fwd()`]: one cube per `(b, t, head group of hg heads)`. Per chunk, the
//! cube loads the `kc` gathered latent rows into shared memory once (coalesced), computes
//! the `hg × kc` scores (one per thread), updates the running max / sum per head (one thread
//! per head), then every thread accumulates its output dims for all `hg` heads in
//! registers. Each gathered row is read once per head group instead of once per head.

use cubecl::prelude::*;

use crate::shared::atomic::atomic_add_f32;
use crate::shared::gather::{load_rows, load_slots, shared_dot, stage_heads};

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

    stage_heads::<F>(q, &mut q_sh, bt, h0, heads, hg, d, dp, 1usize);
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
        load_rows::<F>(kv, &mut kv_sh, &ok_sh, &slot_sh, b, s_len, d, kc, dp, 1usize);
        sync_cube();
        // Scores, one per thread.
        let mut i = tid;
        while i < hg * kc {
            let hh = i / kc;
            let j = i % kc;
            p_sh[i] = shared_dot(&q_sh, hh * dp, &kv_sh, j * dp, d) * scale;
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

    write_out::<F>(out, &acc, &l_sh, &has_sh, bt, h0, heads, 0usize, tid, hg, 1usize, dvt, nt, dv);
    write_lse::<F>(lse, &m_sh, &l_sh, &has_sh, bt, h0, heads, neg_inf, hg);
}

/// Sparse MLA backward, see `DsaBackend::sparse_mla_backward` in dsa-burn for the formulas.
///
/// Same grid and tiling as [`sparse_mla_fwd()`]. Per chunk of `kc` slots: gathered rows to
/// shared memory; `p = exp(scale·q·kv − lse)`, `dp = d_out·v`, `ds = p·(dp − δ + d_lse)`
/// (one (head, slot) per thread); then each thread accumulates `dq` for its dims of all
/// heads of the group in registers, and adds `Σ_h scale·ds·q + p·d_out` for its dims of
/// every valid slot to `dkv` (f32, `[B,S,D]`, zeroed by the caller) atomically: a latent row
/// is selected by many queries. `has_dout` / `has_dlse` say which gradients are given
/// (absent ones are dummy tensors never read). With `with_dkv = false` only `dq` is
/// computed and [`sparse_mla_bwd_dkv()`] does `dkv` with `H/hg` times fewer atomics.
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

    stage_heads::<F>(q, &mut q_sh, bt, h0, heads, hg, d, dp, 1usize);
    if has_dout {
        stage_heads::<F>(d_out, &mut go_sh, bt, h0, heads, hg, dv, dv, 1usize);
    }
    if tid < hg {
        stage_lse_grad::<F>(lse, d_lse, out, d_out, &mut lse_sh, &mut c_sh, bt * heads + h0 + tid, tid, h0 + tid < heads, dv, has_dout, has_dlse);
    }
    let mut acc = Array::<f32>::new(comptime!(hg * d.div_ceil(nt)));
    #[unroll]
    for a in 0..hg * dt {
        acc[a] = 0.0f32;
    }

    let mut c0 = 0usize;
    while c0 < kk {
        load_slots::<I, BL>(idx, valid, &mut ok_sh, &mut slot_sh, bt, kk, c0, kc);
        load_rows::<F>(kv, &mut kv_sh, &ok_sh, &slot_sh, b, s_len, d, kc, dp, 1usize);
        sync_cube();
        // p and ds, one (head, slot) per thread.
        chunk_p_ds(&q_sh, &kv_sh, &go_sh, &ok_sh, &lse_sh, &c_sh, &mut p_sh, &mut ds_sh, h0, heads, 0usize, scale, 1.0f32, hg, kc, d, dv, has_dout);
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
                            let g = kv_grad(&ds_sh, &p_sh, &q_sh, &go_sh, j, e, scale, hg, kc, d, dv, has_dout);
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
/// online softmax runs one thread per head as in [`sparse_mla_fwd()`]. Grid: `(grid_1d(B·T), ⌈H/hg⌉)`.
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

    stage_heads::<F>(q, &mut q_sh, bt, h0, heads, hg, d, 1usize, hgp);
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
        load_rows::<F>(kv, &mut kv_sh, &ok_sh, &slot_sh, b, s_len, d, kc, 1usize, kcp);
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

    write_out::<F>(out, &acc, &l_sh, &has_sh, bt, h0, heads, ty, tx, hm, 16usize, vt, 16usize, dv);
    write_lse::<F>(lse, &m_sh, &l_sh, &has_sh, bt, h0, heads, neg_inf, hg);
}

/// Backward, `dkv` part: one cube per `(b, t)` and all its heads, so that each selected
/// row receives one atomic add per dim from each query ([`sparse_mla_bwd()`] with `dkv` adds
/// once per head group: `H/hg` times more atomics). Per chunk of `kc` slots the gathered rows stay in shared
/// memory while the heads are walked in groups of `hb` (their `q` and `d_out` staged in
/// shared memory): `p` and `ds` are recomputed (one (head, slot) pair per thread), and
/// each thread accumulates `Σ_h scale·ds·q + p·d_out` for its dims of every slot of the
/// chunk in registers; the chunk ends with the atomic adds. `δ = Σ d_out·out` is computed
/// once per head (`hcap ≥ H` entries of shared memory). `dq` comes from
/// [`sparse_mla_bwd()`] with `with_dkv = false`. Grid: `grid_1d(B·T)`, `nt` threads.
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
        stage_lse_grad::<F>(lse, d_lse, out, d_out, &mut lse_sh, &mut c_sh, bt * heads + h, h, true, dv, has_dout, has_dlse);
        h += nt;
    }

    let mut c0 = 0usize;
    while c0 < kk {
        load_slots::<I, BL>(idx, valid, &mut ok_sh, &mut slot_sh, bt, kk, c0, kc);
        load_rows::<F>(kv, &mut kv_sh, &ok_sh, &slot_sh, b, s_len, d, kc, dp, 1usize);
        let mut acc = Array::<f32>::new(comptime!(kc * d.div_ceil(nt)));
        #[unroll]
        for a in 0..kc * dt {
            acc[a] = 0.0f32;
        }
        let mut g0 = 0usize;
        while g0 < heads {
            // Stage this head group's q and d_out (zeros past the last head).
            stage_heads::<F>(q, &mut q_sh, bt, g0, heads, hb, d, dp, 1usize);
            if has_dout {
                stage_heads::<F>(d_out, &mut go_sh, bt, g0, heads, hb, dv, dv, 1usize);
            }
            sync_cube();
            chunk_p_ds(&q_sh, &kv_sh, &go_sh, &ok_sh, &lse_sh, &c_sh, &mut p_sh, &mut ds_sh, g0, heads, g0, scale, scale, hb, kc, d, dv, has_dout);
            sync_cube();
            for j in 0..kc {
                if ok_sh[j] == 1u32 {
                    #[unroll]
                    for r in 0..dt {
                        let e = tid + r * nt;
                        if e < d {
                            acc[j * dt + r] += kv_grad(&ds_sh, &p_sh, &q_sh, &go_sh, j, e, 1.0f32, hb, kc, d, dv, has_dout);
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

/// Writes the forward's normalised output `acc / l` (0 where no score was seen) of query row
/// `bt`: accumulator `acc[i·cols + r]` is head `h0 + i·head_step + head_off`, value dim
/// `r·dim_step + dim_off` (heads past `heads` and dims past `dv` are not written).
#[cube]
#[allow(clippy::too_many_arguments)]
fn write_out<F: Float>(
    out: &mut Tensor<F>,
    acc: &Array<f32>,
    l_sh: &SharedMemory<f32>,
    has_sh: &SharedMemory<u32>,
    bt: usize,
    h0: usize,
    heads: usize,
    head_off: usize,
    dim_off: usize,
    #[comptime] rows: usize,
    #[comptime] head_step: usize,
    #[comptime] cols: usize,
    #[comptime] dim_step: usize,
    #[comptime] dv: usize,
) {
    #[unroll]
    for i in 0..rows {
        let hh = i * head_step + head_off;
        if h0 + hh < heads {
            let has = has_sh[hh] == 1u32;
            let inv = 1.0f32 / l_sh[hh];
            #[unroll]
            for r in 0..cols {
                let e = r * dim_step + dim_off;
                if e < dv {
                    let mut v = 0.0f32;
                    if has {
                        v = acc[i * cols + r] * inv;
                    }
                    out[(bt * heads + h0 + hh) * dv + e] = F::cast_from(v);
                }
            }
        }
    }
}

/// Writes `lse = m + ln l` (`neg_inf` where no score was seen) of the cube's heads
/// `h0..h0+hg` of query row `bt` (those below `heads`), one unit per head.
#[cube]
#[allow(clippy::too_many_arguments)]
fn write_lse<F: Float>(
    lse: &mut Tensor<F>,
    m_sh: &SharedMemory<f32>,
    l_sh: &SharedMemory<f32>,
    has_sh: &SharedMemory<u32>,
    bt: usize,
    h0: usize,
    heads: usize,
    neg_inf: f32,
    #[comptime] hg: usize,
) {
    let tid = UNIT_POS as usize;
    if tid < hg && h0 + tid < heads {
        let mut v = neg_inf;
        if has_sh[tid] == 1u32 {
            v = m_sh[tid] + f32::ln(l_sh[tid]);
        }
        lse[bt * heads + h0 + tid] = F::cast_from(v);
    }
}

/// The backward's per-head terms of head row `row` (`live`: the head exists, else zeros):
/// its lse (−inf → 0: such rows have no valid slot, so `p` stays 0) at `lse_sh[at]`, and
/// `d_lse − δ` with `δ = Σ_e d_out · out` at `c_sh[at]`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn stage_lse_grad<F: Float>(
    lse: &Tensor<F>,
    d_lse: &Tensor<F>,
    out: &Tensor<F>,
    d_out: &Tensor<F>,
    lse_sh: &mut SharedMemory<f32>,
    c_sh: &mut SharedMemory<f32>,
    row: usize,
    at: usize,
    live: bool,
    #[comptime] dv: usize,
    #[comptime] has_dout: bool,
    #[comptime] has_dlse: bool,
) {
    let mut l = 0.0f32;
    let mut c = 0.0f32;
    if live {
        l = f32::cast_from(lse[row]);
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
    }
    if f32::is_inf(l) {
        l = 0.0f32;
    }
    lse_sh[at] = l;
    c_sh[at] = c;
}

/// The backward's `p = exp(scale·q·kv − lse)` and `ds = p·(dp − δ + d_lse)·ds_scale` (with
/// `dp = d_out·v`) of the staged heads `h0..h0+rows` (their lse and `d_lse − δ` at
/// `lse_sh[l0 + hh]`, `c_sh[l0 + hh]`) × the chunk's `kc` slots, one (head, slot) per unit,
/// into `p_sh`, `ds_sh` (0 at invalid slots and heads past `heads`). No barrier.
#[cube]
#[allow(clippy::too_many_arguments)]
fn chunk_p_ds(
    q_sh: &SharedMemory<f32>,
    kv_sh: &SharedMemory<f32>,
    go_sh: &SharedMemory<f32>,
    ok_sh: &SharedMemory<u32>,
    lse_sh: &SharedMemory<f32>,
    c_sh: &SharedMemory<f32>,
    p_sh: &mut SharedMemory<f32>,
    ds_sh: &mut SharedMemory<f32>,
    h0: usize,
    heads: usize,
    l0: usize,
    scale: f32,
    ds_scale: f32,
    #[comptime] rows: usize,
    #[comptime] kc: usize,
    #[comptime] d: usize,
    #[comptime] dv: usize,
    #[comptime] has_dout: bool,
) {
    let dp = comptime!(d | 1);
    let mut i = UNIT_POS as usize;
    while i < rows * kc {
        let hh = i / kc;
        let j = i % kc;
        let mut p = 0.0f32;
        let mut ds = 0.0f32;
        if ok_sh[j] == 1u32 && h0 + hh < heads {
            p = f32::exp(shared_dot(q_sh, hh * dp, kv_sh, j * dp, d) * scale - lse_sh[l0 + hh]);
            let mut g = c_sh[l0 + hh];
            if has_dout {
                g += shared_dot(go_sh, hh * dv, kv_sh, j * dp, dv);
            }
            ds = p * g * ds_scale;
        }
        p_sh[i] = p;
        ds_sh[i] = ds;
        i += CUBE_DIM as usize;
    }
}

/// The gradient of dim `e` of slot `j`'s latent row from the `rows` staged heads:
/// `ds_scale · Σ_h ds·q` plus, for value dims, `Σ_h p·d_out`.
#[cube]
#[allow(clippy::too_many_arguments, clippy::collapsible_if)]
fn kv_grad(
    ds_sh: &SharedMemory<f32>,
    p_sh: &SharedMemory<f32>,
    q_sh: &SharedMemory<f32>,
    go_sh: &SharedMemory<f32>,
    j: usize,
    e: usize,
    ds_scale: f32,
    #[comptime] rows: usize,
    #[comptime] kc: usize,
    #[comptime] d: usize,
    #[comptime] dv: usize,
    #[comptime] has_dout: bool,
) -> f32 {
    let dp = comptime!(d | 1);
    let mut g = 0.0f32;
    #[unroll]
    for hh in 0..rows {
        g += ds_sh[hh * kc + j] * q_sh[hh * dp + e];
    }
    g *= ds_scale;
    if has_dout {
        if e < dv {
            #[unroll]
            for hh in 0..rows {
                g += p_sh[hh * kc + j] * go_sh[hh * dv + e];
            }
        }
    }
    g
}

/// Heads per cube and slots per chunk `(hg, kc)` of [`sparse_mla_fwd()`] for `heads` heads and
/// rows of `d` dims in `max_shared` bytes (`(hg + kc) · (d | 1)` f32 plus small buffers):
/// at most 8 heads and 16 slots, the chunk halved (down to 4) then the group.
///
/// # Panics
/// If even one head and 4 slots do not fit.
pub fn fwd_tiles(heads: usize, d: usize, max_shared: usize) -> (usize, usize) {
    let dp = d | 1;
    let bytes = |hg: usize, kc: usize| 4 * ((hg + kc) * dp + hg * kc + 2 * kc + 4 * hg) + 64;
    shrink_tiles(heads, max_shared, bytes, || format!("sparse MLA: latent dim {d} does not fit in shared memory"))
}

/// Tiles `(hm, km)` of [`sparse_mla_fwd_tiled()`] (`16·hm` heads, `16·km` slots per chunk)
/// for `heads` heads and rows of `d` dims in `max_shared` bytes, or `None` when even the
/// smallest does not fit.
pub fn fwd_tiled_tiles(heads: usize, d: usize, max_shared: usize) -> Option<(usize, usize)> {
    let bytes = |hm: usize, km: usize| {
        4 * (d * (16 * hm + 1) + d * (16 * km + 1) + 256 * hm * km + 32 * km + 64 * hm) + 64
    };
    let hm_max = if heads > 16 { 2 } else { 1 };
    [(hm_max, 2), (hm_max, 1), (1, 1)]
        .into_iter()
        .find(|&(hm, km)| bytes(hm, km) <= max_shared)
}

/// Heads per cube and slots per chunk `(hg, kc)` of [`sparse_mla_bwd()`] (`q`, `d_out` and the
/// chunk's rows in shared memory), chosen as [`fwd_tiles`].
///
/// # Panics
/// If even one head and 4 slots do not fit.
pub fn bwd_tiles(heads: usize, d: usize, dv: usize, max_shared: usize) -> (usize, usize) {
    let dp = d | 1;
    let bytes = |hg: usize, kc: usize| 4 * ((hg + kc) * dp + hg * dv + 2 * hg * kc + 2 * kc + 2 * hg) + 64;
    shrink_tiles(heads, max_shared, bytes, || format!("sparse MLA backward: latent dim {d} does not fit in shared memory"))
}

/// Tiles `(hb, kc)` of [`sparse_mla_bwd_dkv()`] (heads per group, slots per chunk) for
/// `heads` heads, or `None` when they do not fit in `max_shared` bytes.
pub fn bwd_dkv_tiles(heads: usize, d: usize, dv: usize, max_shared: usize) -> Option<(usize, usize)> {
    let dp = d | 1;
    let bytes = |hb: usize, kc: usize| 4 * (kc * dp + hb * dp + hb * dv + 2 * hb * kc + 2 * kc + 2 * heads) + 64;
    [(16, 32), (16, 16), (8, 16), (8, 8), (4, 8)]
        .into_iter()
        .find(|&(hb, kc)| bytes(hb, kc) <= max_shared)
}

/// From `min(heads, 8)` heads and 16 slots, halves the slots (down to 4), then the heads
/// (down to 1), until `bytes(hg, kc)` fits in `max_shared`.
fn shrink_tiles(heads: usize, max_shared: usize, bytes: impl Fn(usize, usize) -> usize, what: impl FnOnce() -> String) -> (usize, usize) {
    let mut hg = heads.clamp(1, 8);
    let mut kc = 16usize;
    while bytes(hg, kc) > max_shared && kc > 4 {
        kc /= 2;
    }
    while bytes(hg, kc) > max_shared && hg > 1 {
        hg /= 2;
    }
    assert!(bytes(hg, kc) <= max_shared, "{}", what());
    (hg, kc)
}
