//! The indexer scores on plain units (SIMT), every runtime: one unit per score
//! ([`indexer_scores_naive()`]) or a register-tiled GEMM ([`indexer_scores_tiled()`]). Contract in
//! [`crate::indexer`].

use cubecl::prelude::*;

use super::{weighted_relu_score, ScoreSizes};

/// Units per cube of [`indexer_scores_naive()`].
pub const NAIVE_UNITS: usize = 128;
/// Units per cube of [`indexer_scores_tiled()`] (16×16).
pub const TILED_UNITS: usize = 256;

/// The tile of [`indexer_scores_tiled()`]: `tt` queries × `16·rm` rows `(t, h)` × `16·rn` keys,
/// the head dim in chunks of `dk`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tile {
    /// Whole queries per tile.
    pub tt: usize,
    /// Rows per unit (16 units down the tile).
    pub rm: usize,
    /// Keys per unit (16 units across the tile).
    pub rn: usize,
    /// Head dims per staged chunk.
    pub dk: usize,
}

impl Tile {
    /// The tile for `heads` heads where a cube has `max_shared` bytes of shared memory: the
    /// larger one where 33 KiB fit; `None` when one query's heads do not fit in a tile.
    pub fn new(heads: usize, max_shared: usize) -> Option<Self> {
        let (rm, rn, dk) = if max_shared >= 32 * 1024 + 1024 { (8, 4, 32) } else { (4, 4, 16) };
        let tt = (16 * rm) / heads.max(1);
        (tt > 0).then_some(Self { tt, rm, rn, dk })
    }

    /// Cubes for `b` batches of `t` queries × `s` keys.
    pub fn cubes(&self, b: usize, t: usize, s: usize) -> usize {
        b * t.div_ceil(self.tt) * s.div_ceil(16 * self.rn)
    }
}

/// The simplest kernel: one unit per output score, loops over heads and dims reading global
/// memory (cached). Reference for the other variants; fine for small shapes.
///
/// Grid: `grid_1d(⌈B·T·S / NAIVE_UNITS⌉)`, [`NAIVE_UNITS`] units (any number works).
#[cube(launch)]
pub fn indexer_scores_naive<F: Float>(
    q: &Tensor<F>,
    w: &Tensor<F>,
    k: &Tensor<F>,
    out: &mut Tensor<F>,
    sizes: ScoreSizes,
    d: usize,
    #[define(F)] _dtype: StorageType,
) {
    let pos = ABSOLUTE_POS;
    if pos >= out.len() {
        terminate!();
    }
    let s = pos % sizes.s_len;
    let bt = pos / sizes.s_len;
    let t = bt % sizes.t_len;
    let b = bt / sizes.t_len;
    if sizes.causal && s > t + sizes.offset {
        out[pos] = F::cast_from(sizes.neg_inf);
    } else {
        out[pos] = F::cast_from(weighted_relu_score(q, w, k, bt, (b * sizes.s_len + s) * d, sizes.heads, d));
    }
}

