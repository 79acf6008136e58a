//! Grouped matrix products for mixture-of-experts layers, with the groups found on the
//! device: rows `offsets[g] .. offsets[g+1]` of `x [M, K]` are group `g` (`offsets [G + 1]`,
//! rising from 0 to `M`; empty groups allowed), multiplied by `w[g] [K, N]`.
//!
//! - [`grouped_matmul_fwd()`] and [`grouped_matmul_fwd_cmma()`]: `y [M, N]`,
//!   `y[r] = x[r] · w[g]`;
//! - [`grouped_matmul_wgrad()`] and [`grouped_matmul_wgrad_cmma()`]: `dw [G, K, N]`,
//!   `dw[g] = x_gᵀ · dy_g` (zero for an empty group).
//!
//! The host never reads `offsets`: the forwards launch an upper bound of row tiles and each
//! cube finds its group by scanning `offsets` (`fwd_tile`); the weight gradients run one
//! cube per (group, `K` tile, `N` tile) and read their group's rows from `offsets`
//! (`wgrad_tile`). Two tilings of the same decomposition:
//!
//! - FMA, any float type (`tile_product`): a cube of 16×16 units computes a
//!   `16·rm × 16·rn` output tile, each unit an `rm × rn` block of it at a stride of 16 (so
//!   that neighbouring units write neighbouring columns), accumulated in f32 registers over
//!   the reduction dim in chunks of `bk` staged in shared memory as f32 (the rows of `A` per
//!   reduction step transposed, so that a unit's `rm` reads are broadcasts).
//! - Tensor cores, bf16/f16 (`cmma_tile_product`): a cube of 4 planes computes a
//!   [`GMM_TC_TILE`]² output tile, each plane a 32×32 quarter of it as 2×2 `cmma` 16×16×16
//!   fragments with f32 accumulators, over the reduction dim in chunks of [`GMM_TC_BK`]
//!   staged in shared memory in the input type (zero past the group's rows, `K` or `N`; the
//!   next chunk is fetched into registers while the current one is multiplied); the tile is
//!   written through shared memory with a bound check, since `cmma` stores whole fragments.
//!
//! Inputs are contiguous; `F` is the float type of `x`, `w`, `dy` and the outputs, `I` the
//! int type of `offsets`; the tensor-core kernels read the inputs as vectors of `N` values
//! (`N` dividing `K`, `N` and each input's start).

use cubecl::cmma;
use cubecl::prelude::*;

use crate::shared::cmma::{a_tile, b_tile, padded, zero_tiles, CMMA_ALIGN};

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
    let tile = fwd_tile(offsets, m, n, groups, comptime!(16 * rm), comptime!(16 * rn));
    if !tile.found {
        terminate!();
    }
    let mut acc = Array::<f32>::new(comptime!(rm * rn));
    tile_product::<F>(x, tile.start * k, 1usize, k, tile.rows, w, tile.group * k * n + tile.n0, n, tile.cols, k, &mut acc, rm, rn, bk, true);
    store_tile::<F>(y, tile.start * n + tile.n0, n, tile.rows, tile.cols, &acc, rm, rn);
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
    let tile = wgrad_tile(offsets, m, k, n, groups, comptime!(16 * rm), comptime!(16 * rn));
    if !tile.found {
        terminate!();
    }
    let mut acc = Array::<f32>::new(comptime!(rm * rn));
    tile_product::<F>(x, tile.start * k + tile.k0, k, 1usize, tile.dims, dy, tile.start * n + tile.n0, n, tile.cols, tile.rows, &mut acc, rm, rn, bk, false);
    store_tile::<F>(dw, (tile.group * k + tile.k0) * n + tile.n0, n, tile.dims, tile.cols, &acc, rm, rn);
}

/// Units per cube of the tensor-core kernels: 4 planes of 32.
pub const GMM_TC_UNITS: usize = 128;
/// Output tile of a tensor-core cube: `GMM_TC_TILE × GMM_TC_TILE`, a 32×32 quarter per plane.
pub const GMM_TC_TILE: usize = 64;
/// Reduction chunk of the tensor-core kernels: two 16-deep `cmma` steps per staging.
pub const GMM_TC_BK: usize = 32;

