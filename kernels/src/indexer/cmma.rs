//! The indexer scores on cmma (16×16×16 f16 tiles, f32 accumulation): the e4m3 codes held
//! exactly in f16, the FP8 scales applied afterwards (the factored contract of
//! [`crate::indexer`]).
//!
//! One cube of 8 planes computes [`ROWS`] rows `(token, head)` — `128 / hp` whole
//! queries, `hp` = the heads rounded up to 16 — against a range of `chunk` keys, 64 keys
//! at a time. Plane `p` owns rows `16p..16p+16` (part of one query's heads): per tile of
//! keys it multiplies its rows by the tile (4 accumulators of 16×16), stages them in
//! shared memory, applies `w·s_q·ReLU` and sums its 16 rows; the output of each query is
//! then the sum of its planes' partial sums times the key scales.

use cubecl::cmma;
use cubecl::prelude::*;

use super::{chunk_keys, fill_future, query_block, ScoreSizes};
use crate::shared::cmma::{a_tile, b_tile, fetch_rows, padded, share, store_tile, zero_padding, zero_tiles, CMMA_ALIGN};

/// Rows `(token, head)` per cube: 8 planes × 16.
pub const ROWS: usize = 128;
/// Units per cube (8 planes of 32).
pub const UNITS: usize = 256;
/// Keys per tile.
const TILE: usize = 64;
/// Keys per cube (`chunk`; 32 tiles: enough cubes for decode's single query, few query
/// reloads).
pub const CHUNK: usize = 2048;

/// `hp`, the heads padded to a multiple of 16 (one plane's rows), and the queries per cube.
pub fn padded_heads(heads: usize) -> (usize, usize) {
    let hp = heads.div_ceil(16) * 16;
    (hp, ROWS / hp)
}

/// Shared memory of [`indexer_scores_cmma()`] for head dim `d`: the query and key tiles of f16
/// codes, the f32 staging of one tile's products (those three aligned to `CMMA_ALIGN`), the
/// row weights, partial sums and two tiles' key scales.
pub fn shared_bytes(d: usize) -> usize {
    2 * (ROWS + TILE) * padded(d) + 4 * (ROWS * TILE + ROWS + 8 * TILE + 2 * TILE) + 3 * CMMA_ALIGN
}

