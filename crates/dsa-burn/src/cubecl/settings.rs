use super::*;

use std::sync::RwLock;

/// The kernel choices and tuning knobs of this process's CubeCL backends, in one place.
/// The defaults are what users get; tests and benchmarks change them with
/// [`update_kernel_settings`] to run a given kernel or tile.
///
/// ```
/// use dsa_burn::cubecl::{kernel_settings, update_kernel_settings, MlaKernel};
///
/// update_kernel_settings(|s| s.mla = MlaKernel::SimtTiled);
/// assert_eq!(kernel_settings().mla, MlaKernel::SimtTiled);
/// update_kernel_settings(|s| *s = Default::default());
/// ```
#[derive(Clone)]
pub struct KernelSettings {
    /// The indexer-scores kernel; `Auto` by default.
    pub indexer: IndexerKernel,
    /// The sparse MLA kernels; `Auto` by default.
    pub mla: MlaKernel,
    /// The cmma forward's tile ([`MlaKernel::Cmma`]); `None` (the default) takes the first of the measured tiles that
    /// fits in shared memory. [`update_kernel_settings`] panics on a tile the kernel does not
    /// support.
    pub mla_tile: Option<MlaTile>,
    /// How many cubes the tensor-core sparse MLA forwards (cmma, `mma.sync`) aim for when few queries
    /// (decode) cannot fill the device alone: each cube then takes a split of the selected
    /// slots (as many splits as fit in that count), and a second kernel merges the splits.
    /// `None` (the default): 1024 for cmma; one per SM for `mma.sync`, which runs one cube per SM, so
    /// that its splits take one wave. A tuning knob: the result does not depend on it beyond
    /// rounding.
    pub mla_split_cubes: Option<usize>,
    /// The cubek strategy of every [`DsaBackend::linear_matmul`]; `None` (the default):
    /// [`linear_strategy`]'s choice.
    pub linear: Option<Strategy>,
    /// Fill every output with garbage before the kernels run (NaN floats, `0x7eadbeef` ints,
    /// `true` bools), so that tests catch entries a kernel does not write. Off by default.
    pub poison_outputs: bool,
    /// Accumulate gradients with compare-and-swap loops even where the device has f32 atomic
    /// adds (to test that path). Off by default.
    pub force_cas_atomics: bool,
}

impl KernelSettings {
    const DEFAULT: Self = Self {
        indexer: IndexerKernel::Auto,
        mla: MlaKernel::Auto,
        mla_tile: None,
        mla_split_cubes: None,
        linear: None,
        poison_outputs: false,
        force_cas_atomics: false,
    };
}

impl std::fmt::Debug for KernelSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelSettings")
            .field("indexer", &self.indexer)
            .field("mla", &self.mla)
            .field("mla_tile", &self.mla_tile)
            .field("mla_split_cubes", &self.mla_split_cubes)
            .field("linear", &self.linear.as_ref().map(crate::matmul::strategy_name))
            .field("poison_outputs", &self.poison_outputs)
            .field("force_cas_atomics", &self.force_cas_atomics)
            .finish()
    }
}

impl Default for KernelSettings {
    fn default() -> Self {
        Self::DEFAULT
    }
}

static SETTINGS: RwLock<KernelSettings> = RwLock::new(KernelSettings::DEFAULT);

/// This process's kernel settings.
pub fn kernel_settings() -> KernelSettings {
    SETTINGS.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Change this process's kernel settings (tests and benchmarks); later launches see them.
///
/// # Panics
/// If the result asks for an MLA tile the kernel does not support.
pub fn update_kernel_settings(change: impl FnOnce(&mut KernelSettings)) {
    let mut settings = SETTINGS.write().unwrap_or_else(|e| e.into_inner());
    change(&mut settings);
    if let Some(t) = settings.mla_tile {
        assert!(t.supported(), "unsupported sparse MLA tile {t:?}: heads 32 or 64, planes 4 or 8, slots 32 or 64");
    }
}

/// Read one setting without copying the others.
pub(super) fn setting<T>(read: impl FnOnce(&KernelSettings) -> T) -> T {
    read(&SETTINGS.read().unwrap_or_else(|e| e.into_inner()))
}



/// The operations besides the sparse MLA forward ([`mla_forward_launches`]) that have a
/// tensor-core kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorCoreOp {
    /// The indexer scores on tensor cores ([`IndexerKernel::Cmma`], `Mma`, `Wgmma` or
    /// `WgmmaFp8`).
    IndexerScores,
    /// The indexer scores on f16 `mma.sync` ([`IndexerKernel::Mma`]).
    IndexerScoresMma,
    /// The indexer scores on Hopper's `wgmma` ([`IndexerKernel::Wgmma`] or
    /// [`IndexerKernel::WgmmaFp8`]).
    IndexerScoresWgmma,
    /// The indexer scores on Hopper's FP8 `wgmma` ([`IndexerKernel::WgmmaFp8`]).
    IndexerScoresWgmmaFp8,
    /// The indexer loss's attention probabilities at the selected rows (with the cmma forward).
    SparseMlaProbs,
    /// The indexer loss's indexer scores at the selected rows (with the tensor-core indexer).
    SelectedScores,
    /// The sparse MLA backward on cmma ([`MlaKernel::Cmma`]).
    SparseMlaBackward,
    /// The sparse MLA backward on Hopper's `wgmma` ([`MlaKernel::Wgmma`]).
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

pub(super) static TENSOR_CORE_LAUNCHES: [AtomicUsize; 12] = [const { AtomicUsize::new(0) }; 12];

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



static MLA_FORWARD_LAUNCHES: [AtomicUsize; 6] = [const { AtomicUsize::new(0) }; 6];

/// How many sparse MLA forwards of variant `kernel` (not `Auto`) have been launched in
/// this process: tests and benchmarks check which kernel ran (under Fusion, after the
/// results are read: the op runs lazily).
pub fn mla_forward_launches(kernel: MlaKernel) -> usize {
    MLA_FORWARD_LAUNCHES[kernel as usize].load(Ordering::SeqCst)
}

pub(super) fn count_mla_forward(kernel: MlaKernel) {
    MLA_FORWARD_LAUNCHES[kernel as usize].fetch_add(1, Ordering::SeqCst);
}





pub(super) static LINEAR_LAUNCHES: [AtomicUsize; 2] = [const { AtomicUsize::new(0) }; 2];

/// How this process's [`DsaBackend::linear_matmul`] calls on CubeCL ran: `(cubek, burn)`,
/// those that launched [`linear_strategy`]'s strategy and those that ran Burn's matmul (no
/// strategy chosen, or the chosen one did not apply). Tests check which path ran.
pub fn linear_launches() -> (usize, usize) {
    (LINEAR_LAUNCHES[0].load(Ordering::SeqCst), LINEAR_LAUNCHES[1].load(Ordering::SeqCst))
}