/// [`grouped_matmul_fwd()`] on tensor cores (bf16/f16 `F`, 16×16×16 `cmma`, f32
/// accumulation): one cube per (group, tile of [`GMM_TC_TILE`] rows of the group, tile of
/// [`GMM_TC_TILE`] columns), found on the device as there; rows past the group's end are
/// multiplied as zeros and not written.
///
/// Grid: `grid_1d(⌈M / 64⌉ + G)` cubes × `⌈N / 64⌉` in z, [`GMM_TC_UNITS`] units, plane size
/// 32. `x`, `w`: vectors of `N` values, `N` dividing `K`, `N` and their starts.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn grouped_matmul_fwd_cmma<F: Float, I: Int, N: Size>(
    x: &Tensor<Vector<F, N>>,
    w: &Tensor<Vector<F, N>>,
    offsets: &Tensor<I>,
    y: &mut Tensor<F>,
    m: usize,
    k: usize,
    n: usize,
    groups: usize,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let tile = fwd_tile(offsets, m, n, groups, GMM_TC_TILE, GMM_TC_TILE);
    if !tile.found {
        terminate!();
    }
    let acc = cmma_tile_product::<F, N>(x, tile.start * k, 1usize, k, tile.rows, w, tile.group * k * n + tile.n0, n, tile.cols, k, true);
    store_cmma_tile::<F>(y, tile.start * n + tile.n0, n, tile.rows, tile.cols, &acc);
}

/// [`grouped_matmul_wgrad()`] on tensor cores (bf16/f16 `F`, 16×16×16 `cmma`, f32
/// accumulation): one cube per (group, tile of [`GMM_TC_TILE`] of the `K` dims, tile of
/// [`GMM_TC_TILE`] columns), over the group's rows in chunks of [`GMM_TC_BK`] (zero past the
/// group's end).
///
/// Grid: `grid_1d(G · ⌈K / 64⌉)` cubes × `⌈N / 64⌉` in z, [`GMM_TC_UNITS`] units, plane size
/// 32. `x`, `dy`: vectors of `N` values, `N` dividing `K`, `N` and their starts.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn grouped_matmul_wgrad_cmma<F: Float, I: Int, N: Size>(
    x: &Tensor<Vector<F, N>>,
    dy: &Tensor<Vector<F, N>>,
    offsets: &Tensor<I>,
    dw: &mut Tensor<F>,
    m: usize,
    k: usize,
    n: usize,
    groups: usize,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let tile = wgrad_tile(offsets, m, k, n, groups, GMM_TC_TILE, GMM_TC_TILE);
    if !tile.found {
        terminate!();
    }
    let acc = cmma_tile_product::<F, N>(x, tile.start * k + tile.k0, k, 1usize, tile.dims, dy, tile.start * n + tile.n0, n, tile.cols, tile.rows, false);
    store_cmma_tile::<F>(dw, (tile.group * k + tile.k0) * n + tile.n0, n, tile.dims, tile.cols, &acc);
}

/// A forward cube's output tile: rows `start .. start + rows` of `y`, all in group `group`,
/// and columns `n0 .. n0 + cols`. `found` is false for the cubes past the last row tile.
#[derive(CubeType, Clone, Copy)]
struct FwdTile {
    found: bool,
    group: usize,
    start: usize,
    rows: usize,
    n0: usize,
    cols: usize,
}

/// This cube's [`FwdTile`] for tiles of `tm` rows and `tn` columns: the row tiles are
/// numbered group after group (`⌈rows_g / tm⌉` each, none for an empty group) and cube
/// `cube_index()` takes the one of its number, found by scanning `offsets`; `CUBE_POS_Z`
/// is the column tile.
#[cube]
fn fwd_tile<I: Int>(offsets: &Tensor<I>, m: usize, n: usize, groups: usize, #[comptime] tm: usize, #[comptime] tn: usize) -> FwdTile {
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
    let n0 = CUBE_POS_Z as usize * tn;
    FwdTile { found, group: g, start: r0, rows: r1 - r0, n0, cols: span(n, n0, tn) }
}

