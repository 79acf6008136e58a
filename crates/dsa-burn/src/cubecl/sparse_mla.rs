use super::*;

/// The sparse MLA kernels to launch (see `dsa_kernels::sparse_mla`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MlaKernel {
    /// On CUDA the fastest kernels the device and dtype allow (on Hopper at V3.2's latent
    /// sizes in bf16 the `wgmma` ones of [`MlaKernel::V5`], else v4, v3 or v2), v1 elsewhere
    /// (see `tiled_by_default`).
    Auto,
    /// v1: forward with 128 threads per (token, ≤ 8 heads), one score per thread; backward
    /// in one kernel adding `dkv` atomically once per head group.
    V1,
    /// v2: register-tiled forward (16×16 threads, 32 heads × 32 slots per chunk where
    /// shared memory allows); backward split into `dq` (no atomics) and `dkv` (one cube per
    /// token over all heads: one atomic add per selected row and dim).
    V2,
    /// v3: tensor-core forward (bf16/f16 inputs, 16×16×16 cmma, 32 heads per cube
    /// ([`KernelSettings::mla_tile`]), one pass over the slots gathered by asynchronous copies, the slots
    /// split over several cubes and merged when there are few queries, as in decode);
    /// backward on tensor cores too (`dq` and `dkv` in one kernel,
    /// `dkv` by one atomic add per row and dim per 64 heads). Taken where the device has the
    /// cmma shape and 32-wide planes, the inputs are half precision and the tiles fit in
    /// shared memory, else v2.
    V3,
    /// v4: the forward on `mma.sync` (bf16/f16 inputs, m16n8k16 fragments loaded by
    /// `ldmatrix`, 64 heads per cube, the softmax and `O` in registers, the next chunk's
    /// rows gathered while the current one is computed; `dsa_kernels::sparse_mla_mma16`),
    /// split over the slots as v3 for decode; the backward as v3. Taken where v3 would be
    /// and the device has the `mma.sync` shape and `ldmatrix`, else v3.
    V4,
    /// v5: the forward on Hopper's `wgmma` (`dsa_kernels::sparse_mla_wgmma`: CUDA C++ launched
    /// through CubeCL's runtime; per (token, 64 heads) a producer warpgroup gathering the
    /// selected rows and two math warpgroups, operands in swizzled shared memory, 128 slots
    /// per step; version 6 in `kernels/NOTES.md`), for bf16 inputs at DeepSeek-V3.2's latent sizes
    /// (576 / 512) on CUDA sm_90. `Auto` takes it there when the slots need no split (enough
    /// queries to fill the GPU, as in prefill or batched decode); else, and where it does not
    /// apply, v4. The backward, with `Auto` or `V5`, at the same sizes with bf16 inputs and
    /// gradients on `wgmma` (version 7 in `kernels/NOTES.md`: 6× v3 at 4K), else as v3.
    V5,
}

/// Whether the sparse MLA forward takes v5 ([`MlaKernel::V5`]) for these inputs: selected
/// (by `Auto` only when the `cubes` CTAs fill the GPU without splitting the slots), bf16 at
/// V3.2's latent sizes, `i32`/`i64` indices, and the device's `wgmma`.
fn wgmma_mla<R: CubeRuntime>(q: &CubeTensor<R>, kv: &CubeTensor<R>, indices: &CubeTensor<R>, d: usize, d_v: usize, cubes: usize) -> bool {
    use kernels::sparse_mla_wgmma::{WGMMA_D, WGMMA_DV};
    let selected = match setting(|s| s.mla) {
        MlaKernel::Auto => split_cubes(q, true) / cubes.max(1) <= 1,
        k => k == MlaKernel::V5,
    };
    selected
        && (d, d_v) == (WGMMA_D, WGMMA_DV)
        && q.dtype == DType::BF16
        && kv.dtype == DType::BF16
        && matches!(indices.dtype, DType::I32 | DType::I64)
        && has_wgmma(&q.client)
}

