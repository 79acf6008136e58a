//! SwiGLU, `y = SiLU(gate) · up` computed in f32 (as DeepSeek's reference:
//! `F.silu(w1(x).float()) * w3(x).float()`), forward and backward as one element-wise kernel
//! each: [`swiglu_fwd()`] and [`swiglu_bwd()`]. With `σ` the logistic function:
//!
//! ```text
//! y     = g · σ(g) · u
//! dgate = dy · u · σ(g) · (1 + g · (1 − σ(g)))
//! dup   = dy · g · σ(g)
//! ```

use cubecl::prelude::*;

/// Units per cube: one element each.
pub const SWIGLU_UNITS: usize = 256;

/// `y[i] = SiLU(gate[i]) · up[i]` over `n` elements of contiguous tensors of one type.
///
/// Grid: `grid_1d(⌈n / 256⌉)` cubes of [`SWIGLU_UNITS`] units.
#[cube(launch)]
pub fn swiglu_fwd<F: Float>(gate: &Tensor<F>, up: &Tensor<F>, y: &mut Tensor<F>, n: usize, #[define(F)] _dtype: StorageType) {
    let i = crate::cube_index() * SWIGLU_UNITS + UNIT_POS as usize;
    if i >= n {
        terminate!();
    }
    let g = f32::cast_from(gate[i]);
    let s = 1.0f32 / (1.0f32 + f32::exp(-g));
    y[i] = F::cast_from(g * s * f32::cast_from(up[i]));
}

/// The gradients `dgate`, `dup` of [`swiglu_fwd()`] for `dy`, over `n` elements.
///
/// Grid: `grid_1d(⌈n / 256⌉)` cubes of [`SWIGLU_UNITS`] units.
#[cube(launch)]
pub fn swiglu_bwd<F: Float>(
    gate: &Tensor<F>,
    up: &Tensor<F>,
    dy: &Tensor<F>,
    dgate: &mut Tensor<F>,
    dup: &mut Tensor<F>,
    n: usize,
    #[define(F)] _dtype: StorageType,
) {
    let i = crate::cube_index() * SWIGLU_UNITS + UNIT_POS as usize;
    if i >= n {
        terminate!();
    }
    let g = f32::cast_from(gate[i]);
    let d = f32::cast_from(dy[i]);
    let s = 1.0f32 / (1.0f32 + f32::exp(-g));
    dgate[i] = F::cast_from(d * f32::cast_from(up[i]) * s * (1.0f32 + g * (1.0f32 - s)));
    dup[i] = F::cast_from(d * g * s);
}
