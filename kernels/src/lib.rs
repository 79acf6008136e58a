//! CubeCL kernels for DeepSeek Sparse Attention.
//!
//! Ops and their folders: [`quant`] (FP8 e4m3 block fake-quantisation), [`indexer`]
//! (lightning-indexer scores), [`indexer_mma`], [`indexer_mma16`] and [`indexer_fp8`] (the
//! scores on tensor cores: f16 cmma, f16 and FP8 `mma.sync`), [`topk`]
//! (per-row top-k selection), [`sparse_mla`] (sparse MLA forward and backward in MQA mode:
//! `simt`, `cmma`, `mma` and `wgmma` variants), [`indexer_loss`] (the sparse-stage indexer
//! loss at the selected keys: `simt` and `cmma`), [`dense_attention`] (dense causal
//! attention on `mma.sync`), [`grouped_matmul`] (the grouped matrix products of
//! mixture-of-experts layers, forward and weight gradient) and [`adamw`] (a fused AdamW
//! step with gradient clipping, one kernel per parameter tensor); [`shared`] holds the pieces
//! several ops use (cmma staging, the gather of selected rows, float atomics, the CUDA C++
//! launcher). Every CubeCL kernel is generic over the float type (the `#[define]` storage
//! types are chosen at launch from the tensors' dtypes) and computes in f32. The kernels take
//! contiguous tensors; shapes and layouts are documented on each kernel. The Burn glue lives
//! in `dsa_burn::cubecl`.
//!
//! Some kernels are CUDA C++ for what CubeCL 0.10 does not emit (Hopper's `wgmma`):
//! [`sparse_mla::wgmma`] and [`indexer_wgmma`], run by CubeCL's CUDA runtime through
//! [`shared::cuda`] on sm_90, with the CubeCL kernels as their fallback and reference. Dense
//! causal attention ([`dense_attention`]) is CUDA C++ on `mma.sync` (sm_80 and later), with
//! `dsa_burn`'s blockwise reference as its fallback.

use cubecl::prelude::FastMath;
use enumset::{enum_set, EnumSet};

pub mod adamw;
pub mod dense_attention;
pub mod grouped_matmul;
pub mod indexer;
pub mod indexer_fp8;
pub mod indexer_mma;
pub mod indexer_mma16;
pub mod indexer_wgmma;
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
