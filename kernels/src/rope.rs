//! Rotary position embedding in one kernel ([`rope()`]): each unit rotates one pair of
//! `x [B, T, H, d]` (dims `(2i, 2i+1)` when interleaved, else `(i, i + d/2)`) of the token at
//! position `start + t` by the angle `f32(start + t) · freqs[i]`, computed in f32 as
//! `dsa_burn::rope` builds its tables (the product rounded to f32, then its cosine and sine);
//! by minus that angle when `inverse` (the rotation's transpose, its gradient).

use cubecl::prelude::*;

/// Units per cube of [`rope()`]: one pair each.
pub const ROPE_UNITS: usize = 256;

/// `y = rope(x)` over `pairs = B·T·H·d/2` pairs of contiguous `x`/`y [B, T, H, d]`, with the
/// frequencies `freqs [d/2]` (f32).
///
/// Grid: `grid_1d(⌈pairs / 256⌉)` cubes of [`ROPE_UNITS`] units.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn rope<F: Float>(
    x: &Tensor<F>,
    freqs: &Tensor<f32>,
    y: &mut Tensor<F>,
    pairs: usize,
    t_len: usize,
    heads: usize,
    half: usize,
    start: usize,
    #[comptime] interleaved: bool,
    #[comptime] inverse: bool,
    #[define(F)] _dtype: StorageType,
) {
    let p = crate::cube_index() * ROPE_UNITS + UNIT_POS as usize;
    if p >= pairs {
        terminate!();
    }
    let f = p % half;
    let row = p / half;
    let t = (row / heads) % t_len;
    let angle = f32::cast_from(start + t) * freqs[f];
    let c = f32::cos(angle);
    let mut s = f32::sin(angle);
    if inverse {
        s = -s;
    }
    let base = row * 2 * half;
    let mut i0 = base + f;
    let mut i1 = base + f + half;
    if interleaved {
        i0 = base + 2 * f;
        i1 = base + 2 * f + 1;
    }
    let x0 = f32::cast_from(x[i0]);
    let x1 = f32::cast_from(x[i1]);
    y[i0] = F::cast_from(x0 * c - x1 * s);
    y[i1] = F::cast_from(x0 * s + x1 * c);
}
