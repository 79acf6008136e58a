use super::*;

pub use kernels::sparse_mla::cmma::MlaTile;

/// The sparse MLA kernels (`dsa_kernels::sparse_mla`), by instruction family. A forced
/// variant that does not apply to the inputs falls back to the next one of [`MlaKernel::PREFERENCE`]
/// that does ([`MlaKernel::Simt`] always applies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MlaKernel {
    /// The first variant of [`MlaKernel::PREFERENCE`] that applies, where the tensor-core and tiled
    /// variants are taken on CUDA only (see `tiled_by_default`), and [`MlaKernel::Wgmma`]'s
    /// forward only when the slots need no split (enough queries to fill the GPU, as in
    /// prefill or batched decode).
    Auto,
    /// Portable CubeCL: the forward with 128 threads per (token, ≤ 8 heads), one score per
    /// thread; the backward in one kernel adding `dkv` atomically once per head group.
    Simt,
    /// Portable CubeCL, register-tiled: the forward on 16×16 threads (32 heads × 32 slots per
    /// chunk where shared memory allows); the backward split into `dq` (no atomics) and `dkv`
    /// (one cube per token over all heads: one atomic add per selected row and dim).
    SimtTiled,
    /// Cooperative-matrix tensor cores (bf16/f16 inputs, 16×16×16 cmma, 32 heads per cube
    /// ([`KernelSettings::mla_tile`]), one pass over the slots gathered by asynchronous copies,
    /// the slots split over several cubes and merged when there are few queries, as in
    /// decode); the backward too (`dq` and `dkv` in one kernel, `dkv` by one atomic add per
    /// row and dim per 64 heads). Applies where the device has the cmma shape and 32-wide
    /// planes, the inputs are half precision and the tiles fit in shared memory.
    Cmma,
    /// The forward on `mma.sync` (bf16/f16 inputs, m16n8k16 fragments loaded by `ldmatrix`,
    /// 64 heads per cube, the softmax and `O` in registers, the next chunk's rows gathered
    /// while the current one is computed), split over the slots as [`MlaKernel::Cmma`] for
    /// decode; applies where `Cmma` would and the device has the `mma.sync` shape and
    /// `ldmatrix`. No backward: the backward is `Cmma`'s.
    Mma,
    /// Hopper's `wgmma` (CUDA C++ launched through CubeCL's runtime; per (token, 64 heads) a
    /// producer warpgroup gathering the selected rows and two math warpgroups, operands in
    /// swizzled shared memory, 128 slots per step), for bf16 inputs (and gradients) at
    /// DeepSeek-V3.2's latent sizes (576 / 512) on CUDA sm_90, forward and backward.
    Wgmma,
}

impl MlaKernel {
    /// The variants from the most to the least specialised: `Auto` takes the first that
    /// applies, a forced variant the first that applies from itself on.
    pub const PREFERENCE: [MlaKernel; 5] = [MlaKernel::Wgmma, MlaKernel::Mma, MlaKernel::Cmma, MlaKernel::SimtTiled, MlaKernel::Simt];
}

/// Why a variant does not apply to a problem.
type Unsupported = &'static str;

/// Whether the chosen setting `chosen` lets `kernel` run (`Auto`, or `kernel` at or after
/// `chosen` in [`MlaKernel::PREFERENCE`]).
fn reaches(chosen: MlaKernel, kernel: MlaKernel) -> bool {
    let rank = |k| MlaKernel::PREFERENCE.iter().position(|&p| p == k);
    chosen == MlaKernel::Auto || rank(chosen) <= rank(kernel)
}

/// The one dispatcher: the first variant from the setting on (all of [`MlaKernel::PREFERENCE`] under
/// `Auto`) that `supports` (told whether the choice is `Auto`) accepts.
fn pick(supports: impl Fn(MlaKernel, bool) -> Result<(), Unsupported>) -> MlaKernel {
    let chosen = setting(|s| s.mla);
    let auto = chosen == MlaKernel::Auto;
    MlaKernel::PREFERENCE
        .into_iter()
        .filter(|&k| reaches(chosen, k))
        .find(|&k| supports(k, auto).is_ok())
        .unwrap_or(MlaKernel::Simt)
}

