//! FP8 e4m3 block fake-quantisation, bit-identical to `dsa_burn::quant::fake_quant`.
//!
//! Each 128-wide block of a row gets the f32 scale `s = max(amax, 1e-4) / 448` (a
//! division, as the reference's `amax / 448`; `amax · fl(1/448)` is an ulp off for about
//! half of all amax), optionally rounded up to a power of two (the `ue8m0` format), and
//! each value becomes `e4m3(clamp(x / s, ±448)) · s`. Everything is computed in f32 with
//! exactly rounded operations (IEEE divisions, multiplications) and integer bit
//! manipulation for the e4m3 rounding, so no FP8 type is needed and the result is the same
//! on every target. The floor `1e-4` and `448` are passed at run time (WGSL prints float
//! literals in decimal; a run-time scalar is bit-exact by construction).

use cubecl::prelude::*;

/// Width of a quantisation block along the last dimension.
pub const FP8_BLOCK: usize = 128;
const _: () = assert!(FP8_BLOCK == 128, "fake_quant_block_kernel's reduction starts at 64");
/// Largest finite `float8_e4m3fn` value.
pub const E4M3_MAX: f32 = 448.0;
/// The floor of the block amax, as the reference applies it (`clamp_min(1e-4)` in f32).
pub const AMAX_FLOOR: f32 = 1e-4;

/// How the tensor-core indexers hold the e4m3 codes of a quantised tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codes {
    /// As f16 values (exactly; a `F16` tensor), for the f16 tensor-core kernels.
    F16,
    /// As e4m3 bytes (a `U8` tensor), for the FP8 tensor-core kernel.
    E4m3,
}

impl Codes {
    /// Bytes per code.
    pub fn bytes(self) -> usize {
        match self {
            Codes::F16 => 2,
            Codes::E4m3 => 1,
        }
    }
}

/// Rounds `y` (`|y| ≤ 448`) to the nearest `float8_e4m3fn` value, ties to even, with
/// integer arithmetic only: normal e4m3 values keep 3 mantissa bits (spacing `2^(e-3)`),
/// subnormals are multiples of `2^-9`.
#[cube]
pub fn round_e4m3(y: f32) -> f32 {
    let bits = u32::reinterpret(y);
    let a = bits & 0x7fff_ffffu32;
    let biased = a >> 23u32;
    let mut mag = 0.0f32;
    // f32 zeros and subnormals (< 2^-126) round to zero.
    if biased != 0u32 {
        let e = biased as i32 - 127i32;
        // 24-bit significand: |y| = m · 2^(e - 23).
        let m = (a & 0x007f_ffffu32) | 0x0080_0000u32;
        // Bits to drop: 20 for normal e4m3 (e ≥ -6), more for subnormals (spacing 2^-9).
        let mut r = 14i32 - e;
        if r < 20i32 {
            r = 20i32;
        }
        // r ≥ 25: |y| < 2^-10 = half the smallest subnormal, rounds to zero.
        if r < 25i32 {
            let ru = r as u32;
            let mut q = m >> ru;
            let rem = m & ((1u32 << ru) - 1u32);
            let half = 1u32 << (ru - 1u32);
            if rem > half || (rem == half && (q & 1u32) == 1u32) {
                q += 1u32;
            }
            // Value q · 2^(e - 23 + r); the exponent is ≥ -9, a normal f32 power of two.
            let e_out = e - 23i32 + r;
            let pow2 = f32::reinterpret(((e_out + 127i32) as u32) << 23u32);
            mag = f32::cast_from(q) * pow2;
        }
    }
    f32::reinterpret(u32::reinterpret(mag) | (bits & 0x8000_0000u32))
}

/// The block scale `max(amax, floor) / e4m3_max`, rounded up to a power of two if `pow2`.
#[cube]
pub fn block_scale(amax: f32, floor: f32, e4m3_max: f32, #[comptime] pow2: bool) -> f32 {
    let mut s = f32::max(amax, floor) / e4m3_max;
    if pow2 {
        let bits = u32::reinterpret(s);
        if (bits & 0x007f_ffffu32) != 0u32 {
            s = f32::reinterpret((bits & 0x7f80_0000u32) + 0x0080_0000u32);
        }
    }
    s
}

