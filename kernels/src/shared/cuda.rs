//! Kernels written in CUDA C++ for what CubeCL 0.10 cannot emit (Hopper's `wgmma`), run by
//! CubeCL's own CUDA runtime: `launch_cuda_source` hands it a [`CubeTask`] whose compiled
//! form is the CUDA source (compiled by the same NVRTC as every CubeCL kernel, for the
//! device's `sm_XXa`), with the shared-memory and cube size of a CubeCL shell kernel
//! ([`shared_shell()`]) that the launcher reads from the compiled representation, on the same
//! client, stream and buffers as the CubeCL kernels. The kernel's sizes and strides come as
//! CubeCL's `info` words, one `u64` each, which the source reads as a `__grid_constant__`
//! struct. CubeCL's PTX cache keys each source by its hash.
//!
//! Used by [`crate::sparse_mla::wgmma`], [`crate::indexer::wgmma`] and
//! [`crate::dense_attention`], whose sources start with the shared helpers of
//! `shared/wgmma.cuh`.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

use cubecl::features::Tma;
use cubecl::prelude::*;
use cubecl::server::{Binding, KernelArguments, MetadataBindingInfo};
use cubecl::{CompilationError, Compiler, CubeTask};

/// Whether the device runs `wgmma` kernels with `shared_bytes` of shared memory per CTA: CUDA
/// on sm_90 (TMA without Blackwell's im2col-wide mode: `wgmma` exists on sm_90a only).
pub fn has_wgmma<R: Runtime>(client: &ComputeClient<R>, shared_bytes: usize) -> bool {
    let props = client.properties();
    R::name(client) == "cuda"
        && props.features.tma.contains(Tma::Base)
        && !props.features.tma.contains(Tma::Im2colWide)
        && props.hardware.max_shared_memory_size >= shared_bytes
}

/// The shell whose compiled form carries a CTA's shared memory and cube size for CubeCL's
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
    source: &'static str,
    entry: &'static str,
}

impl<K: CubeKernel> KernelMetadata for CudaSourceTask<K> {
    fn id(&self) -> KernelId {
        self.shell.id().info((self.entry, source_hash(self.source)))
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
            entrypoint_name: self.entry.to_string(),
            debug_name: Some(self.entry),
            source: self.source.to_string(),
            repr: Some(repr),
            cube_dim,
            debug_info: None,
        })
    }
}

/// The hash of a kernel source's text (the kernel's id for CubeCL's caches), computed once
/// per source rather than over its ~20 KB at every launch.
fn source_hash(source: &'static str) -> u64 {
    static HASHES: Mutex<Vec<((usize, usize), u64)>> = Mutex::new(Vec::new());
    let key = (source.as_ptr() as usize, source.len());
    let mut hashes = HASHES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&(_, h)) = hashes.iter().find(|(k, _)| *k == key) {
        return h;
    }
    let mut hasher = DefaultHasher::new();
    source.hash(&mut hasher);
    let h = hasher.finish();
    hashes.push((key, h));
    h
}

/// Launches the CUDA kernel `entry` of `source` on `count` CTAs of `units` threads with
/// `shared_bytes` of dynamic shared memory; its parameters are `buffers` in order, then the
/// `words` as one struct.
///
/// # Safety
/// The kernel's reads and writes must stay inside the buffers for these words, and the
/// device must run the source (for `wgmma` kernels, [`has_wgmma`]).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn launch_cuda_source<R: Runtime>(
    client: &ComputeClient<R>,
    source: &'static str,
    entry: &'static str,
    shared_bytes: usize,
    units: u32,
    count: CubeCount,
    buffers: Vec<Binding>,
    words: Vec<u64>,
) {
    let shell = shared_shell::SharedShell::<R>::new(
        KernelSettings::default().cube_dim(CubeDim::new_1d(units)),
        client.clone(),
        shared_bytes.div_ceil(4),
    );
    let end = words.len();
    let args = KernelArguments { buffers, info: MetadataBindingInfo::new(words, end), tensor_maps: Vec::new() };
    // SAFETY: upheld by the caller.
    unsafe { client.launch_unchecked(Box::new(CudaSourceTask { shell, source, entry }), count, args) }
}