/// Whether the sparse MLA backward takes the `wgmma` kernel: `Auto` or [`MlaKernel::V5`]
/// selected, bf16 at V3.2's latent sizes (inputs and gradients), `i32`/`i64` indices, the
/// device's `wgmma`.
fn wgmma_mla_bwd<R: CubeRuntime>(
    [q, kv, indices, out, lse]: [&CubeTensor<R>; 5],
    grads: [Option<&CubeTensor<R>>; 2],
    d: usize,
    d_v: usize,
) -> bool {
    use kernels::sparse_mla_wgmma::{WGMMA_D, WGMMA_DV};
    matches!(setting(|s| s.mla), MlaKernel::Auto | MlaKernel::V5)
        && (d, d_v) == (WGMMA_D, WGMMA_DV)
        && [q, kv, out, lse]
            .into_iter()
            .chain(grads.into_iter().flatten())
            .all(|t| t.dtype == DType::BF16)
        && matches!(indices.dtype, DType::I32 | DType::I64)
        && has_wgmma(&q.client)
}

/// The sizes and strides of a `wgmma` sparse MLA launch over `q [B,T,H,D]`, `kv [B,S,D]` and
/// `indices`/`valid [B,T,K]`.
fn wgmma_params<R: CubeRuntime>(
    [q, kv, indices, valid]: [&CubeTensor<R>; 4],
    scale: f32,
) -> kernels::sparse_mla_wgmma::WgmmaMlaParams {
    let [b, t, h, _] = dims::<4, R>(q);
    let (qs, ks) = (q.meta.strides(), kv.meta.strides());
    kernels::sparse_mla_wgmma::WgmmaMlaParams {
        bt_len: b * t,
        t_len: t,
        heads: h,
        kk: dims::<3, R>(indices)[2],
        s_len: dims::<3, R>(kv)[1],
        q_strides: [qs[0], qs[1], qs[2]],
        kv_strides: [ks[0], ks[1]],
        scale,
        idx_bytes: indices.dtype.size(),
        valid_bytes: valid.dtype.size(),
    }
}

fn tiled_mla<R: CubeRuntime>(t: &CubeTensor<R>) -> bool {
    match setting(|s| s.mla) {
        MlaKernel::Auto => tiled_by_default(t),
        k => k != MlaKernel::V1,
    }
}

/// Cubes the v3 forward aims for when it splits the slots of few queries (decode); it runs
/// two cubes per SM at its default tile.
const MMA_SPLIT_CUBES: usize = 1024;

/// The cubes a split forward aims for on `q`'s device: [`KernelSettings::mla_split_cubes`], or
/// the default of v4 (`v4`) or v3.
fn split_cubes<R: CubeRuntime>(q: &CubeTensor<R>, v4: bool) -> usize {
    match setting(|s| s.mla_split_cubes) {
        Some(n) => n,
        None if v4 => q.client.properties().hardware.num_streaming_multiprocessors.map_or(MMA_SPLIT_CUBES, |n| n as usize),
        None => MMA_SPLIT_CUBES,
    }
}

/// Whether the sparse MLA ops may take the tensor-core kernels (v3, v4) for `q`: selected,
/// inputs bf16/f16, and 16×16×16 cmma for them in 32-wide planes.
pub(super) fn mma_mla<R: CubeRuntime>(q: &CubeTensor<R>) -> bool {
    let selected = match setting(|s| s.mla) {
        MlaKernel::Auto => tiled_by_default(q),
        k => matches!(k, MlaKernel::V3 | MlaKernel::V4 | MlaKernel::V5),
    };
    selected && half_kind(q).is_some_and(|kind| has_cmma(q, kind))
}

/// Whether the sparse MLA forward takes v4 (`mma.sync`) for `q` with rows of `d` dims:
/// [`mma_mla`], v3 not asked for, the device's m16n8k16 `mma.sync` and `ldmatrix` for the
/// type, and the buffers in shared memory.
fn mma16_mla<R: CubeRuntime>(q: &CubeTensor<R>, d: usize) -> bool {
    let Some(kind) = half_kind(q) else { return false };
    let ab: StorageType = ElemType::Float(kind).into();
    mma_mla(q)
        && setting(|s| s.mla) != MlaKernel::V3
        && has_mma(&q.client, Mma::Manual, kind, (16, 8, 16))
        && q.client.properties().features.matmul.ldmatrix.contains(&ab)
        && mma16_fwd_shared_bytes(d) <= max_shared(q)
}

