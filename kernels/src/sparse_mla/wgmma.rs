//! Sparse MLA on Hopper's warpgroup tensor cores. The forward (warp-specialised, a producer
//! warpgroup gathering rows for two math warpgroups) has the contract of
//! [`crate::sparse_mla::mma::sparse_mla_fwd_mma()`] at DeepSeek-V3.2's latent sizes
//! (`q [B,T,H,576]`, `kv [B,S,576]`, `idx`/`valid [B,T,K]` → `out [B,T,H,512]`,
//! `lse [B,T,H]`, all bf16), on `wgmma.mma_async` with operands in 128-byte-swizzled shared
//! memory — the instructions that reach Hopper's full tensor-core rate, and that CubeCL 0.10
//! does not emit.
//!
//! The backward ([`launch_sparse_mla_bwd_wgmma`]) has the contract of
//! [`crate::sparse_mla::cmma::sparse_mla_bwd_cmma()`] at the same sizes, `dkv` summed by vector
//! reductions into f32.
//!
//! So these kernels are CUDA C++ (`sparse_mla/wgmma_fwd_d576.cu` and
//! `sparse_mla/wgmma_bwd_d576.cu`, their designs in the files' headers, their shared parts in
//! `sparse_mla/wgmma_d576.cuh`), run by CubeCL's CUDA runtime through [`crate::shared::cuda`]. They run where [`has_wgmma`] says
//! so (CUDA sm_90); everywhere else the CubeCL kernels are the path, and they are their
//! reference in the tests.

use cubecl::prelude::*;
use cubecl::server::Binding;

/// The forward's source (CUDA C++ for sm_90a).
const SOURCE: &str = concat!(
    include_str!("../shared/wgmma.cuh"),
    include_str!("wgmma_d576.cuh"),
    include_str!("wgmma_fwd_d576.cu")
);
/// Its entry point.
const ENTRY: &str = "dsa_sparse_mla_fwd_wgmma";
/// The backward's source and entry point.
const BWD_SOURCE: &str = concat!(
    include_str!("../shared/wgmma.cuh"),
    include_str!("wgmma_d576.cuh"),
    include_str!("wgmma_bwd_d576.cu")
);
const BWD_ENTRY: &str = "dsa_sparse_mla_bwd_wgmma";
/// Heads per CTA.
pub const WGMMA_HEADS: usize = 64;
/// The latent's dims (keys and values) the kernel is built for.
pub const WGMMA_D: usize = 576;
/// The value dims.
pub const WGMMA_DV: usize = 512;
/// Threads per CTA (two math warpgroups and a producer).
const UNITS: u32 = 384;
/// Shared memory per CTA: `DSA_SMEM_BYTES` of the source (the query tile and two buffers of
/// 72 KiB, WG1's P, nine mbarriers, the slots' validity, the row maxima and sums, 1 KiB of
/// alignment).
pub const WGMMA_SHARED_BYTES: usize = 3 * 9 * 64 * 128 + 64 * 128 + 9 * 8 + 2 * 64 + 64 * 4 + 128 * 4 + 1024;

/// Shared memory per CTA of the backward: `DSB_SMEM_BYTES` of its source (`q`, `d_out` and a
/// ring of one block of rows, 26 tiles of 8 KiB; `P` and `dS`, 8 KiB each; 20 mbarriers, two
/// lists of 64 rows, two floats per head, 1 KiB of alignment).
pub const WGMMA_BWD_SHARED_BYTES: usize = 28 * 64 * 128 + 20 * 8 + 2 * 64 * 4 + 2 * 64 * 4 + 1024;

/// Whether the device runs both kernels (CUDA sm_90, the shared memory of each).
pub fn has_wgmma<R: Runtime>(client: &ComputeClient<R>) -> bool {
    crate::shared::cuda::has_wgmma(client, WGMMA_SHARED_BYTES.max(WGMMA_BWD_SHARED_BYTES))
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

/// Launches the forward on `B·T·⌈H/64⌉` CTAs (a token's head groups adjacent). Buffers: `q`, `kv` (bf16, rows at the
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
    // A token's head groups are neighbours along x (the source's header says why).
    let count = CubeCount::Static((params.bt_len * params.heads.div_ceil(WGMMA_HEADS)) as u32, 1, 1);
    let buffers = vec![q, kv, idx, valid, out, lse];
    // SAFETY: the caller upholds the buffers' shapes; the kernel guards its own reads.
    unsafe {
        crate::shared::cuda::launch_cuda_source(client, SOURCE, ENTRY, WGMMA_SHARED_BYTES, UNITS, count, buffers, params.words())
    }
}

/// Launches the backward on `B·T·⌈H/64⌉` CTAs (a token's head groups adjacent). Buffers as
/// the forward's (`q`, `kv`, `idx`, `valid`), then the forward's `out` (bf16 `[B·T, H, 512]`,
/// 16-byte aligned) and `lse` (bf16 `[B·T, H]`), the gradients `d_out` and `d_lse` (same
/// shapes; read only where `has_dout` / `has_dlse`), `dq` (bf16 `[B·T, H, 576]`, written) and
/// `dkv` (f32 `[B, S, 576]`, added to), all contiguous.
///
/// # Safety
/// As [`launch_sparse_mla_fwd_wgmma`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn launch_sparse_mla_bwd_wgmma<R: Runtime>(
    client: &ComputeClient<R>,
    [q, kv, idx, valid]: [Binding; 4],
    [out, lse, d_out, d_lse]: [Binding; 4],
    [dq, dkv]: [Binding; 2],
    params: WgmmaMlaParams,
    has_dout: bool,
    has_dlse: bool,
) {
    let count = CubeCount::Static(
        (params.bt_len * params.heads.div_ceil(WGMMA_HEADS)) as u32,
        1,
        1,
    );
    let buffers = vec![q, kv, idx, valid, out, lse, d_out, d_lse, dq, dkv];
    let mut words = params.words();
    words.extend([has_dout as u64, has_dlse as u64]);
    // SAFETY: the caller upholds the buffers' shapes; the kernel guards its own reads.
    unsafe {
        crate::shared::cuda::launch_cuda_source(
            client,
            BWD_SOURCE,
            BWD_ENTRY,
            WGMMA_BWD_SHARED_BYTES,
            UNITS,
            count,
            buffers,
            words,
        )
    }
}