/// A weight-gradient cube's output tile: dims `k0 .. k0 + dims` and columns
/// `n0 .. n0 + cols` of `dw[group]`, summed over rows `start .. start + rows` (the group's).
/// `found` is false for the cubes past the last tile.
#[derive(CubeType, Clone, Copy)]
struct WgradTile {
    found: bool,
    group: usize,
    start: usize,
    rows: usize,
    k0: usize,
    dims: usize,
    n0: usize,
    cols: usize,
}

/// This cube's [`WgradTile`] for tiles of `tk` dims and `tn` columns: cube `cube_index()` is
/// (group, dim tile) `g·⌈K / tk⌉ + t`, `CUBE_POS_Z` the column tile.
#[cube]
#[allow(clippy::too_many_arguments)]
fn wgrad_tile<I: Int>(offsets: &Tensor<I>, m: usize, k: usize, n: usize, groups: usize, #[comptime] tk: usize, #[comptime] tn: usize) -> WgradTile {
    let k_tiles = k.div_ceil(tk);
    let cube = crate::cube_index();
    let found = cube < groups * k_tiles;
    let mut g = 0usize;
    let mut k0 = 0usize;
    let mut lo = 0usize;
    let mut hi = 0usize;
    if found {
        g = cube / k_tiles;
        k0 = (cube % k_tiles) * tk;
        lo = group_bound(offsets, g, m);
        hi = group_bound(offsets, g + 1, m);
    }
    let mut rows = 0usize;
    if hi > lo {
        rows = hi - lo;
    }
    let n0 = CUBE_POS_Z as usize * tn;
    WgradTile { found, group: g, start: lo, rows, k0, dims: span(k, k0, tk), n0, cols: span(n, n0, tn) }
}