/// The e4m3 code of `x` under scale `s` (as an f32 holding an e4m3 value).
#[cube]
pub fn quantize_e4m3(x: f32, s: f32) -> f32 {
    let y = f32::clamp(x / s, -448.0f32, 448.0f32);
    round_e4m3(y)
}

/// Fake-quantisation of a contiguous `[rows, d]` tensor: one cube of [`FP8_BLOCK`] threads
/// per (row, block), coalesced loads, the block amax by a shared-memory tree reduction, one
/// element per thread.
/// Grid: `grid_1d(rows · ⌈d/128⌉)`.
#[cube(launch)]
pub fn fake_quant_block_kernel<F: Float>(
    x: &Tensor<F>,
    out: &mut Tensor<F>,
    rows: usize,
    d: usize,
    floor: f32,
    e4m3_max: f32,
    #[comptime] pow2: bool,
    #[define(F)] _dtype: StorageType,
) {
    let nb = d.div_ceil(FP8_BLOCK);
    let unit = crate::cube_index();
    if unit >= rows * nb {
        terminate!();
    }
    let row = unit / nb;
    let blk = unit % nb;
    let tid = UNIT_POS as usize;
    let c = blk * FP8_BLOCK + tid;
    let i = row * d + c;
    let mut v = 0.0f32;
    if c < d {
        v = f32::cast_from(x[i]);
    }
    let s = block_scale(block_absmax(v), floor, e4m3_max, pow2);
    if c < d {
        out[i] = F::cast_from(quantize_e4m3(v, s) * s);
    }
}

/// The largest `|v|` over the [`FP8_BLOCK`] units of the cube (one value each), by a
/// shared-memory tree reduction.
#[cube]
fn block_absmax(v: f32) -> f32 {
    let tid = UNIT_POS as usize;
    let mut red = SharedMemory::<f32>::new(FP8_BLOCK);
    red[tid] = f32::abs(v);
    sync_cube();
    // A run-time counter (a `FP8_BLOCK / 2` initialiser would be a comptime constant).
    let mut half = 64usize;
    while half > 0 {
        if tid < half {
            red[tid] = f32::max(red[tid], red[tid + half]);
        }
        sync_cube();
        half /= 2;
    }
    red[0]
}

/// FP8 block quantisation of a contiguous `[rows, d]` tensor into its e4m3 codes (stored
/// as `C`, e.g. f16, which holds every e4m3 value exactly) and f32 block scales
/// `[rows, ⌈d/128⌉]` (type `SC`): the two factors of [`fake_quant_block_kernel()`]'s output,
/// for kernels that multiply codes on tensor cores and apply the scales afterwards.
/// Layout and grid as [`fake_quant_block_kernel()`].
#[cube(launch)]
pub fn quantize_block_kernel<F: Float, C: Float, SC: Float>(
    x: &Tensor<F>,
    codes: &mut Tensor<C>,
    scales: &mut Tensor<SC>,
    rows: usize,
    d: usize,
    floor: f32,
    e4m3_max: f32,
    #[comptime] pow2: bool,
    #[define(F, C, SC)] _dtypes: [StorageType; 3],
) {
    let nb = d.div_ceil(FP8_BLOCK);
    let unit = crate::cube_index();
    if unit >= rows * nb {
        terminate!();
    }
    let tid = UNIT_POS as usize;
    let c = (unit % nb) * FP8_BLOCK + tid;
    let i = (unit / nb) * d + c;
    let mut v = 0.0f32;
    if c < d {
        v = f32::cast_from(x[i]);
    }
    let s = block_scale(block_absmax(v), floor, e4m3_max, pow2);
    if c < d {
        codes[i] = C::cast_from(quantize_e4m3(v, s));
    }
    if tid == 0 {
        scales[unit] = SC::cast_from(s);
    }
}