/// Shared memory of the v4 forward: the query tile and two chunks of rows (half precision,
/// padded rows), the planes' partial scores, two chunks' slot flags and rows, and
/// [`MMA_EXTRA_BYTES`].
fn mma16_fwd_shared_bytes(d: usize) -> usize {
    use kernels::sparse_mla_mma16::{MMA16_CHUNK, MMA16_HEADS, MMA16_UNITS};
    2 * (MMA16_HEADS + 2 * MMA16_CHUNK) * kernels::mma::padded(d) + 4 * 16 * MMA16_UNITS + 16 * MMA16_CHUNK + MMA_EXTRA_BYTES
}

/// The tile of a cube of the v3 (tensor-core) sparse MLA forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MlaTile {
    /// Query heads per cube: 32 or 64.
    pub heads: usize,
    /// Planes of 32 units per cube: 4 or 8.
    pub planes: usize,
    /// Selected rows gathered per chunk: 32 or 64.
    pub slots: usize,
}

impl MlaTile {
    /// Whether the kernel supports the tile (see `dsa_kernels::sparse_mla_mma::sparse_mla_fwd_mma`).
    pub(super) fn supported(self) -> bool {
        [32, 64].contains(&self.heads)
            && [4, 8].contains(&self.planes)
            && [32, 64].contains(&self.slots)
            && self.planes.is_multiple_of(self.heads / 16)
            && self.slots.is_multiple_of(32 * self.planes / self.heads)
    }

    /// Shared memory of the forward's buffers for rows of `d` dims: the query tile and the
    /// chunk's rows (half precision, padded rows), the score copies (or the output staging),
    /// `P`, the per-slot and per-head buffers, and [`MMA_EXTRA_BYTES`].
    fn shared_bytes(self, d: usize) -> usize {
        let (hg, kc) = (self.heads, self.slots);
        let copies = kernels::sparse_mla_mma::score_copies(hg, kc, self.planes);
        let ss = kernels::sparse_mla_mma::score_stride(hg, kc, self.planes);
        let scores = (copies * hg * ss).max(256 * self.planes);
        2 * ((hg + kc) * kernels::mma::padded(d) + hg * (kc + 8))
            + 4 * scores
            + 8 * kc
            + 4 * hg
            + 4
            + MMA_EXTRA_BYTES
    }
}

/// The forward's tiles in the order `Auto` tries them (the first that fits in shared memory
/// is taken). 32 heads × 8 planes × 32 slots measured fastest (`kernels/NOTES.md`, GPU run
/// 21, two-pass kernel); the one-pass kernel at this tile: 128 registers per unit, 96 KB of
/// shared memory, two cubes per SM (runs 27, 29).
const MLA_TILES: [MlaTile; 3] = [
    MlaTile { heads: 32, planes: 8, slots: 32 },
    MlaTile { heads: 64, planes: 8, slots: 64 },
    MlaTile { heads: 64, planes: 8, slots: 32 },
];

/// The tile of the v3 (tensor-core) forward, or `None` where it does not apply
/// ([`mma_mla`], or the tile not fitting in shared memory).
fn mma_fwd_tile<R: CubeRuntime>(q: &CubeTensor<R>, d: usize) -> Option<MlaTile> {
    if !mma_mla(q) {
        return None;
    }
    let fits = |t: &MlaTile| t.shared_bytes(d) <= max_shared(q);
    match setting(|s| s.mla_tile) {
        Some(tile) => Some(tile).filter(fits),
        None => MLA_TILES.into_iter().find(fits),
    }
}

/// Shared memory of the `sparse_mla_mma` kernels beyond their tiles: the window of selected
/// rows (`MMA_WINDOW` u32), the barrier of their asynchronous copies, and the padding of up
/// to eight tiles to `CMMA_ALIGN`.
const MMA_EXTRA_BYTES: usize = 4 * kernels::sparse_mla_mma::MMA_WINDOW + 16 + 8 * kernels::mma::CMMA_ALIGN;