/// `min(len − start, size)`: the part of a tile of `size` from `start` below `len`.
#[cube]
fn span(len: usize, start: usize, #[comptime] size: usize) -> usize {
    let mut v = 0usize;
    if len > start {
        v = len - start;
    }
    if v > size {
        v = size;
    }
    v
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

/// [`tile_product`] on tensor cores: `A · B` for the cube's [`GMM_TC_TILE`]² output tile
/// over a reduction of `len`, with `A`, `B`, `rows`, `cols` and `a_red_contiguous` as there
/// (offsets and strides in values, multiples of `N`; `A`, `B` zero outside them). Returns
/// plane `p`'s four accumulators, fragment `2i + j` holding rows `32·(p/2) + 16i ..+16`,
/// columns `32·(p%2) + 16j ..+16` of the tile.
///
/// Each chunk of [`GMM_TC_BK`] of the reduction is staged in shared memory in the input type
/// as stored: `A` as `[64][32]` (`a_red_contiguous`, a row-major operand) or `[32][64]` (a
/// column-major one), `B` as `[32][64]`, rows [`padded`] against bank conflicts.
#[cube]
#[allow(clippy::too_many_arguments)]
fn cmma_tile_product<F: Float, N: Size>(
    a: &Tensor<Vector<F, N>>,
    a_base: usize,
    a_red: usize,
    a_row: usize,
    rows: usize,
    b: &Tensor<Vector<F, N>>,
    b_base: usize,
    b_red: usize,
    cols: usize,
    len: usize,
    #[comptime] a_red_contiguous: bool,
) -> Sequence<cmma::Matrix<f32>> {
    let nv = N::value();
    let t = comptime!(GMM_TC_TILE);
    let bk = comptime!(GMM_TC_BK);
    // The staged A chunk: `a_p × a_q` at row stride `a_s` (`[i][e]` or `[e][i]`).
    let a_p = comptime!(if a_red_contiguous { GMM_TC_TILE } else { GMM_TC_BK });
    let a_q = comptime!(if a_red_contiguous { GMM_TC_BK } else { GMM_TC_TILE });
    let a_s = comptime!(padded(a_q));
    let b_s = comptime!(padded(GMM_TC_TILE));
    let mut a_sh = SharedMemory::<Vector<F, N>>::new_aligned(comptime!(a_p * a_s / nv), CMMA_ALIGN);
    let mut b_sh = SharedMemory::<Vector<F, N>>::new_aligned(comptime!(bk * b_s / nv), CMMA_ALIGN);
    let mut a_regs = Array::<Vector<F, N>>::new(comptime!(a_p * a_q / nv / GMM_TC_UNITS));
    let mut b_regs = Array::<Vector<F, N>>::new(comptime!(bk * t / nv / GMM_TC_UNITS));
    let plane = UNIT_POS as usize / 32;
    let pr = plane / 2;
    let pc = plane % 2;
    let acc = zero_tiles(4usize);
    let layout = comptime!(if a_red_contiguous { cmma::MatrixLayout::RowMajor } else { cmma::MatrixLayout::ColMajor });
    let a0 = a_tile::<F>(layout);
    let a1 = a_tile::<F>(layout);
    let bf = b_tile::<F>(cmma::MatrixLayout::RowMajor);

    fetch_chunk::<F, N>(a, a_base, a_red, a_row, rows, b, b_base, b_red, cols, len, 0usize, &mut a_regs, &mut b_regs, a_red_contiguous);
    let mut e0 = 0usize;
    while e0 < len {
        store_panel::<F, N>(&a_regs, &mut a_sh, a_p, a_q);
        store_panel::<F, N>(&b_regs, &mut b_sh, bk, t);
        sync_cube();
        let next = e0 + bk;
        if next < len {
            fetch_chunk::<F, N>(a, a_base, a_red, a_row, rows, b, b_base, b_red, cols, len, next, &mut a_regs, &mut b_regs, a_red_contiguous);
        }
        #[unroll]
        for ks in 0..comptime!(GMM_TC_BK / 16) {
            // The plane's two A fragments (rows 32·pr + 16i), then each B fragment against both.
            let mut at0 = (pr * 32 * a_s) + ks * 16;
            let mut at1 = at0 + 16 * a_s;
            if comptime!(!a_red_contiguous) {
                at0 = ks * 16 * a_s + pr * 32;
                at1 = at0 + 16;
            }
            cmma::load(&a0, &a_sh.slice(at0 / nv, comptime!(a_p * a_s / nv)), comptime!(a_s as u32));
            cmma::load(&a1, &a_sh.slice(at1 / nv, comptime!(a_p * a_s / nv)), comptime!(a_s as u32));
            #[unroll]
            for j in 0..2usize {
                let bt = ks * 16 * b_s + pc * 32 + j * 16;
                cmma::load(&bf, &b_sh.slice(bt / nv, comptime!(bk * b_s / nv)), comptime!(b_s as u32));
                cmma::execute::<F, F, f32, f32>(&a0, &bf, acc.index(j), acc.index(j));
                cmma::execute::<F, F, f32, f32>(&a1, &bf, acc.index(2 + j), acc.index(2 + j));
            }
        }
        sync_cube();
        e0 = next;
    }
    acc
}

/// A unit's share of chunk `e0 ..` of the reduction of [`cmma_tile_product`]'s `A` and `B`,
/// into registers (zero past `len`, `rows` and `cols`).
#[cube]
#[allow(clippy::too_many_arguments)]
fn fetch_chunk<F: Float, N: Size>(
    a: &Tensor<Vector<F, N>>,
    a_base: usize,
    a_red: usize,
    a_row: usize,
    rows: usize,
    b: &Tensor<Vector<F, N>>,
    b_base: usize,
    b_red: usize,
    cols: usize,
    len: usize,
    e0: usize,
    a_regs: &mut Array<Vector<F, N>>,
    b_regs: &mut Array<Vector<F, N>>,
    #[comptime] a_red_contiguous: bool,
) {
    let left = len - e0;
    if a_red_contiguous {
        fetch_panel::<F, N>(a, a_base + e0, a_row, rows, left, a_regs, GMM_TC_TILE, GMM_TC_BK);
    } else {
        fetch_panel::<F, N>(a, a_base + e0 * a_red, a_red, left, rows, a_regs, GMM_TC_BK, GMM_TC_TILE);
    }
    fetch_panel::<F, N>(b, b_base + e0 * b_red, b_red, left, cols, b_regs, GMM_TC_BK, GMM_TC_TILE);
}

/// A unit's share of the `p_len × q_len` panel `src[base + p·stride + q]` (offsets in values,
/// `q` contiguous, read as vectors of `N`) into `regs`, zero where `p ≥ p_live` or
/// `q ≥ q_live` (`q_live` a multiple of `N`). Entry `i = UNIT_POS + u·`[`GMM_TC_UNITS`] is
/// row `i / (q_len/N)`, vector `i % (q_len/N)`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn fetch_panel<F: Float, N: Size>(
    src: &Tensor<Vector<F, N>>,
    base: usize,
    stride: usize,
    p_live: usize,
    q_live: usize,
    regs: &mut Array<Vector<F, N>>,
    #[comptime] p_len: usize,
    #[comptime] q_len: usize,
) {
    let nv = N::value();
    let qv = comptime!(q_len / nv);
    #[unroll]
    for u in 0..comptime!(p_len * q_len / nv / GMM_TC_UNITS) {
        let i = UNIT_POS as usize + u * GMM_TC_UNITS;
        let p = i / qv;
        let q = (i % qv) * nv;
        let mut v = Vector::<F, N>::new(F::from_int(0));
        if p < p_live && q < q_live {
            v = src[(base + p * stride + q) / nv];
        }
        regs[u] = v;
    }
}