/// Register-tiled: the scores are a GEMM of the rows `(t, h)` of `q` (flattened per
/// batch) against the keys, followed by `w·ReLU` and a sum over heads. One cube of 16×16
/// threads computes a tile of `tt` whole queries (`tt·H ≤ 16·rm` rows) × `16·rn` keys: the
/// head dim is walked in chunks of `dk` staged in shared memory (transposed, so that each
/// thread reads its `rm` rows and `rn` keys at stride 16: broadcast / conflict-free), each
/// thread accumulates an `rm × rn` block of logits in registers, then applies `w·ReLU` and
/// writes them to shared memory where one thread per output sums the heads of its query.
/// Tiles entirely in the causal future only write `neg_inf`.
///
/// Grid: `grid_1d(`[`Tile::cubes`]`)`, [`TILED_UNITS`] units; `tt`, `rm`, `rn`, `dk` from [`Tile`].
#[cube(launch)]
pub fn indexer_scores_tiled<F: Float>(
    q: &Tensor<F>,
    w: &Tensor<F>,
    k: &Tensor<F>,
    out: &mut Tensor<F>,
    sizes: ScoreSizes,
    d: usize,
    #[comptime] tt: usize,
    #[comptime] rm: usize,
    #[comptime] rn: usize,
    #[comptime] dk: usize,
    #[define(F)] _dtype: StorageType,
) {
    let rows = comptime!(16 * rm);
    let cols = comptime!(16 * rn);
    let n_t = sizes.t_len.div_ceil(tt);
    let n_s = sizes.s_len.div_ceil(cols);
    let cube = crate::cube_index();
    if cube >= out.shape(0) * n_t * n_s {
        terminate!();
    }
    let st = cube % n_s;
    let bt = cube / n_s;
    let ti = bt % n_t;
    let b = bt / n_t;
    let t0 = ti * tt;
    let s0 = st * cols;
    let tid = UNIT_POS as usize;
    let ty = tid / 16;
    let tx = tid % 16;
    let nrows = tt * sizes.heads;

    let mut t_last = t0 + tt;
    if t_last > sizes.t_len {
        t_last = sizes.t_len;
    }
    t_last -= 1;
    if sizes.causal && s0 > t_last + sizes.offset {
        // The whole tile is in the future of every query.
        let mut o = tid;
        while o < tt * cols {
            let t = t0 + o / cols;
            let s = s0 + o % cols;
            if t < sizes.t_len && s < sizes.s_len {
                out[(b * sizes.t_len + t) * sizes.s_len + s] = F::cast_from(sizes.neg_inf);
            }
            o += 256usize;
        }
    } else {
        let mut sh = SharedMemory::<f32>::new(comptime!(if dk * (16 * rm + 16 * rn) > 256 * rm * rn {
            dk * (16 * rm + 16 * rn)
        } else {
            256 * rm * rn
        }));
        let k_off = comptime!(dk * 16 * rm);
        let mut acc = Array::<f32>::new(comptime!(rm * rn));
        #[unroll]
        for a in 0..rm * rn {
            acc[a] = 0.0f32;
        }
        let mut d0 = 0usize;
        while d0 < d {
            // Stage q rows and keys of this chunk (coalesced along the head dim).
            let mut i = tid;
            while i < rows * dk {
                let e = i % dk;
                let r = i / dk;
                let t = t0 + r / sizes.heads;
                let mut v = 0.0f32;
                if r < nrows && t < sizes.t_len && d0 + e < d {
                    v = f32::cast_from(q[((b * sizes.t_len + t) * sizes.heads + r % sizes.heads) * d + d0 + e]);
                }
                sh[e * rows + r] = v;
                i += 256usize;
            }
            let mut i = tid;
            while i < cols * dk {
                let e = i % dk;
                let c = i / dk;
                let s = s0 + c;
                let mut v = 0.0f32;
                if s < sizes.s_len && d0 + e < d {
                    v = f32::cast_from(k[(b * sizes.s_len + s) * d + d0 + e]);
                }
                sh[k_off + e * cols + c] = v;
                i += 256usize;
            }
            sync_cube();
            for e in 0..dk {
                let mut a = Array::<f32>::new(rm);
                let mut kb = Array::<f32>::new(rn);
                #[unroll]
                for ii in 0..rm {
                    a[ii] = sh[e * rows + ii * 16 + ty];
                }
                #[unroll]
                for jj in 0..rn {
                    kb[jj] = sh[k_off + e * cols + jj * 16 + tx];
                }
                #[unroll]
                for ii in 0..rm {
                    #[unroll]
                    for jj in 0..rn {
                        acc[ii * rn + jj] += a[ii] * kb[jj];
                    }
                }
            }
            sync_cube();
            d0 += dk;
        }
        // w·ReLU into shared memory, then one thread per output sums its query's heads.
        #[unroll]
        for ii in 0..rm {
            let r = ii * 16 + ty;
            let t = t0 + r / sizes.heads;
            let mut wv = 0.0f32;
            if r < nrows && t < sizes.t_len {
                wv = f32::cast_from(w[(b * sizes.t_len + t) * sizes.heads + r % sizes.heads]);
            }
            #[unroll]
            for jj in 0..rn {
                sh[r * cols + jj * 16 + tx] = wv * f32::max(acc[ii * rn + jj], 0.0f32);
            }
        }
        sync_cube();
        let mut o = tid;
        while o < tt * cols {
            let tl = o / cols;
            let c = o % cols;
            let t = t0 + tl;
            let s = s0 + c;
            if t < sizes.t_len && s < sizes.s_len {
                let mut v = 0.0f32;
                if sizes.causal && s > t + sizes.offset {
                    v = sizes.neg_inf;
                } else {
                    for hh in 0..sizes.heads {
                        v += sh[(tl * sizes.heads + hh) * cols + c];
                    }
                }
                out[(b * sizes.t_len + t) * sizes.s_len + s] = F::cast_from(v);
            }
            o += 256usize;
        }
    }
}