/// Slots per chunk of the v3 backward.
const MMA_BWD_CHUNK: usize = 32;

/// Whether the v3 (tensor-core) backward applies to rows of `d` dims, `d_v` of them values:
/// [`mma_mla`], and its tiles (`q`, `d_out` and a chunk of rows; scores, `dP`, `P`, `dS`)
/// fit in shared memory.
fn mma_bwd<R: CubeRuntime>(q: &CubeTensor<R>, d: usize, d_v: usize) -> bool {
    use kernels::mma::padded;
    let (heads, kc) = (kernels::sparse_mla_mma::MMA_HEADS, MMA_BWD_CHUNK);
    let ss = kernels::sparse_mla_mma::score_stride(heads, kc, 8);
    let halves = (heads + kc) * padded(d) + heads * padded(d_v) + 2 * heads * (kc + 8);
    let bytes = 2 * halves + 4 * (2 * heads * ss + 2 * heads) + 8 * kc + MMA_EXTRA_BYTES;
    mma_mla(q) && bytes <= max_shared(q)
}

/// Slots per chunk (64 or 32) of `selected_head_sums_mma` for rows of `d` dims (its tiles of
/// `q`, a chunk of rows and the scores; head weights and partial sums), or `None` when they
/// do not fit.
pub(super) fn mma_chunk(d: usize, max_shared: usize) -> Option<usize> {
    use kernels::sparse_mla_mma::{score_stride, MMA_HEADS, MMA_UNITS};
    let dp = kernels::mma::padded(d);
    let bytes = |kc: usize| {
        2 * (MMA_HEADS + kc) * dp + 4 * MMA_HEADS * score_stride(MMA_HEADS, kc, 8) + 8 * kc + 4 * (MMA_HEADS + MMA_UNITS) + MMA_EXTRA_BYTES
    };
    [64, 32].into_iter().find(|&kc| bytes(kc) <= max_shared)
}

/// Tiling of the sparse MLA kernels: heads per cube and slots per chunk that fit in shared
/// memory (`(hg + kc) · (d | 1)` f32 plus small buffers).
fn mla_tiles(heads: usize, d: usize, max_shared: usize) -> (usize, usize) {
    let dp = d | 1;
    let mut hg = heads.clamp(1, 8);
    let mut kc = 16usize;
    let bytes = |hg: usize, kc: usize| 4 * ((hg + kc) * dp + hg * kc + 2 * kc + 4 * hg) + 64;
    while bytes(hg, kc) > max_shared && kc > 4 {
        kc /= 2;
    }
    while bytes(hg, kc) > max_shared && hg > 1 {
        hg /= 2;
    }
    assert!(
        bytes(hg, kc) <= max_shared,
        "sparse MLA: latent dim {d} does not fit in shared memory"
    );
    (hg, kc)
}

/// Tiles `(hm, km)` of the v2 forward (`16·hm` heads, `16·km` slots per chunk), or `None`
/// when even the smallest does not fit in shared memory.
fn mla_fwd_tiles_v2(heads: usize, d: usize, max_shared: usize) -> Option<(usize, usize)> {
    let bytes = |hm: usize, km: usize| {
        4 * (d * (16 * hm + 1) + d * (16 * km + 1) + 256 * hm * km + 32 * km + 64 * hm) + 64
    };
    let hm_max = if heads > 16 { 2 } else { 1 };
    [(hm_max, 2), (hm_max, 1), (1, 1)]
        .into_iter()
        .find(|&(hm, km)| bytes(hm, km) <= max_shared)
}

