//! Shared-memory staging shared by the tensor-core (cmma) kernels ([`crate::indexer_mma`],
//! [`crate::sparse_mla_mma`]): their tiles are rows of half-precision values at a padded
//! row stride, filled from vectorised global loads.

use cubecl::prelude::*;

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

/// Zeroes the columns `d .. ⌈d/16⌉·16` of `rows` rows at stride `dp` (the cmma k-padding of
/// a tile whose loads fill columns `0..d`), the cube's units taking the entries in turn.
#[cube]
pub fn zero_padding<F: Float>(
    dst: &mut SharedMemory<F>,
    #[comptime] rows: usize,
    #[comptime] d: usize,
    #[comptime] dp: usize,
) {
    let d16 = comptime!(d.div_ceil(16) * 16);
    if comptime!(d16 > d) {
        let pad = comptime!(d16 - d);
        let mut i = UNIT_POS as usize;
        while i < rows * pad {
            dst[(i / pad) * dp + d + i % pad] = F::from_int(0);
            i += CUBE_DIM as usize;
        }
    }
}