/// The conditions every tensor-core variant shares for `q`: under `Auto` a CUDA device,
/// bf16/f16 inputs, and the device's 16×16×16 cmma for them in 32-wide planes.
fn tensor_core_inputs<R: CubeRuntime>(q: &CubeTensor<R>, auto: bool) -> Result<(), Unsupported> {
    if auto && !tiled_by_default(q) {
        return Err("Auto takes the tensor-core and tiled kernels on CUDA only");
    }
    match half_kind(q) {
        Some(kind) if has_cmma(q, kind) => Ok(()),
        Some(_) => Err("no 16x16x16 cmma in 32-wide planes for the input type"),
        None => Err("inputs not bf16/f16"),
    }
}

/// Whether the sparse MLA probabilities (kernel 6) take the cmma head sums for `q`, the
/// scores of the cmma forward: the setting reaches [`MlaKernel::Cmma`] and
/// [`tensor_core_inputs`] holds.
pub(super) fn probs_on_cmma<R: CubeRuntime>(q: &CubeTensor<R>) -> bool {
    let chosen = setting(|s| s.mla);
    reaches(chosen, MlaKernel::Cmma) && tensor_core_inputs(q, chosen == MlaKernel::Auto).is_ok()
}

/// `wgmma`'s sizes, index types and device for `q`, `kv` (`bf16` checked by the caller).
fn wgmma_inputs<R: CubeRuntime>(q: &CubeTensor<R>, indices: &CubeTensor<R>, d: usize, d_v: usize) -> Result<(), Unsupported> {
    use kernels::sparse_mla::wgmma::{WGMMA_D, WGMMA_DV};
    if (d, d_v) != (WGMMA_D, WGMMA_DV) {
        return Err("wgmma kernels are built for latent 576 / values 512");
    }
    if !matches!(indices.dtype, DType::I32 | DType::I64) {
        return Err("wgmma kernels read i32/i64 indices");
    }
    if !has_wgmma(&q.client) {
        return Err("no wgmma on the device");
    }
    Ok(())
}

/// A sparse MLA forward's inputs, as the variants' support needs them.
struct Forward<'a, R: CubeRuntime> {
    q: &'a CubeTensor<R>,
    kv: &'a CubeTensor<R>,
    indices: &'a CubeTensor<R>,
    d: usize,
    d_v: usize,
    /// Cubes of the `wgmma` forward (token × 64 heads).
    wgmma_cubes: usize,
}

/// Whether forward variant `kernel` supports the problem (`auto`: chosen by `Auto`).
fn supports_forward<R: CubeRuntime>(kernel: MlaKernel, p: &Forward<R>, auto: bool) -> Result<(), Unsupported> {
    let (q, d) = (p.q, p.d);
    match kernel {
        MlaKernel::Wgmma => {
            if auto && split_cubes(q, true) / p.wgmma_cubes.max(1) > 1 {
                return Err("Auto splits the slots of few queries on Mma");
            }
            if q.dtype != DType::BF16 || p.kv.dtype != DType::BF16 {
                return Err("wgmma kernels take bf16");
            }
            wgmma_inputs(q, p.indices, d, p.d_v)
        }
        MlaKernel::Mma => {
            tensor_core_inputs(q, auto)?;
            let kind = half_kind(q).ok_or("inputs not bf16/f16")?;
            let ab: StorageType = ElemType::Float(kind).into();
            if !has_mma(&q.client, Mma::Manual, kind, (16, 8, 16)) || !q.client.properties().features.matmul.ldmatrix.contains(&ab) {
                return Err("no m16n8k16 mma.sync and ldmatrix for the input type");
            }
            if kernels::sparse_mla::mma::fwd_shared_bytes(d) > max_shared(q) {
                return Err("buffers do not fit in shared memory");
            }
            Ok(())
        }
        MlaKernel::Cmma => {
            tensor_core_inputs(q, auto)?;
            cmma_tile(q, d).map(|_| ()).ok_or("no tile fits in shared memory")
        }
        MlaKernel::SimtTiled => {
            if auto && !tiled_by_default(q) {
                return Err("Auto takes the tiled kernels on CUDA only");
            }
            kernels::sparse_mla::simt::fwd_tiled_tiles(dims::<4, R>(q)[2], d, max_shared(q))
                .map(|_| ())
                .ok_or("no tile fits in shared memory")
        }
        MlaKernel::Simt => Ok(()),
        MlaKernel::Auto => Err("not a kernel"),
    }
}

