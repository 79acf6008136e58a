//! [`DsaBackend`] for Burn's CubeCL backends (`Wgpu`, `Cuda` without fusion): the kernels of
//! the `dsa-kernels` crate.
//!
//! Every operation makes its inputs contiguous, allocates its outputs and launches. Outputs
//! can be *poisoned* before the launch ([`set_poison_outputs`]: NaN for floats, garbage for
//! ints, `true` for bools) so tests see any entry a kernel failed to write.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;

use burn::tensor::ops::{BoolTensor, FloatTensor, IntTensor};
use burn::tensor::{get_device_settings, DType, Shape, Tensor, TensorMetadata, TensorPrimitive};
use burn_cubecl::cubecl::ir::{ElemType, FloatKind, StorageType};
use burn_cubecl::cubecl::prelude::{ComputeClient, CubeCount, CubeDim, InputScalar, Runtime};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::{empty_device_contiguous_dtype, full_device_dtype};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use dsa_kernels as kernels;
use dsa_kernels::quant::Codes;

use crate::adamw::AdamWStep;
use crate::matmul::{Layout, Strategy};
use crate::quant::{IndexerQuant, E4M3_MAX};
use crate::DsaBackend;

static POISON: AtomicBool = AtomicBool::new(false);

/// Fill every output with garbage before the kernels run (NaN floats, `0x7eadbeef` ints,
/// `true` bools), so that tests catch entries a kernel does not write. Off by default.
pub fn set_poison_outputs(on: bool) {
    POISON.store(on, Ordering::SeqCst);
}

/// A contiguous output tensor, poisoned if [`set_poison_outputs`] is on.
fn output<R: CubeRuntime>(like: &CubeTensor<R>, shape: Shape, dtype: DType) -> CubeTensor<R> {
    if POISON.load(Ordering::Relaxed) {
        let value = match dtype {
            DType::F64 | DType::F32 | DType::F16 | DType::BF16 | DType::Flex32 => {
                InputScalar::new(f32::NAN, dtype)
            }
            DType::Bool(_) => InputScalar::new(1u8, dtype),
            _ => InputScalar::new(
                match dtype.size() {
                    1 => 0x7ei64,
                    2 => 0x7ead,
                    _ => 0x7ead_beef,
                },
                dtype,
            ),
        };
        // `full` may allocate with padded row pitch: the kernels index contiguously.
        return into_contiguous(full_device_dtype(
            like.client.clone(),
            shape,
            like.device.clone(),
            value,
            dtype,
        ));
    }
    empty_device_contiguous_dtype(like.client.clone(), like.device.clone(), shape, dtype)
}

/// A contiguous f32 tensor of zeros.
fn zeros_f32<R: CubeRuntime>(like: &CubeTensor<R>, shape: Shape) -> CubeTensor<R> {
    into_contiguous(full_device_dtype(
        like.client.clone(),
        shape,
        like.device.clone(),
        InputScalar::new(0.0f32, DType::F32),
        DType::F32,
    ))
}

static FORCE_CAS: AtomicBool = AtomicBool::new(false);

/// Accumulate gradients with compare-and-swap loops even where the device has f32 atomic
/// adds (to test that path). Off by default.
pub fn set_force_cas_atomics(on: bool) {
    FORCE_CAS.store(on, Ordering::SeqCst);
}

/// How kernels accumulate into an f32 gradient tensor ([`zeros_f32`]) on `t`'s device:
/// whether by native f32 atomic adds, and the atomic element type the launch defines for it
/// (f32, or u32 for compare-and-swap on the bits).
fn f32_accumulation<R: CubeRuntime>(t: &CubeTensor<R>) -> (bool, DType) {
    use burn_cubecl::cubecl::ir::{features::AtomicUsage, ElemType, FloatKind, StorageType, Type};
    let ty = Type::new(StorageType::Atomic(ElemType::Float(FloatKind::F32)));
    let native = !FORCE_CAS.load(Ordering::Relaxed)
        && t.client.properties().atomic_type_usage(ty).contains(AtomicUsage::Add);
    (native, if native { DType::F32 } else { DType::U32 })
}

/// An f32 accumulator returned as `dtype`.
fn from_f32<R: CubeRuntime>(acc: CubeTensor<R>, dtype: DType) -> CubeTensor<R> {
    if dtype == DType::F32 {
        acc
    } else {
        burn_cubecl::kernel::cast(acc, dtype)
    }
}

fn dims<const D: usize, R: CubeRuntime>(t: &CubeTensor<R>) -> [usize; D] {
    t.shape().dims::<D>()
}

fn cube_count(cubes: usize, z: usize) -> CubeCount {
    let (x, y) = kernels::grid_1d(cubes);
    CubeCount::Static(x, y, z as u32)
}

fn max_shared<R: CubeRuntime>(t: &CubeTensor<R>) -> usize {
    t.client.properties().hardware.max_shared_memory_size
}

/// FP8 e4m3 block fake-quantisation (dequantised values) of a CubeCL tensor along its last
/// dim, bit-identical to [`crate::quant::fake_quant`]'s forward value.
pub fn fake_quant_primitive<R: CubeRuntime>(
    x: CubeTensor<R>,
    quant: IndexerQuant,
) -> CubeTensor<R> {
    if quant == IndexerQuant::None {
        return x;
    }
    let x = into_contiguous(x);
    let shape = x.shape();
    let d = shape[shape.num_dims() - 1];
    let rows = shape.num_elements() / d.max(1);
    let out = output(&x, shape.clone(), x.dtype);
    if rows * d == 0 {
        return out;
    }
    let units = rows * d.div_ceil(kernels::quant::FP8_BLOCK);
    kernels::quant::fake_quant_block_kernel::launch::<R>(
        &x.client,
        cube_count(units, 1),
        CubeDim::new_1d(kernels::quant::FP8_BLOCK as u32),
        x.clone().into_tensor_arg(),
        out.clone().into_tensor_arg(),
        rows,
        d,
        kernels::quant::AMAX_FLOOR,
        E4M3_MAX,
        quant == IndexerQuant::E4m3Pow2,
        x.dtype.into(),
    );
    out
}

/// FP8 e4m3 block quantisation of a CubeCL tensor along its last dim into its codes (stored
/// as `codes` says) and f32 block scales `[.., ⌈D/128⌉]`: the factors of
/// [`fake_quant_primitive`]'s values (same rounding), for the tensor-core indexers.
fn quantize_codes<R: CubeRuntime>(
    x: CubeTensor<R>,
    quant: IndexerQuant,
    codes: Codes,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let x = into_contiguous(x);
    let shape = x.shape();
    let nd = shape.num_dims();
    let d = shape[nd - 1];
    let rows = shape.num_elements() / d.max(1);
    let nb = d.div_ceil(kernels::quant::FP8_BLOCK);
    let mut scale_dims: Vec<usize> = (0..nd).map(|i| shape[i]).collect();
    scale_dims[nd - 1] = nb;
    let (dtype, code_type): (DType, StorageType) = match codes {
        Codes::F16 => (DType::F16, DType::F16.into()),
        Codes::E4m3 => (DType::U8, ElemType::Float(FloatKind::E4M3).into()),
    };
    let codes = output(&x, shape, dtype);
    let scales = output(&x, Shape::from(scale_dims), DType::F32);
    if rows * d > 0 {
        kernels::quant::quantize_block_kernel::launch::<R>(
            &x.client,
            cube_count(rows * nb, 1),
            CubeDim::new_1d(kernels::quant::FP8_BLOCK as u32),
            x.clone().into_tensor_arg(),
            codes.clone().into_tensor_arg(),
            scales.clone().into_tensor_arg(),
            rows,
            d,
            kernels::quant::AMAX_FLOOR,
            E4M3_MAX,
            quant == IndexerQuant::E4m3Pow2,
            [x.dtype.into(), code_type, DType::F32.into()],
        );
    }
    (codes, scales)
}

/// [`fake_quant_primitive`] over a Burn tensor.
pub fn fake_quant<R, F, I, BT, const D: usize>(
    x: Tensor<CubeBackend<R, F, I, BT>, D>,
    quant: IndexerQuant,
) -> Tensor<CubeBackend<R, F, I, BT>, D>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    Tensor::from_primitive(TensorPrimitive::Float(fake_quant_primitive(
        x.into_primitive().tensor(),
        quant,
    )))
}

/// The indexer-scores kernel to launch (see `dsa_kernels::indexer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexerKernel {
    /// On CUDA the fastest tensor-core kernel that applies (v6 in FP8, v4.3, v3; else v2), v1
    /// elsewhere (see [`tiled_by_default`]).
    Auto,
    /// v1: one unit per score.
    Naive,
    /// v2: register-tiled GEMM with the head sum in shared memory (falls back to `Naive`
    /// when the heads of one query do not fit in a tile).
    Tiled,
    /// The e4m3 codes (held in f16, exactly) multiplied on tensor cores, the FP8 scales
    /// applied afterwards: v4.3 (f16 `mma.sync m16n8k16`, the ReLU, weights and head sum in
    /// registers) where the device has that MMA, at most 64 heads and a head dim divisible
    /// by 4; else v3 (`HalfTensorCores`). Taken where the indexer quantises and each row is
    /// one quantisation block (head dim ≤ 128); else `Tiled`. The fastest on the H200
    /// (`kernels/NOTES.md`, version 4).
    TensorCores,
    /// v3: the e4m3 codes held in f16 and multiplied by 16×16×16 cmma with f32 accumulation.
    /// Taken where the device has that cmma shape and 32-wide planes, the indexer
    /// quantises, each row is one quantisation block and there are at most 128 heads; else
    /// `Tiled`.
    HalfTensorCores,
    /// v6: the codes held in f16 on Hopper's f16 `wgmma` (`dsa_kernels::indexer::wgmma`: CUDA
    /// C++ launched through CubeCL's runtime), at V3.2's 64 heads × 128 dims on CUDA sm_90
    /// (see [`has_wgmma`]); elsewhere as `TensorCores`. Exact products and f32 sums, as the
    /// reference.
    Wgmma,
    /// v6 in FP8: as `Wgmma` with the codes as e4m3 bytes on Hopper's FP8 `wgmma`: twice the tensor
    /// rate; each instruction's 32 products are added with about 14 bits (as in DeepSeek's
    /// own FP8 indexer), so the scores agree with the f32 reference to about 1e-4 rather than
    /// to rounding. `Auto` takes it where it applies.
    WgmmaFp8,
}

