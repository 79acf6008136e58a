//! Sparse MLA forward on `mma.sync` tensor cores with the softmax in registers: the
//! contract of [`crate::sparse_mla::cmma::sparse_mla_fwd_cmma()`] — `q [B,T,H,D]`,
//! `kv [B,S,D]`, `idx`/`valid [B,T,K]` → `out [B,T,H,dv]`, `lse [B,T,H]`, optionally split
//! over the slots — on bf16/f16 `mma.sync m16n8k16` with fragments loaded by `ldmatrix`.
//!
//! One cube per (token, [`MMA_HEADS`] heads), 8 planes. The query tile stays in shared
//! memory; the selected latent rows are gathered [`MMA_CHUNK`] at a time by asynchronous
//! copies into two buffers, the next chunk's copies in flight while the current one is
//! computed. Plane `(r, h)` (`plane = r + 4h`) owns heads `16r..16r+16`:
//! - `S = Q·Kᵀ` for its heads and the chunk's slots over half `h` of the depth; the two
//!   planes of a head tile swap their partial sums through shared memory, so both hold the
//!   whole `S` (bitwise equal: `a + b = b + a`);
//! - the online softmax on it in registers (each head's running max and sum in the four
//!   lanes that hold its row), `P = exp(s·scale − m)` rounded to the input type, as FlashMLA
//!   does;
//! - `O += P·V` for half `h` of the value columns, with `P` taken straight from `S`'s
//!   accumulator registers (an m16n8 accumulator pair is an m16n8k16 A fragment) and `V`
//!   by transposing `ldmatrix`; `O` (16 heads × dv/2 in f32) stays in registers, rescaled
//!   when a head's max moves.
//!
//! So a chunk costs two cube barriers: the copies' and the swap's.

use cubecl::cmma;
use cubecl::prelude::barrier::Barrier;
use cubecl::prelude::*;

use super::SplitShare;
use crate::shared::cmma::{padded, CMMA_ALIGN};
use crate::shared::gather::{issue_chunk, load_query_tile, load_window, KvRows, ASYNC_GATHER_EXTRA_BYTES, WINDOW_SLOTS};

/// Heads per cube.
pub const MMA_HEADS: usize = 64;
/// Units per cube (8 planes of 32).
pub const MMA_UNITS: usize = 256;
/// Slots per chunk.
pub const MMA_CHUNK: usize = 32;

type Acc2 = Vector<f32, Const<2>>;

