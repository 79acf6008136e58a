//! The selected latent rows of a query into shared memory, for every kernel that reads
//! `kv [B,S,D]` at the `K` slots of `idx`/`valid [B,T,K]` (sparse MLA, the indexer loss):
//!
//! - SIMT, one chunk at a time in f32: `load_slots` (the chunk's validity and rows), then
//!   `load_rows` (the rows, at an odd row stride or transposed); `stage_heads` stages a head group's
//!   query (or output gradient) rows, `shared_dot` multiplies two staged rows;
//! - tensor cores, in the input type by asynchronous copies: `load_window` (a window of
//!   [`WINDOW_SLOTS`] selections in shared memory), then `issue_chunk` / `gather_chunk`
//!   (the chunk's rows at row stride [`padded`]); `load_query_tile` stages the query tile.

use cubecl::prelude::barrier::Barrier;
use cubecl::prelude::*;

use crate::shared::cmma::{padded, stage_vector_async, zero_padding};

/// Which slots `c0..c0+kc` of query `bt` are valid (`ok_sh[j]` 1 or 0) and their rows
/// (`slot_sh[j]`; 0 where invalid or past the `kk` slots), written by the cube's units in
/// turn. Ends with a cube barrier. Shared by the SIMT kernels' chunk loops (sparse MLA and the indexer loss).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn load_slots<I: Int, BL: Int>(
    idx: &Tensor<I>,
    valid: &Tensor<BL>,
    ok_sh: &mut SharedMemory<u32>,
    slot_sh: &mut SharedMemory<u32>,
    bt: usize,
    kk: usize,
    c0: usize,
    #[comptime] kc: usize,
) {
    let mut j = UNIT_POS as usize;
    while j < kc {
        let slot = c0 + j;
        let mut ok = 0u32;
        let mut row = 0u32;
        // Nested: the slot bound must guard the read (kernel `&&` need not short-circuit).
        #[allow(clippy::collapsible_if)]
        if slot < kk {
            if valid[bt * kk + slot] != BL::from_int(0) {
                ok = 1u32;
                row = u32::cast_from(idx[bt * kk + slot]);
            }
        }
        ok_sh[j] = ok;
        slot_sh[j] = row;
        j += CUBE_DIM as usize;
    }
    sync_cube();
}

/// The chunk's selected rows of `src [B,S,d]` (batch `b`) into shared memory as f32, entry
/// `(j, e)` at `j·row_stride + e·col_stride`, 0 in the slots [`load_slots`] marked invalid;
/// the cube's units take the entries in turn. No barrier: the caller syncs before reading
/// them.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn load_rows<F: Float>(
    src: &Tensor<F>,
    dst: &mut SharedMemory<f32>,
    ok_sh: &SharedMemory<u32>,
    slot_sh: &SharedMemory<u32>,
    b: usize,
    s_len: usize,
    #[comptime] d: usize,
    #[comptime] kc: usize,
    #[comptime] row_stride: usize,
    #[comptime] col_stride: usize,
) {
    let mut i = UNIT_POS as usize;
    while i < kc * d {
        let j = i / d;
        let e = i % d;
        let mut v = 0.0f32;
        if ok_sh[j] == 1u32 {
            v = f32::cast_from(src[(b * s_len + slot_sh[j] as usize) * d + e]);
        }
        dst[j * row_stride + e * col_stride] = v;
        i += CUBE_DIM as usize;
    }
}

/// Heads `h0..h0+rows` of query row `bt` of the head-major `src [.., heads, width]` into
/// `dst` as f32, entry `(hh, e)` at `hh·row_stride + e·col_stride` (zero for heads past
/// `heads`); the cube's units take the entries in turn. No barrier.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn stage_heads<F: Float>(
    src: &Tensor<F>,
    dst: &mut SharedMemory<f32>,
    bt: usize,
    h0: usize,
    heads: usize,
    #[comptime] rows: usize,
    #[comptime] width: usize,
    #[comptime] row_stride: usize,
    #[comptime] col_stride: usize,
) {
    let mut i = UNIT_POS as usize;
    while i < rows * width {
        let hh = i / width;
        let e = i % width;
        let mut v = 0.0f32;
        if h0 + hh < heads {
            v = f32::cast_from(src[(bt * heads + h0 + hh) * width + e]);
        }
        dst[hh * row_stride + e * col_stride] = v;
        i += CUBE_DIM as usize;
    }
}