/// A sparse MLA backward's inputs, as the variants' support needs them.
struct Backward<'a, R: CubeRuntime> {
    q: &'a CubeTensor<R>,
    kv: &'a CubeTensor<R>,
    indices: &'a CubeTensor<R>,
    out: &'a CubeTensor<R>,
    lse: &'a CubeTensor<R>,
    grads: [Option<&'a CubeTensor<R>>; 2],
    d: usize,
    d_v: usize,
}

/// Whether backward variant `kernel` supports the problem (`auto`: chosen by `Auto`).
fn supports_backward<R: CubeRuntime>(kernel: MlaKernel, p: &Backward<R>, auto: bool) -> Result<(), Unsupported> {
    let (q, d) = (p.q, p.d);
    match kernel {
        MlaKernel::Wgmma => {
            let all_bf16 = [p.q, p.kv, p.out, p.lse].into_iter().chain(p.grads.into_iter().flatten()).all(|t| t.dtype == DType::BF16);
            if !all_bf16 {
                return Err("wgmma kernels take bf16 inputs and gradients");
            }
            wgmma_inputs(q, p.indices, d, p.d_v)
        }
        MlaKernel::Mma => Err("no mma.sync backward"),
        MlaKernel::Cmma => {
            tensor_core_inputs(q, auto)?;
            if kernels::sparse_mla::cmma::bwd_shared_bytes(d, p.d_v) > max_shared(q) {
                return Err("buffers do not fit in shared memory");
            }
            Ok(())
        }
        MlaKernel::SimtTiled => {
            if auto && !tiled_by_default(q) {
                return Err("Auto takes the tiled kernels on CUDA only");
            }
            kernels::sparse_mla::simt::bwd_dkv_tiles(dims::<4, R>(q)[2], d, p.d_v, max_shared(q))
                .map(|_| ())
                .ok_or("no tile fits in shared memory")
        }
        MlaKernel::Simt => Ok(()),
        MlaKernel::Auto => Err("not a kernel"),
    }
}

