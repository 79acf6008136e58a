//! The indexer scores on Hopper's warpgroup tensor cores (`wgmma.mma_async`, which CubeCL
//! 0.10 does not emit) at DeepSeek-V3.2's indexer shape (64 heads × 128 dims): the factored
//! contract of [`crate::indexer`] with the codes either ([`Codes`]) as e4m3 bytes on FP8
//! `wgmma` (the tensor rate of FP8; Hopper adds each instruction's 32 products with about 14
//! bits, as in DeepSeek's own FP8 indexer) or held in f16 on f16 `wgmma` (exact products, f32
//! sums: agrees with the f32 reference to rounding). CUDA C++ (`wgmma_h64_d128.cu`, its
//! design in the file's header), run by CubeCL's CUDA runtime through
//! [`crate::shared::cuda`], where [`has_wgmma`] says so.

use cubecl::prelude::*;
use cubecl::server::Binding;

use crate::quant::Codes;

/// The kernel's source (CUDA C++ for sm_90a).
const SOURCE: &str = concat!(include_str!("../shared/wgmma.cuh"), include_str!("wgmma_h64_d128.cu"));
/// The kernel's entry point for `codes`: f16 `wgmma` m64n128k16 on f16 codes, FP8 `wgmma`
/// m64n128k32 on e4m3 bytes.
fn entry(codes: Codes) -> &'static str {
    match codes {
        Codes::F16 => "dsa_indexer_scores_wgmma",
        Codes::E4m3 => "dsa_indexer_scores_wgmma_fp8",
    }
}

/// Shared memory per CTA for `codes`: `IdxLayout::SMEM` of the source (the queries' codes,
/// two key tiles, the queries' head weights, 1 KiB of alignment).
pub fn shared_bytes(codes: Codes) -> usize {
    let cb = codes.bytes();
    QUERIES * HEADS * D * cb + 2 * 128 * D * cb + QUERIES * HEADS * 4 + 1024
}
/// Indexer heads the kernel is built for.
pub const HEADS: usize = 64;
/// Head dim the kernel is built for.
pub const D: usize = 128;
/// Queries per CTA.
pub const QUERIES: usize = 8;
/// Keys per CTA along the grid's y axis (the kernel walks them 128 at a time).
pub const CHUNK: usize = 2048;
/// Threads per CTA (two warpgroups).
const UNITS: u32 = 256;

/// Whether the device runs the kernel (CUDA sm_90), with either kind of codes.
pub fn has_wgmma<R: Runtime>(client: &ComputeClient<R>) -> bool {
    crate::shared::cuda::has_wgmma(client, shared_bytes(Codes::F16))
}

/// Sizes of one launch; the kernel reads them as one 64-bit word each, in this order
/// (`IdxParams` in the source).
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// Batch, queries `T` and keys `S`.
    pub batch: usize,
    pub t_len: usize,
    pub s_len: usize,
    /// `Some(offset)`: query `t` sees keys `s ≤ t + offset`.
    pub causal_offset: Option<usize>,
    /// Bytes per element of `w` and of `out` (2: bf16, 4: f32).
    pub w_bytes: usize,
    pub out_bytes: usize,
    /// How the codes are held.
    pub codes: Codes,
}

/// Launches the kernel on `B·⌈T/8⌉ × ⌈S/2048⌉` CTAs. Buffers, contiguous: `q` codes
/// `[B,T,64,128]` and `k` codes `[B,S,128]` (f16 or e4m3 bytes, as `params.codes` says), `w` `[B,T,64]` (bf16/f32), `sq`
/// `[B,T,64]` and `sk` `[B,S]` (f32), `out` `[B,T,S]` (bf16/f32).
///
/// # Safety
/// The buffers must hold those shapes for `params`, and [`has_wgmma`] must hold for `client`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn launch_indexer_scores_wgmma<R: Runtime>(
    client: &ComputeClient<R>,
    q: Binding,
    w: Binding,
    sq: Binding,
    k: Binding,
    sk: Binding,
    out: Binding,
    params: Params,
) {
    let p = params;
    let words = [
        p.t_len,
        p.s_len,
        p.causal_offset.unwrap_or(0),
        p.causal_offset.is_some() as usize,
        CHUNK,
        p.w_bytes,
        p.out_bytes,
    ];
    let count = CubeCount::Static(
        (p.batch * p.t_len.div_ceil(QUERIES)) as u32,
        p.s_len.div_ceil(CHUNK) as u32,
        1,
    );
    // SAFETY: the caller upholds the buffers' shapes; the kernel guards its own reads.
    unsafe {
        crate::shared::cuda::launch_cuda_source(
            client,
            SOURCE,
            entry(p.codes),
            shared_bytes(p.codes),
            UNITS,
            count,
            vec![q, w, sq, k, sk, out],
            words.into_iter().map(|v| v as u64).collect(),
        )
    }
}
