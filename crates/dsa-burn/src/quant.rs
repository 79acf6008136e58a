//! FP8 e4m3 block quantisation of the lightning indexer's activations.
//!
//! DeepSeek's indexer quantises every 128-wide block of its query and key vectors to
//! `float8_e4m3fn` with one f32 scale per block: `s = max(amax, 1e-4) / 448` (with
//! [`IndexerQuant::E4m3Pow2`] rounded up to a power of two, the `ue8m0` format), then
//! `x8 = e4m3(clamp(x / s, ±448))` rounded to nearest even. This module holds the format's
//! settings; the reference ([`crate::reference::quant::fake_quant`]) works on the
//! dequantised values `x8 · s`, computed exactly with tensor operations, so it runs on every
//! backend. Gradients pass straight through the rounding.

use serde::{Deserialize, Serialize};

/// Width of a quantisation block along the last dimension.
pub const FP8_BLOCK: usize = 128;
/// Largest finite `float8_e4m3fn` value.
pub const E4M3_MAX: f32 = 448.0;

/// How the indexer quantises its query and key activations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum IndexerQuant {
    /// No quantisation: full-precision scores.
    None,
    /// FP8 e4m3 with one f32 scale per 128-block (`amax / 448`).
    #[default]
    E4m3,
    /// FP8 e4m3 with power-of-two (ue8m0) block scales, as DeepSeek-V3.2's FP8 checkpoints.
    E4m3Pow2,
}
