//! The indexer scores on f16 `mma.sync m16n8k16` with the epilogue in registers: the e4m3
//! codes held exactly in f16, the FP8 scales applied afterwards (the factored contract of
//! [`crate::indexer`]). On Hopper this is faster than e4m3 `mma.sync m16n8k32`, which ptxas
//! lowers to f16 MMAs converting the fragments inside the loop.
//!
//! One cube of 8 planes computes `8 / (pp·kp)` queries against a range of `chunk` keys: `pp`
//! planes split a query's heads (32 each: two 16-row A tiles), `kp` planes split each tile of
//! `64·kp` keys. A plane holds its heads × the dims as A fragments in registers for the whole
//! chunk; per 8 keys it runs its MMAs into f32 accumulators, applies `w·s_q·ReLU` to them and
//! sums its two rows of each A tile, then a butterfly of shuffles sums the plane's 8 row
//! groups. The dot products may run in any order of the dims, so A and B take the same
//! permutation of them: lane `(g, t)` holds, at k-step `ks`, dims `16ks + 4t .. +4`, read from
//! a key row staged at a stride of 288 bytes (conflict-free 8-byte reads).

use cubecl::cmma;
use cubecl::prelude::*;

use super::{chunk_keys, fill_future, query_block, ScoreSizes};

/// Units per cube (8 planes of 32).
pub const UNITS: usize = 256;
/// Largest head count (two planes of 32 heads per query).
pub const MAX_HEADS: usize = 64;
/// Planes per cube.
const PLANES: usize = 8;
/// Keys per plane and tile: eight MMA column tiles of 8.
const PLANE_KEYS: usize = 64;
/// Row stride of the staged key tile in vectors of 4 codes: 32 + 4 against bank conflicts.
const KROW: usize = 36;

/// Keys per cube (`chunk`).
pub const CHUNK: usize = 2048;

type Acc2 = Vector<f32, Const<2>>;

/// How [`indexer_scores_mma()`]'s planes split the work for `heads` heads and `t_len` queries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    /// A tiles (16 heads) per plane: `min(⌈H/16⌉, 2)`.
    pub mt: usize,
    /// Planes per query along the heads: `⌈H/32⌉`.
    pub pp: usize,
    /// Planes per query along each key tile: more (up to 4) when few queries (decode) leave
    /// planes free.
    pub kp: usize,
    /// Queries per cube: `8 / (pp·kp)`.
    pub tq: usize,
}

impl Split {
    /// The split for `heads ≤ MAX_HEADS` heads and `t_len` queries.
    pub fn new(heads: usize, t_len: usize) -> Self {
        let mt = heads.div_ceil(16).min(2);
        let pp = heads.div_ceil(32);
        let mut kp = 1;
        while kp < 4 && t_len * pp * kp * 2 <= PLANES {
            kp *= 2;
        }
        Self { mt, pp, kp, tq: PLANES / (pp * kp) }
    }
}