/// Sparse MLA forward on CubeCL: output `[B,T,H,d_v]` and lse `[B,T,H]`.
pub fn sparse_mla_primitive<R: CubeRuntime>(
    q: CubeTensor<R>,
    kv: CubeTensor<R>,
    indices: CubeTensor<R>,
    valid: CubeTensor<R>,
    d_v: usize,
    scale: f32,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let [b, t, h, d] = dims::<4, R>(&q);
    let [_, s, dk] = dims::<3, R>(&kv);
    let [_, _, kk] = dims::<3, R>(&indices);
    assert_eq!(d, dk, "sparse MLA: query dim {d} != latent dim {dk}");
    assert!(d_v <= d, "sparse MLA: d_v {d_v} > latent dim {d}");
    let indices = into_contiguous(indices);
    let valid = into_contiguous(valid);
    let out = output(&q, Shape::new([b, t, h, d_v]), q.dtype);
    let lse = output(&q, Shape::new([b, t, h]), q.dtype);
    if b * t * h == 0 {
        return (out, lse);
    }
    if wgmma_mla(&q, &kv, &indices, d, d_v, b * t * h.div_ceil(kernels::sparse_mla_wgmma::WGMMA_HEADS)) {
        let (q, kv) = (aligned_rows(q), aligned_rows(kv));
        let params = wgmma_params([&q, &kv, &indices, &valid], scale);
        // SAFETY: the buffers hold the shapes and strides of `params` (rows aligned above,
        // `indices`/`valid`/`out`/`lse` contiguous) and the device has `wgmma`.
        unsafe {
            kernels::sparse_mla_wgmma::launch_sparse_mla_fwd_wgmma(
                &q.client,
                q.handle.clone().binding(),
                kv.handle.clone().binding(),
                indices.handle.clone().binding(),
                valid.handle.clone().binding(),
                out.handle.clone().binding(),
                lse.handle.clone().binding(),
                params,
            );
        }
        count_mla_forward(MlaKernel::V5);
        return (out, lse);
    }
    // The tensor-core forwards: v4, or v3 with its tile (heads and slots per cube).
    let v4 = mma16_mla(&q, d);
    let tile = if v4 { None } else { mma_fwd_tile(&q, d) };
    let cube_tile = match tile {
        Some(t) => Some((t.heads, t.slots)),
        None if v4 => {
            use kernels::sparse_mla_mma16::{MMA16_CHUNK, MMA16_HEADS};
            Some((MMA16_HEADS, MMA16_CHUNK))
        }
        None => None,
    };
    if let Some((hg, kc)) = cube_tile {
        let vector = load_width(d);
        let (q, kv) = (readable_rows(q, vector), readable_rows(kv, vector));
        // Few queries (decode): split the slots so that at most ~split_cubes cubes run, then merge.
        let groups = h.div_ceil(hg);
        let cubes = b * t * groups;
        let chunks = kk.div_ceil(kc).max(1);
        let wanted = (split_cubes(&q, v4) / cubes).clamp(1, chunks);
        let split_len = chunks.div_ceil(wanted) * kc;
        let splits = kk.div_ceil(split_len).max(1);
        let (out_s, lse_s) = if splits > 1 {
            (
                output(&q, Shape::new([splits, b, t, h, d_v]), DType::F32),
                output(&q, Shape::new([splits, b, t, h]), DType::F32),
            )
        } else {
            (out.clone(), lse.clone())
        };
        let count = cube_count(b * t, groups * splits);
        let dtypes = [q.dtype.into(), indices.dtype.into(), valid.dtype.into(), out_s.dtype.into()];
        let args = (
            q.clone().into_tensor_arg(),
            kv.into_tensor_arg(),
            indices.clone().into_tensor_arg(),
            valid.clone().into_tensor_arg(),
            out_s.clone().into_tensor_arg(),
            lse_s.clone().into_tensor_arg(),
        );
        // SAFETY: every read and write of the kernels is guarded by their own bounds (see
        // their docs); the tensors match the shapes passed.
        unsafe {
            match tile {
                None => kernels::sparse_mla_mma16::sparse_mla_fwd_mma16::launch_unchecked::<R>(
                    &q.client,
                    count,
                    CubeDim::new_1d(kernels::sparse_mla_mma16::MMA16_UNITS as u32),
                    vector,
                    args.0,
                    args.1,
                    args.2,
                    args.3,
                    args.4,
                    args.5,
                    b * t,
                    t,
                    h,
                    kk,
                    groups,
                    split_len,
                    scale,
                    f32::NEG_INFINITY,
                    d,
                    d_v,
                    dtypes,
                ),
                Some(tile) => kernels::sparse_mla_mma::sparse_mla_fwd_mma::launch_unchecked::<R>(
                    &q.client,
                    count,
                    CubeDim::new_1d(32 * tile.planes as u32),
                    vector,
                    args.0,
                    args.1,
                    args.2,
                    args.3,
                    args.4,
                    args.5,
                    b * t,
                    t,
                    h,
                    kk,
                    groups,
                    split_len,
                    scale,
                    f32::NEG_INFINITY,
                    d,
                    d_v,
                    kc,
                    tile.heads,
                    tile.planes,
                    dtypes,
                ),
            }
        }
        if splits > 1 {
            let n = b * t * h;
            // SAFETY: every read and write of the kernel is guarded by its own bounds (see its
            // docs); the tensors match the shapes passed.
            unsafe {
                kernels::sparse_mla_mma::combine_splits::launch_unchecked::<R>(
                    &q.client,
                    cube_count((n * d_v).div_ceil(256), 1),
                    CubeDim::new_1d(256),
                    out_s.into_tensor_arg(),
                    lse_s.into_tensor_arg(),
                    out.clone().into_tensor_arg(),
                    lse.clone().into_tensor_arg(),
                    n,
                    splits,
                    f32::NEG_INFINITY,
                    d_v,
                    [q.dtype.into(), DType::F32.into()],
                );
            }
        }
        count_mla_forward(if v4 { MlaKernel::V4 } else { MlaKernel::V3 });
        return (out, lse);
    }
    let (q, kv) = (into_contiguous(q), into_contiguous(kv));
    if tiled_mla(&q) {
        if let Some((hm, km)) = mla_fwd_tiles_v2(h, d, max_shared(&q)) {
            kernels::sparse_mla::sparse_mla_fwd_tiled::launch::<R>(
                &q.client,
                cube_count(b * t, h.div_ceil(16 * hm)),
                CubeDim::new_1d(256),
                q.clone().into_tensor_arg(),
                kv.into_tensor_arg(),
                indices.clone().into_tensor_arg(),
                valid.clone().into_tensor_arg(),
                out.clone().into_tensor_arg(),
                lse.clone().into_tensor_arg(),
                b * t,
                t,
                h,
                s,
                kk,
                scale,
                f32::NEG_INFINITY,
                d,
                d_v,
                hm,
                km,
                [q.dtype.into(), indices.dtype.into(), valid.dtype.into()],
            );
            count_mla_forward(MlaKernel::V2);
            return (out, lse);
        }
    }
    count_mla_forward(MlaKernel::V1);
    let threads = 128usize;
    let (hg, kc) = mla_tiles(h, d, max_shared(&q));
    kernels::sparse_mla::sparse_mla_fwd::launch::<R>(
        &q.client,
        cube_count(b * t, h.div_ceil(hg)),
        CubeDim::new_1d(threads as u32),
        q.clone().into_tensor_arg(),
        kv.into_tensor_arg(),
        indices.clone().into_tensor_arg(),
        valid.clone().into_tensor_arg(),
        out.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        b * t,
        t,
        h,
        s,
        kk,
        scale,
        f32::NEG_INFINITY,
        d,
        d_v,
        hg,
        kc,
        threads,
        [q.dtype.into(), indices.dtype.into(), valid.dtype.into()],
    );
    (out, lse)
}

