//! One AdamW step of a parameter tensor, with clipping of its gradient by norm, in a single
//! element-wise kernel: [`adamw_step()`]. The same arithmetic, in the same order, as Burn's
//! `AdamW` behind `GradientClipping::Norm` (the reference is `dsa_burn::adamw`), which runs
//! about twenty element-wise kernels per tensor.
//!
//! For every element `i`, with `c = min(max_norm · (1 / (‖g‖ + min_positive)), 1)` when
//! clipping (else `c = 1`; `‖g‖` is read from a 1-element tensor computed on the device):
//!
//! ```text
//! g  = grad[i] · c
//! m' = m[i] · β₁ + g · (1 − β₁)
//! v' = v[i] · β₂ + (g · g) · (1 − β₂)
//! p' = p[i] · decay − (m' / bc₁) / (√(v' / bc₂) + ε) · lr
//! ```
//!
//! with `decay = 1 − lr · weight_decay` and the bias corrections `bc₁ = 1 − β₁ᵗ`,
//! `bc₂ = 1 − β₂ᵗ`, all computed on the host and passed as run-time scalars (as are
//! `1 − β₁`, `1 − β₂` and `min_positive`, so that every constant is the host's f32 bits).
//! Inputs are contiguous tensors of one float type `F` (the optimizer's f32 masters and
//! gradients in practice), computed in f32.

use cubecl::prelude::*;

/// Units per cube of [`adamw_step()`]: one element each.
pub const ADAMW_UNITS: usize = 256;

/// One clipped AdamW step (see the [module docs](self)) of `n` elements: reads `param`,
/// `grad`, `moment_1`, `moment_2` (and `norm[0]` when `clip`), writes the new parameter and
/// moments to the `*_out` tensors.
///
/// Grid: `grid_1d(⌈n / 256⌉)` cubes of [`ADAMW_UNITS`] units.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn adamw_step<F: Float>(
    param: &Tensor<F>,
    grad: &Tensor<F>,
    moment_1: &Tensor<F>,
    moment_2: &Tensor<F>,
    norm: &Tensor<F>,
    param_out: &mut Tensor<F>,
    moment_1_out: &mut Tensor<F>,
    moment_2_out: &mut Tensor<F>,
    n: usize,
    lr: f32,
    decay: f32,
    beta_1: f32,
    one_minus_beta_1: f32,
    beta_2: f32,
    one_minus_beta_2: f32,
    epsilon: f32,
    bias_correction_1: f32,
    bias_correction_2: f32,
    max_norm: f32,
    min_positive: f32,
    #[comptime] clip: bool,
    #[define(F)] _dtype: StorageType,
) {
    let i = crate::cube_index() * ADAMW_UNITS + UNIT_POS as usize;
    if i >= n {
        terminate!();
    }
    let mut g = f32::cast_from(grad[i]);
    if clip {
        // As Burn: `max_norm / (norm + min_positive)` is `recip` then a scalar product.
        let coef = f32::min(max_norm * (1.0f32 / (f32::cast_from(norm[0]) + min_positive)), 1.0f32);
        g *= coef;
    }
    let m = f32::cast_from(moment_1[i]) * beta_1 + g * one_minus_beta_1;
    let v = f32::cast_from(moment_2[i]) * beta_2 + g * g * one_minus_beta_2;
    let delta = (m / bias_correction_1) / (f32::sqrt(v / bias_correction_2) + epsilon);
    param_out[i] = F::cast_from(f32::cast_from(param[i]) * decay - delta * lr);
    moment_1_out[i] = F::cast_from(m);
    moment_2_out[i] = F::cast_from(v);
}