/// Grid: `grid_1d(B · ⌈T / tq⌉)` cubes × `⌈S / chunk⌉` in z, [`UNITS`] units,
/// plane size 32. `q` codes `[B,T,H,D]` as vectors of 2 and `k` codes `[B,S,D]` as vectors
/// of 4 (`C` = f16 or bf16; `D % 4 == 0`, `D ≤ 128`), `w` `[B,T,H]` (`H ≤ 64`), scales `sq` `[B,T,H]`
/// and `sk` `[B,S]`. `mt`: A tiles per plane, `min(⌈H/16⌉, 2)`; `pp`: head planes per
/// query, `⌈H/32⌉`; `kp`: key planes per query, 1, 2 or 4 with `pp·kp ≤ 8` (all from
/// [`Split`]); `chunk`: a multiple of `64·kp` ([`CHUNK`]).
#[cube(launch_unchecked)]
pub fn indexer_scores_mma<F: Float, C: Float, SC: Float>(
    q: &Tensor<Vector<C, Const<2>>>,
    w: &Tensor<F>,
    sq: &Tensor<SC>,
    k: &Tensor<Vector<C, Const<4>>>,
    sk: &Tensor<SC>,
    out: &mut Tensor<F>,
    sizes: ScoreSizes,
    #[comptime] d: usize,
    #[comptime] mt: usize,
    #[comptime] pp: usize,
    #[comptime] kp: usize,
    #[comptime] chunk: usize,
    #[define(F, C, SC)] _dtypes: [StorageType; 3],
) {
    let tq = comptime!(PLANES / (pp * kp));
    let kt = comptime!(PLANE_KEYS * kp);
    let (b, t0, live) = query_block(&sizes, out.shape(0), tq);
    if !live {
        terminate!();
    }
    let tid = UNIT_POS as usize;
    let plane = tid / 32;
    let lane = tid % 32;
    let g = lane / 4;
    let tg = lane % 4;
    // The plane's query, its share of the heads (`hpart`) and of each key tile (`part`).
    let tq_idx = t0 + plane / (pp * kp);
    let hpart = (plane % (pp * kp)) / kp;
    let part = plane % kp;
    let t_ok = tq_idx < sizes.t_len;

    // Keys `s < limit` are computed; later keys of the chunk are in every query's future.
    let (s_begin, s_end, limit) = chunk_keys(&sizes, t0, tq, chunk);
    let mut s_done = s_begin;

    let mut k_sh = SharedMemory::<Vector<C, Const<4>>>::new(comptime!(PLANE_KEYS * kp * KROW));
    let mut sk_sh = SharedMemory::<f32>::new(comptime!(PLANE_KEYS * kp));
    // With the heads split over two planes: each plane's head sums of its 64 keys.
    let mut red_sh = SharedMemory::<f32>::new(comptime!(PLANES * PLANE_KEYS));

    if s_begin < limit {
        let def = cmma::MmaDefinition::<C, C, f32>::new(16usize, 8usize, 16usize);
        let dv2 = comptime!(d / 2);
        let dv4 = comptime!(d / 4);
        let zero2 = Vector::<C, Const<2>>::new(C::from_int(0));

        // The plane's A fragments: A tile `m`, k-step `ks`, register `2·half + r` holds
        // head `32·hpart + 16m + g + 8r`, dims `16ks + 4t + 2·half ..+2` (zero past the heads,
        // the dims or the tokens); and the weights `w·s_q` of the lane's two rows per tile.
        let mut qa = Array::<Vector<C, Const<2>>>::new(comptime!(mt * 32));
        let mut wr = Array::<f32>::new(comptime!(mt * 2));
        #[unroll]
        for m in 0..mt {
            #[unroll]
            for r in 0..2usize {
                let h = hpart * 32 + m * 16 + g + r * 8;
                let ok = t_ok && h < sizes.heads;
                let row = (b * sizes.t_len + tq_idx) * sizes.heads + h;
                #[unroll]
                for ks in 0..8usize {
                    #[unroll]
                    for half in 0..2usize {
                        let v2 = ks * 8 + tg * 2 + half;
                        let mut v = zero2;
                        if ok && v2 < dv2 {
                            v = q[row * dv2 + v2];
                        }
                        qa[(m * 8 + ks) * 4 + half * 2 + r] = v;
                    }
                }
                let mut wv = 0.0f32;
                if ok {
                    wv = f32::cast_from(w[row]) * f32::cast_from(sq[row]);
                }
                wr[m * 2 + r] = wv;
            }
        }

        // A unit's share of a key tile and of its scales, fetched into registers a tile ahead.
        let share = comptime!(PLANE_KEYS * kp * 32 / UNITS);
        let mut k_regs = Array::<Vector<C, Const<4>>>::new(share);
        let mut s0 = s_begin;
        let mut sk_reg = fetch_key_tile(k, sk, &mut k_regs, b * sizes.s_len, s0, sizes.s_len, dv4, share, kt);

        while s0 < limit {
            #[unroll]
            for u in 0..share {
                let i = tid + u * UNITS;
                k_sh[(i / 32) * KROW + i % 32] = k_regs[u];
            }
            if tid < kt {
                sk_sh[tid] = sk_reg;
            }
            sync_cube();

            let next = s0 + kt;
            if next < limit {
                sk_reg = fetch_key_tile(k, sk, &mut k_regs, b * sizes.s_len, next, sizes.s_len, dv4, share, kt);
            }

            if t_ok {
                // One MMA column tile of 8 keys at a time (a run-time loop: unrolled, the
                // compiler hoists every tile's B loads and runs out of registers).
                for j in 0..8usize {
                    let key_row = (part * 8 + j) * 8 + g;
                    let mut acc = Array::<Acc2>::new(comptime!(mt * 2));
                    #[unroll]
                    for i in 0..comptime!(mt * 2) {
                        acc[i] = Acc2::new(0.0f32);
                    }
                    #[unroll]
                    for ks in 0..8usize {
                        let mut bf = Array::<Vector<C, Const<4>>>::new(1usize);
                        bf[0] = k_sh[key_row * KROW + ks * 4 + tg];
                        #[unroll]
                        for m in 0..mt {
                            let mut af = Array::<Vector<C, Const<2>>>::new(4usize);
                            #[unroll]
                            for r in 0..4usize {
                                af[r] = qa[(m * 8 + ks) * 4 + r];
                            }
                            let mut cf = Array::<Acc2>::new(2usize);
                            cf[0] = acc[m * 2];
                            cf[1] = acc[m * 2 + 1];
                            def.execute_inplace(&af, &bf, &mut cf);
                            acc[m * 2] = cf[0];
                            acc[m * 2 + 1] = cf[1];
                        }
                    }
                    // This lane's two rows per A tile, weighted and summed, at keys `2t` and
                    // `2t + 1` of the tile.
                    let mut v0 = 0.0f32;
                    let mut v1 = 0.0f32;
                    #[unroll]
                    for m in 0..mt {
                        let lo = acc[m * 2];
                        let hi = acc[m * 2 + 1];
                        v0 += wr[m * 2] * f32::max(lo[0], 0.0f32) + wr[m * 2 + 1] * f32::max(hi[0], 0.0f32);
                        v1 += wr[m * 2] * f32::max(lo[1], 0.0f32) + wr[m * 2 + 1] * f32::max(hi[1], 0.0f32);
                    }
                    // Sum over the row groups `g` (lane bits 16, 8, 4). The first step also
                    // splits the two keys: a lane keeps key `2t + c` (`c` = its bit 16),
                    // hands the other to its partner; lanes with bits 8 and 4 clear write.
                    let c = (lane / 16) % 2;
                    let upper = c == 1;
                    let mut x = select(upper, v1, v0) + plane_shuffle_xor(select(upper, v0, v1), 16u32);
                    x += plane_shuffle_xor(x, 8u32);
                    x += plane_shuffle_xor(x, 4u32);
                    let key = j * 8 + 2 * tg + c;
                    if lane % 16 < 4 {
                        if comptime!(pp == 1) {
                            write_score(out, &sizes, b, tq_idx, s0 + part * PLANE_KEYS + key, s_end, sk_sh[part * PLANE_KEYS + key] * x);
                        } else {
                            red_sh[plane * PLANE_KEYS + key] = x;
                        }
                    }
                }
            }
            if comptime!(pp > 1) {
                // The first head plane of each query adds the second's sums and writes.
                sync_cube();
                if t_ok && hpart == 0 {
                    #[unroll]
                    for c in 0..2usize {
                        let key = 2 * lane + c;
                        let x = red_sh[plane * PLANE_KEYS + key] + red_sh[(plane + kp) * PLANE_KEYS + key];
                        write_score(out, &sizes, b, tq_idx, s0 + part * PLANE_KEYS + key, s_end, sk_sh[part * PLANE_KEYS + key] * x);
                    }
                }
            }
            sync_cube();
            s0 = next;
        }
        s_done = s0;
    }

    fill_future(out, &sizes, b, t0, s_done, s_end, tq, UNITS);
}

