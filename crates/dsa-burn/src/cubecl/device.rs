use super::*;

/// Whether the `Auto` kernels are the tiled and tensor-core ones: on CUDA, where they are tested and
/// measured (`kernels/DESIGN.md`). Other runtimes take the SIMT kernels, the portable path:
/// Mesa's lavapipe spends many minutes compiling each tiled shader (LLVM's coroutine
/// splitting of their unrolled, barrier-heavy loops), and wgpu's real GPUs are untimed.
pub(super) fn tiled_by_default<R: CubeRuntime>(t: &CubeTensor<R>) -> bool {
    R::name(&t.client) == "cuda"
}

/// Which of the device's matrix products a tensor-core kernel takes: `cmma` (whole-plane
/// 16×16×16 tiles) or manual `mma.sync` with registers laid out by hand.
#[derive(Clone, Copy)]
pub(super) enum Mma {
    Cmma,
    Manual,
}

/// Whether the device multiplies `kind × kind` tiles of `m × n × k` with f32 accumulation by
/// `api`, in 32-wide planes, as the tensor-core kernels assume.
pub(super) fn has_mma<R: Runtime>(client: &ComputeClient<R>, api: Mma, kind: FloatKind, (m, n, k): (u32, u32, u32)) -> bool {
    use burn_cubecl::cubecl::ir::features::MmaConfig;
    let ab: StorageType = ElemType::Float(kind).into();
    let mma = MmaConfig {
        a_type: ab,
        b_type: ab,
        cd_type: ElemType::Float(FloatKind::F32).into(),
        m,
        n,
        k,
    };
    let props = client.properties();
    let listed = match api {
        Mma::Cmma => &props.features.matmul.cmma,
        Mma::Manual => &props.features.matmul.mma,
    };
    listed.contains(&mma) && props.hardware.plane_size_min == 32 && props.hardware.plane_size_max == 32
}

/// Whether the device multiplies `kind` 16×16×16 tiles with f32 accumulation (cmma) in
/// 32-wide planes, as the cmma tensor-core kernels assume.
pub(super) fn has_cmma<R: CubeRuntime>(t: &CubeTensor<R>, kind: FloatKind) -> bool {
    has_mma(&t.client, Mma::Cmma, kind, (16, 16, 16))
}

/// Whether the device runs the `wgmma` kernels ([`MlaKernel::Wgmma`], [`IndexerKernel::Wgmma`]:
/// CUDA sm_90).
pub fn has_wgmma<R: Runtime>(client: &ComputeClient<R>) -> bool {
    kernels::sparse_mla::wgmma::has_wgmma(client) && kernels::indexer::wgmma::has_wgmma(client)
}

/// `t` with rows readable by 16-byte copies (strides multiples of 8 values, a 16-byte
/// aligned start), in place where it already is, else a contiguous copy.
pub(super) fn aligned_rows<R: CubeRuntime>(t: CubeTensor<R>) -> CubeTensor<R> {
    let t = readable_rows(t, 8);
    if t.handle.offset_start.unwrap_or(0).is_multiple_of(16) {
        t
    } else {
        into_contiguous(t)
    }
}

/// Whether the device runs f16 × f16 `mma.sync m16n8k16` with f32 accumulation in 32-wide
/// planes (CUDA sm_80 and later), as [`IndexerKernel::Mma`] needs.
pub(super) fn has_f16_mma<R: CubeRuntime>(t: &CubeTensor<R>) -> bool {
    has_mma(&t.client, Mma::Manual, FloatKind::F16, (16, 8, 16))
}

/// Vector width of the tensor-core kernels' loads of rows of `d` values: the widest of 8,
/// 4, 2 or 1 that divides `d`.
pub(super) fn load_width(d: usize) -> usize {
    [8usize, 4, 2].into_iter().find(|&v| d.is_multiple_of(v)).unwrap_or(1)
}

/// `t` as the tensor-core kernels of `sparse_mla::cmma` read it: in place where its last
/// stride is 1 and the others are multiples of the load width `vector` (contiguous tensors,
/// and CUDA's pitched rows: its allocations pad a `[.., 576]` bf16 tensor's rows to 640
/// values, which `into_contiguous` would copy, a whole KV cache per decode step), else a
/// contiguous copy.
pub(super) fn readable_rows<R: CubeRuntime>(t: CubeTensor<R>, vector: usize) -> CubeTensor<R> {
    let strides = t.meta.strides();
    let rank = strides.len();
    if strides[rank - 1] == 1 && strides[..rank - 1].iter().all(|s| s % vector == 0) {
        t
    } else {
        into_contiguous(t)
    }
}

/// The half-precision kind of `q`'s dtype, if it has one.
pub(super) fn half_kind<R: CubeRuntime>(q: &CubeTensor<R>) -> Option<FloatKind> {
    match q.dtype {
        DType::BF16 => Some(FloatKind::BF16),
        DType::F16 => Some(FloatKind::F16),
        _ => None,
    }
}
