//! Shared-memory staging shared by the tensor-core (cmma) kernels (the indexer's,
//! [`crate::sparse_mla::cmma`], [`crate::indexer_loss::cmma`], the grouped products): their
//! tiles are rows of `d` half-precision values at a padded row stride ([`padded`]), filled
//! from vectorised global loads; and the score tile of a head group × a chunk of selected
//! rows (`chunk_scores`) that the sparse MLA and indexer-loss cmma kernels share.
//!
//! Two ways of staging: the sparse MLA kernels stage one vector at a time into scalar shared
//! memory by asynchronous copies ([`stage_vector_async()`]); the
//! indexer moves a whole tile in two steps — a unit's loads all issued into registers
//! ([`fetch_rows()`]), then stored as 16-byte vectors ([`store_tile()`]; `cmma::load` reads such
//! a tile at a vector offset). There, entry `i = UNIT_POS + u·units` of a tile (`u <`
//! [`share`]) is row `i / (d/N)`, vector column `i % (d/N)`.

use cubecl::cmma;
use cubecl::prelude::barrier::copy_async_checked;
use cubecl::prelude::*;

/// Alignment (bytes) of every shared-memory array a `cmma` load or store touches: such a tile
/// must start 32-byte aligned, and CubeCL's allocator aligns an array only as asked (it packs
/// arrays by liveness, so an unaligned one may land anywhere).
pub const CMMA_ALIGN: usize = 32;

/// Row stride (values) of a staged tile of rows of `d` values: `d` rounded up to the cmma
/// depth 16, plus 16 bytes against shared-memory bank conflicts. A multiple of 8.
pub fn padded(d: usize) -> usize {
    d.div_ceil(16) * 16 + 8
}

/// Vectors of `n` values each of `units` units holds of a `rows × d` tile.
pub fn share(rows: usize, d: usize, n: usize, units: usize) -> usize {
    (rows * (d / n)).div_ceil(units)
}

/// A unit's entries of a tile of `rows` rows of `d` values (as vectors of `N`) of `src`, row
/// `j` starting at vector `base + j·step`, into `regs`; rows `j ≥ live` read as zeros (and
/// are not loaded).
#[cube]
#[allow(clippy::too_many_arguments)]
pub fn fetch_rows<F: Float, N: Size>(
    src: &Tensor<Vector<F, N>>,
    base: usize,
    step: usize,
    live: usize,
    regs: &mut Array<Vector<F, N>>,
    #[comptime] rows: usize,
    #[comptime] d: usize,
    #[comptime] units: usize,
) {
    let nv = N::value();
    let dvec = comptime!(d / nv);
    #[unroll]
    for u in 0..comptime!(share(rows, d, nv, units)) {
        let i = UNIT_POS as usize + u * units;
        let j = i / dvec;
        let mut v = Vector::<F, N>::new(F::from_int(0));
        if i < rows * dvec && j < live {
            v = src[base + j * step + i % dvec];
        }
        regs[u] = v;
    }
}

/// Writes a unit's entries `regs` of a `rows × d` tile into `dst` at row stride
/// [`padded`]`(d)` (the columns past `d` are left as they are: see [`zero_padding()`]).
#[cube]
pub fn store_tile<F: Float, N: Size>(
    regs: &Array<Vector<F, N>>,
    dst: &mut SharedMemory<Vector<F, N>>,
    #[comptime] rows: usize,
    #[comptime] d: usize,
    #[comptime] units: usize,
) {
    let nv = N::value();
    let dvec = comptime!(d / nv);
    let dpv = comptime!(padded(d) / nv);
    #[unroll]
    for u in 0..comptime!(share(rows, d, nv, units)) {
        let i = UNIT_POS as usize + u * units;
        if i < rows * dvec {
            dst[(i / dvec) * dpv + i % dvec] = regs[u];
        }
    }
}

/// `dst[base .. base + N] = src[at]` (one vector of `N` values) if `ok`, else zeros; `at` is
/// read only when `ok`.
#[cube]
pub fn stage_vector<F: Float, N: Size>(
    src: &Tensor<Vector<F, N>>,
    at: usize,
    ok: bool,
    dst: &mut SharedMemory<F>,
    base: usize,
) {
    let nv = N::value();
    if ok {
        let v = src[at];
        #[unroll]
        for u in 0..nv {
            dst[base + u] = v[u];
        }
    } else {
        #[unroll]
        for u in 0..nv {
            dst[base + u] = F::from_int(0);
        }
    }
}