/// The unit's share of the key tile at `s0` (`kt` keys × 32 vectors of 4 codes, zero past
/// the keys or the dims; `row0` = the batch's first key) into `regs`, and its key's scale
/// (units `< kt`; else 0) as the result.
#[cube]
#[allow(clippy::too_many_arguments)]
fn fetch_key_tile<C: Float, SC: Float>(
    k: &Tensor<Vector<C, Const<4>>>,
    sk: &Tensor<SC>,
    regs: &mut Array<Vector<C, Const<4>>>,
    row0: usize,
    s0: usize,
    s_len: usize,
    #[comptime] dv4: usize,
    #[comptime] share: usize,
    #[comptime] kt: usize,
) -> f32 {
    let tid = UNIT_POS as usize;
    #[unroll]
    for u in 0..share {
        let i = tid + u * UNITS;
        let mut v = Vector::<C, Const<4>>::new(C::from_int(0));
        if s0 + i / 32 < s_len && i % 32 < dv4 {
            v = k[(row0 + s0 + i / 32) * dv4 + i % 32];
        }
        regs[u] = v;
    }
    let mut scale = 0.0f32;
    if tid < kt && s0 + tid < s_len {
        scale = f32::cast_from(sk[row0 + s0 + tid]);
    }
    scale
}

/// `out[b, t, s] = v` if `s` is in the chunk (`s < s_end`), `neg_inf` instead where `s` is in
/// the causal future of query `t`.
#[cube]
fn write_score<F: Float>(out: &mut Tensor<F>, sizes: &ScoreSizes, b: usize, t: usize, s: usize, s_end: usize, v: f32) {
    if s < s_end {
        let mut x = v;
        if sizes.causal && s > t + sizes.offset {
            x = sizes.neg_inf;
        }
        out[(b * sizes.t_len + t) * sizes.s_len + s] = F::cast_from(x);
    }
}