/// Tiling of the sparse MLA backward (`q`, `d_out` and the chunk's rows in shared memory).
fn mla_bwd_tiles(heads: usize, d: usize, d_v: usize, max_shared: usize) -> (usize, usize) {
    let dp = d | 1;
    let mut hg = heads.clamp(1, 8);
    let mut kc = 16usize;
    let bytes =
        |hg: usize, kc: usize| 4 * ((hg + kc) * dp + hg * d_v + 2 * hg * kc + 2 * kc + 2 * hg) + 64;
    while bytes(hg, kc) > max_shared && kc > 4 {
        kc /= 2;
    }
    while bytes(hg, kc) > max_shared && hg > 1 {
        hg /= 2;
    }
    assert!(
        bytes(hg, kc) <= max_shared,
        "sparse MLA backward: latent dim {d} does not fit in shared memory"
    );
    (hg, kc)
}

/// Tiles `(hb, kc)` of the v2 `dkv` kernel (heads per group, slots per chunk), or `None`
/// when they do not fit in shared memory.
fn mla_bwd_dkv_tiles(
    d: usize,
    d_v: usize,
    max_shared: usize,
    heads: usize,
) -> Option<(usize, usize)> {
    let dp = d | 1;
    let bytes = |hb: usize, kc: usize| {
        4 * (kc * dp + hb * dp + hb * d_v + 2 * hb * kc + 2 * kc + 2 * heads) + 64
    };
    [(16, 32), (16, 16), (8, 16), (8, 8), (4, 8)]
        .into_iter()
        .find(|&(hb, kc)| bytes(hb, kc) <= max_shared)
}