/// Writes a unit's share `regs` of a `p_len × q_len` panel ([`fetch_panel`]) to `dst` at
/// row stride [`padded`]`(q_len)`.
#[cube]
fn store_panel<F: Float, N: Size>(regs: &Array<Vector<F, N>>, dst: &mut SharedMemory<Vector<F, N>>, #[comptime] p_len: usize, #[comptime] q_len: usize) {
    let nv = N::value();
    let qv = comptime!(q_len / nv);
    let sv = comptime!(padded(q_len) / nv);
    #[unroll]
    for u in 0..comptime!(p_len * q_len / nv / GMM_TC_UNITS) {
        let i = UNIT_POS as usize + u * GMM_TC_UNITS;
        dst[(i / qv) * sv + i % qv] = regs[u];
    }
}

/// Writes [`cmma_tile_product`]'s accumulators to `out[base + i·stride + j]` for the tile's
/// first `rows` rows and `cols` columns: each plane stores one fragment at a time into its
/// 16×16 floats of shared memory and writes the entries in bounds (lane `l`, step `e`: entry
/// `32e + l`, half a row of 16 per 16 lanes).
#[cube]
fn store_cmma_tile<F: Float>(out: &mut Tensor<F>, base: usize, stride: usize, rows: usize, cols: usize, acc: &Sequence<cmma::Matrix<f32>>) {
    let mut stage = SharedMemory::<f32>::new_aligned(comptime!(GMM_TC_UNITS / 32 * 256), CMMA_ALIGN);
    let plane = UNIT_POS as usize / 32;
    let lane = UNIT_POS as usize % 32;
    let at = plane * 256;
    #[unroll]
    for f in 0..4usize {
        let r0 = (plane / 2) * 32 + (f / 2) * 16;
        let c0 = (plane % 2) * 32 + (f % 2) * 16;
        cmma::store(&mut stage.slice_mut(at, at + 256), acc.index(f), 16u32, cmma::MatrixLayout::RowMajor);
        sync_plane();
        #[unroll]
        for e in 0..8usize {
            let idx = e * 32 + lane;
            let r = r0 + idx / 16;
            let c = c0 + idx % 16;
            if r < rows && c < cols {
                out[base + r * stride + c] = F::cast_from(stage[at + idx]);
            }
        }
        sync_plane();
    }
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