/// Grid: `grid_1d(B · ⌈T / (128/hp)⌉)` cubes × `⌈S / chunk⌉` in z, [`UNITS`] units,
/// plane size 32. `q` codes `[B,T,H,D]` and `k` codes `[B,S,D]` as vectors of `N` (`D % N
/// == 0`), `w` `[B,T,H]`, scales `sq` `[B,T,H]` and `sk` `[B,S]` (one block per row).
/// `hp`: `H` rounded up to 16, at most 128; `chunk`: a multiple of 64.
#[cube(launch_unchecked)]
pub fn indexer_scores_cmma<F: Float, C: Float, SC: Float, N: Size>(
    q: &Tensor<Vector<C, N>>,
    w: &Tensor<F>,
    sq: &Tensor<SC>,
    k: &Tensor<Vector<C, N>>,
    sk: &Tensor<SC>,
    out: &mut Tensor<F>,
    sizes: ScoreSizes,
    #[comptime] d: usize,
    #[comptime] hp: usize,
    #[comptime] chunk: usize,
    #[define(F, C, SC)] _dtypes: [StorageType; 3],
) {
    let tq = comptime!(ROWS / hp);
    let (b, t0, live) = query_block(&sizes, out.shape(0), tq);
    if !live {
        terminate!();
    }
    let nv = N::value();
    let dvec = comptime!(d / nv);
    let dp = comptime!(padded(d));
    let nk = comptime!(d.div_ceil(16));
    let tid = UNIT_POS as usize;
    let plane = tid / 32;
    let lane = tid % 32;

    // Keys `s < limit` are computed; later keys of the chunk are in every query's future.
    let (s_begin, s_end, limit) = chunk_keys(&sizes, t0, tq, chunk);
    let mut s_done = s_begin;

    let mut q_sh = SharedMemory::<Vector<C, N>>::new_aligned(comptime!(ROWS * padded(d) / nv), CMMA_ALIGN);
    let mut k_sh = SharedMemory::<Vector<C, N>>::new_aligned(comptime!(TILE * padded(d) / nv), CMMA_ALIGN);
    let mut st_sh = SharedMemory::<f32>::new_aligned(comptime!(ROWS * TILE), CMMA_ALIGN);
    let mut wq_sh = SharedMemory::<f32>::new(ROWS);
    let mut part_sh = SharedMemory::<f32>::new(comptime!(8 * TILE));
    // Key scales, double-buffered: tile `n` in half `n % 2` (written while the previous
    // tile's outputs may still read theirs).
    let mut sk_sh = SharedMemory::<f32>::new(comptime!(2 * TILE));

    if s_begin < limit {
        // Query codes (rows past the heads or tokens and dims past D are zero), each row's
        // weight `w·s_q`, and the zero padding of the key tile.
        let mut q_regs = Array::<Vector<C, N>>::new(comptime!(share(ROWS, d, nv, UNITS)));
        #[unroll]
        for u in 0..comptime!(share(ROWS, d, nv, UNITS)) {
            let i = tid + u * UNITS;
            let r = i / dvec;
            let t = t0 + r / hp;
            let hh = r % hp;
            let mut v = Vector::<C, N>::new(C::from_int(0));
            if i < ROWS * dvec && t < sizes.t_len && hh < sizes.heads {
                v = q[((b * sizes.t_len + t) * sizes.heads + hh) * dvec + i % dvec];
            }
            q_regs[u] = v;
        }
        store_tile::<C, N>(&q_regs, &mut q_sh, ROWS, d, UNITS);
        if tid < ROWS {
            let t = t0 + tid / hp;
            let hh = tid % hp;
            let mut v = 0.0f32;
            if t < sizes.t_len && hh < sizes.heads {
                let j = (b * sizes.t_len + t) * sizes.heads + hh;
                v = f32::cast_from(w[j]) * f32::cast_from(sq[j]);
            }
            wq_sh[tid] = v;
        }
        let zero = Vector::<C, N>::new(C::from_int(0));
        zero_padding::<Vector<C, N>>(&mut q_sh, zero, ROWS, d, nv);
        zero_padding::<Vector<C, N>>(&mut k_sh, zero, TILE, d, nv);
        let mut k_regs = Array::<Vector<C, N>>::new(comptime!(share(TILE, d, nv, UNITS)));

        sync_cube();
        // The plane's query fragments and row weights, loaded once for every key tile.
        let mut qa = Sequence::<cmma::Matrix<C>>::new();
        #[unroll]
        for ks in 0..nk {
            let a = a_tile::<C>(cmma::MatrixLayout::RowMajor);
            cmma::load(&a, &q_sh.slice((plane * 16 * dp + ks * 16) / nv, ROWS * dp / nv), comptime!(dp as u32));
            qa.push(a);
        }
        let mut wr = Array::<f32>::new(16usize);
        #[unroll]
        for r in 0..16usize {
            wr[r] = wq_sh[plane * 16 + r];
        }
        let kb = b_tile::<C>(cmma::MatrixLayout::ColMajor);
        let stage = plane * 16 * TILE;
        // The planes holding query `tl`'s rows: `tl·hp/16 ..`.
        let ppq = comptime!(hp / 16);

        let mut s0 = s_begin;
        while s0 < limit {
            // The key tile's codes (zero past the end) and scales.
            let sk0 = ((s0 - s_begin) / TILE) % 2 * TILE;
            fetch_rows::<C, N>(k, (b * sizes.s_len + s0) * dvec, dvec, sizes.s_len - s0, &mut k_regs, TILE, d, UNITS);
            store_tile::<C, N>(&k_regs, &mut k_sh, TILE, d, UNITS);
            if tid < TILE {
                let mut v = 0.0f32;
                if s0 + tid < sizes.s_len {
                    v = f32::cast_from(sk[b * sizes.s_len + s0 + tid]);
                }
                sk_sh[sk0 + tid] = v;
            }
            sync_cube();

            // This plane's 16 rows × 64 keys of code dot products.
            let acc = zero_tiles(comptime!(TILE / 16));
            #[unroll]
            for ks in 0..nk {
                #[unroll]
                for n in 0..TILE / 16 {
                    cmma::load(
                        &kb,
                        &k_sh.slice((n * 16 * dp + ks * 16) / nv, TILE * dp / nv),
                        comptime!(dp as u32),
                    );
                    let a = acc.index(n);
                    cmma::execute::<C, C, f32, f32>(qa.index(ks), &kb, a, a);
                }
            }
            #[unroll]
            for n in 0..TILE / 16 {
                cmma::store(
                    &mut st_sh.slice_mut(stage + n * 16, stage + 16 * TILE),
                    acc.index(n),
                    comptime!(TILE as u32),
                    cmma::MatrixLayout::RowMajor,
                );
            }
            sync_plane();

            // w·s_q·ReLU summed over the plane's 16 rows, two keys per lane.
            #[unroll]
            for half in 0..2usize {
                let key = lane + 32 * half;
                let mut v = 0.0f32;
                #[unroll]
                for r in 0..16usize {
                    v += wr[r] * f32::max(st_sh[stage + r * TILE + key], 0.0f32);
                }
                part_sh[plane * TILE + key] = v;
            }
            sync_cube();

            let mut o = tid;
            while o < tq * TILE {
                let tl = o / TILE;
                let key = o % TILE;
                let t = t0 + tl;
                let s = s0 + key;
                if t < sizes.t_len && s < s_end {
                    let mut v = sizes.neg_inf;
                    if !sizes.causal || s <= t + sizes.offset {
                        let mut sum = 0.0f32;
                        #[unroll]
                        for p in 0..ppq {
                            sum += part_sh[(tl * ppq + p) * TILE + key];
                        }
                        v = sk_sh[sk0 + key] * sum;
                    }
                    out[(b * sizes.t_len + t) * sizes.s_len + s] = F::cast_from(v);
                }
                o += UNITS;
            }
            s0 += TILE;
        }
        s_done = s0;
    }

    fill_future(out, &sizes, b, t0, s_done, s_end, tq, UNITS);
}
