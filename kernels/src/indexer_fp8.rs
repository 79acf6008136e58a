//! Lightning-indexer scores on FP8 tensor cores (v4): the e4m3 codes multiplied by
//! `mma.sync m16n8k32` with f32 accumulation (CUDA sm_89 and later), the ReLU, the weights
//! and the head sum applied in registers.
//!
//! Same factorisation as [`crate::indexer_mma`] (one 128-wide quantisation block per row):
//!
//! `I[t,s] = s_k[s] · Σ_j w[t,j]·s_q[t,j] · ReLU(c_q[t,j] · c_k[s])`
//!
//! with the codes `c` stored as e4m3 bytes ([`crate::quant::quantize_block_kernel`] with an
//! e4m3 code type). Same output contract as [`crate::indexer::indexer_scores_tiled`]:
//! `[B,T,S]`, `neg_inf` in the causal future.
//!
//! One cube of 8 planes computes `8 / kp` queries against a range of `chunk` keys; the `kp`
//! planes of a query split each tile of `64·kp` keys. A plane holds all its query's heads
//! (up to 64: four 16-row A tiles) × the 128 dims (four k-steps of 32) as A fragments in
//! registers for the whole chunk (GPU run 37: 255 registers, one cube per SM; splitting the
//! heads over two planes or looping over the key tiles at run time took more time, runs
//! 38–39). Per 8 keys it runs 4 × 4 MMAs into 16 f32 accumulators
//! per lane, applies `w·s_q·ReLU` to them and sums its two rows of each A tile; a
//! butterfly of three shuffles then sums the plane's 8 row groups, leaving lane `l` the
//! scores of keys `2l, 2l + 1` of the plane's 64.
//!
//! The dot products may run in any order of the dims, so A and B take the same
//! permutation of them: lane `(g, t)` (`g = lane / 4`, `t = lane % 4`) holds, at k-step
//! `ks`, the dims `32t + 8ks .. 32t + 8ks + 8` — for B one contiguous 8-byte read of its
//! key row per k-step, conflict-free at the staged row stride of 136 bytes.

use cubecl::cmma;
use cubecl::e4m3;
use cubecl::prelude::*;

/// Units per cube (8 planes of 32).
pub const FP8_UNITS: usize = 256;
/// Planes per cube.
const PLANES: usize = 8;
/// Keys per plane and tile: eight MMA column tiles of 8.
const PLANE_KEYS: usize = 64;
/// Largest head count (four 16-row A tiles per plane).
pub const FP8_MAX_HEADS: usize = 64;
/// Largest head dim: four k-steps of 32.
pub const FP8_MAX_DIM: usize = 128;
/// Row stride of the staged key tile in 8-byte vectors: 16 + 1 against bank conflicts.
const KROW: usize = 17;

type Code4 = Vector<e4m3, Const<4>>;
type Code8 = Vector<e4m3, Const<8>>;
type Acc2 = Vector<f32, Const<2>>;