/// [`stage_vector()`] by an asynchronous copy (`cp.async`) where the vector holds 4, 8 or 16
/// bytes (else as [`stage_vector()`]): `dst[base .. base + N] = src[at]` if `ok`, else zeros (the
/// copy of an empty source fills with zeros). The copy lands once the unit has called
/// `commit_copy_async()` on a cube barrier and that barrier is passed (the fallback's stores
/// need only the barrier); `base` and `at`'s address must be aligned to the vector.
#[cube]
pub fn stage_vector_async<F: Float, N: Size>(
    src: &Tensor<Vector<F, N>>,
    at: usize,
    ok: bool,
    dst: &mut SharedMemory<F>,
    base: usize,
) {
    let nv = N::value();
    let scalar_bytes = F::type_size();
    if comptime!(nv * scalar_bytes >= 4) {
        let mut from = 0usize;
        let mut len = 0usize;
        if ok {
            from = at;
            len = 1;
        }
        // SAFETY: the destination is one vector of `dst`; only `len` vectors are read.
        let mut to = unsafe { dst.slice_mut(base, base + nv).downcast_unchecked::<Vector<F, N>>() };
        copy_async_checked(&src.slice(from, from + len), &mut to, comptime!(nv as u32));
    } else {
        stage_vector::<F, N>(src, at, ok, dst, base);
    }
}

/// Zeroes the `cmma` k-padding (values `d .. ⌈d/16⌉·16`) of each of `rows` rows of `d` values
/// staged at row stride [`padded`]`(d)` in `dst`, whose entries hold `per` values each
/// (`d % per == 0`); the cube's units take the entries in turn.
#[cube]
pub fn zero_padding<T: CubePrimitive>(
    dst: &mut SharedMemory<T>,
    zero: T,
    #[comptime] rows: usize,
    #[comptime] d: usize,
    #[comptime] per: usize,
) {
    let first = comptime!(d / per);
    let width = comptime!((d.div_ceil(16) * 16 - d) / per);
    let stride = comptime!(padded(d) / per);
    if comptime!(width > 0) {
        let mut i = UNIT_POS as usize;
        while i < rows * width {
            dst[(i / width) * stride + first + i % width] = zero;
            i += CUBE_DIM as usize;
        }
    }
}

/// An uninitialised 16×16×16 `cmma` A operand (`m × k`) of `layout`.
#[cube]
pub fn a_tile<F: Float>(#[comptime] layout: cmma::MatrixLayout) -> cmma::Matrix<F> {
    unsafe { cmma::Matrix::<F>::uninitialized(cmma::MatrixIdent::A, 16usize, 16usize, 16usize, layout) }
}

/// An uninitialised 16×16×16 `cmma` B operand (`k × n`) of `layout`.
#[cube]
pub fn b_tile<F: Float>(#[comptime] layout: cmma::MatrixLayout) -> cmma::Matrix<F> {
    unsafe { cmma::Matrix::<F>::uninitialized(cmma::MatrixIdent::B, 16usize, 16usize, 16usize, layout) }
}

/// A 16×16 f32 `cmma` accumulator of zeros.
#[cube]
pub fn zero_tile() -> cmma::Matrix<f32> {
    cmma::Matrix::<f32>::from_value(
        cmma::MatrixIdent::Accumulator,
        16usize,
        16usize,
        16usize,
        cmma::MatrixLayout::Undefined,
        0.0f32,
    )
}

/// `n` accumulators of zeros ([`zero_tile()`]).
#[cube]
pub fn zero_tiles(#[comptime] n: usize) -> Sequence<cmma::Matrix<f32>> {
    let mut acc = Sequence::<cmma::Matrix<f32>>::new();
    #[unroll]
    for _ in 0..n {
        acc.push(zero_tile());
    }
    acc
}