/// Grid: `grid_1d(B·T)` cubes × `⌈H/64⌉ · splits` in z, [`MMA_UNITS`] units, plane size
/// 32; the split of the slots as in [`crate::sparse_mla::cmma::sparse_mla_fwd_cmma()`]
/// (`split_len` a multiple of [`MMA_CHUNK`]). `N`: vector width of the `q`/`kv` loads
/// (`D % N == 0`); `q` and `kv` are read at their strides (the last one 1, the others
/// multiples of `N`). Any `D`, `dv ≤ D`.
#[cube(launch_unchecked, fast_math = crate::FAST_EXP)]
#[allow(clippy::too_many_arguments)]
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
    #[define(F, I, BL, O)] _dtypes: [StorageType; 4],
) {
    let bt = crate::cube_index();
    if bt >= bt_len {
        terminate!();
    }
    let b = bt / t_len;
    let share = SplitShare::new(bt, bt_len, kk, groups, split_len, MMA_HEADS);
    let h0 = share.h0;
    let c_begin = share.begin;
    let c_end = share.end;
    let row = share.row;
    let kc = comptime!(MMA_CHUNK);
    let dp = comptime!(padded(d));
    // k-steps of `S`, and the 16-column pairs of MMA tiles of `O` (all and per plane).
    let nk = comptime!(d.div_ceil(16));
    let vp = comptime!(dv.div_ceil(16));
    let nvp = comptime!(dv.div_ceil(16).div_ceil(2));
    let tid = UNIT_POS as usize;
    let plane = tid / 32;
    let lane = tid % 32;
    let tg = lane % 4;
    let hr = plane % 4;
    let half = plane / 4;
    // Whether the plane's heads exist (else it only takes part in the barriers).
    let live = h0 + hr * 16 < heads;

    let mut q_sh = SharedMemory::<F>::new_aligned(comptime!(MMA_HEADS * dp), CMMA_ALIGN);
    let mut kv_sh = SharedMemory::<F>::new_aligned(comptime!(2 * kc * dp), CMMA_ALIGN);
    // Each plane's partial `S`: 4 n-tile pairs' 4 values per lane.
    let mut xs_sh = SharedMemory::<Vector<f32, Const<4>>>::new(comptime!(8usize * 4 * 32));
    let mut ok_sh = SharedMemory::<u32>::new(comptime!(2 * kc));
    let mut row_sh = SharedMemory::<u32>::new(comptime!(2 * kc));
    let mut win_sh = SharedMemory::<u32>::new(WINDOW_SLOTS);

    // One barrier per buffer: its copies, and every unit done with the buffer's last chunk.
    let bar0 = Barrier::shared(CUBE_DIM, UNIT_POS == 0);
    let bar1 = Barrier::shared(CUBE_DIM, UNIT_POS == 0);
    load_query_tile::<F, N>(q, &mut q_sh, &mut kv_sh, b, bt % t_len, h0, heads, d, comptime!(2 * kc), MMA_HEADS);
    let rows = KvRows::new::<F, N>(kv, b);
    if c_begin < c_end {
        load_window::<I, BL>(idx, valid, &mut win_sh, bt, kk, c_begin, c_end, kc);
        issue_chunk::<F, N>(kv, &rows, &win_sh, &mut kv_sh, &mut ok_sh, &mut row_sh, 0usize, 0usize, d, kc, MMA_UNITS, true);
        bar0.commit_copy_async();
    }

    let def = cmma::MmaDefinition::<F, F, f32>::new(16usize, 8usize, 16usize);
    // `O`: pair `p`, tile `c` of the pair, row half `r` at `o[(2p + c)·2 + r]` (rows `g`,
    // `g + 8` of the lane's quad `g = lane / 4`; columns `2t, 2t + 1`).
    let mut o = Array::<Acc2>::new(comptime!(nvp * 4));
    #[unroll]
    for i in 0..comptime!(nvp * 4) {
        o[i] = Acc2::new(0.0f32);
    }
    // The running max and sum (this lane's part) of rows `g` and `g + 8`.
    let mut m0 = neg_inf;
    let mut m1 = neg_inf;
    let mut l0 = 0.0f32;
    let mut l1 = 0.0f32;
    // ldmatrix rows: A (Q) row and k offset, B (K) slot and k offset, B (V, transposed) slot
    // and column offset, for this lane.
    let a_at = (hr * 16 + ((lane / 8) % 2) * 8 + lane % 8) * dp + (lane / 16) * 8;
    let k_at = ((lane / 16) * 8 + lane % 8) * dp + ((lane / 8) % 2) * 8;
    let v_at = (((lane / 8) % 2) * 8 + lane % 8) * dp + (lane / 16) * 8;
    let k_begin = half * nk / 2;
    let k_end = (half + 1) * nk / 2;

    let mut c0 = c_begin;
    let mut it = 0usize;
    while c0 < c_end {
        let buf = it % 2;
        if buf == 0 {
            bar0.arrive_and_wait();
        } else {
            bar1.arrive_and_wait();
        }
        // The chunk's rows have landed and every unit is done with the other buffer.
        let next = c0 + kc;
        if next < c_end {
            if (next - c_begin) % WINDOW_SLOTS == 0 {
                load_window::<I, BL>(idx, valid, &mut win_sh, bt, kk, next, c_end, kc);
            }
            issue_chunk::<F, N>(kv, &rows, &win_sh, &mut kv_sh, &mut ok_sh, &mut row_sh, (1usize - buf) * kc, (next - c_begin) % WINDOW_SLOTS, d, kc, MMA_UNITS, true);
            if buf == 0 {
                bar1.commit_copy_async();
            } else {
                bar0.commit_copy_async();
            }
        }
        let kv0 = buf * kc * dp;

        // S over this plane's half of the depth: n-tile `n` (slots 8n..) at `s[2n + r]`, the
        // odd k-steps into `s2` (two chains of dependent products, not one).
        let mut s = Array::<Acc2>::new(8usize);
        let mut s2 = Array::<Acc2>::new(8usize);
        #[unroll]
        for i in 0..8usize {
            s[i] = Acc2::new(0.0f32);
            s2[i] = Acc2::new(0.0f32);
        }
        if live {
            let mut ks = k_begin;
            while ks + 1 < k_end {
                s_step(&def, &q_sh, &kv_sh, a_at + ks * 16, kv0 + k_at + ks * 16, dp, &mut s);
                s_step(&def, &q_sh, &kv_sh, a_at + ks * 16 + 16, kv0 + k_at + ks * 16 + 16, dp, &mut s2);
                ks += 2;
            }
            if ks < k_end {
                s_step(&def, &q_sh, &kv_sh, a_at + ks * 16, kv0 + k_at + ks * 16, dp, &mut s);
            }
            #[unroll]
            for i in 0..8usize {
                let mut v = s[i];
                v += s2[i];
                s[i] = v;
            }
        }
        // Swap the partial sums with the plane of the other depth half.
        #[unroll]
        for n in 0..4usize {
            let lo = s[n * 2];
            let hi = s[n * 2 + 1];
            let mut v = Vector::<f32, Const<4>>::empty();
            v[0usize] = lo[0usize];
            v[1usize] = lo[1usize];
            v[2usize] = hi[0usize];
            v[3usize] = hi[1usize];
            xs_sh[(plane * 4 + n) * 32 + lane] = v;
        }
        sync_cube();
        let other = (plane + 4usize) % 8usize;
        // Scaled scores (-inf at invalid slots), their row maxima over the quad.
        let mut mx0 = neg_inf;
        let mut mx1 = neg_inf;
        #[unroll]
        for n in 0..4usize {
            let v = xs_sh[(other * 4 + n) * 32 + lane];
            let mut lo = s[n * 2];
            let mut hi = s[n * 2 + 1];
            #[unroll]
            for e in 0..2usize {
                let ok = ok_sh[buf * kc + n * 8 + 2 * tg + e] == 1u32;
                lo[e] = select(ok, (lo[e] + v[e]) * scale, neg_inf);
                hi[e] = select(ok, (hi[e] + v[2 + e]) * scale, neg_inf);
                mx0 = f32::max(mx0, lo[e]);
                mx1 = f32::max(mx1, hi[e]);
            }
            s[n * 2] = lo;
            s[n * 2 + 1] = hi;
        }
        mx0 = f32::max(mx0, plane_shuffle_xor(mx0, 1u32));
        mx0 = f32::max(mx0, plane_shuffle_xor(mx0, 2u32));
        mx1 = f32::max(mx1, plane_shuffle_xor(mx1, 1u32));
        mx1 = f32::max(mx1, plane_shuffle_xor(mx1, 2u32));
        let n0 = f32::max(m0, mx0);
        let n1 = f32::max(m1, mx1);
        // The reference of a row with no valid slot yet: 0 (its p and factor are 0).
        let u0 = select(n0 == neg_inf, 0.0f32, n0);
        let u1 = select(n1 == neg_inf, 0.0f32, n1);
        let f0 = f32::exp(m0 - u0);
        let f1 = f32::exp(m1 - u1);
        m0 = n0;
        m1 = n1;
        // P as the A fragments of the two k-steps of O += P·V (slots 16kk..).
        let mut pa = Array::<Vector<F, Const<2>>>::new(8usize);
        let mut p0 = 0.0f32;
        let mut p1 = 0.0f32;
        #[unroll]
        for n in 0..4usize {
            let lo = s[n * 2];
            let hi = s[n * 2 + 1];
            let mut a = Vector::<F, Const<2>>::empty();
            let mut c = Vector::<F, Const<2>>::empty();
            #[unroll]
            for e in 0..2usize {
                let x = f32::exp(lo[e] - u0);
                let y = f32::exp(hi[e] - u1);
                p0 += x;
                p1 += y;
                a[e] = F::cast_from(x);
                c[e] = F::cast_from(y);
            }
            // k-step n/2: registers 0, 1 from the even n-tile, 2, 3 from the odd one.
            pa[(n / 2) * 4 + (n % 2) * 2] = a;
            pa[(n / 2) * 4 + (n % 2) * 2 + 1] = c;
        }
        l0 = l0 * f0 + p0;
        l1 = l1 * f1 + p1;
        if plane_any(f0 != 1.0f32 || f1 != 1.0f32) {
            #[unroll]
            for i in 0..comptime!(nvp * 2) {
                let mut lo = o[i * 2];
                let mut hi = o[i * 2 + 1];
                lo *= Acc2::new(f0);
                hi *= Acc2::new(f1);
                o[i * 2] = lo;
                o[i * 2 + 1] = hi;
            }
        }
        if live {
            #[unroll]
            for kk2 in 0..2usize {
                let mut af = Array::<Vector<F, Const<2>>>::new(4usize);
                #[unroll]
                for i in 0..4usize {
                    af[i] = pa[kk2 * 4 + i];
                }
                #[unroll]
                for p in 0..nvp {
                    // No branch (it would keep the loads from moving ahead of the products): with
                    // an odd pair count the second half's last pair repeats its neighbour's
                    // columns, which are never written.
                    let mut pair = half * nvp + p;
                    if comptime!(vp % 2 == 1) {
                        pair = select(pair < vp, pair, comptime!(vp - 1));
                    }
                    let va = kv0 + kk2 * 16 * dp + v_at + pair * 16;
                    let vb = def.load_matrix::<F, Const<2>>(&kv_sh.slice(va, va + 8), cmma::MatrixIdent::B, 4usize, true);
                    #[unroll]
                    for c in 0..2usize {
                        mma_tile(&def, &af, &vb, c, &mut o, (p * 2 + c) * 2);
                    }
                }
            }
        }
        c0 = next;
        it += 1;
    }

    // out = O / l, lse = m + ln l (0 and -inf for a head with no valid slot).
    l0 += plane_shuffle_xor(l0, 1u32);
    l0 += plane_shuffle_xor(l0, 2u32);
    l1 += plane_shuffle_xor(l1, 1u32);
    l1 += plane_shuffle_xor(l1, 2u32);
    let inv0 = select(l0 > 0.0f32, 1.0f32 / l0, 0.0f32);
    let inv1 = select(l1 > 0.0f32, 1.0f32 / l1, 0.0f32);
    let ha = h0 + hr * 16 + lane / 4;
    #[unroll]
    for i in 0..comptime!(nvp * 2) {
        let col = (half * nvp + i / 2) * 16 + (i % 2) * 8 + 2 * tg;
        #[unroll]
        for r in 0..2usize {
            let h = ha + r * 8;
            let v = o[i * 2 + r];
            let inv = select(r == 0usize, inv0, inv1);
            if h < heads {
                #[unroll]
                for e in 0..2usize {
                    if col + e < dv {
                        out[(row * heads + h) * dv + col + e] = O::cast_from(v[e] * inv);
                    }
                }
            }
        }
    }
    if half == 0 && tg == 0 {
        #[unroll]
        for r in 0..2usize {
            let h = ha + r * 8;
            let l = select(r == 0usize, l0, l1);
            let m = select(r == 0usize, m0, m1);
            if h < heads {
                lse[row * heads + h] = O::cast_from(select(l > 0.0f32, m + f32::ln(l), neg_inf));
            }
        }
    }
}