/// Grid: `grid_1d(B · ⌈T / (8/kp)⌉)` cubes × `⌈S / chunk⌉` in z, [`FP8_UNITS`] units,
/// plane size 32. `q` codes `[B,T,H,D]` as vectors of 4 bytes and `k` codes `[B,S,D]` as
/// vectors of 8 (`D % 8 == 0`, `D ≤ 128`), `w` `[B,T,H]` (`H ≤ 64`), scales `sq` `[B,T,H]`
/// and `sk` `[B,S]`. `mt`: `⌈H/16⌉`; `kp`: 1, 2 or 4; `chunk`: a multiple of `64·kp`.
#[cube(launch_unchecked)]
pub fn indexer_scores_fp8<F: Float, SC: Float>(
    q: &Tensor<Code4>,
    w: &Tensor<F>,
    sq: &Tensor<SC>,
    k: &Tensor<Code8>,
    sk: &Tensor<SC>,
    out: &mut Tensor<F>,
    t_len: usize,
    s_len: usize,
    heads: usize,
    offset: usize,
    neg_inf: f32,
    #[comptime] causal: bool,
    #[comptime] d: usize,
    #[comptime] mt: usize,
    #[comptime] kp: usize,
    #[comptime] chunk: usize,
    #[define(F, SC)] _dtypes: [StorageType; 2],
) {
    let tq = comptime!(PLANES / kp);
    let kt = comptime!(PLANE_KEYS * kp);
    let n_t = t_len.div_ceil(tq);
    let cube = crate::cube_index();
    if cube >= out.shape(0) * n_t {
        terminate!();
    }
    let b = cube / n_t;
    let t0 = (cube % n_t) * tq;
    let tid = UNIT_POS as usize;
    let plane = tid / 32;
    let lane = tid % 32;
    let g = lane / 4;
    let tg = lane % 4;
    // The plane's query and its share of each key tile.
    let tq_idx = t0 + plane / kp;
    let part = plane % kp;
    let t_ok = tq_idx < t_len;

    let s_begin = CUBE_POS_Z as usize * chunk;
    let mut s_end = s_begin + chunk;
    if s_end > s_len {
        s_end = s_len;
    }
    let mut t_last = t0 + tq;
    if t_last > t_len {
        t_last = t_len;
    }
    t_last -= 1;
    // Keys `s < limit` are computed; later keys of the chunk are in every query's future.
    let mut limit = s_end;
    if causal && t_last + offset + 1 < limit {
        limit = t_last + offset + 1;
    }
    let mut s_done = s_begin;

    let mut k_sh = SharedMemory::<Code8>::new(comptime!(PLANE_KEYS * kp * KROW));
    let mut sk_sh = SharedMemory::<f32>::new(comptime!(PLANE_KEYS * kp));

    if s_begin < limit {
        let def = cmma::MmaDefinition::<e4m3, e4m3, f32>::new(16usize, 8usize, 32usize);
        let dv4 = comptime!(d / 4);
        let dv8 = comptime!(d / 8);

        // The plane's A fragments: A tile `m`, k-step `ks`, register `2·half + r` holds
        // head `16m + g + 8r`, dims `32t + 8ks + 4·half ..+4` (zero past the heads, the
        // dims or the tokens); and the weights `w·s_q` of the lane's two rows per tile.
        let mut qa = Array::<Code4>::new(comptime!(mt * 16));
        let mut wr = Array::<f32>::new(comptime!(mt * 2));
        #[unroll]
        for m in 0..mt {
            #[unroll]
            for r in 0..2usize {
                let h = m * 16 + g + r * 8;
                let ok = t_ok && h < heads;
                let row = (b * t_len + tq_idx) * heads + h;
                #[unroll]
                for ks in 0..4usize {
                    #[unroll]
                    for half in 0..2usize {
                        let v4 = tg * 8 + ks * 2 + half;
                        let live = ok && v4 < dv4;
                        qa[(m * 4 + ks) * 4 + half * 2 + r] = code4_or_zero(q, select(live, row * dv4 + v4, 0), live);
                    }
                }
                let mut wv = 0.0f32;
                if ok {
                    wv = f32::cast_from(w[row]) * f32::cast_from(sq[row]);
                }
                wr[m * 2 + r] = wv;
            }
        }

        // A unit's share of a key tile (`kt` keys × 16 vectors of 8 codes, zero past the
        // keys or the dims) and of its scales, fetched into registers a tile ahead.
        let share = comptime!(PLANE_KEYS * kp * 16 / FP8_UNITS);
        let mut k_regs = Array::<Code8>::new(share);
        let mut sk_reg = 0.0f32;
        let mut s0 = s_begin;
        #[unroll]
        for u in 0..share {
            let i = tid + u * FP8_UNITS;
            let live = s0 + i / 16 < s_len && i % 16 < dv8;
            k_regs[u] = code8_or_zero(k, select(live, (b * s_len + s0 + i / 16) * dv8 + i % 16, 0), live);
        }
        if tid < kt && s0 + tid < s_len {
            sk_reg = f32::cast_from(sk[b * s_len + s0 + tid]);
        }

        while s0 < limit {
            #[unroll]
            for u in 0..share {
                let i = tid + u * FP8_UNITS;
                k_sh[(i / 16) * KROW + i % 16] = k_regs[u];
            }
            if tid < kt {
                sk_sh[tid] = sk_reg;
            }
            sync_cube();

            let next = s0 + kt;
            if next < limit {
                #[unroll]
                for u in 0..share {
                    let i = tid + u * FP8_UNITS;
                    let live = next + i / 16 < s_len && i % 16 < dv8;
                    k_regs[u] = code8_or_zero(k, select(live, (b * s_len + next + i / 16) * dv8 + i % 16, 0), live);
                }
                sk_reg = 0.0f32;
                if tid < kt && next + tid < s_len {
                    sk_reg = f32::cast_from(sk[b * s_len + next + tid]);
                }
            }

            if t_ok {
                // `vals[2j + c]`: this lane's two rows per A tile, weighted and summed, at
                // key `8j + 2t + c` of the plane's 64.
                let mut vals = Array::<f32>::new(16usize);
                #[unroll]
                for j in 0..8usize {
                    let key_row = (part * 8 + j) * 8 + g;
                    let mut acc = Array::<Acc2>::new(comptime!(mt * 2));
                    #[unroll]
                    for i in 0..comptime!(mt * 2) {
                        acc[i] = Acc2::new(0.0f32);
                    }
                    #[unroll]
                    for ks in 0..4usize {
                        let mut bf = Array::<Code8>::new(1usize);
                        bf[0] = k_sh[key_row * KROW + tg * 4 + ks];
                        #[unroll]
                        for m in 0..mt {
                            let mut af = Array::<Code4>::new(4usize);
                            #[unroll]
                            for r in 0..4usize {
                                af[r] = qa[(m * 4 + ks) * 4 + r];
                            }
                            let mut cf = Array::<Acc2>::new(2usize);
                            cf[0] = acc[m * 2];
                            cf[1] = acc[m * 2 + 1];
                            def.execute_inplace(&af, &bf, &mut cf);
                            acc[m * 2] = cf[0];
                            acc[m * 2 + 1] = cf[1];
                        }
                    }
                    let mut v0 = 0.0f32;
                    let mut v1 = 0.0f32;
                    #[unroll]
                    for m in 0..mt {
                        let lo = acc[m * 2];
                        let hi = acc[m * 2 + 1];
                        v0 += wr[m * 2] * f32::max(lo[0], 0.0f32) + wr[m * 2 + 1] * f32::max(hi[0], 0.0f32);
                        v1 += wr[m * 2] * f32::max(lo[1], 0.0f32) + wr[m * 2 + 1] * f32::max(hi[1], 0.0f32);
                    }
                    vals[2 * j] = v0;
                    vals[2 * j + 1] = v1;
                }
                // Sum over the row groups `g` (lane bits 16, 8, 4): at each step a lane
                // keeps one half of its values, adds its partner's copy of that half and
                // hands over the other; lane `l` ends with keys `2l, 2l + 1`.
                #[unroll]
                for step in 0..3usize {
                    let mask = comptime!(16usize >> step);
                    let half = comptime!(8usize >> step);
                    let upper = (lane & mask) != 0;
                    #[unroll]
                    for i in 0..half {
                        let lo = vals[i];
                        let hi = vals[i + half];
                        let other = plane_shuffle_xor(select(upper, lo, hi), comptime!(mask as u32));
                        vals[i] = select(upper, hi, lo) + other;
                    }
                }
                #[unroll]
                for c in 0..2usize {
                    let key = part * PLANE_KEYS + 2 * lane + c;
                    let s = s0 + key;
                    if s < s_end {
                        let mut v = neg_inf;
                        if !causal || s <= tq_idx + offset {
                            v = sk_sh[key] * vals[c];
                        }
                        out[(b * t_len + tq_idx) * s_len + s] = F::cast_from(v);
                    }
                }
            }
            sync_cube();
            s0 = next;
        }
        s_done = s0;
    }

    // The rest of the chunk is in the causal future of every query of the cube.
    if s_done < s_end {
        let width = s_end - s_done;
        let mut o = tid;
        while o < tq * width {
            let t = t0 + o / width;
            if t < t_len {
                out[(b * t_len + t) * s_len + s_done + o % width] = F::cast_from(neg_inf);
            }
            o += FP8_UNITS;
        }
    }
}

/// `src[at]` if `live`, else zero codes (`at` must be in bounds either way: callers pass 0
/// for dead entries). Through the bits: a reinterpret needs a variable, not a constant.
#[cube]
fn code4_or_zero(src: &Tensor<Code4>, at: usize, live: bool) -> Code4 {
    Code4::reinterpret(select(live, u32::reinterpret(src[at]), 0u32))
}

/// [`code4_or_zero`] for vectors of 8 codes.
#[cube]
fn code8_or_zero(src: &Tensor<Code8>, at: usize, live: bool) -> Code8 {
    Code8::reinterpret(select(live, u64::reinterpret(src[at]), 0u64))
}