/// Copies of the score tile that the planes of a cube of `hg` heads and `planes` planes fill
/// for a chunk of `kc` slots (`chunk_scores`): 1 when there are at least as many
/// 16×16 tiles as planes, else each tile's depth is split over this many planes, whose
/// partial products are summed by the readers (`score`).
pub fn score_copies(hg: usize, kc: usize, planes: usize) -> usize {
    (planes / (hg / 16) / (kc / 16)).max(1)
}

/// Row stride (floats) of `chunk_scores`' score tiles for a cube of `hg` heads and
/// `planes` planes with `kc`-slot chunks: `kc` plus the units per head (at least 4, a
/// cmma store's granularity). The readers' lanes take a head's slots `part, part + uph, ..`,
/// so the `32/uph` heads of a plane fall into different banks.
pub fn score_stride(hg: usize, kc: usize, planes: usize) -> usize {
    kc + (32 * planes / hg).max(4)
}

/// `s_sh[h·ss + j] = a_h · kv_j` (`ss` = [`score_stride`]) over the first `depth` dims (`a` = `q` with `depth = d`, or
/// `d_out` with `depth = dv`, staged at row stride `padded(depth)`, zero past `depth`) for
/// the `hg` × `kc` tile of a cube of `planes` planes: plane `(rg, cg)` (`plane = rg + cg·hg/16`)
/// computes rows `16·rg..` and its share of the column tiles; where there are fewer tiles
/// than planes, each tile's depth is split over [`score_copies`] planes, and copy `c` of the
/// tile (the `c`-th part of the depth) is written at `s_sh[c·hg·ss ..]` ([`score`] sums them).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn chunk_scores<F: Float>(
    a_sh: &SharedMemory<F>,
    kv_sh: &SharedMemory<F>,
    s_sh: &mut SharedMemory<f32>,
    plane: usize,
    #[comptime] d: usize,
    #[comptime] depth: usize,
    #[comptime] kc: usize,
    #[comptime] hg: usize,
    #[comptime] planes: usize,
) {
    let dp = comptime!(padded(d));
    let ap = comptime!(padded(depth));
    let nk = comptime!(depth.div_ceil(16));
    let rgs = comptime!(hg / 16);
    let ncol = comptime!(kc / 16);
    let copies = comptime!(score_copies(hg, kc, planes));
    let ss = comptime!(score_stride(hg, kc, planes));
    // Column tiles per plane.
    let ns = comptime!((kc / 16 / (planes / (hg / 16))).max(1));
    let rg = plane % rgs;
    let cg = plane / rgs;
    // This plane's depth part and first column tile.
    let copy = cg / comptime!(ncol / ns);
    let k_begin = copy * nk / copies;
    let k_end = (copy + 1) * nk / copies;
    let col0 = (cg % comptime!(ncol / ns)) * ns;
    let qa = a_tile::<F>(cmma::MatrixLayout::RowMajor);
    let kb = b_tile::<F>(cmma::MatrixLayout::ColMajor);
    #[unroll]
    for s in 0..ns {
        let n0 = (col0 + s) * 16;
        let acc = zero_tile();
        for ks in k_begin..k_end {
            cmma::load(&qa, &a_sh.slice(rg * 16 * ap + ks * 16, hg * ap), comptime!(ap as u32));
            cmma::load(&kb, &kv_sh.slice(n0 * dp + ks * 16, kc * dp), comptime!(dp as u32));
            cmma::execute::<F, F, f32, f32>(&qa, &kb, &acc, &acc);
        }
        let at = copy * comptime!(hg * ss) + rg * 16 * ss + n0;
        cmma::store(
            &mut s_sh.slice_mut(at, at + comptime!(16 * ss)),
            &acc,
            comptime!(ss as u32),
            cmma::MatrixLayout::RowMajor,
        );
    }
}

/// Score `at` (`h·stride + j`, [`score_stride`]) of the last [`chunk_scores`]: the sum of
/// its `copies` parts, `span` floats apart.
#[cube]
pub(crate) fn score(s_sh: &SharedMemory<f32>, at: usize, #[comptime] span: usize, #[comptime] copies: usize) -> f32 {
    let mut s = s_sh[at];
    #[unroll]
    for c in 1..copies {
        s += s_sh[c * span + at];
    }
    s
}