/// The sizes and strides of a `wgmma` sparse MLA launch over `q [B,T,H,D]`, `kv [B,S,D]` and
/// `indices`/`valid [B,T,K]`.
fn wgmma_params<R: CubeRuntime>(
    [q, kv, indices, valid]: [&CubeTensor<R>; 4],
    scale: f32,
) -> kernels::sparse_mla::wgmma::WgmmaMlaParams {
    let [b, t, h, _] = dims::<4, R>(q);
    let (qs, ks) = (q.meta.strides(), kv.meta.strides());
    kernels::sparse_mla::wgmma::WgmmaMlaParams {
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


/// Cubes the cmma forward aims for when it splits the slots of few queries (decode); it runs
/// two cubes per SM at its default tile.
const CMMA_SPLIT_CUBES: usize = 1024;

/// The cubes a split forward aims for on `q`'s device: [`KernelSettings::mla_split_cubes`], or
/// the default of the `mma.sync` forward (`mma`: one per SM) or of the cmma one.
fn split_cubes<R: CubeRuntime>(q: &CubeTensor<R>, mma: bool) -> usize {
    match setting(|s| s.mla_split_cubes) {
        Some(n) => n,
        None if mma => q.client.properties().hardware.num_streaming_multiprocessors.map_or(CMMA_SPLIT_CUBES, |n| n as usize),
        None => CMMA_SPLIT_CUBES,
    }
}

/// The cmma forward's tile for `q` with rows of `d` dims ([`KernelSettings::mla_tile`] or the
/// first default that fits), or `None` when none fits in shared memory.
fn cmma_tile<R: CubeRuntime>(q: &CubeTensor<R>, d: usize) -> Option<MlaTile> {
    kernels::sparse_mla::cmma::fwd_tile(setting(|s| s.mla_tile), d, max_shared(q))
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
    let problem = Forward { q: &q, kv: &kv, indices: &indices, d, d_v, wgmma_cubes: b * t * h.div_ceil(kernels::sparse_mla::wgmma::WGMMA_HEADS) };
    let kernel = pick(|k, auto| supports_forward(k, &problem, auto));
    count_mla_forward(kernel);
    if kernel == MlaKernel::Wgmma {
        let (q, kv) = (aligned_rows(q), aligned_rows(kv));
        let params = wgmma_params([&q, &kv, &indices, &valid], scale);
        // SAFETY: the buffers hold the shapes and strides of `params` (rows aligned above,
        // `indices`/`valid`/`out`/`lse` contiguous) and the device has `wgmma`.
        unsafe {
            kernels::sparse_mla::wgmma::launch_sparse_mla_fwd_wgmma(
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
        return (out, lse);
    }
    // The tensor-core forwards: `mma.sync`, or cmma with its tile (heads and slots per cube).
    let tile = (kernel == MlaKernel::Cmma).then(|| cmma_tile(&q, d).expect("checked by supports_forward"));
    let cube_tile = match (kernel, tile) {
        (MlaKernel::Cmma, Some(t)) => Some((t.heads, t.slots)),
        (MlaKernel::Mma, _) => Some((kernels::sparse_mla::mma::MMA_HEADS, kernels::sparse_mla::mma::MMA_CHUNK)),
        _ => None,
    };
    if let Some((hg, kc)) = cube_tile {
        let vector = load_width(d);
        let (q, kv) = (readable_rows(q, vector), readable_rows(kv, vector));
        // Few queries (decode): split the slots so that at most ~split_cubes cubes run, then merge.
        let groups = h.div_ceil(hg);
        let cubes = b * t * groups;
        let chunks = kk.div_ceil(kc).max(1);
        let wanted = (split_cubes(&q, kernel == MlaKernel::Mma) / cubes).clamp(1, chunks);
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
        // The two kernels' launches: the same arguments, then each one's comptime tile.
        macro_rules! launch_split_forward {
            ($kernel:path, $units:expr $(, $tile:expr)*) => {
                $kernel(
                    &q.client,
                    count,
                    CubeDim::new_1d($units as u32),
                    vector,
                    q.clone().into_tensor_arg(),
                    kv.into_tensor_arg(),
                    indices.clone().into_tensor_arg(),
                    valid.clone().into_tensor_arg(),
                    out_s.clone().into_tensor_arg(),
                    lse_s.clone().into_tensor_arg(),
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
                    $($tile,)*
                    dtypes,
                )
            };
        }
        // SAFETY: every read and write of the kernels is guarded by their own bounds (see
        // their docs); the tensors match the shapes passed.
        unsafe {
            match tile {
                None => launch_split_forward!(kernels::sparse_mla::mma::sparse_mla_fwd_mma::launch_unchecked::<R>, kernels::sparse_mla::mma::MMA_UNITS),
                Some(tile) => launch_split_forward!(
                    kernels::sparse_mla::cmma::sparse_mla_fwd_cmma::launch_unchecked::<R>,
                    32 * tile.planes,
                    kc,
                    tile.heads,
                    tile.planes
                ),
            }
        }
        if splits > 1 {
            let n = b * t * h;
            // SAFETY: every read and write of the kernel is guarded by its own bounds (see its
            // docs); the tensors match the shapes passed.
            unsafe {
                kernels::sparse_mla::combine_splits::launch_unchecked::<R>(
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
        return (out, lse);
    }
    let (q, kv) = (into_contiguous(q), into_contiguous(kv));
    // The SIMT forwards' launches: the same arguments, then each one's comptime tile.
    macro_rules! launch_simt_forward {
        ($kernel:path, $groups:expr, $units:expr $(, $tile:expr)*) => {
            $kernel(
                &q.client,
                cube_count(b * t, $groups),
                CubeDim::new_1d($units as u32),
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
                $($tile,)*
                [q.dtype.into(), indices.dtype.into(), valid.dtype.into()],
            )
        };
    }
    if kernel == MlaKernel::SimtTiled {
        let (hm, km) = kernels::sparse_mla::simt::fwd_tiled_tiles(h, d, max_shared(&q)).expect("checked by supports_forward");
        launch_simt_forward!(kernels::sparse_mla::simt::sparse_mla_fwd_tiled::launch::<R>, h.div_ceil(16 * hm), 256, hm, km);
    } else {
        let threads = 128usize;
        let (hg, kc) = kernels::sparse_mla::simt::fwd_tiles(h, d, max_shared(&q));
        launch_simt_forward!(kernels::sparse_mla::simt::sparse_mla_fwd::launch::<R>, h.div_ceil(hg), threads, hg, kc, threads);
    }
    (out, lse)
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
    if b * t * h == 0 {
        return (dq, from_f32(dkv, q.dtype));
    }
    let problem = Backward { q: &q, kv: &kv, indices: &indices, out: &out, lse: &lse, grads: [d_out.as_ref(), d_lse.as_ref()], d, d_v };
    let kernel = pick(|k, auto| supports_backward(k, &problem, auto));
    if kernel == MlaKernel::Wgmma {
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
            kernels::sparse_mla::wgmma::launch_sparse_mla_bwd_wgmma(
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
    let dtypes = [q.dtype.into(), indices.dtype.into(), valid.dtype.into(), acc_dtype.into()];
    // The backward kernels' launches: their leading arguments, the same inputs (`q` and `kv`
    // as the kernel reads them), their gradient outputs and the sizes, then each one's own.
    macro_rules! launch_backward {
        ($kernel:path, [$($head:expr),*], $q:expr, $kv:expr, [$($grad:expr),*], [$($tail:expr),*]) => {
            $kernel(
                $($head,)*
                $q.clone().into_tensor_arg(),
                $kv.clone().into_tensor_arg(),
                indices.clone().into_tensor_arg(),
                valid.clone().into_tensor_arg(),
                out.clone().into_tensor_arg(),
                lse.clone().into_tensor_arg(),
                d_out.clone().into_tensor_arg(),
                d_lse.clone().into_tensor_arg(),
                $($grad.clone().into_tensor_arg(),)*
                b * t,
                t,
                h,
                s,
                kk,
                scale,
                $($tail,)*
                dtypes,
            )
        };
    }
    if kernel == MlaKernel::Cmma {
        let vector = load_width(d);
        let (q, kv) = (readable_rows(q, vector), readable_rows(kv, vector));
        // SAFETY: every read and write of the kernel is guarded by its own bounds (see its
        // docs); the tensors match the shapes passed.
        unsafe {
            launch_backward!(
                kernels::sparse_mla::cmma::sparse_mla_bwd_cmma::launch_unchecked::<R>,
                [&q.client, cube_count(b * t, h.div_ceil(kernels::sparse_mla::cmma::CMMA_HEADS)), CubeDim::new_1d(kernels::sparse_mla::cmma::CMMA_UNITS as u32), vector],
                q,
                kv,
                [dq, dkv],
                [f32::NEG_INFINITY, d, d_v, kernels::sparse_mla::cmma::BWD_CHUNK, has_dout, has_dlse, native]
            );
        }
        TENSOR_CORE_LAUNCHES[TensorCoreOp::SparseMlaBackward as usize].fetch_add(1, Ordering::SeqCst);
        return (dq, from_f32(dkv, q.dtype));
    }
    let (q, kv) = (into_contiguous(q), into_contiguous(kv));
    let threads = 128usize;
    let (hg, kc) = kernels::sparse_mla::simt::bwd_tiles(h, d, d_v, max_shared(&q));
    let dkv_tiles = (kernel == MlaKernel::SimtTiled)
        .then(|| kernels::sparse_mla::simt::bwd_dkv_tiles(h, d, d_v, max_shared(&q)))
        .flatten();
    if let Some((hb, kcb)) = dkv_tiles {
        launch_backward!(
            kernels::sparse_mla::simt::sparse_mla_bwd_dkv::launch::<R>,
            [&q.client, cube_count(b * t, 1), CubeDim::new_1d(256)],
            q,
            kv,
            [dkv],
            [d, d_v, hb, kcb, 256, h, has_dout, has_dlse, native]
        );
    }
    launch_backward!(
        kernels::sparse_mla::simt::sparse_mla_bwd::launch::<R>,
        [&q.client, cube_count(b * t, h.div_ceil(hg)), CubeDim::new_1d(threads as u32)],
        q,
        kv,
        [dq, dkv],
        [d, d_v, hg, kc, threads, has_dout, has_dlse, native, dkv_tiles.is_none()]
    );
    (dq, from_f32(dkv, q.dtype))
}
