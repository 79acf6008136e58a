//! CubeCL kernels for DeepSeek Sparse Attention.
//!
//! One module per operation, its variants named by instruction family (`simt`: plain units,
//! every runtime; `cmma`: CubeCL's whole-plane 16×16×16 tensor-core tiles; `mma`: `mma.sync`
//! with registers laid out by hand; `wgmma`: Hopper's warpgroup MMA, CUDA C++ in a `.cu`
//! next to its module), each operation's module stating its contract:
//!
//! | operation | module |
//! | --- | --- |
//! | FP8 e4m3 block (fake-)quantisation | [`quant`] |
//! | lightning-indexer scores | [`indexer`] (`simt`, `cmma`, `mma`, `wgmma`) |
//! | per-row top-k selection | [`topk`] |
//! | sparse MLA forward and backward (MQA mode) | [`sparse_mla`] (`simt`, `cmma`, `mma`, `wgmma`) |
//! | the sparse-stage indexer loss at the selected keys | [`indexer_loss`] (`simt`, `cmma`) |
//! | dense causal attention (CUDA C++ on `mma.sync`) | [`dense_attention`] |
//! | grouped matrix products of mixture-of-experts layers | [`grouped_matmul`] |
//! | fused AdamW step with gradient clipping | [`adamw`] |
//! | RMSNorm, RoPE, SwiGLU | [`norm`], [`rope`], [`swiglu`] |
//!
//! [`shared`] holds the pieces several operations use: the cmma kernels' staging, the gather of
//! selected rows, float atomics, and [`shared::cuda`], which runs CUDA C++ sources on CubeCL's
//! CUDA runtime (on sm_90 for the `wgmma` kernels, with the CubeCL kernels as their fallback
//! and reference). Every CubeCL kernel is generic over the float type (the
//! `#[define]` storage types are chosen at launch from the tensors' dtypes) and computes in
//! f32. The kernels take contiguous tensors; shapes and layouts are documented on each
//! kernel. The Burn glue lives in `dsa_burn::cubecl`.

use cubecl::prelude::FastMath;
use enumset::{enum_set, EnumSet};

pub mod adamw;
pub mod dense_attention;
pub mod grouped_matmul;
pub mod indexer;
pub mod norm;
pub mod indexer_loss;
pub mod quant;
pub mod rope;
pub mod sparse_mla;
pub mod shared;
pub mod swiglu;
pub mod topk;

/// Cube count for `n` cubes on a grid of at most 65535 cubes per axis (x then y), so that
/// wgpu's per-dimension limit holds; kernels recover the linear index with [`cube_index()`].
pub fn grid_1d(n: usize) -> (u32, u32) {
    let n = n.max(1);
    let x = n.min(65535);
    let y = n.div_ceil(x);
    assert!(y <= 65535, "grid of {n} cubes is too large");
    (x as u32, y as u32)
}

/// Linear index of the current cube over the x and y axes of [`grid_1d`].
#[cubecl::cube]
pub fn cube_index() -> usize {
    use cubecl::prelude::*;
    CUBE_POS_Y as usize * CUBE_COUNT_X as usize + CUBE_POS_X as usize
}

/// The float modes of the tensor-core attention kernels: `exp` and `ln` as CUDA's intrinsics
/// `__expf` / `__logf` (`ex2.approx` / `lg2.approx`, a few ulp in f32) instead of the libm
/// routines CubeCL emits by default; their probabilities are rounded to bf16/f16 anyway.
/// `__expf(-inf)` is 0, which the masked slots rely on. Only the CUDA/HIP compilers read
/// these modes.
pub const FAST_EXP: EnumSet<FastMath> =
    enum_set!(FastMath::ReducedPrecision | FastMath::NotNaN | FastMath::NotInf);