/// The operations besides the sparse MLA forward ([`mla_forward_launches`]) that have a
/// tensor-core kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorCoreOp {
    /// The indexer scores on tensor cores (any of the kernels of [`IndexerKernel::TensorCores`],
    /// `HalfTensorCores`, `Wgmma` and `WgmmaFp8`).
    IndexerScores,
    /// The indexer scores on f16 MMA with the epilogue in registers (v4.3).
    IndexerScoresF16Mma,
    /// The indexer scores on Hopper's `wgmma` (v6, [`IndexerKernel::Wgmma`] or
    /// [`IndexerKernel::WgmmaFp8`]).
    IndexerScoresWgmma,
    /// The indexer scores on Hopper's FP8 `wgmma` (v6 in FP8, [`IndexerKernel::WgmmaFp8`]).
    IndexerScoresWgmmaFp8,
    /// Kernel 6's attention probabilities at the selected rows (with the v3 forward).
    SparseMlaProbs,
    /// Kernel 6's indexer scores at the selected rows (with the tensor-core indexer).
    SelectedScores,
    /// The sparse MLA backward (with the v3 forward, [`MlaKernel::V3`]).
    SparseMlaBackward,
    /// The sparse MLA backward on Hopper's `wgmma` (v7: `Auto` or [`MlaKernel::V5`]).
    SparseMlaBackwardWgmma,
    /// The grouped product's forward on tensor cores (see [`grouped_matmul_tensor_cores`]).
    GroupedMatmul,
    /// The grouped product's weight gradient on tensor cores (see
    /// [`grouped_matmul_tensor_cores`]).
    GroupedMatmulWeightGrad,
    /// Dense attention's forward on tensor cores (see [`flash_attention`]).
    DenseAttention,
    /// Dense attention's backward on tensor cores (see [`flash_attention_backward`]).
    DenseAttentionBackward,
}

static TENSOR_CORE_LAUNCHES: [AtomicUsize; 12] = [const { AtomicUsize::new(0) }; 12];

/// How many launches of `op`'s tensor-core kernel this process has made: tests and
/// benchmarks check which kernel ran.
pub fn tensor_core_launches(op: TensorCoreOp) -> usize {
    TENSOR_CORE_LAUNCHES[op as usize].load(Ordering::SeqCst)
}

/// Bytes the memory pools of a CUDA `device` hold. The pools grow to the largest use and
/// keep it, so after a workload this is its peak footprint on the device (benchmarks).
#[cfg(feature = "cuda")]
pub fn cuda_memory_reserved(device: &burn::backend::cuda::CudaDevice) -> Option<u64> {
    let client = burn_cubecl::cubecl::cuda::CudaRuntime::client(device);
    client.memory_usage().ok().map(|usage| usage.bytes_reserved)
}

static INDEXER_KERNEL: AtomicU8 = AtomicU8::new(0);

/// Select the indexer-scores kernel (for tests and benchmarks); `Auto` by default.
pub fn set_indexer_kernel(kernel: IndexerKernel) {
    INDEXER_KERNEL.store(kernel as u8, Ordering::SeqCst);
}

/// The sparse MLA kernels to launch (see `dsa_kernels::sparse_mla`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MlaKernel {
    /// On CUDA the fastest kernels the device and dtype allow (on Hopper at V3.2's latent
    /// sizes in bf16 the `wgmma` ones of [`MlaKernel::V5`], else v4, v3 or v2), v1 elsewhere
    /// (see [`tiled_by_default`]).
    Auto,
    /// v1: forward with 128 threads per (token, ≤ 8 heads), one score per thread; backward
    /// in one kernel adding `dkv` atomically once per head group.
    V1,
    /// v2: register-tiled forward (16×16 threads, 32 heads × 32 slots per chunk where
    /// shared memory allows); backward split into `dq` (no atomics) and `dkv` (one cube per
    /// token over all heads: one atomic add per selected row and dim).
    V2,
    /// v3: tensor-core forward (bf16/f16 inputs, 16×16×16 cmma, 32 heads per cube
    /// ([`set_mla_tile`]), one pass over the slots gathered by asynchronous copies, the slots
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

static MLA_KERNEL: AtomicU8 = AtomicU8::new(0);
static MLA_FORWARD_LAUNCHES: [AtomicUsize; 6] = [const { AtomicUsize::new(0) }; 6];

/// How many sparse MLA forwards of version `kernel` (V1 to V5) have been launched in
/// this process: tests and benchmarks check which kernel ran (under Fusion, after the
/// results are read: the op runs lazily).
pub fn mla_forward_launches(kernel: MlaKernel) -> usize {
    MLA_FORWARD_LAUNCHES[kernel as usize].load(Ordering::SeqCst)
}

fn count_mla_forward(kernel: MlaKernel) {
    MLA_FORWARD_LAUNCHES[kernel as usize].fetch_add(1, Ordering::SeqCst);
}

/// Select the sparse MLA kernels (for tests and benchmarks); `Auto` by default.
pub fn set_mla_kernel(kernel: MlaKernel) {
    MLA_KERNEL.store(kernel as u8, Ordering::SeqCst);
}

/// Whether the `Auto` kernels are the tiled (v2) ones: on CUDA, where they are tested and
/// measured (`kernels/NOTES.md`). Other runtimes take the v1 kernels, the portable path:
/// Mesa's lavapipe spends many minutes compiling each v2 shader (LLVM's coroutine
/// splitting of their unrolled, barrier-heavy loops), and wgpu's real GPUs are untimed.
fn tiled_by_default<R: CubeRuntime>(t: &CubeTensor<R>) -> bool {
    R::name(&t.client) == "cuda"
}

fn tiled_indexer<R: CubeRuntime>(t: &CubeTensor<R>) -> bool {
    match INDEXER_KERNEL.load(Ordering::Relaxed) {
        0 => tiled_by_default(t),
        k => k != IndexerKernel::Naive as u8,
    }
}

/// Which of the device's matrix products a tensor-core kernel takes: `cmma` (whole-plane
/// 16×16×16 tiles) or manual `mma.sync` with registers laid out by hand.
#[derive(Clone, Copy)]
enum Mma {
    Cmma,
    Manual,
}