/// Sparse MLA backward on CubeCL: `(dq, dkv)`; see [`DsaBackend::sparse_mla_backward`].
#[allow(clippy::too_many_arguments)]
pub fn sparse_mla_backward_primitive<R: CubeRuntime>(
    q: CubeTensor<R>,
    kv: CubeTensor<R>,
    indices: CubeTensor<R>,
    valid: CubeTensor<R>,
    out: CubeTensor<R>,
    lse: CubeTensor<R>,
    d_out: Option<CubeTensor<R>>,
    d_lse: Option<CubeTensor<R>>,
    d_v: usize,
    scale: f32,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let [b, t, h, d] = dims::<4, R>(&q);
    let [_, s, _] = dims::<3, R>(&kv);
    let [_, _, kk] = dims::<3, R>(&indices);
    let indices = into_contiguous(indices);
    let valid = into_contiguous(valid);
    let out = into_contiguous(out);
    let lse = into_contiguous(lse);
    let dq = output(&q, Shape::new([b, t, h, d]), q.dtype);
    let dkv = zeros_f32(&q, Shape::new([b, s, d]));
    if b * t * h > 0
        && wgmma_mla_bwd(
            [&q, &kv, &indices, &out, &lse],
            [d_out.as_ref(), d_lse.as_ref()],
            d,
            d_v,
        )
    {
        let (q, kv) = (aligned_rows(q), aligned_rows(kv));
        let out = aligned_rows(out);
        let d_out = d_out.map(|g| aligned_rows(into_contiguous(g)));
        let d_lse = d_lse.map(into_contiguous);
        let params = wgmma_params([&q, &kv, &indices, &valid], scale);
        let binding = |t: &CubeTensor<R>| t.handle.clone().binding();
        // SAFETY: the buffers hold the shapes and strides of `params` (rows aligned above,
        // the rest contiguous; an absent gradient is never read, `out` stands in for it) and
        // the device has `wgmma`.
        unsafe {
            kernels::sparse_mla_wgmma::launch_sparse_mla_bwd_wgmma(
                &q.client,
                [&q, &kv, &indices, &valid].map(binding),
                [
                    &out,
                    &lse,
                    d_out.as_ref().unwrap_or(&out),
                    d_lse.as_ref().unwrap_or(&lse),
                ]
                .map(binding),
                [&dq, &dkv].map(binding),
                params,
                d_out.is_some(),
                d_lse.is_some(),
            );
        }
        TENSOR_CORE_LAUNCHES[TensorCoreOp::SparseMlaBackwardWgmma as usize]
            .fetch_add(1, Ordering::SeqCst);
        return (dq, from_f32(dkv, q.dtype));
    }
    let (has_dout, has_dlse) = (d_out.is_some(), d_lse.is_some());
    let d_out = d_out.map(into_contiguous).unwrap_or_else(|| out.clone());
    let d_lse = d_lse.map(into_contiguous).unwrap_or_else(|| lse.clone());
    let (native, acc_dtype) = f32_accumulation(&q);
    if b * t * h > 0 && mma_bwd(&q, d, d_v) {
        let vector = load_width(d);
        let (q, kv) = (readable_rows(q, vector), readable_rows(kv, vector));
        // SAFETY: every read and write of the kernel is guarded by its own bounds (see its
        // docs); the tensors match the shapes passed.
        unsafe {
            kernels::sparse_mla_mma::sparse_mla_bwd_mma::launch_unchecked::<R>(
                &q.client,
                cube_count(b * t, h.div_ceil(kernels::sparse_mla_mma::MMA_HEADS)),
                CubeDim::new_1d(kernels::sparse_mla_mma::MMA_UNITS as u32),
                vector,
                q.clone().into_tensor_arg(),
                kv.into_tensor_arg(),
                indices.clone().into_tensor_arg(),
                valid.clone().into_tensor_arg(),
                out.into_tensor_arg(),
                lse.into_tensor_arg(),
                d_out.into_tensor_arg(),
                d_lse.into_tensor_arg(),
                dq.clone().into_tensor_arg(),
                dkv.clone().into_tensor_arg(),
                b * t,
                t,
                h,
                s,
                kk,
                scale,
                f32::NEG_INFINITY,
                d,
                d_v,
                MMA_BWD_CHUNK,
                has_dout,
                has_dlse,
                native,
                [q.dtype.into(), indices.dtype.into(), valid.dtype.into(), acc_dtype.into()],
            );
        }
        TENSOR_CORE_LAUNCHES[TensorCoreOp::SparseMlaBackward as usize].fetch_add(1, Ordering::SeqCst);
        return (dq, from_f32(dkv, q.dtype));
    }
    let (q, kv) = (into_contiguous(q), into_contiguous(kv));
    if b * t * h > 0 {
        let threads = 128usize;
        let (hg, kc) = mla_bwd_tiles(h, d, d_v, max_shared(&q));
        let dkv_tiles = tiled_mla(&q)
            .then(|| mla_bwd_dkv_tiles(d, d_v, max_shared(&q), h))
            .flatten();
        if let Some((hb, kcb)) = dkv_tiles {
            kernels::sparse_mla::sparse_mla_bwd_dkv::launch::<R>(
                &q.client,
                cube_count(b * t, 1),
                CubeDim::new_1d(256),
                q.clone().into_tensor_arg(),
                kv.clone().into_tensor_arg(),
                indices.clone().into_tensor_arg(),
                valid.clone().into_tensor_arg(),
                out.clone().into_tensor_arg(),
                lse.clone().into_tensor_arg(),
                d_out.clone().into_tensor_arg(),
                d_lse.clone().into_tensor_arg(),
                dkv.clone().into_tensor_arg(),
                b * t,
                t,
                h,
                s,
                kk,
                scale,
                d,
                d_v,
                hb,
                kcb,
                256,
                h,
                has_dout,
                has_dlse,
                native,
                [
                    q.dtype.into(),
                    indices.dtype.into(),
                    valid.dtype.into(),
                    acc_dtype.into(),
                ],
            );
        }
        kernels::sparse_mla::sparse_mla_bwd::launch::<R>(
            &q.client,
            cube_count(b * t, h.div_ceil(hg)),
            CubeDim::new_1d(threads as u32),
            q.clone().into_tensor_arg(),
            kv.clone().into_tensor_arg(),
            indices.clone().into_tensor_arg(),
            valid.clone().into_tensor_arg(),
            out.into_tensor_arg(),
            lse.into_tensor_arg(),
            d_out.into_tensor_arg(),
            d_lse.into_tensor_arg(),
            dq.clone().into_tensor_arg(),
            dkv.clone().into_tensor_arg(),
            b * t,
            t,
            h,
            s,
            kk,
            scale,
            d,
            d_v,
            hg,
            kc,
            threads,
            has_dout,
            has_dlse,
            native,
            dkv_tiles.is_none(),
            [
                q.dtype.into(),
                indices.dtype.into(),
                valid.dtype.into(),
                acc_dtype.into(),
            ],
        );
    }
    (dq, from_f32(dkv, q.dtype))
}
