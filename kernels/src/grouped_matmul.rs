//! Grouped matrix products for mixture-of-experts layers, with the groups found on the
//! device: rows `offsets[g] .. offsets[g+1]` of `x [M, K]` are group `g` (`offsets [G + 1]`,
//! rising from 0 to `M`; empty groups allowed), multiplied by `w[g] [K, N]`.
//!
//! - [`grouped_matmul_fwd()`]: `y [M, N]`, `y[r] = x[r] · w[g]`;
//! - [`grouped_matmul_wgrad()`]: `dw [G, K, N]`, `dw[g] = x_gᵀ · dy_g` (zero for an empty
//!   group).
//!
//! Both are the same FMA tiling (`tile_product`): a cube of 16×16 units computes a
//! `16·rm × 16·rn` output tile, each unit an `rm × rn` block of it at a stride of 16 (so
//! that neighbouring units write neighbouring columns), accumulated in f32 registers over
//! the reduction dim in chunks of `bk` staged in shared memory as f32 (the rows of `A` per
//! reduction step transposed, so that a unit's `rm` reads are broadcasts). The host never
//! reads `offsets`: the forward launches an upper bound of row tiles and each cube finds
//! its group by scanning `offsets`.
//!
//! Inputs are contiguous; `F` is the float type of `x`, `w`, `dy` and the outputs, `I` the
//! int type of `offsets`.

use cubecl::prelude::*;

/// Units per cube: 16 × 16.
pub const GMM_UNITS: usize = 256;

/// `y[r] = x[r] · w[g]` for the rows `r` of group `g`. One cube per (group, tile of
/// `16·rm` rows of the group, tile of `16·rn` columns): the row tiles are numbered group
/// after group (`⌈rows_g / 16·rm⌉` each) and a cube finds its own by scanning `offsets`;
/// cubes past the last tile return. Every row of `y` belongs to one group and is written.
///
/// Grid: `grid_1d(⌈M / 16·rm⌉ + G)` cubes (an upper bound of the row tiles) × `⌈N / 16·rn⌉`
/// in z, [`GMM_UNITS`] units. `bk`: a multiple of 16.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn grouped_matmul_fwd<F: Float, I: Int>(
    x: &Tensor<F>,
    w: &Tensor<F>,
    offsets: &Tensor<I>,
    y: &mut Tensor<F>,
    m: usize,
    k: usize,
    n: usize,
    groups: usize,
    #[comptime] rm: usize,
    #[comptime] rn: usize,
    #[comptime] bk: usize,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let tm = comptime!(16 * rm);
    let tn = comptime!(16 * rn);
    // This cube's row tile among all groups' tiles: the group `g` and its rows `r0 .. r1`.
    let mut t = crate::cube_index();
    let mut g = 0usize;
    let mut r0 = 0usize;
    let mut r1 = 0usize;
    let mut found = false;
    let mut lo = group_bound(offsets, 0usize, m);
    while g < groups && !found {
        let hi = group_bound(offsets, g + 1, m);
        let mut tiles = 0usize;
        if hi > lo {
            tiles = (hi - lo).div_ceil(tm);
        }
        if t < tiles {
            found = true;
            r0 = lo + t * tm;
            r1 = r0 + tm;
            if r1 > hi {
                r1 = hi;
            }
        } else {
            t -= tiles;
            g += 1;
            lo = hi;
        }
    }
    if !found {
        terminate!();
    }
    let n0 = CUBE_POS_Z as usize * tn;
    let mut cols = n - n0;
    if cols > tn {
        cols = tn;
    }
    let mut acc = Array::<f32>::new(comptime!(rm * rn));
    tile_product::<F>(x, r0 * k, 1usize, k, r1 - r0, w, g * k * n + n0, n, cols, k, &mut acc, rm, rn, bk, true);
    store_tile::<F>(y, r0 * n + n0, n, r1 - r0, cols, &acc, rm, rn);
}

/// `dw[g] = x_gᵀ · dy_g` over the rows of group `g` (zero for an empty group). One cube per
/// (group, tile of `16·rm` of the `K` dims, tile of `16·rn` columns), over the group's rows
/// (read from `offsets`) in chunks of `bk`.
///
/// Grid: `grid_1d(G · ⌈K / 16·rm⌉)` cubes × `⌈N / 16·rn⌉` in z, [`GMM_UNITS`] units. `bk`:
/// a multiple of 16.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn grouped_matmul_wgrad<F: Float, I: Int>(
    x: &Tensor<F>,
    dy: &Tensor<F>,
    offsets: &Tensor<I>,
    dw: &mut Tensor<F>,
    m: usize,
    k: usize,
    n: usize,
    groups: usize,
    #[comptime] rm: usize,
    #[comptime] rn: usize,
    #[comptime] bk: usize,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let tk = comptime!(16 * rm);
    let tn = comptime!(16 * rn);
    let k_tiles = k.div_ceil(tk);
    let cube = crate::cube_index();
    if cube >= groups * k_tiles {
        terminate!();
    }
    let g = cube / k_tiles;
    let k0 = (cube % k_tiles) * tk;
    let n0 = CUBE_POS_Z as usize * tn;
    let mut dims = k - k0;
    if dims > tk {
        dims = tk;
    }
    let mut cols = n - n0;
    if cols > tn {
        cols = tn;
    }
    let lo = group_bound(offsets, g, m);
    let hi = group_bound(offsets, g + 1, m);
    let mut rows = 0usize;
    if hi > lo {
        rows = hi - lo;
    }
    let mut acc = Array::<f32>::new(comptime!(rm * rn));
    tile_product::<F>(x, lo * k + k0, k, 1usize, dims, dy, lo * n + n0, n, cols, rows, &mut acc, rm, rn, bk, false);
    store_tile::<F>(dw, (g * k + k0) * n + n0, n, dims, cols, &acc, rm, rn);
}

