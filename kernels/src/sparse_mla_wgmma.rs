//! Sparse MLA forward on Hopper's warpgroup tensor cores (v5): the contract of
//! [`crate::sparse_mla_mma16::sparse_mla_fwd_mma16`] (v4) at DeepSeek-V3.2's latent sizes
//! (`q [B,T,H,576]`, `kv [B,S,576]`, `idx`/`valid [B,T,K]` → `out [B,T,H,512]`,
//! `lse [B,T,H]`, all bf16), on `wgmma.mma_async` with operands in 128-byte-swizzled shared
//! memory — the instructions that reach Hopper's full tensor-core rate, and that CubeCL 0.10
//! does not emit.
//!
//! So this one kernel is CUDA C++ (`cuda/sparse_mla_wgmma.cu`, its design in the file's
//! header), compiled by the same NVRTC and launched on the same client, stream and buffers
//! as the CubeCL kernels: [`launch_sparse_mla_fwd_wgmma`] hands CubeCL's CUDA runtime a
//! [`CubeTask`] whose compiled form is this source, with the shared-memory size of a CubeCL
//! shell kernel ([`shared_shell`]) that CubeCL's launcher reads from it. It runs where
//! [`has_wgmma`] says so (CUDA sm_90); everywhere else the CubeCL kernels are the path, and
//! they are its reference in the tests.

use std::hash::{DefaultHasher, Hash, Hasher};

use cubecl::features::Tma;
use cubecl::prelude::*;
use cubecl::server::{Binding, KernelArguments, MetadataBindingInfo};
use cubecl::{CompilationError, Compiler, CubeTask};

/// The kernel's source (CUDA C++ for sm_90a).
const SOURCE: &str = include_str!("cuda/sparse_mla_wgmma.cu");
/// Its entry point.
const ENTRY: &str = "dsa_sparse_mla_fwd_wgmma";
/// Heads per CTA.
pub const WGMMA_HEADS: usize = 64;
/// The latent's dims (keys and values) the kernel is built for.
pub const WGMMA_D: usize = 576;
/// The value dims.
pub const WGMMA_DV: usize = 512;
/// Threads per CTA (two warpgroups).
pub const WGMMA_UNITS: u32 = 256;
/// Shared memory per CTA: `DSA_SMEM_BYTES` of the source (three 72 KiB tiles, P, the row
/// maxima, two chunks' rows, 1 KiB of alignment).
pub const WGMMA_SHARED_BYTES: usize = 3 * 9 * 64 * 128 + 64 * 128 + 2 * 64 * 4 + 2 * 64 * 8 + 1024;

/// Whether the device runs the kernel: CUDA on sm_90 (TMA without Blackwell's im2col-wide
/// mode: `wgmma` exists on sm_90a only) with [`WGMMA_SHARED_BYTES`] of shared memory.
pub fn has_wgmma<R: Runtime>(client: &ComputeClient<R>) -> bool {
    let props = client.properties();
    R::name(client) == "cuda"
        && props.features.tma.contains(Tma::Base)
        && !props.features.tma.contains(Tma::Im2colWide)
        && props.hardware.max_shared_memory_size >= WGMMA_SHARED_BYTES
}

/// Sizes and strides (in elements) of one launch; the kernel reads them as one 64-bit word
/// each, in this order (`DsaMlaParams` in the source).
#[derive(Clone, Copy, Debug)]
pub struct WgmmaMlaParams {
    /// `B·T` query tokens.
    pub bt_len: usize,
    /// `T`.
    pub t_len: usize,
    /// `H`.
    pub heads: usize,
    /// `K` slots per token.
    pub kk: usize,
    /// `S` latent rows.
    pub s_len: usize,
    /// `q`'s strides over batch, token and head (the last one is 1).
    pub q_strides: [usize; 3],
    /// `kv`'s strides over batch and row (the last one is 1).
    pub kv_strides: [usize; 2],
    /// The softmax scale.
    pub scale: f32,
    /// Bytes per element of `idx` (4 or 8) and of `valid` (1, 4 or 8).
    pub idx_bytes: usize,
    pub valid_bytes: usize,
}