/// `acc[at], acc[at + 1] += A·B` for the n-tile `c` (0 or 1) of an `ldmatrix.x4` B pair
/// `b` (registers `2c`, `2c + 1`): one `mma.sync m16n8k16`.
#[cube]
fn mma_tile<F: Float>(
    def: &cmma::MmaDefinition<F, F, f32>,
    a: &Array<Vector<F, Const<2>>>,
    b: &Array<Vector<F, Const<2>>>,
    c: usize,
    acc: &mut Array<Acc2>,
    at: usize,
) {
    let mut bf = Array::<Vector<F, Const<2>>>::new(2usize);
    bf[0] = b[c * 2];
    bf[1] = b[c * 2 + 1];
    let mut cf = Array::<Acc2>::new(2usize);
    cf[0] = acc[at];
    cf[1] = acc[at + 1];
    def.execute_inplace(a, &bf, &mut cf);
    acc[at] = cf[0];
    acc[at + 1] = cf[1];
}

/// One k-step of `S = Q·Kᵀ` into `s` (n-tile `n` at `s[2n..2n + 2]`): the A fragment of the
/// query rows at `q_at` and the B fragments of the chunk's slots 0..16 and 16..32 at `kv_at`
/// (rows `dp` apart), four products.
#[cube]
#[allow(clippy::too_many_arguments)]
fn s_step<F: Float>(
    def: &cmma::MmaDefinition<F, F, f32>,
    q_sh: &SharedMemory<F>,
    kv_sh: &SharedMemory<F>,
    q_at: usize,
    kv_at: usize,
    #[comptime] dp: usize,
    s: &mut Array<Acc2>,
) {
    let af = def.load_matrix::<F, Const<2>>(&q_sh.slice(q_at, q_at + 8), cmma::MatrixIdent::A, 4usize, false);
    #[unroll]
    for np in 0..2usize {
        let ka = kv_at + np * 16 * dp;
        let kb = def.load_matrix::<F, Const<2>>(&kv_sh.slice(ka, ka + 8), cmma::MatrixIdent::B, 4usize, false);
        #[unroll]
        for c in 0..2usize {
            mma_tile(def, &af, &kb, c, s, (np * 2 + c) * 2);
        }
    }
}

/// Shared memory of [`sparse_mla_fwd_mma()`] for rows of `d` dims: the query tile and two
/// chunks of rows (half precision, padded rows), the planes' partial scores, two chunks'
/// slot flags and rows, and [`ASYNC_GATHER_EXTRA_BYTES`].
pub fn fwd_shared_bytes(d: usize) -> usize {
    2 * (MMA_HEADS + 2 * MMA_CHUNK) * padded(d) + 4 * 16 * MMA_UNITS + 16 * MMA_CHUNK + ASYNC_GATHER_EXTRA_BYTES
}