/// `Σ_e a[a0 + e] · b[b0 + e]` over `n` dims of two rows staged in shared memory.
#[cube]
pub(crate) fn shared_dot(a: &SharedMemory<f32>, a0: usize, b: &SharedMemory<f32>, b0: usize, #[comptime] n: usize) -> f32 {
    let mut dot = 0.0f32;
    for e in 0..n {
        dot += a[a0 + e] * b[b0 + e];
    }
    dot
}

/// The query tile of heads `h0..h0+hg` of token `(b, t)` into `q_sh` (rows past H and dims
/// past D are zero) by asynchronous copies, and the zero padding of `kv_sh`'s dims past D.
/// No barrier: the first [`gather_chunk`] completes the copies and ends with one.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn load_query_tile<F: Float, N: Size>(
    q: &Tensor<Vector<F, N>>,
    q_sh: &mut SharedMemory<F>,
    kv_sh: &mut SharedMemory<F>,
    b: usize,
    t: usize,
    h0: usize,
    heads: usize,
    #[comptime] d: usize,
    #[comptime] kc: usize,
    #[comptime] hg: usize,
) {
    let nv = N::value();
    let dvec = comptime!(d / nv);
    let dp = comptime!(padded(d));
    let mut i = UNIT_POS as usize;
    while i < hg * dvec {
        let hh = i / dvec;
        let c = i % dvec;
        let at = (b * q.stride(0) + t * q.stride(1) + (h0 + hh) * q.stride(2)) / nv + c;
        stage_vector_async::<F, N>(q, at, h0 + hh < heads, q_sh, hh * dp + c * nv);
        i += CUBE_DIM as usize;
    }
    zero_padding::<F>(q_sh, F::from_int(0), hg, d, 1usize);
    zero_padding::<F>(kv_sh, F::from_int(0), kc, d, 1usize);
}

/// Slots whose rows a cube holds in shared memory at a time (`load_window`); a multiple of
/// every chunk size.
pub const WINDOW_SLOTS: usize = 2048;

/// The window's entry for an invalid or past-the-end slot.
const NO_ROW: u32 = 0xFFFF_FFFF;

/// The rows of slots `w0 ..` of query `bt` into `win_sh` ([`NO_ROW`] for invalid or
/// past-the-end slots), as many as the chunks of `kc` slots before `end` (the last slot the
/// caller reads, at most `kk`) need, up to [`WINDOW_SLOTS`], so that the chunks' gathers need
/// no global read before their copies. `idx` and `valid` are read independently (both in
/// bounds), so a unit's reads overlap. Ends with a cube barrier.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn load_window<I: Int, BL: Int>(
    idx: &Tensor<I>,
    valid: &Tensor<BL>,
    win_sh: &mut SharedMemory<u32>,
    bt: usize,
    kk: usize,
    w0: usize,
    end: usize,
    #[comptime] kc: usize,
) {
    let mut fill = (end - w0 + kc - 1) / kc * kc;
    if fill > WINDOW_SLOTS {
        fill = WINDOW_SLOTS;
    }
    let mut j = UNIT_POS as usize;
    while j < fill {
        let slot = w0 + j;
        let mut row = NO_ROW.runtime();
        if slot < kk {
            let at = bt * kk + slot;
            let ok = valid[at] != BL::from_int(0);
            let got = u32::cast_from(idx[at]);
            if ok {
                row = got;
            }
        }
        win_sh[j] = row;
        j += CUBE_DIM as usize;
    }
    sync_cube();
}

/// Gathers the rows of the `kc` slots at `wo..` of the window `win_sh` ([`load_window`]) into
/// `kv_sh` (zero for invalid slots and rows past the latent) by asynchronous copies completed
/// on `barrier` (a cube barrier of `CUBE_DIM` arrivals), and the slots' validity and rows into
/// `ok_sh`, `row_sh` ([`issue_chunk`] at slot 0). Ends with a cube barrier.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn gather_chunk<F: Float, N: Size>(
    kv: &Tensor<Vector<F, N>>,
    win_sh: &SharedMemory<u32>,
    kv_sh: &mut SharedMemory<F>,
    ok_sh: &mut SharedMemory<u32>,
    row_sh: &mut SharedMemory<u32>,
    barrier: &Shared<Barrier>,
    b: usize,
    wo: usize,
    #[comptime] d: usize,
    #[comptime] kc: usize,
    #[comptime] units: usize,
) {
    let rows = KvRows::new::<F, N>(kv, b);
    issue_chunk::<F, N>(kv, &rows, win_sh, kv_sh, ok_sh, row_sh, 0usize, wo, d, kc, units, false);
    barrier.commit_copy_async();
    barrier.arrive_and_wait();
    sync_cube();
}