impl WgmmaMlaParams {
    fn words(&self) -> Vec<u64> {
        let [q_sb, q_st, q_sh] = self.q_strides;
        let [kv_sb, kv_ss] = self.kv_strides;
        [self.bt_len, self.t_len, self.heads, self.kk, self.s_len, q_sb, q_st, q_sh, kv_sb, kv_ss]
            .into_iter()
            .map(|v| v as u64)
            .chain([self.scale.to_bits() as u64, self.idx_bytes as u64, self.valid_bytes as u64])
            .collect()
    }
}

/// The shell whose compiled form carries the CTA's shared memory and cube size for CubeCL's
/// launcher (its source is replaced by the CUDA kernel's).
#[cube(launch)]
pub fn shared_shell(#[comptime] words: usize) {
    let mut smem = SharedMemory::<u32>::new(words);
    smem[UNIT_POS as usize] = 0u32;
}

/// A [`CubeTask`] compiling to the CUDA source: the shell compiled by the runtime's own
/// compiler, with its source and entry point replaced.
struct CudaSourceTask<K: CubeKernel> {
    shell: K,
}

impl<K: CubeKernel> KernelMetadata for CudaSourceTask<K> {
    fn id(&self) -> KernelId {
        let mut hasher = DefaultHasher::new();
        SOURCE.hash(&mut hasher);
        self.shell.id().info((ENTRY, hasher.finish()))
    }

    fn address_type(&self) -> StorageType {
        self.shell.address_type()
    }
}

impl<C: Compiler, K: CubeKernel> CubeTask<C> for CudaSourceTask<K> {
    fn compile(
        &self,
        compiler: &mut C,
        options: &C::CompilationOptions,
        mode: ExecutionMode,
        addr_type: StorageType,
    ) -> Result<CompiledKernel<C>, CompilationError> {
        let shell = self.shell.define();
        let cube_dim = shell.cube_dim;
        let repr = compiler.compile(shell, options, mode, addr_type)?;
        Ok(CompiledKernel {
            entrypoint_name: ENTRY.to_string(),
            debug_name: Some(ENTRY),
            source: SOURCE.to_string(),
            repr: Some(repr),
            cube_dim,
            debug_info: None,
        })
    }
}

/// Launches the v5 forward on `B·T × ⌈H/64⌉` CTAs. Buffers: `q`, `kv` (bf16, rows at the
/// strides of `params`, 16-byte aligned: strides multiples of 8), `idx` (i32/i64) and
/// `valid` (contiguous `[B·T, K]`), `out` (bf16 `[B·T, H, 512]`) and `lse` (bf16
/// `[B·T, H]`), contiguous.
///
/// # Safety
/// The buffers must hold the shapes and strides described by `params`, and
/// [`has_wgmma`] must hold for `client`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn launch_sparse_mla_fwd_wgmma<R: Runtime>(
    client: &ComputeClient<R>,
    q: Binding,
    kv: Binding,
    idx: Binding,
    valid: Binding,
    out: Binding,
    lse: Binding,
    params: WgmmaMlaParams,
) {
    let shell = shared_shell::SharedShell::<R>::new(
        KernelSettings::default().cube_dim(CubeDim::new_1d(WGMMA_UNITS)),
        client.clone(),
        WGMMA_SHARED_BYTES / 4,
    );
    let words = params.words();
    let end = words.len();
    let args = KernelArguments {
        buffers: vec![q, kv, idx, valid, out, lse],
        info: MetadataBindingInfo::new(words, end),
        tensor_maps: Vec::new(),
    };
    let count = CubeCount::Static(params.bt_len as u32, params.heads.div_ceil(WGMMA_HEADS) as u32, 1);
    // SAFETY: the caller upholds the buffers' shapes; the kernel guards its own reads.
    unsafe { client.launch_unchecked(Box::new(CudaSourceTask { shell }), count, args) }
}