/// Whether the device multiplies `kind × kind` tiles of `m × n × k` with f32 accumulation by
/// `api`, in 32-wide planes, as the tensor-core kernels assume.
fn has_mma<R: Runtime>(client: &ComputeClient<R>, api: Mma, kind: FloatKind, (m, n, k): (u32, u32, u32)) -> bool {
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
/// 32-wide planes, as the v3 tensor-core kernels assume.
fn has_cmma<R: CubeRuntime>(t: &CubeTensor<R>, kind: FloatKind) -> bool {
    has_mma(&t.client, Mma::Cmma, kind, (16, 16, 16))
}

/// Whether the indexer scores take the tensor-core kernel (v3) for `h` heads of dim `d`.
fn mma_indexer<R: CubeRuntime>(t: &CubeTensor<R>, quant: IndexerQuant, h: usize, d: usize) -> bool {
    let selected = match INDEXER_KERNEL.load(Ordering::Relaxed) {
        0 => tiled_by_default(t),
        k => k == IndexerKernel::TensorCores as u8
            || k == IndexerKernel::HalfTensorCores as u8
            || k == IndexerKernel::Wgmma as u8
            || k == IndexerKernel::WgmmaFp8 as u8,
    };
    selected
        && quant != IndexerQuant::None
        && d <= kernels::quant::FP8_BLOCK
        && h <= kernels::indexer::cmma::ROWS
        && has_cmma(t, FloatKind::F16)
        && kernels::indexer::cmma::shared_bytes(d) <= max_shared(t)
}

/// Whether the device runs the v5 kernels ([`MlaKernel::V5`], [`IndexerKernel::Wgmma`]:
/// CUDA sm_90).
pub fn has_wgmma<R: Runtime>(client: &ComputeClient<R>) -> bool {
    kernels::sparse_mla_wgmma::has_wgmma(client) && kernels::indexer::wgmma::has_wgmma(client)
}

/// Whether the sparse MLA forward takes v5 ([`MlaKernel::V5`]) for these inputs: selected
/// (by `Auto` only when the `cubes` CTAs fill the GPU without splitting the slots), bf16 at
/// V3.2's latent sizes, `i32`/`i64` indices, and the device's `wgmma`.
fn wgmma_mla<R: CubeRuntime>(q: &CubeTensor<R>, kv: &CubeTensor<R>, indices: &CubeTensor<R>, d: usize, d_v: usize, cubes: usize) -> bool {
    use kernels::sparse_mla_wgmma::{WGMMA_D, WGMMA_DV};
    let selected = match MLA_KERNEL.load(Ordering::Relaxed) {
        0 => split_cubes(q, true) / cubes.max(1) <= 1,
        k => k == MlaKernel::V5 as u8,
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
    let kernel = MLA_KERNEL.load(Ordering::Relaxed);
    (kernel == MlaKernel::Auto as u8 || kernel == MlaKernel::V5 as u8)
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

/// `t` with rows readable by 16-byte copies (strides multiples of 8 values, a 16-byte
/// aligned start), in place where it already is, else a contiguous copy.
fn aligned_rows<R: CubeRuntime>(t: CubeTensor<R>) -> CubeTensor<R> {
    let t = readable_rows(t, 8);
    if t.handle.offset_start.unwrap_or(0).is_multiple_of(16) {
        t
    } else {
        into_contiguous(t)
    }
}

/// Whether the device runs f16 × f16 `mma.sync m16n8k16` with f32 accumulation in 32-wide
/// planes (CUDA sm_80 and later), as the v4.3 indexer kernel needs.
fn has_f16_mma<R: CubeRuntime>(t: &CubeTensor<R>) -> bool {
    has_mma(&t.client, Mma::Manual, FloatKind::F16, (16, 8, 16))
}

/// How the tensor-core indexer (already chosen by [`mma_indexer`]) holds the codes on v6
/// (`wgmma`) for `h` heads of dim `d`, if it takes v6: `Auto` or [`IndexerKernel::WgmmaFp8`]
/// (e4m3 bytes) or [`IndexerKernel::Wgmma`] (f16) selected, V3.2's 64 × 128, bf16/f32
/// weights and scores, the device's `wgmma`.
fn wgmma_indexer<R: CubeRuntime>(q: &CubeTensor<R>, w: &CubeTensor<R>, h: usize, d: usize) -> Option<Codes> {
    use kernels::indexer::wgmma::{D as WGMMA_INDEXER_D, HEADS as WGMMA_INDEXER_HEADS};
    let codes = match INDEXER_KERNEL.load(Ordering::Relaxed) {
        k if k == 0 || k == IndexerKernel::WgmmaFp8 as u8 => Codes::E4m3,
        k if k == IndexerKernel::Wgmma as u8 => Codes::F16,
        _ => return None,
    };
    let applies = (h, d) == (WGMMA_INDEXER_HEADS, WGMMA_INDEXER_D)
        && [q.dtype, w.dtype].iter().all(|t| matches!(t, DType::F32 | DType::BF16))
        && kernels::indexer::wgmma::has_wgmma(&q.client);
    applies.then_some(codes)
}

/// Whether the tensor-core indexer (already chosen by [`mma_indexer`]) takes v4.3 (f16
/// manual MMA) for `h` heads of dim `d`.
fn mma16_indexer<R: CubeRuntime>(t: &CubeTensor<R>, h: usize, d: usize) -> bool {
    INDEXER_KERNEL.load(Ordering::Relaxed) != IndexerKernel::HalfTensorCores as u8
        && h <= kernels::indexer::mma::MAX_HEADS
        && d.is_multiple_of(4)
        && has_f16_mma(t)
}

fn tiled_mla<R: CubeRuntime>(t: &CubeTensor<R>) -> bool {
    match MLA_KERNEL.load(Ordering::Relaxed) {
        0 => tiled_by_default(t),
        k => k != MlaKernel::V1 as u8,
    }
}

/// Vector width of the tensor-core kernels' loads of rows of `d` values: the widest of 8,
/// 4, 2 or 1 that divides `d`.
fn load_width(d: usize) -> usize {
    [8usize, 4, 2].into_iter().find(|&v| d.is_multiple_of(v)).unwrap_or(1)
}

/// `t` as the tensor-core kernels of `sparse_mla_mma` read it: in place where its last
/// stride is 1 and the others are multiples of the load width `vector` (contiguous tensors,
/// and CUDA's pitched rows: its allocations pad a `[.., 576]` bf16 tensor's rows to 640
/// values, which `into_contiguous` would copy, a whole KV cache per decode step), else a
/// contiguous copy.
fn readable_rows<R: CubeRuntime>(t: CubeTensor<R>, vector: usize) -> CubeTensor<R> {
    let strides = t.meta.strides();
    let rank = strides.len();
    if strides[rank - 1] == 1 && strides[..rank - 1].iter().all(|s| s % vector == 0) {
        t
    } else {
        into_contiguous(t)
    }
}

/// Cubes the v3 forward aims for when it splits the slots of few queries (decode); it runs
/// two cubes per SM at its default tile.
const MMA_SPLIT_CUBES: usize = 1024;

/// [`set_mla_split_cubes`]' setting; 0: the default.
static MLA_SPLIT_CUBES: AtomicUsize = AtomicUsize::new(0);

/// Set how many cubes the tensor-core sparse MLA forwards (v3, v4) aim for when few queries
/// (decode) cannot fill the device alone: each cube then takes a split of the selected
/// slots (as many splits as fit in that count), and a second kernel merges the splits.
/// `None` restores the defaults: 1024 for v3; one per SM for v4, which runs one cube per SM,
/// so that its splits take one wave (at batch 64: no split, no merge; GPU run 50 measured
/// the same time as with 1024 cubes, within noise). A tuning knob for benchmarks: the
/// result does not depend on it beyond rounding.
pub fn set_mla_split_cubes(cubes: Option<usize>) {
    MLA_SPLIT_CUBES.store(cubes.unwrap_or(0), Ordering::SeqCst);
}

/// The cubes a split forward aims for on `q`'s device: [`set_mla_split_cubes`]'s setting, or
/// the default of v4 (`v4`) or v3.
fn split_cubes<R: CubeRuntime>(q: &CubeTensor<R>, v4: bool) -> usize {
    match MLA_SPLIT_CUBES.load(Ordering::Relaxed) {
        0 if v4 => q.client.properties().hardware.num_streaming_multiprocessors.map_or(MMA_SPLIT_CUBES, |n| n as usize),
        0 => MMA_SPLIT_CUBES,
        n => n,
    }
}

/// The half-precision kind of `q`'s dtype, if it has one.
fn half_kind<R: CubeRuntime>(q: &CubeTensor<R>) -> Option<FloatKind> {
    match q.dtype {
        DType::BF16 => Some(FloatKind::BF16),
        DType::F16 => Some(FloatKind::F16),
        _ => None,
    }
}

/// Whether the sparse MLA ops may take the tensor-core kernels (v3, v4) for `q`: selected,
/// inputs bf16/f16, and 16×16×16 cmma for them in 32-wide planes.
fn mma_mla<R: CubeRuntime>(q: &CubeTensor<R>) -> bool {
    let selected = match MLA_KERNEL.load(Ordering::Relaxed) {
        0 => tiled_by_default(q),
        k => k == MlaKernel::V3 as u8 || k == MlaKernel::V4 as u8 || k == MlaKernel::V5 as u8,
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
        && MLA_KERNEL.load(Ordering::Relaxed) != MlaKernel::V3 as u8
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
    fn supported(self) -> bool {
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

static MLA_TILE: std::sync::Mutex<Option<MlaTile>> = std::sync::Mutex::new(None);

/// Select the v3 forward's tile (for benchmarks); `None` (the default) takes the first of
/// the measured tiles that fits in shared memory.
///
/// # Panics
/// If the kernel does not support `tile`.
pub fn set_mla_tile(tile: Option<MlaTile>) {
    if let Some(t) = tile {
        assert!(t.supported(), "unsupported sparse MLA tile {t:?}: heads 32 or 64, planes 4 or 8, slots 32 or 64");
    }
    *MLA_TILE.lock().unwrap_or_else(|e| e.into_inner()) = tile;
}

/// The tile of the v3 (tensor-core) forward, or `None` where it does not apply
/// ([`mma_mla`], or the tile not fitting in shared memory).
fn mma_fwd_tile<R: CubeRuntime>(q: &CubeTensor<R>, d: usize) -> Option<MlaTile> {
    if !mma_mla(q) {
        return None;
    }
    let fits = |t: &MlaTile| t.shared_bytes(d) <= max_shared(q);
    match *MLA_TILE.lock().unwrap_or_else(|e| e.into_inner()) {
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
fn mma_chunk(d: usize, max_shared: usize) -> Option<usize> {
    use kernels::sparse_mla_mma::{score_stride, MMA_HEADS, MMA_UNITS};
    let dp = kernels::mma::padded(d);
    let bytes = |kc: usize| {
        2 * (MMA_HEADS + kc) * dp + 4 * MMA_HEADS * score_stride(MMA_HEADS, kc, 8) + 8 * kc + 4 * (MMA_HEADS + MMA_UNITS) + MMA_EXTRA_BYTES
    };
    [64, 32].into_iter().find(|&kc| bytes(kc) <= max_shared)
}

/// Lightning-indexer scores on CubeCL: fake-quantise `q` and `k`, then the scores kernel.
pub fn indexer_scores_primitive<R: CubeRuntime>(
    q: CubeTensor<R>,
    w: CubeTensor<R>,
    k: CubeTensor<R>,
    quant: IndexerQuant,
    causal_offset: Option<usize>,
) -> CubeTensor<R> {
    let [b, t, h, d] = dims::<4, R>(&q);
    let [_, s, dk] = dims::<3, R>(&k);
    assert_eq!(d, dk, "indexer query dim {d} != key dim {dk}");
    assert_eq!(
        dims::<3, R>(&w),
        [b, t, h],
        "indexer weights must be [B, T, H_I]"
    );
    let w = into_contiguous(w);
    let out = output(&q, Shape::new([b, t, s]), q.dtype);
    let n = b * t * s;
    if n == 0 {
        return out;
    }
    let mma = mma_indexer(&q, quant, h, d);
    if let Some(codes) = wgmma_indexer(&q, &w, h, d).filter(|_| mma) {
        let (qc, sq) = quantize_codes(q, quant, codes);
        let (kc, sk) = quantize_codes(k, quant, codes);
        let params = kernels::indexer::wgmma::Params {
            batch: b,
            t_len: t,
            s_len: s,
            causal_offset,
            w_bytes: w.dtype.size(),
            out_bytes: out.dtype.size(),
            codes,
        };
        // SAFETY: the codes, scales and weights are contiguous at the shapes of `params`
        // (`quantize_codes` writes new tensors; `w` made contiguous above), `out` is new, and
        // the device has `wgmma`.
        unsafe {
            kernels::indexer::wgmma::launch_indexer_scores_wgmma(
                &out.client,
                qc.handle.clone().binding(),
                w.handle.clone().binding(),
                sq.handle.clone().binding(),
                kc.handle.clone().binding(),
                sk.handle.clone().binding(),
                out.handle.clone().binding(),
                params,
            );
        }
        TENSOR_CORE_LAUNCHES[TensorCoreOp::IndexerScores as usize].fetch_add(1, Ordering::SeqCst);
        TENSOR_CORE_LAUNCHES[TensorCoreOp::IndexerScoresWgmma as usize].fetch_add(1, Ordering::SeqCst);
        if codes == Codes::E4m3 {
            TENSOR_CORE_LAUNCHES[TensorCoreOp::IndexerScoresWgmmaFp8 as usize].fetch_add(1, Ordering::SeqCst);
        }
        return out;
    }
    if mma && mma16_indexer(&q, h, d) {
        let dtype = q.dtype;
        let (qc, sq) = quantize_codes(q, quant, Codes::F16);
        let (kc, sk) = quantize_codes(k, quant, Codes::F16);
        let mt = h.div_ceil(16).min(2);
        let pp = h.div_ceil(32);
        let mut kp = 1;
        while kp < 4 && t * pp * kp * 2 <= 8 {
            kp *= 2;
        }
        let tq = 8 / (pp * kp);
        let chunk = 2048;
        // SAFETY: every read and write of the kernel is guarded by its own bounds (see its
        // docs); the tensors match the shapes passed.
        unsafe {
            kernels::indexer::mma::indexer_scores_mma::launch_unchecked::<R>(
                &out.client,
                cube_count(b * t.div_ceil(tq), s.div_ceil(chunk)),
                CubeDim::new_1d(kernels::indexer::mma::UNITS as u32),
                qc.into_tensor_arg(),
                w.into_tensor_arg(),
                sq.into_tensor_arg(),
                kc.into_tensor_arg(),
                sk.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                t,
                s,
                h,
                causal_offset.unwrap_or(0),
                f32::NEG_INFINITY,
                causal_offset.is_some(),
                d,
                mt,
                pp,
                kp,
                chunk,
                [dtype.into(), DType::F16.into(), DType::F32.into()],
            );
        }
        for op in [TensorCoreOp::IndexerScores, TensorCoreOp::IndexerScoresF16Mma] {
            TENSOR_CORE_LAUNCHES[op as usize].fetch_add(1, Ordering::SeqCst);
        }
        return out;
    }
    if mma {
        let dtype = q.dtype;
        let (qc, sq) = quantize_codes(q, quant, Codes::F16);
        let (kc, sk) = quantize_codes(k, quant, Codes::F16);
        // Heads padded to a multiple of 16 (one plane's rows), queries per cube, and keys per
        // cube (32 tiles: enough cubes for decode's single query, few query reloads).
        let hp = h.div_ceil(16) * 16;
        let tq = kernels::indexer::cmma::ROWS / hp;
        let chunk = 2048;
        let vector = load_width(d);
        // SAFETY: every read and write of the kernel is guarded by its own bounds (see its
        // docs); the tensors match the shapes passed.
        unsafe {
            kernels::indexer::cmma::indexer_scores_cmma::launch_unchecked::<R>(
                &out.client,
                cube_count(b * t.div_ceil(tq), s.div_ceil(chunk)),
                CubeDim::new_1d(kernels::indexer::cmma::UNITS as u32),
                vector,
                qc.into_tensor_arg(),
                w.into_tensor_arg(),
                sq.into_tensor_arg(),
                kc.into_tensor_arg(),
                sk.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                t,
                s,
                h,
                causal_offset.unwrap_or(0),
                f32::NEG_INFINITY,
                causal_offset.is_some(),
                d,
                hp,
                chunk,
                [dtype.into(), DType::F16.into(), DType::F32.into()],
            );
        }
        TENSOR_CORE_LAUNCHES[TensorCoreOp::IndexerScores as usize].fetch_add(1, Ordering::SeqCst);
        return out;
    }
    let q = fake_quant_primitive(into_contiguous(q), quant);
    let k = fake_quant_primitive(into_contiguous(k), quant);
    // Tiles: 16·rm rows (t, h) × 16·rn keys, head dim in chunks of dk.
    let (rm, rn, dk) = if max_shared(&q) >= 32 * 1024 + 1024 {
        (8usize, 4usize, 32usize)
    } else {
        (4, 4, 16)
    };
    let tt = (16 * rm) / h.max(1);
    if tiled_indexer(&q) && tt > 0 {
        let tiles = b * t.div_ceil(tt) * s.div_ceil(16 * rn);
        kernels::indexer::simt::indexer_scores_tiled::launch::<R>(
            &q.client,
            cube_count(tiles, 1),
            CubeDim::new_1d(256),
            q.clone().into_tensor_arg(),
            w.into_tensor_arg(),
            k.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            t,
            s,
            h,
            d,
            causal_offset.unwrap_or(0),
            f32::NEG_INFINITY,
            causal_offset.is_some(),
            tt,
            rm,
            rn,
            dk,
            q.dtype.into(),
        );
        return out;
    }
    let threads = 128usize;
    kernels::indexer::simt::indexer_scores_naive::launch::<R>(
        &q.client,
        cube_count(n.div_ceil(threads), 1),
        CubeDim::new_1d(threads as u32),
        q.clone().into_tensor_arg(),
        w.into_tensor_arg(),
        k.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        t,
        s,
        h,
        d,
        causal_offset.unwrap_or(0),
        f32::NEG_INFINITY,
        causal_offset.is_some(),
        q.dtype.into(),
    );
    out
}

/// Shared memory the top-k kernel needs: a sort buffer of `buf` entries (key, index), a
/// histogram of `2^hist_bits` bins, a prefix-sum buffer of `threads` words, a few words.
fn topk_shared_bytes(buf: usize, hist_bits: u32, threads: usize) -> usize {
    buf * 8 + (4usize << hist_bits) + threads * 4 + 16
}

/// Launch configuration of the top-k kernel for `kk` of `s` scores per row: `(buf,
/// hist_bits, threads)`, the largest sort buffer (up to `max(2·cap, 4096)` entries, `cap =
/// next_pow2(kk)`; no larger than the row needs) and histogram (12 bits, else fewer) that
/// fit in `max_shared` bytes; `None` when not even `cap` entries fit.
fn topk_config(
    kk: usize,
    s: usize,
    max_shared: usize,
    max_units: usize,
) -> Option<(usize, u32, usize)> {
    let cap = kk.next_power_of_two().max(2);
    let mut threads = 512usize.min(s.next_power_of_two().max(32));
    while threads > max_units.max(1) {
        threads /= 2;
    }
    let mut buf = (2 * cap).max(4096).min(s.next_power_of_two()).max(cap);
    while buf >= cap {
        // A row no longer than the buffer never builds a histogram.
        let bits: &[u32] = if s <= buf { &[8] } else { &[12, 11, 10, 8] };
        for &hb in bits {
            if topk_shared_bytes(buf, hb, threads) <= max_shared {
                return Some((buf, hb, threads));
            }
        }
        buf /= 2;
    }
    None
}

/// Top-k on CubeCL; `None` when the sort buffer does not fit in shared memory (the caller
/// then falls back to the reference).
pub fn topk_primitive<R: CubeRuntime>(
    scores: CubeTensor<R>,
    k: usize,
    causal_offset: Option<usize>,
    int_dtype: DType,
    bool_dtype: DType,
) -> Option<(CubeTensor<R>, CubeTensor<R>)> {
    let [b, t, s] = dims::<3, R>(&scores);
    let kk = k.min(s);
    let max_units = scores.client.properties().hardware.max_units_per_cube as usize;
    let (buf, hist_bits, threads) = topk_config(kk, s, max_shared(&scores), max_units)?;
    // Loads of up to 16 bytes (`s` a multiple of the width, so that rows start aligned).
    let max_vector = scores.client.properties().hardware.max_vector_size;
    let mut vector = (16 / scores.dtype.size()).clamp(1, max_vector.max(1));
    while s % vector != 0 {
        vector /= 2;
    }
    let scores = into_contiguous(scores);
    let indices = output(&scores, Shape::new([b, t, kk]), int_dtype);
    let valid = output(&scores, Shape::new([b, t, kk]), bool_dtype);
    let rows = b * t;
    if rows * kk == 0 {
        return Some((indices, valid));
    }
    kernels::topk::topk_kernel::launch::<R>(
        &scores.client,
        cube_count(rows, 1),
        CubeDim::new_1d(threads as u32),
        vector,
        scores.clone().into_tensor_arg(),
        indices.clone().into_tensor_arg(),
        valid.clone().into_tensor_arg(),
        rows,
        t,
        s,
        kk,
        causal_offset.unwrap_or(0),
        causal_offset.is_some(),
        buf,
        hist_bits,
        threads,
        [scores.dtype.into(), int_dtype.into(), bool_dtype.into()],
    );
    Some((indices, valid))
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

/// Heads per cube and selected rows per chunk for kernel 6's cube-per-query kernels: the
/// largest pair whose shared memory (`(hg + kc)` padded rows of `d`, `pairs` floats per
/// (head, slot), a few per head and slot) fits.
fn indexer_loss_tiles(heads: usize, d: usize, pairs: usize, max_shared: usize) -> (usize, usize) {
    let bytes = |hg: usize, kc: usize| 4 * ((hg + kc) * (d | 1) + pairs * hg * kc + hg + 3 * kc);
    [(64, 32), (64, 16), (32, 32), (32, 16), (16, 16), (16, 8), (8, 8), (8, 4), (4, 4), (2, 2)]
        .into_iter()
        .map(|(hg, kc)| (hg.min(heads.max(1)), kc))
        .find(|&(hg, kc)| bytes(hg, kc) <= max_shared)
        .unwrap_or((1, 1))
}

/// Kernel 6: the indexer's scores at the selected keys on CubeCL; see
/// [`DsaBackend::indexer_selected_scores`].
pub fn indexer_selected_scores_primitive<R: CubeRuntime>(
    q: CubeTensor<R>,
    w: CubeTensor<R>,
    k: CubeTensor<R>,
    quant: IndexerQuant,
    indices: CubeTensor<R>,
    valid: CubeTensor<R>,
) -> CubeTensor<R> {
    let [b, t, h, d] = dims::<4, R>(&q);
    let [_, s, _] = dims::<3, R>(&k);
    let [_, _, kk] = dims::<3, R>(&indices);
    let (w, indices, valid) = (into_contiguous(w), into_contiguous(indices), into_contiguous(valid));
    if b * t * kk == 0 {
        return output(&q, Shape::new([b, t, kk]), q.dtype);
    }
    if let Some(kc) = mma_indexer(&q, quant, h, d)
        .then(|| mma_chunk(d, max_shared(&q)))
        .flatten()
    {
        // On tensor cores: the e4m3 codes' dot products, the scales applied afterwards.
        let (qc, sq) = quantize_codes(q, quant, Codes::F16);
        let (kc_codes, sk) = quantize_codes(k, quant, Codes::F16);
        let heads = HeadSums { hw: w, hs: sq, ks: sk, relu: true };
        let out = selected_head_sums(qc, kc_codes, indices, valid, heads, 1.0, kc);
        TENSOR_CORE_LAUNCHES[TensorCoreOp::SelectedScores as usize].fetch_add(1, Ordering::SeqCst);
        return out;
    }
    let q = fake_quant_primitive(into_contiguous(q), quant);
    let k = fake_quant_primitive(into_contiguous(k), quant);
    let out = output(&q, Shape::new([b, t, kk]), q.dtype);
    let n = b * t * kk;
    let threads = 128usize;
    kernels::indexer_loss::indexer_selected_scores::launch::<R>(
        &q.client,
        cube_count(n.div_ceil(threads), 1),
        CubeDim::new_1d(threads as u32),
        q.clone().into_tensor_arg(),
        w.into_tensor_arg(),
        k.into_tensor_arg(),
        indices.clone().into_tensor_arg(),
        valid.clone().into_tensor_arg(),
        out.clone().into_tensor_arg(),
        t,
        s,
        kk,
        h,
        d,
        f32::NEG_INFINITY,
        [q.dtype.into(), indices.dtype.into(), valid.dtype.into()],
    );
    out
}

/// Kernel 6: gradients `(dq, dw, dk)` of the selected scores on CubeCL; see
/// [`DsaBackend::indexer_selected_scores_backward`].
pub fn indexer_selected_scores_backward_primitive<R: CubeRuntime>(
    q: CubeTensor<R>,
    w: CubeTensor<R>,
    k: CubeTensor<R>,
    quant: IndexerQuant,
    indices: CubeTensor<R>,
    valid: CubeTensor<R>,
    grad: CubeTensor<R>,
) -> (CubeTensor<R>, CubeTensor<R>, CubeTensor<R>) {
    let [b, t, h, d] = dims::<4, R>(&q);
    let [_, s, _] = dims::<3, R>(&k);
    let [_, _, kk] = dims::<3, R>(&indices);
    let q = fake_quant_primitive(into_contiguous(q), quant);
    let k = fake_quant_primitive(into_contiguous(k), quant);
    let (w, indices, valid) = (into_contiguous(w), into_contiguous(indices), into_contiguous(valid));
    let grad = into_contiguous(grad);
    let dq = output(&q, Shape::new([b, t, h, d]), q.dtype);
    let dw = output(&q, Shape::new([b, t, h]), q.dtype);
    let dk = zeros_f32(&q, Shape::new([b, s, d]));
    if b * t * h > 0 {
        let (hg, kc) = indexer_loss_tiles(h, d, 2, max_shared(&q));
        let (native, acc_dtype) = f32_accumulation(&q);
        kernels::indexer_loss::indexer_selected_scores_bwd::launch::<R>(
            &q.client,
            cube_count(b * t, h.div_ceil(hg)),
            CubeDim::new_1d(128),
            q.clone().into_tensor_arg(),
            w.into_tensor_arg(),
            k.into_tensor_arg(),
            indices.clone().into_tensor_arg(),
            valid.clone().into_tensor_arg(),
            grad.into_tensor_arg(),
            dq.clone().into_tensor_arg(),
            dw.clone().into_tensor_arg(),
            dk.clone().into_tensor_arg(),
            b * t,
            t,
            s,
            kk,
            h,
            d,
            hg,
            kc,
            native,
            [
                q.dtype.into(),
                indices.dtype.into(),
                valid.dtype.into(),
                acc_dtype.into(),
            ],
        );
    }
    (dq, dw, from_f32(dk, q.dtype))
}

/// The per-head inputs of [`selected_head_sums`]: `hw` `[B,T,H]` (the lse, or the indexer
/// weights), `hs` `[B,T,H]` and `ks` `[B,S]` (the FP8 query and key scales, read with
/// `relu` only).
struct HeadSums<R: CubeRuntime> {
    hw: CubeTensor<R>,
    hs: CubeTensor<R>,
    ks: CubeTensor<R>,
    relu: bool,
}

/// `dsa_kernels::sparse_mla_mma::selected_head_sums_mma`: `q [B,T,H,d]`, `kv [B,S,d]` (both
/// of one half type, read as [`readable_rows`]), the selections (contiguous), `kc` slots per
/// chunk; returns `[B,T,K]` in `hw`'s dtype.
fn selected_head_sums<R: CubeRuntime>(
    q: CubeTensor<R>,
    kv: CubeTensor<R>,
    indices: CubeTensor<R>,
    valid: CubeTensor<R>,
    heads: HeadSums<R>,
    scale: f32,
    kc: usize,
) -> CubeTensor<R> {
    let [b, t, h, d] = dims::<4, R>(&q);
    let [_, s, _] = dims::<3, R>(&kv);
    let [_, _, kk] = dims::<3, R>(&indices);
    let (native, acc_dtype) = f32_accumulation(&q);
    let acc = zeros_f32(&q, Shape::new([b, t, kk]));
    let out_dtype = heads.hw.dtype;
    let vector = load_width(d);
    let dtypes = [
        q.dtype.into(),
        indices.dtype.into(),
        valid.dtype.into(),
        acc_dtype.into(),
        heads.hw.dtype.into(),
        DType::F32.into(),
    ];
    // SAFETY: every read and write of the kernel is guarded by its own bounds (see its
    // docs); the tensors match the shapes passed.
    unsafe {
        kernels::sparse_mla_mma::selected_head_sums_mma::launch_unchecked::<R>(
            &q.client,
            cube_count(b * t, h.div_ceil(kernels::sparse_mla_mma::MMA_HEADS)),
            CubeDim::new_1d(kernels::sparse_mla_mma::MMA_UNITS as u32),
            vector,
            q.clone().into_tensor_arg(),
            kv.into_tensor_arg(),
            indices.into_tensor_arg(),
            valid.into_tensor_arg(),
            heads.hw.into_tensor_arg(),
            heads.hs.into_tensor_arg(),
            heads.ks.into_tensor_arg(),
            acc.clone().into_tensor_arg(),
            b * t,
            h,
            t,
            s,
            kk,
            scale,
            f32::NEG_INFINITY,
            d,
            kc,
            native,
            heads.relu,
            dtypes,
        );
    }
    from_f32(acc, out_dtype)
}

/// Kernel 6: sparse MLA's head-averaged probabilities at the selected rows on CubeCL; see
/// [`DsaBackend::sparse_mla_probs`].
pub fn sparse_mla_probs_primitive<R: CubeRuntime>(
    q: CubeTensor<R>,
    kv: CubeTensor<R>,
    indices: CubeTensor<R>,
    valid: CubeTensor<R>,
    lse: CubeTensor<R>,
    scale: f32,
) -> CubeTensor<R> {
    let [b, t, h, d] = dims::<4, R>(&q);
    let [_, s, _] = dims::<3, R>(&kv);
    let [_, _, kk] = dims::<3, R>(&indices);
    let lse = into_contiguous(lse);
    let (indices, valid) = (into_contiguous(indices), into_contiguous(valid));
    if b * t * kk == 0 {
        return output(&q, Shape::new([b, t, kk]), q.dtype);
    }
    if let Some(kc) = mma_mla(&q).then(|| mma_chunk(d, max_shared(&q))).flatten() {
        // On tensor cores, with the scores of the v3 forward (which computed `lse`).
        let vector = load_width(d);
        let (q, kv) = (readable_rows(q, vector), readable_rows(kv, vector));
        let unread = zeros_f32(&q, Shape::new([1]));
        let heads = HeadSums { hw: lse, hs: unread.clone(), ks: unread, relu: false };
        let out = selected_head_sums(q, kv, indices, valid, heads, scale, kc);
        TENSOR_CORE_LAUNCHES[TensorCoreOp::SparseMlaProbs as usize].fetch_add(1, Ordering::SeqCst);
        return out;
    }
    let (q, kv) = (into_contiguous(q), into_contiguous(kv));
    let out = output(&q, Shape::new([b, t, kk]), q.dtype);
    let (hg, kc) = indexer_loss_tiles(h, d, 1, max_shared(&q));
    kernels::indexer_loss::sparse_mla_probs::launch::<R>(
        &q.client,
        cube_count(b * t, 1),
        CubeDim::new_1d(128),
        q.clone().into_tensor_arg(),
        kv.into_tensor_arg(),
        indices.clone().into_tensor_arg(),
        valid.clone().into_tensor_arg(),
        lse.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        b * t,
        t,
        s,
        kk,
        h,
        scale,
        d,
        hg,
        kc,
        [q.dtype.into(), indices.dtype.into(), valid.dtype.into()],
    );
    out
}

/// The FMA grouped-product kernels' tiling `(rm, rn, bk)`: `16·rm × 16·rn` output tiles, the
/// reduction in chunks of `bk` (see `dsa_kernels::grouped_matmul`).
const GMM_TILE: (usize, usize, usize) = (4, 4, 16);

/// Whether the grouped products ([`DsaBackend::grouped_matmul`] and its weight gradient)
/// take their tensor-core kernels for inputs of `dtype` on `client`'s device: bf16 or f16,
/// and 16×16×16 cmma for that type with f32 accumulation in 32-wide planes (CUDA sm_80 and
/// later; not wgpu's lavapipe). Any shape: the kernels zero-pad the tiles. Else the FMA
/// kernels run.
pub fn grouped_matmul_tensor_cores<R: Runtime>(client: &ComputeClient<R>, dtype: DType) -> bool {
    let kind = match dtype {
        DType::BF16 => FloatKind::BF16,
        DType::F16 => FloatKind::F16,
        _ => return false,
    };
    has_mma(client, Mma::Cmma, kind, (16, 16, 16))
}

/// Vector width of the tensor-core grouped products' loads of `a` and `b` (rows of `k` and
/// `n` values): the widest of 8, 4, 2 and 1 values that divides `k`, `n` and both tensors'
/// starts in their buffers.
fn grouped_matmul_vector<R: CubeRuntime>(k: usize, n: usize, a: &CubeTensor<R>, b: &CubeTensor<R>) -> usize {
    let aligned = |t: &CubeTensor<R>, v: usize| t.handle.offset_start.unwrap_or(0).is_multiple_of((v * t.dtype.size()) as u64);
    [8usize, 4, 2]
        .into_iter()
        .find(|&v| k.is_multiple_of(v) && n.is_multiple_of(v) && aligned(a, v) && aligned(b, v))
        .unwrap_or(1)
}

/// The grouped matrix product on CubeCL; see [`DsaBackend::grouped_matmul`]. On tensor
/// cores where [`grouped_matmul_tensor_cores`] says so (64×64 output tiles), else by FMA
/// ([`GMM_TILE`]). Launches an upper bound of the row tiles (`⌈M/TM⌉ + G`): the kernels find
/// the groups in `offsets` on the device.
pub fn grouped_matmul_primitive<R: CubeRuntime>(x: CubeTensor<R>, w: CubeTensor<R>, offsets: CubeTensor<R>) -> CubeTensor<R> {
    let [m, k] = dims::<2, R>(&x);
    let [g, _, n] = dims::<3, R>(&w);
    assert_eq!(x.dtype, w.dtype, "grouped_matmul: x and w must have the same dtype");
    let (x, w, offsets) = (into_contiguous(x), into_contiguous(w), into_contiguous(offsets));
    let y = output(&x, Shape::new([m, n]), x.dtype);
    if m * n == 0 {
        return y;
    }
    let dtypes = [x.dtype.into(), offsets.dtype.into()];
    if grouped_matmul_tensor_cores(&x.client, x.dtype) {
        use kernels::grouped_matmul::{GMM_TC_TILE, GMM_TC_UNITS};
        let vector = grouped_matmul_vector(k, n, &x, &w);
        // SAFETY: every read and write of the kernel is guarded by the bounds passed (see
        // its docs); the tensors are contiguous with these shapes, their starts and rows
        // multiples of `vector`.
        unsafe {
            kernels::grouped_matmul::grouped_matmul_fwd_cmma::launch_unchecked::<R>(
                &x.client,
                cube_count(m.div_ceil(GMM_TC_TILE) + g, n.div_ceil(GMM_TC_TILE)),
                CubeDim::new_1d(GMM_TC_UNITS as u32),
                vector,
                x.clone().into_tensor_arg(),
                w.into_tensor_arg(),
                offsets.clone().into_tensor_arg(),
                y.clone().into_tensor_arg(),
                m,
                k,
                n,
                g,
                dtypes,
            );
        }
        TENSOR_CORE_LAUNCHES[TensorCoreOp::GroupedMatmul as usize].fetch_add(1, Ordering::SeqCst);
        return y;
    }
    let (rm, rn, bk) = GMM_TILE;
    kernels::grouped_matmul::grouped_matmul_fwd::launch::<R>(
        &x.client,
        cube_count(m.div_ceil(16 * rm) + g, n.div_ceil(16 * rn)),
        CubeDim::new_1d(kernels::grouped_matmul::GMM_UNITS as u32),
        x.clone().into_tensor_arg(),
        w.into_tensor_arg(),
        offsets.clone().into_tensor_arg(),
        y.clone().into_tensor_arg(),
        m,
        k,
        n,
        g,
        rm,
        rn,
        bk,
        dtypes,
    );
    y
}

/// The weight gradient of the grouped product on CubeCL; see
/// [`DsaBackend::grouped_matmul_weight_grad`]: `[G, K, N]` with `G + 1` the length of
/// `offsets`. On tensor cores where [`grouped_matmul_tensor_cores`] says so (64×64 tiles of
/// `dw[g]`), else by FMA ([`GMM_TILE`]).
pub fn grouped_matmul_weight_grad_primitive<R: CubeRuntime>(x: CubeTensor<R>, dy: CubeTensor<R>, offsets: CubeTensor<R>) -> CubeTensor<R> {
    let [m, k] = dims::<2, R>(&x);
    let [_, n] = dims::<2, R>(&dy);
    let [o] = dims::<1, R>(&offsets);
    let g = o.checked_sub(1).expect("grouped_matmul_weight_grad: offsets hold G + 1 entries");
    assert_eq!(x.dtype, dy.dtype, "grouped_matmul_weight_grad: x and dy must have the same dtype");
    let (x, dy, offsets) = (into_contiguous(x), into_contiguous(dy), into_contiguous(offsets));
    let dw = output(&x, Shape::new([g, k, n]), x.dtype);
    if g * k * n == 0 {
        return dw;
    }
    let dtypes = [x.dtype.into(), offsets.dtype.into()];
    if grouped_matmul_tensor_cores(&x.client, x.dtype) {
        use kernels::grouped_matmul::{GMM_TC_TILE, GMM_TC_UNITS};
        let vector = grouped_matmul_vector(k, n, &x, &dy);
        // SAFETY: every read and write of the kernel is guarded by the bounds passed (see
        // its docs); the tensors are contiguous with these shapes, their starts and rows
        // multiples of `vector`.
        unsafe {
            kernels::grouped_matmul::grouped_matmul_wgrad_cmma::launch_unchecked::<R>(
                &x.client,
                cube_count(g * k.div_ceil(GMM_TC_TILE), n.div_ceil(GMM_TC_TILE)),
                CubeDim::new_1d(GMM_TC_UNITS as u32),
                vector,
                x.clone().into_tensor_arg(),
                dy.into_tensor_arg(),
                offsets.clone().into_tensor_arg(),
                dw.clone().into_tensor_arg(),
                m,
                k,
                n,
                g,
                dtypes,
            );
        }
        TENSOR_CORE_LAUNCHES[TensorCoreOp::GroupedMatmulWeightGrad as usize].fetch_add(1, Ordering::SeqCst);
        return dw;
    }
    let (rm, rn, bk) = GMM_TILE;
    kernels::grouped_matmul::grouped_matmul_wgrad::launch::<R>(
        &x.client,
        cube_count(g * k.div_ceil(16 * rm), n.div_ceil(16 * rn)),
        CubeDim::new_1d(kernels::grouped_matmul::GMM_UNITS as u32),
        x.clone().into_tensor_arg(),
        dy.into_tensor_arg(),
        offsets.clone().into_tensor_arg(),
        dw.clone().into_tensor_arg(),
        m,
        k,
        n,
        g,
        rm,
        rn,
        bk,
        dtypes,
    );
    dw
}

/// One fused AdamW step on CubeCL; see [`DsaBackend::adamw_step`]: one launch of
/// `dsa_kernels::adamw::adamw_step` over the flattened tensors (which must share a float
/// type), writing new parameter and moment tensors. The norm is read on the device.
pub fn adamw_step_primitive<R: CubeRuntime>(
    param: CubeTensor<R>,
    grad: CubeTensor<R>,
    moment_1: CubeTensor<R>,
    moment_2: CubeTensor<R>,
    norm: Option<CubeTensor<R>>,
    step: AdamWStep,
) -> (CubeTensor<R>, CubeTensor<R>, CubeTensor<R>) {
    let (dtype, shape) = (param.dtype, param.shape());
    for (name, t) in [("grad", &grad), ("moment_1", &moment_1), ("moment_2", &moment_2)] {
        assert!(t.dtype == dtype && t.shape() == shape, "adamw_step: {name} is {:?} {:?}, the parameter {dtype:?} {shape:?}", t.dtype, t.shape());
    }
    // An empty tensor launches nothing (a launch of zero cubes, even a copy, fails on CUDA).
    let n = shape.num_elements();
    if n == 0 {
        return (param, moment_1, moment_2);
    }
    let (param, grad, moment_1, moment_2) = (into_contiguous(param), into_contiguous(grad), into_contiguous(moment_1), into_contiguous(moment_2));
    let outs = [(); 3].map(|_| output(&param, shape.clone(), dtype));
    let clip = norm.is_some();
    // Without clipping the kernel never reads `norm`: any tensor of the type will do.
    let norm = match norm {
        Some(t) if t.dtype == dtype => into_contiguous(t),
        Some(t) => burn_cubecl::kernel::cast(into_contiguous(t), dtype),
        None => grad.clone(),
    };
    let [p_out, m_out, v_out] = outs;
    use kernels::adamw::ADAMW_UNITS;
    kernels::adamw::adamw_step::launch::<R>(
        &param.client,
        cube_count(n.div_ceil(ADAMW_UNITS), 1),
        CubeDim::new_1d(ADAMW_UNITS as u32),
        param.clone().into_tensor_arg(),
        grad.into_tensor_arg(),
        moment_1.into_tensor_arg(),
        moment_2.into_tensor_arg(),
        norm.into_tensor_arg(),
        p_out.clone().into_tensor_arg(),
        m_out.clone().into_tensor_arg(),
        v_out.clone().into_tensor_arg(),
        n,
        step.lr as f32,
        (1.0 - step.decay_rate()) as f32,
        step.beta_1,
        1.0 - step.beta_1,
        step.beta_2,
        1.0 - step.beta_2,
        step.epsilon,
        step.bias_correction_1(),
        step.bias_correction_2(),
        step.max_norm,
        crate::adamw::min_positive(dtype) as f32,
        clip,
        dtype.into(),
    );
    (p_out, m_out, v_out)
}

/// [`DsaBackend::swiglu`] in one kernel ([`kernels::swiglu::swiglu_fwd`]).
pub fn swiglu_primitive<R: CubeRuntime>(gate: CubeTensor<R>, up: CubeTensor<R>) -> CubeTensor<R> {
    let shape = gate.shape();
    let n = shape.num_elements();
    let dtype = gate.dtype;
    let (gate, up) = (into_contiguous(gate), into_contiguous(same_dtype(up, dtype)));
    let y = output(&gate, shape, dtype);
    if n == 0 {
        return y;
    }
    use kernels::swiglu::SWIGLU_UNITS;
    kernels::swiglu::swiglu_fwd::launch::<R>(
        &gate.client,
        cube_count(n.div_ceil(SWIGLU_UNITS), 1),
        CubeDim::new_1d(SWIGLU_UNITS as u32),
        gate.clone().into_tensor_arg(),
        up.into_tensor_arg(),
        y.clone().into_tensor_arg(),
        n,
        gate.dtype.into(),
    );
    y
}

/// [`DsaBackend::swiglu_backward`] in one kernel ([`kernels::swiglu::swiglu_bwd`]); both
/// gradients in `gate`'s dtype.
pub fn swiglu_backward_primitive<R: CubeRuntime>(gate: CubeTensor<R>, up: CubeTensor<R>, dy: CubeTensor<R>) -> (CubeTensor<R>, CubeTensor<R>) {
    let shape = gate.shape();
    let n = shape.num_elements();
    let dtype = gate.dtype;
    let (gate, up, dy) = (into_contiguous(gate), into_contiguous(same_dtype(up, dtype)), into_contiguous(same_dtype(dy, dtype)));
    let (dgate, dup) = (output(&gate, shape.clone(), dtype), output(&gate, shape, dtype));
    if n == 0 {
        return (dgate, dup);
    }
    use kernels::swiglu::SWIGLU_UNITS;
    kernels::swiglu::swiglu_bwd::launch::<R>(
        &gate.client,
        cube_count(n.div_ceil(SWIGLU_UNITS), 1),
        CubeDim::new_1d(SWIGLU_UNITS as u32),
        gate.clone().into_tensor_arg(),
        up.into_tensor_arg(),
        dy.into_tensor_arg(),
        dgate.clone().into_tensor_arg(),
        dup.clone().into_tensor_arg(),
        n,
        dtype.into(),
    );
    (dgate, dup)
}

/// `t` in `dtype` (a cast where it differs).
fn same_dtype<R: CubeRuntime>(t: CubeTensor<R>, dtype: DType) -> CubeTensor<R> {
    if t.dtype == dtype {
        t
    } else {
        burn_cubecl::kernel::cast(t, dtype)
    }
}

/// [`DsaBackend::rope`] in one kernel ([`kernels::rope::rope`]).
pub fn rope_primitive<R: CubeRuntime>(x: CubeTensor<R>, freqs: CubeTensor<R>, start: usize, interleaved: bool, inverse: bool) -> CubeTensor<R> {
    let [b, t, h, d] = dims::<4, R>(&x);
    let x = into_contiguous(x);
    let freqs = into_contiguous(same_dtype(freqs, DType::F32));
    let y = output(&x, Shape::new([b, t, h, d]), x.dtype);
    let pairs = b * t * h * d / 2;
    if pairs == 0 {
        return y;
    }
    use kernels::rope::ROPE_UNITS;
    kernels::rope::rope::launch::<R>(
        &x.client,
        cube_count(pairs.div_ceil(ROPE_UNITS), 1),
        CubeDim::new_1d(ROPE_UNITS as u32),
        x.clone().into_tensor_arg(),
        freqs.into_tensor_arg(),
        y.clone().into_tensor_arg(),
        pairs,
        t,
        h,
        d / 2,
        start,
        interleaved,
        inverse,
        x.dtype.into(),
    );
    y
}

/// [`DsaBackend::rms_norm`] of `x [N, d]` and `gamma [d]` in one kernel
/// ([`kernels::norm::rms_norm_fwd`]).
pub fn rms_norm_primitive<R: CubeRuntime>(x: CubeTensor<R>, gamma: CubeTensor<R>, epsilon: f64) -> CubeTensor<R> {
    let [rows, d] = dims::<2, R>(&x);
    let (x, gamma) = (into_contiguous(x), into_contiguous(gamma));
    let y = output(&x, Shape::new([rows, d]), x.dtype);
    if rows * d == 0 {
        return y;
    }
    let dtypes = [x.dtype.into(), gamma.dtype.into()];
    use kernels::norm::NORM_UNITS;
    kernels::norm::rms_norm_fwd::launch::<R>(
        &x.client,
        cube_count(rows, 1),
        CubeDim::new_1d(NORM_UNITS as u32),
        x.clone().into_tensor_arg(),
        gamma.into_tensor_arg(),
        y.clone().into_tensor_arg(),
        rows,
        d,
        epsilon as f32,
        dtypes,
    );
    y
}

/// [`DsaBackend::rms_norm_backward`]'s `dx` and the partial sums of `dgamma` (f32
/// `[⌈N / 32⌉, d]`, to be summed over rows) in one kernel ([`kernels::norm::rms_norm_bwd`]).
pub fn rms_norm_backward_primitive<R: CubeRuntime>(x: CubeTensor<R>, gamma: CubeTensor<R>, dy: CubeTensor<R>, epsilon: f64) -> (CubeTensor<R>, CubeTensor<R>) {
    use kernels::norm::{NORM_BWD_ROWS, NORM_UNITS};
    let [rows, d] = dims::<2, R>(&x);
    let (x, gamma) = (into_contiguous(x), into_contiguous(gamma));
    let dy = into_contiguous(same_dtype(dy, x.dtype));
    let cubes = rows.div_ceil(NORM_BWD_ROWS);
    let dx = output(&x, Shape::new([rows, d]), x.dtype);
    let parts = if rows * d == 0 { zeros_f32(&x, Shape::new([1, d])) } else { output(&x, Shape::new([cubes, d]), DType::F32) };
    if rows * d == 0 {
        return (dx, parts);
    }
    let dtypes = [x.dtype.into(), gamma.dtype.into()];
    kernels::norm::rms_norm_bwd::launch::<R>(
        &x.client,
        cube_count(cubes, 1),
        CubeDim::new_1d(NORM_UNITS as u32),
        x.clone().into_tensor_arg(),
        gamma.into_tensor_arg(),
        dy.into_tensor_arg(),
        dx.clone().into_tensor_arg(),
        parts.clone().into_tensor_arg(),
        rows,
        d,
        epsilon as f32,
        d.div_ceil(NORM_UNITS),
        dtypes,
    );
    (dx, parts)
}

/// Whether dense attention over `q [B,H,T,Dqk]`, `k` and `v [B,H,S,Dv]` runs on the flash
/// kernels ([`kernels::flash_attention`]): CUDA with bf16/f16 `mma.sync` (sm_80 and later),
/// all three in one of those dtypes, dims the kernels take, something to compute.
fn flash_applies<R: CubeRuntime>(q: &CubeTensor<R>, k: &CubeTensor<R>, v: &CubeTensor<R>) -> bool {
    let [b, h, t, dqk] = dims::<4, R>(q);
    let [_, _, s, dv] = dims::<4, R>(v);
    let Some(kind) = half_kind(q) else { return false };
    k.dtype == q.dtype
        && v.dtype == q.dtype
        && kernels::flash_attention::flash_supports(dqk, dv)
        && b * h * t * s > 0
        && b.max(h) <= 65535
        && R::name(&q.client) == "cuda"
        && has_mma(&q.client, Mma::Manual, kind, (16, 8, 16))
        && {
            let params = flash_params([q, k, v], None, 0, 1.0);
            params.fwd_shared_bytes().max(params.bwd_shared_bytes()) <= max_shared(q)
        }
}

/// The flash kernels' sizes and strides for `q`, `k`, `v` (and the backward's `d_out`).
fn flash_params<R: CubeRuntime>([q, k, v]: [&CubeTensor<R>; 3], d_out: Option<&CubeTensor<R>>, offset: usize, scale: f32) -> kernels::flash_attention::FlashParams {
    let [b, h, t, dqk] = dims::<4, R>(q);
    let [_, _, s, dv] = dims::<4, R>(v);
    let strides = |x: &CubeTensor<R>| {
        let st = x.meta.strides();
        [st[0], st[1], st[2]]
    };
    kernels::flash_attention::FlashParams {
        batch: b,
        heads: h,
        t_len: t,
        s_len: s,
        offset,
        dqk,
        dv,
        q_strides: strides(q),
        k_strides: strides(k),
        v_strides: strides(v),
        o_strides: d_out.map(strides).unwrap_or_default(),
        scale,
        f16: q.dtype == DType::F16,
    }
}

/// [`DsaBackend::dense_attention`] on the flash kernels where [`flash_applies`]: the output
/// (the inputs' dtype) and the log-sum-exp (f32); `None` elsewhere.
pub fn flash_attention<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    causal_offset: usize,
    scale: f32,
) -> Option<(CubeTensor<R>, CubeTensor<R>)> {
    if !flash_applies(&q, &k, &v) {
        return None;
    }
    let (q, k, v) = (aligned_rows(q), aligned_rows(k), aligned_rows(v));
    let params = flash_params([&q, &k, &v], None, causal_offset, scale);
    let [b, h, t, _] = dims::<4, R>(&q);
    let out = output(&q, Shape::new([b, h, t, params.dv]), q.dtype);
    let lse = output(&q, Shape::new([b, h, t]), DType::F32);
    let binding = |x: &CubeTensor<R>| x.handle.clone().binding();
    // SAFETY: the inputs' rows are aligned above and have the shapes and strides of
    // `params`, the outputs are contiguous with the shapes the kernel writes, and
    // `flash_applies` checked the dims, the sizes and the device.
    unsafe { kernels::flash_attention::launch_flash_fwd(&q.client, [&q, &k, &v, &out, &lse].map(binding), params) }
    TENSOR_CORE_LAUNCHES[TensorCoreOp::DenseAttention as usize].fetch_add(1, Ordering::SeqCst);
    Some((out, lse))
}

/// [`DsaBackend::dense_attention_backward`] on the flash kernels where [`flash_applies`],
/// given the forward's `lse` and `delta = Σ_dv d_out · out` (`[B,H,T]`): `(dq, dk, dv)` in
/// the inputs' dtype; `None` elsewhere.
#[allow(clippy::too_many_arguments)]
pub fn flash_attention_backward<R: CubeRuntime>(
    [q, k, v]: [CubeTensor<R>; 3],
    d_out: CubeTensor<R>,
    lse: CubeTensor<R>,
    delta: CubeTensor<R>,
    causal_offset: usize,
    scale: f32,
) -> Option<(CubeTensor<R>, CubeTensor<R>, CubeTensor<R>)> {
    if !flash_applies(&q, &k, &v) || d_out.dtype != q.dtype {
        return None;
    }
    let (q, k, v, d_out) = (aligned_rows(q), aligned_rows(k), aligned_rows(v), aligned_rows(d_out));
    let f32_contiguous = |x: CubeTensor<R>| into_contiguous(same_dtype(x, DType::F32));
    let (lse, delta) = (f32_contiguous(lse), f32_contiguous(delta));
    let params = flash_params([&q, &k, &v], Some(&d_out), causal_offset, scale);
    let [b, h, t, dqk] = dims::<4, R>(&q);
    let s = params.s_len;
    let dq = zeros_f32(&q, Shape::new([b, h, t, dqk]));
    let dk = output(&q, Shape::new([b, h, s, dqk]), q.dtype);
    let dv = output(&q, Shape::new([b, h, s, params.dv]), q.dtype);
    let binding = |x: &CubeTensor<R>| x.handle.clone().binding();
    // SAFETY: as in `flash_attention`; `dq` is zeroed f32, `lse` and `delta` contiguous f32.
    unsafe {
        kernels::flash_attention::launch_flash_bwd(
            &q.client,
            [&q, &k, &v, &d_out, &lse, &delta].map(binding),
            [&dq, &dk, &dv].map(binding),
            params,
        )
    }
    TENSOR_CORE_LAUNCHES[TensorCoreOp::DenseAttentionBackward as usize].fetch_add(1, Ordering::SeqCst);
    Some((from_f32(dq, q.dtype), dk, dv))
}

/// The dispatcher table of the projections ([`crate::ops::linear`]): the cubek strategy that
/// [`DsaBackend::linear_matmul`] launches on a `runtime` device (`cuda`, `wgpu`, ...) for
/// each [`Layout`] of its operands, by its name in `dsa-cli bench-matmul`'s lines (see
/// [`crate::matmul::strategy_name`]); `tensor_cores`: the device multiplies the operands'
/// dtype on tensor cores (bf16 or f16 cmma, see [`grouped_matmul_tensor_cores`]). `None`:
/// Burn's own matmul. The entries come from the benchmark's numbers; the unmeasured `TT`
/// keeps the kernel Burn's matmul runs without autotuning (`simple_cyclic_cmma`).
///
/// ```
/// use dsa_burn::cubecl::linear_strategy_name;
/// use dsa_burn::matmul::Layout;
/// assert_eq!(linear_strategy_name("cuda", true, Layout::NN), Some("specialized_tma_mma"));
/// assert_eq!(linear_strategy_name("wgpu", false, Layout::NN), None);
/// ```
pub fn linear_strategy_name(runtime: &str, tensor_cores: bool, layout: Layout) -> Option<&'static str> {
    match (runtime, tensor_cores, layout) {
        // CUDA, bf16/f16: the forward y = x·W, dX = dY·Wᵀ, dW = Xᵀ·dY, both transposed.
        // `dsa-cli bench-matmul` on an H200 (bf16, the small preset's lm_head, mlp.down_proj,
        // attn.wq_b and attn.wo at 8192 rows): specialized_tma_mma 2.6 ms over the twelve
        // products against 8.8 ms for simple_cyclic_cmma (Burn's matmul without autotuning).
        ("cuda", true, Layout::NN) => Some("specialized_tma_mma"),
        ("cuda", true, Layout::NT) => Some("specialized_tma_mma"),
        ("cuda", true, Layout::TN) => Some("specialized_tma_mma"),
        ("cuda", true, Layout::TT) => Some("simple_cyclic_cmma"),
        // f32 (TF32 on CUDA), devices without tensor cores, wgpu: Burn's matmul.
        _ => None,
    }
}

static LINEAR_STRATEGY: Mutex<Option<Strategy>> = Mutex::new(None);

/// Force the cubek strategy of every [`DsaBackend::linear_matmul`] on CubeCL (tests,
/// benchmarks); `None` (the default): [`linear_strategy`]'s choice.
pub fn set_linear_strategy(strategy: Option<Strategy>) {
    *LINEAR_STRATEGY.lock().unwrap_or_else(|e| e.into_inner()) = strategy;
}

/// The cubek strategy of [`DsaBackend::linear_matmul`] for operands of `dtype` in `layout` on
/// `client`'s device: the one [`set_linear_strategy`] forces, else the entry of
/// [`linear_strategy_name`]'s table, except with Burn's `autotune` feature, where Burn's
/// autotuned matmul runs (`None`) as it would without `ops::linear`.
///
/// # Panics
///
/// If the table names a strategy that [`crate::matmul::strategy_by_name`] does not know.
pub fn linear_strategy<R: Runtime>(client: &ComputeClient<R>, dtype: DType, layout: Layout) -> Option<Strategy> {
    if let Some(forced) = LINEAR_STRATEGY.lock().unwrap_or_else(|e| e.into_inner()).clone() {
        return Some(forced);
    }
    if cfg!(feature = "autotune") {
        return None;
    }
    let name = linear_strategy_name(R::name(client), grouped_matmul_tensor_cores(client, dtype), layout)?;
    Some(crate::matmul::strategy_by_name(name).unwrap_or_else(|| panic!("linear_strategy_name: cubek has no strategy `{name}`")))
}

static LINEAR_LAUNCHES: [AtomicUsize; 2] = [const { AtomicUsize::new(0) }; 2];

/// How this process's [`DsaBackend::linear_matmul`] calls on CubeCL ran: `(cubek, burn)`,
/// those that launched [`linear_strategy`]'s strategy and those that ran Burn's matmul (no
/// strategy chosen, or the chosen one did not apply). Tests check which path ran.
pub fn linear_launches() -> (usize, usize) {
    (LINEAR_LAUNCHES[0].load(Ordering::SeqCst), LINEAR_LAUNCHES[1].load(Ordering::SeqCst))
}

/// The projections' matrix product on CubeCL, `lhs [M, K] · rhs [K, N]` (any strides); see
/// [`DsaBackend::linear_matmul`]. Launches [`linear_strategy`]'s cubek strategy; where there
/// is none, it does not apply (an error, nothing launched), the inputs are quantized or of
/// two dtypes, or a dim is 0, Burn's matmul runs as `float_matmul` would (`Strategy::Auto`,
/// or the autotuner).
pub fn linear_matmul_primitive<R: CubeRuntime>(lhs: CubeTensor<R>, rhs: CubeTensor<R>) -> CubeTensor<R> {
    let dtype = lhs.dtype;
    let [m, k] = dims::<2, R>(&lhs);
    let n = dims::<2, R>(&rhs)[1];
    let plain = lhs.qparams.is_none() && rhs.qparams.is_none() && rhs.dtype == dtype && m * k * n > 0;
    let layout = Layout::of(lhs.meta.strides(), rhs.meta.strides());
    if let Some(strategy) = plain.then(|| linear_strategy(&lhs.client, dtype, layout)).flatten() {
        if let Ok(out) = crate::matmul::matmul(&strategy, lhs.clone(), rhs.clone()) {
            LINEAR_LAUNCHES[0].fetch_add(1, Ordering::SeqCst);
            return out;
        }
    }
    LINEAR_LAUNCHES[1].fetch_add(1, Ordering::SeqCst);
    use burn_cubecl::kernel::matmul::{matmul, MatmulStrategy};
    matmul(lhs, rhs, None, MatmulStrategy::default(), dtype).expect("Burn's matmul launches")
}

impl<R, F, I, BT> DsaBackend for CubeBackend<R, F, I, BT>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    fn indexer_scores(
        q: FloatTensor<Self>,
        w: FloatTensor<Self>,
        k: FloatTensor<Self>,
        quant: IndexerQuant,
        causal_offset: Option<usize>,
    ) -> FloatTensor<Self> {
        indexer_scores_primitive(q, w, k, quant, causal_offset)
    }

    fn topk_select(
        scores: FloatTensor<Self>,
        k: usize,
        causal_offset: Option<usize>,
    ) -> (IntTensor<Self>, BoolTensor<Self>) {
        let settings = get_device_settings::<Self>(&scores.device);
        match topk_primitive(
            scores.clone(),
            k,
            causal_offset,
            settings.int_dtype.into(),
            settings.bool_dtype.into(),
        ) {
            Some(out) => out,
            None => {
                let (indices, valid) = crate::topk::reference_topk(
                    Tensor::<Self, 3>::from_primitive(TensorPrimitive::Float(scores)),
                    k,
                    causal_offset,
                );
                (indices.into_primitive(), valid.into_primitive())
            }
        }
    }

    fn sparse_mla(
        q: FloatTensor<Self>,
        kv: FloatTensor<Self>,
        indices: IntTensor<Self>,
        valid: BoolTensor<Self>,
        d_v: usize,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        sparse_mla_primitive(q, kv, indices, valid, d_v, scale)
    }

    fn fused_sparse_mla() -> bool {
        true
    }

    fn rms_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self> {
        rms_norm_primitive(x, gamma, epsilon)
    }

    fn rope(x: FloatTensor<Self>, freqs: FloatTensor<Self>, start: usize, interleaved: bool, inverse: bool) -> FloatTensor<Self> {
        rope_primitive(x, freqs, start, interleaved, inverse)
    }

    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        swiglu_primitive(gate, up)
    }

    fn swiglu_backward(gate: FloatTensor<Self>, up: FloatTensor<Self>, dy: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let up_dtype = up.dtype;
        let (dgate, dup) = swiglu_backward_primitive(gate, up, dy);
        (dgate, same_dtype(dup, up_dtype))
    }

    fn rms_norm_backward(x: FloatTensor<Self>, gamma: FloatTensor<Self>, dy: FloatTensor<Self>, epsilon: f64) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let gamma_dtype = gamma.dtype;
        let (dx, parts) = rms_norm_backward_primitive(x, gamma, dy, epsilon);
        let d = dims::<2, R>(&parts)[1];
        let dgamma = Tensor::<Self, 2>::from_primitive(TensorPrimitive::Float(parts)).sum_dim(0).reshape([d]);
        (dx, from_f32(dgamma.into_primitive().tensor(), gamma_dtype))
    }

    fn dense_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        causal_offset: usize,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if let Some(out) = flash_attention(q.clone(), k.clone(), v.clone(), causal_offset, scale) {
            return out;
        }
        crate::dense_attention::reference_primitive::<Self>(q, k, v, causal_offset, scale)
    }

    fn dense_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        d_out: FloatTensor<Self>,
        causal_offset: usize,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let float = |t| Tensor::<Self, 4>::from_primitive(TensorPrimitive::Float(t));
        if flash_applies(&q, &k, &v) {
            let f32 = burn::tensor::FloatDType::F32;
            let [b, h, t, _] = dims::<4, R>(&q);
            let delta = (float(d_out.clone()).cast(f32) * float(out.clone()).cast(f32)).sum_dim(3).reshape([b, h, t]);
            let delta = delta.into_primitive().tensor();
            if let Some(grads) = flash_attention_backward([q.clone(), k.clone(), v.clone()], d_out.clone(), lse.clone(), delta, causal_offset, scale) {
                return grads;
            }
        }
        crate::dense_attention::reference_backward_primitive::<Self>([q, k, v, out, lse, d_out], causal_offset, scale)
    }

    fn sparse_mla_backward(
        q: FloatTensor<Self>,
        kv: FloatTensor<Self>,
        indices: IntTensor<Self>,
        valid: BoolTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        d_out: Option<FloatTensor<Self>>,
        d_lse: Option<FloatTensor<Self>>,
        d_v: usize,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        sparse_mla_backward_primitive(q, kv, indices, valid, out, lse, d_out, d_lse, d_v, scale)
    }

    fn indexer_selected_scores(
        q: FloatTensor<Self>,
        w: FloatTensor<Self>,
        k: FloatTensor<Self>,
        quant: IndexerQuant,
        indices: IntTensor<Self>,
        valid: BoolTensor<Self>,
    ) -> FloatTensor<Self> {
        indexer_selected_scores_primitive(q, w, k, quant, indices, valid)
    }

    fn indexer_selected_scores_backward(
        q: FloatTensor<Self>,
        w: FloatTensor<Self>,
        k: FloatTensor<Self>,
        quant: IndexerQuant,
        indices: IntTensor<Self>,
        valid: BoolTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        indexer_selected_scores_backward_primitive(q, w, k, quant, indices, valid, grad)
    }

    fn sparse_mla_probs(
        q: FloatTensor<Self>,
        kv: FloatTensor<Self>,
        indices: IntTensor<Self>,
        valid: BoolTensor<Self>,
        lse: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        sparse_mla_probs_primitive(q, kv, indices, valid, lse, scale)
    }
    fn grouped_matmul(x: FloatTensor<Self>, w: FloatTensor<Self>, offsets: IntTensor<Self>) -> FloatTensor<Self> {
        grouped_matmul_primitive(x, w, offsets)
    }

    fn grouped_matmul_weight_grad(x: FloatTensor<Self>, dy: FloatTensor<Self>, offsets: IntTensor<Self>) -> FloatTensor<Self> {
        grouped_matmul_weight_grad_primitive(x, dy, offsets)
    }

    fn adamw_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        norm: Option<FloatTensor<Self>>,
        step: AdamWStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        adamw_step_primitive(param, grad, moment_1, moment_2, norm, step)
    }

    fn linear_matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        linear_matmul_primitive(lhs, rhs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every strategy the dispatcher table names is one `dsa-cli bench-matmul` knows (a typo
    /// would panic at the first projection).
    #[test]
    fn linear_table_names_known_strategies() {
        for runtime in ["cuda", "hip", "wgpu", "cpu"] {
            for tensor_cores in [false, true] {
                for layout in [Layout::NN, Layout::NT, Layout::TN, Layout::TT] {
                    if let Some(name) = linear_strategy_name(runtime, tensor_cores, layout) {
                        assert!(crate::matmul::strategy_by_name(name).is_some(), "{runtime} {tensor_cores} {layout}: no strategy `{name}`");
                    }
                }
            }
        }
    }
}
