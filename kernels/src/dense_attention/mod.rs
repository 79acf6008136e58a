//! Dense causal attention in MHA form on tensor cores (FlashAttention-2's schedule on
//! `mma.sync.m16n8k16`, CUDA sm_80 and later): the forward ([`launch_flash_fwd`]: output and
//! log-sum-exp) and the backward ([`launch_flash_bwd`]: `dq` added into f32, `dk`, `dv`) of
//! `dsa_burn`'s `dense_attention`, whose reference is `dsa_burn::dense_attention`. Queries,
//! keys and values in bf16 or f16, query/key and value dims multiples of 16 up to
//! [`FLASH_MAX_D`]; probabilities and `dS` are rounded to the input type before their
//! products, sums are f32.
//!
//! CUDA C++ (`dense_attention/mma.cu`, its design in the file's header), run by CubeCL's CUDA
//! runtime through [`crate::shared::cuda`]; the dims and the input type are `#define`s put
//! before the source, so each combination is its own kernel.

use std::sync::Mutex;

use cubecl::prelude::*;
use cubecl::server::Binding;

/// Largest query/key and value dim (registers: a warp holds 16 rows of the accumulators).
pub const FLASH_MAX_D: usize = 128;
/// Queries per forward CTA, keys per backward CTA.
pub const FLASH_ROWS: usize = 64;
/// Threads per CTA.
const UNITS: u32 = 128;

/// Whether the kernels take query/key dim `dqk` and value dim `dv`.
pub fn flash_supports(dqk: usize, dv: usize) -> bool {
    [dqk, dv].iter().all(|&d| d > 0 && d.is_multiple_of(16) && d <= FLASH_MAX_D)
}

/// Sizes and strides (in values, over batch, head and row; rows contiguous) of one launch;
/// the kernels read them as one 64-bit word each, in this order (`FaParams` in the source).
#[derive(Clone, Copy, Debug)]
pub struct FlashParams {
    /// `B`, `H`, queries `T`, keys `S`; query `t` sees the keys `s ≤ t + offset`.
    pub batch: usize,
    pub heads: usize,
    pub t_len: usize,
    pub s_len: usize,
    pub offset: usize,
    /// Query/key and value dims.
    pub dqk: usize,
    pub dv: usize,
    pub q_strides: [usize; 3],
    pub k_strides: [usize; 3],
    pub v_strides: [usize; 3],
    /// The backward's `d_out` (unused by the forward).
    pub o_strides: [usize; 3],
    pub scale: f32,
    /// f16 inputs (else bf16).
    pub f16: bool,
}

impl FlashParams {
    fn words(&self) -> Vec<u64> {
        let mut w = vec![self.heads, self.t_len, self.s_len, self.offset];
        for s in [self.q_strides, self.k_strides, self.v_strides, self.o_strides] {
            w.extend(s);
        }
        w.into_iter().map(|v| v as u64).chain([self.scale.to_bits() as u64]).collect()
    }

    /// The source for these dims and input type (compiled once per combination, kept for the
    /// process: CubeCL's caches key kernels by the source's address and hash).
    fn source(&self) -> &'static str {
        /// (dqk, dv, f16) and the source built for them.
        type Built = ((usize, usize, bool), &'static str);
        static SOURCES: Mutex<Vec<Built>> = Mutex::new(Vec::new());
        let key = (self.dqk, self.dv, self.f16);
        let mut sources = SOURCES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&(_, s)) = sources.iter().find(|(k, _)| *k == key) {
            return s;
        }
        let text = format!(
            "#define FA_DQK {}\n#define FA_DV {}\n#define FA_F16 {}\n{}{}",
            self.dqk,
            self.dv,
            self.f16 as u8,
            include_str!("../shared/wgmma.cuh"),
            include_str!("mma.cu")
        );
        let s: &'static str = Box::leak(text.into_boxed_str());
        sources.push((key, s));
        s
    }

    /// Launches `entry` of [`Self::source`] on `⌈rows/64⌉ × H × B` CTAs of [`UNITS`] threads
    /// with `shared_bytes` of shared memory and these parameters.
    ///
    /// # Safety
    /// As [`launch_flash_fwd`], for `entry`'s buffers.
    unsafe fn launch<R: Runtime>(&self, client: &ComputeClient<R>, entry: &'static str, shared_bytes: usize, rows: usize, buffers: Vec<Binding>) {
        let count = CubeCount::Static(rows.div_ceil(FLASH_ROWS) as u32, self.heads as u32, self.batch as u32);
        // SAFETY: upheld by the caller.
        unsafe { crate::shared::cuda::launch_cuda_source(client, self.source(), entry, shared_bytes, UNITS, count, buffers, self.words()) }
    }

    /// Shared memory of the forward: the query tile, two key and two value tiles (rows
    /// padded by 8 values).
    pub fn fwd_shared_bytes(&self) -> usize {
        2 * FLASH_ROWS * (3 * (self.dqk + 8) + 2 * (self.dv + 8))
    }

    /// Shared memory of the backward: key, value, query and `d_out` tiles, `dSᵀ`, and the
    /// query block's log-sum-exp and `delta`.
    pub fn bwd_shared_bytes(&self) -> usize {
        2 * FLASH_ROWS * (2 * (self.dqk + 8) + 2 * (self.dv + 8) + FLASH_ROWS + 8) + 2 * 4 * FLASH_ROWS
    }
}

/// Launches the forward on `⌈T/64⌉ × H × B` CTAs. Buffers: `q [B,H,T,dqk]`, `k [B,H,S,dqk]`,
/// `v [B,H,S,dv]` at the strides of `params` (multiples of 8, 16-byte aligned starts), `out`
/// (`[B,H,T,dv]`, contiguous, the inputs' type) and `lse` (f32 `[B,H,T]`, contiguous).
///
/// # Safety
/// The buffers must hold the shapes and strides of `params`, with `T, S ≥ 1`,
/// [`flash_supports`] the dims, and the device must be CUDA sm_80 or later.
pub unsafe fn launch_flash_fwd<R: Runtime>(client: &ComputeClient<R>, [q, k, v, out, lse]: [Binding; 5], params: FlashParams) {
    // SAFETY: upheld by the caller; the kernel guards its rows.
    unsafe { params.launch(client, "dsa_flash_fwd", params.fwd_shared_bytes(), params.t_len, vec![q, k, v, out, lse]) }
}

/// Launches the backward on `⌈S/64⌉ × H × B` CTAs. Buffers: `q`, `k`, `v` as the forward's,
/// `d_out [B,H,T,dv]` (at `o_strides`), the forward's `lse` and `delta = Σ d_out · out` (f32
/// `[B,H,T]`, contiguous), `dq` (f32 `[B,H,T,dqk]`, contiguous, added to: zero it first), `dk`
/// and `dv` (`[B,H,S,·]`, contiguous, the inputs' type, written).
///
/// # Safety
/// As [`launch_flash_fwd`].
pub unsafe fn launch_flash_bwd<R: Runtime>(
    client: &ComputeClient<R>,
    [q, k, v, d_out, lse, delta]: [Binding; 6],
    [dq, dk, dv]: [Binding; 3],
    params: FlashParams,
) {
    // SAFETY: upheld by the caller; the kernel guards its rows.
    unsafe { params.launch(client, "dsa_flash_bwd", params.bwd_shared_bytes(), params.s_len, vec![q, k, v, d_out, lse, delta, dq, dk, dv]) }
}