/// `offsets[i]`, at most `m` (so that malformed offsets never index past the rows).
#[cube]
fn group_bound<I: Int>(offsets: &Tensor<I>, i: usize, m: usize) -> usize {
    let mut v = usize::cast_from(offsets[i]);
    if v > m {
        v = m;
    }
    v
}

/// `acc = A · B` for the cube's `16·rm × 16·rn` output tile, over a reduction of `len`:
/// `A[i, e] = a[a_base + i·a_row + e·a_red]` for the tile's first `rows` rows, `B[e, j] =
/// b[b_base + e·b_red + j]` for its first `cols` columns (zero elsewhere). Unit `(ty, tx)`
/// (`UNIT_POS = 16·ty + tx`) holds entries `(16·i + ty, 16·j + tx)` at `acc[i·rn + j]`.
/// `a_red_contiguous` says which of `A`'s strides is 1, so that the staging loads are
/// coalesced along it.
#[cube]
#[allow(clippy::too_many_arguments)]
fn tile_product<F: Float>(
    a: &Tensor<F>,
    a_base: usize,
    a_red: usize,
    a_row: usize,
    rows: usize,
    b: &Tensor<F>,
    b_base: usize,
    b_red: usize,
    cols: usize,
    len: usize,
    acc: &mut Array<f32>,
    #[comptime] rm: usize,
    #[comptime] rn: usize,
    #[comptime] bk: usize,
    #[comptime] a_red_contiguous: bool,
) {
    let tm = comptime!(16 * rm);
    let tn = comptime!(16 * rn);
    // `A` chunks as `[bk][tm + 1]` (the padding spreads the transposing stores over the
    // banks), `B` chunks as `[bk][tn]`.
    let am = comptime!(16 * rm + 1);
    let mut a_sh = SharedMemory::<f32>::new(comptime!(bk * (16 * rm + 1)));
    let mut b_sh = SharedMemory::<f32>::new(comptime!(bk * 16 * rn));
    let tid = UNIT_POS as usize;
    let ty = tid / 16;
    let tx = tid % 16;
    #[unroll]
    for i in 0..rm * rn {
        acc[i] = 0.0f32;
    }
    let mut e0 = 0usize;
    while e0 < len {
        #[unroll]
        for u in 0..comptime!(tm * bk / GMM_UNITS) {
            let i = tid + u * GMM_UNITS;
            let mut e = i / tm;
            let mut r = i % tm;
            if a_red_contiguous {
                e = i % bk;
                r = i / bk;
            }
            let mut v = 0.0f32;
            if e0 + e < len && r < rows {
                v = f32::cast_from(a[a_base + r * a_row + (e0 + e) * a_red]);
            }
            a_sh[e * am + r] = v;
        }
        #[unroll]
        for u in 0..comptime!(tn * bk / GMM_UNITS) {
            let i = tid + u * GMM_UNITS;
            let e = i / tn;
            let c = i % tn;
            let mut v = 0.0f32;
            if e0 + e < len && c < cols {
                v = f32::cast_from(b[b_base + (e0 + e) * b_red + c]);
            }
            b_sh[i] = v;
        }
        sync_cube();
        for e in 0..bk {
            let mut av = Array::<f32>::new(rm);
            let mut bv = Array::<f32>::new(rn);
            #[unroll]
            for i in 0..rm {
                av[i] = a_sh[e * am + i * 16 + ty];
            }
            #[unroll]
            for j in 0..rn {
                bv[j] = b_sh[e * tn + j * 16 + tx];
            }
            #[unroll]
            for i in 0..rm {
                #[unroll]
                for j in 0..rn {
                    acc[i * rn + j] += av[i] * bv[j];
                }
            }
        }
        sync_cube();
        e0 += bk;
    }
}

/// Writes the tile `acc` of [`tile_product`] to `out[base + i·stride + j]` for its first
/// `rows` rows and `cols` columns.
#[cube]
#[allow(clippy::too_many_arguments)]
fn store_tile<F: Float>(
    out: &mut Tensor<F>,
    base: usize,
    stride: usize,
    rows: usize,
    cols: usize,
    acc: &Array<f32>,
    #[comptime] rm: usize,
    #[comptime] rn: usize,
) {
    let tid = UNIT_POS as usize;
    let ty = tid / 16;
    let tx = tid % 16;
    #[unroll]
    for i in 0..rm {
        let r = i * 16 + ty;
        #[unroll]
        for j in 0..rn {
            let c = j * 16 + tx;
            if r < rows && c < cols {
                out[base + r * stride + c] = F::cast_from(acc[i * rn + j]);
            }
        }
    }
}