/// Where batch `b`'s latent rows are in `kv` (vectors of `N`), read from its metadata once:
/// row `r` starts at vector `base + r·step`; rows `r ≥ len` do not exist.
#[derive(CubeType, Clone, Copy)]
pub(crate) struct KvRows {
    base: usize,
    step: usize,
    len: usize,
}

#[cube]
impl KvRows {
    pub fn new<F: Float, N: Size>(kv: &Tensor<Vector<F, N>>, b: usize) -> KvRows {
        let nv = N::value();
        // Strides divided first: `b · stride` may not fit in 32 bits where the vector index does.
        KvRows { base: b * (kv.stride(0) / nv), step: kv.stride(1) / nv, len: kv.shape(1) }
    }
}

/// Issues the asynchronous copies of the rows of the `kc` slots at `wo..` of the window
/// `win_sh` ([`load_window`]) into rows `at..at + kc` of `kv_sh` (row stride
/// [`padded`]`(d)`; zero for invalid slots and rows past the latent), and writes the slots'
/// validity (1 or 0) and rows to `ok_sh[at..]`, `row_sh[at..]`. A cube of `units` units;
/// with `unrolled` each unit's copies are unrolled, so that their window reads and copies
/// overlap (the `mma.sync` forward; the cmma kernels, at 128 registers, keep a loop). Nothing waits:
/// the caller commits the copies to a barrier and waits on it before reading.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn issue_chunk<F: Float, N: Size>(
    kv: &Tensor<Vector<F, N>>,
    rows: &KvRows,
    win_sh: &SharedMemory<u32>,
    kv_sh: &mut SharedMemory<F>,
    ok_sh: &mut SharedMemory<u32>,
    row_sh: &mut SharedMemory<u32>,
    at: usize,
    wo: usize,
    #[comptime] d: usize,
    #[comptime] kc: usize,
    #[comptime] units: usize,
    #[comptime] unrolled: bool,
) {
    let nv = N::value();
    let dvec = comptime!(d / nv);
    let tid = UNIT_POS as usize;
    if tid < kc {
        let row = win_sh[wo + tid];
        let mut ok = 0u32;
        if row != NO_ROW {
            ok = 1u32;
        }
        ok_sh[at + tid] = ok;
        row_sh[at + tid] = row;
    }
    if unrolled {
        #[unroll]
        for u in 0..comptime!((kc * dvec).div_ceil(units)) {
            let i = tid + u * units;
            if i < kc * dvec {
                issue_copy::<F, N>(kv, rows, win_sh, kv_sh, at, wo, i, d);
            }
        }
    } else {
        let mut i = tid;
        while i < kc * dvec {
            issue_copy::<F, N>(kv, rows, win_sh, kv_sh, at, wo, i, d);
            i += units;
        }
    }
}

/// Copy `i` of [`issue_chunk`]: vector `i % (d/N)` of the row of window slot `wo + i / (d/N)`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn issue_copy<F: Float, N: Size>(
    kv: &Tensor<Vector<F, N>>,
    rows: &KvRows,
    win_sh: &SharedMemory<u32>,
    kv_sh: &mut SharedMemory<F>,
    at: usize,
    wo: usize,
    i: usize,
    #[comptime] d: usize,
) {
    let nv = N::value();
    let dvec = comptime!(d / nv);
    let j = i / dvec;
    let c = i % dvec;
    let row = win_sh[wo + j];
    // A row past the latent (a bad index) reads as zeros: launches are unchecked.
    let ok = row != NO_ROW && (row as usize) < rows.len;
    let mut from = 0usize;
    if ok {
        from = rows.base + row as usize * rows.step + c;
    }
    stage_vector_async::<F, N>(kv, from, ok, kv_sh, (at + j) * comptime!(padded(d)) + c * nv);
}

/// Shared memory (bytes) of an asynchronous-gather kernel beyond its tiles: the window of
/// [`WINDOW_SLOTS`] selections (u32), the barrier of the copies, and the padding of up to
/// eight tiles to [`crate::shared::cmma::CMMA_ALIGN`].
pub const ASYNC_GATHER_EXTRA_BYTES: usize = 4 * WINDOW_SLOTS + 16 + 8 * crate::shared::cmma::CMMA_ALIGN;
