//! RMSNorm as DeepSeek's reference computes it (`dsa_burn::RmsNorm`: in f32 whatever the
//! input's dtype, `y = (γ · (x · 1/√(mean(x²) + ε))).to(dtype)`), forward and backward in one
//! kernel each instead of a dozen element-wise ones: [`rms_norm_fwd()`] and [`rms_norm_bwd()`].
//!
//! The backward, with `r = 1/√(mean(x²) + ε)`, `x̂ = x·r` and `g = dy·γ`:
//!
//! ```text
//! dx = r·g − x · r³ · Σ(g·x) / d
//! dγ = Σ_rows dy·x̂
//! ```
//!
//! Inputs are contiguous `[rows, d]` (and `γ [d]`); sums in f32.

use cubecl::prelude::*;

/// Units per cube (one row at a time; each unit takes every 256th column).
pub const NORM_UNITS: usize = 256;
/// Rows per cube of the backward (its `dγ` partial sums are one row per cube).
pub const NORM_BWD_ROWS: usize = 32;

/// The sum over the cube of each unit's `v`, in every unit (`sums` holds [`NORM_UNITS`]
/// values and is free again on return).
#[cube]
fn cube_sum(v: f32, sums: &mut SharedMemory<f32>) -> f32 {
    let u = UNIT_POS as usize;
    sums[u] = v;
    sync_cube();
    let mut half = comptime!(NORM_UNITS / 2).runtime();
    while half > 0 {
        if u < half {
            sums[u] = sums[u] + sums[u + half];
        }
        sync_cube();
        half /= 2;
    }
    let total = sums[0];
    sync_cube();
    total
}

/// `y [rows, d]` (`x`'s type) of `x [rows, d]` and `gamma [d]`: one row per cube.
///
/// Grid: `grid_1d(rows)` cubes of [`NORM_UNITS`] units.
#[cube(launch)]
pub fn rms_norm_fwd<F: Float, G: Float>(
    x: &Tensor<F>,
    gamma: &Tensor<G>,
    y: &mut Tensor<F>,
    rows: usize,
    d: usize,
    epsilon: f32,
    #[define(F, G)] _dtypes: [StorageType; 2],
) {
    let row = crate::cube_index();
    if row >= rows {
        terminate!();
    }
    let mut sums = SharedMemory::<f32>::new(NORM_UNITS);
    let base = row * d;
    let mut acc = 0.0f32;
    let mut j = UNIT_POS as usize;
    while j < d {
        let v = f32::cast_from(x[base + j]);
        acc += v * v;
        j += NORM_UNITS;
    }
    let inv = 1.0f32 / f32::sqrt(cube_sum(acc, &mut sums) / f32::cast_from(d) + epsilon);
    let mut j = UNIT_POS as usize;
    while j < d {
        y[base + j] = F::cast_from(f32::cast_from(gamma[j]) * (f32::cast_from(x[base + j]) * inv));
        j += NORM_UNITS;
    }
}

/// `dx [rows, d]` (`x`'s type) and the partial sums `dgamma_parts [⌈rows / 32⌉, d]` (f32) of
/// `dγ`, one row per cube, from `x`, `gamma` and `dy` (`x`'s type): each cube takes
/// [`NORM_BWD_ROWS`] rows; `cols` is `⌈d / 256⌉`.
///
/// Grid: `grid_1d(⌈rows / 32⌉)` cubes of [`NORM_UNITS`] units.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_bwd<F: Float, G: Float>(
    x: &Tensor<F>,
    gamma: &Tensor<G>,
    dy: &Tensor<F>,
    dx: &mut Tensor<F>,
    dgamma_parts: &mut Tensor<f32>,
    rows: usize,
    d: usize,
    epsilon: f32,
    #[comptime] cols: usize,
    #[define(F, G)] _dtypes: [StorageType; 2],
) {
    let cube = crate::cube_index();
    let first = cube * NORM_BWD_ROWS;
    if first >= rows {
        terminate!();
    }
    let mut sums = SharedMemory::<f32>::new(NORM_UNITS);
    let mut dgamma = Array::<f32>::new(cols);
    for c in 0..cols {
        dgamma[c] = 0.0f32;
    }
    let u = UNIT_POS as usize;
    let dn = f32::cast_from(d);
    let mut last = first + NORM_BWD_ROWS;
    if last > rows {
        last = rows;
    }
    let mut row = first;
    while row < last {
        let base = row * d;
        let mut sq = 0.0f32;
        let mut gx = 0.0f32;
        for c in 0..cols {
            let j = u + c * NORM_UNITS;
            if j < d {
                let xv = f32::cast_from(x[base + j]);
                sq += xv * xv;
                gx += f32::cast_from(dy[base + j]) * f32::cast_from(gamma[j]) * xv;
            }
        }
        let inv = 1.0f32 / f32::sqrt(cube_sum(sq, &mut sums) / dn + epsilon);
        let coef = inv * inv * inv * cube_sum(gx, &mut sums) / dn;
        for c in 0..cols {
            let j = u + c * NORM_UNITS;
            if j < d {
                let xv = f32::cast_from(x[base + j]);
                let dyv = f32::cast_from(dy[base + j]);
                dx[base + j] = F::cast_from(inv * (dyv * f32::cast_from(gamma[j])) - xv * coef);
                dgamma[c] += dyv * (xv * inv);
            }
        }
        row += 1;
    }
    for c in 0..cols {
        let j = u + c * NORM_UNITS;
        if j < d {
            dgamma_parts[cube * d + j] = dgamma[c];
        }
    }
}
