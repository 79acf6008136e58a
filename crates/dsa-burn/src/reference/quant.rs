//! FP8 e4m3 block fake-quantisation of the indexer's activations ([`IndexerQuant`]), exactly,
//! with tensor operations: the block scales, the e4m3 rounding (nearest even) and the
//! dequantised values, with a straight-through gradient.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::quant::{IndexerQuant, E4M3_MAX, FP8_BLOCK};

/// Quantises `x` to FP8 e4m3 in blocks of [`FP8_BLOCK`] along its last dimension and
/// returns the dequantised values (`x8 · s`), with a straight-through gradient.
/// A last dimension that is not a multiple of the block is padded with zeros internally.
///
/// ```
/// # use burn::backend::NdArray;
/// # use burn::tensor::Tensor;
/// use dsa_burn::{reference::quant::fake_quant, IndexerQuant};
/// let x = Tensor::<NdArray, 2>::from_floats([[1.0, -0.3, 0.01]], &Default::default());
/// let y = fake_quant(x, IndexerQuant::E4m3);
/// // 1.0 is the block's max: it maps to 448 exactly and back.
/// assert_eq!(y.to_data().to_vec::<f32>().unwrap()[0], 1.0);
/// ```
pub fn fake_quant<B: Backend, const D: usize>(x: Tensor<B, D>, quant: IndexerQuant) -> Tensor<B, D> {
    if quant == IndexerQuant::None {
        return x;
    }
    let (codes, scales) = quantize_blocks(x.clone().detach(), quant == IndexerQuant::E4m3Pow2);
    let q = dequantize_blocks(codes, scales);
    // Straight-through estimator: the value of `q`, the gradient of the identity.
    x.clone() + (q - x).detach()
}

/// FP8 e4m3 block quantisation: the e4m3 values (as f32, exactly representable) of shape
/// `x`'s, and the f32 block scales `[.., ceil(D_last / 128)]`.
pub fn quantize_blocks<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    pow2_scales: bool,
) -> (Tensor<B, D>, Tensor<B, D>) {
    let dims = x.dims();
    let last = dims[D - 1];
    let nb = last.div_ceil(FP8_BLOCK);
    let rows = dims[..D - 1].iter().product::<usize>();
    let mut x2 = x.reshape([rows, last]);
    if nb * FP8_BLOCK != last {
        let pad = Tensor::zeros([rows, nb * FP8_BLOCK - last], &x2.device());
        x2 = Tensor::cat(vec![x2, pad], 1);
    }
    let blocks = x2.reshape([rows, nb, FP8_BLOCK]);
    let amax = blocks.clone().abs().max_dim(2).clamp_min(1e-4);
    // A division, as the reference's `amax / 448` on the CPU: `amax · fl(1/448)` differs
    // from it by an ulp for about half of all amax, which moves every `x / s` of the block.
    // (torch's CUDA kernel multiplies by `fl(1/448)` for a scalar divisor, so cases made
    // on CUDA carry that rounding.)
    let mut scale = amax.div_scalar(E4M3_MAX);
    if pow2_scales {
        scale = pow2_ceil(scale);
    }
    let y = (blocks / scale.clone()).clamp(-E4M3_MAX, E4M3_MAX);
    let codes = round_e4m3(y).reshape([rows, nb * FP8_BLOCK]).narrow(1, 0, last);
    let mut scale_dims = dims;
    scale_dims[D - 1] = nb;
    (codes.reshape(dims), scale.reshape(scale_dims))
}

/// Inverse of [`quantize_blocks`]: `codes · scale` per block.
pub fn dequantize_blocks<B: Backend, const D: usize>(codes: Tensor<B, D>, scales: Tensor<B, D>) -> Tensor<B, D> {
    let dims = codes.dims();
    let last = dims[D - 1];
    let nb = scales.dims()[D - 1];
    let rows = dims[..D - 1].iter().product::<usize>();
    let scales = scales
        .reshape([rows, nb, 1])
        .expand([rows, nb, FP8_BLOCK])
        .reshape([rows, nb * FP8_BLOCK])
        .narrow(1, 0, last);
    codes * scales.reshape(dims)
}

/// Rounds values already within `±448` to the nearest `float8_e4m3fn` value (ties to
/// even): the spacing is `2^(e-3)` in the binade `[2^e, 2^(e+1))`, and `2^-9` below the
/// smallest normal `2^-6` (subnormals).
fn round_e4m3<B: Backend, const D: usize>(y: Tensor<B, D>) -> Tensor<B, D> {
    let a = y.clone().abs();
    let mut step = a.zeros_like().add_scalar(2f32.powi(-9));
    for e in -5..=8 {
        let in_binade = a.clone().greater_equal_elem(2f32.powi(e));
        step = step.mask_fill(in_binade, 2f32.powi(e - 3));
    }
    (y / step.clone()).round() * step
}

/// The smallest power of two `≥ s` (for `s > 0`), exactly.
fn pow2_ceil<B: Backend, const D: usize>(s: Tensor<B, D>) -> Tensor<B, D> {
    let e = (s.clone().log() / core::f32::consts::LN_2).ceil();
    let p = s.full_like(2.0).powf(e);
    // The logarithm may be off by one ulp at exact powers of two: correct both ways.
    let p = p.clone().mask_where(p.clone().lower(s.clone()), p.clone() * 2.0);
    let half = p.clone() / 2.0;
    p.mask_where(half.clone().greater_equal(s), half)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray;

    /// Every finite e4m3fn value, decoded from its bit pattern independently of the
    /// threshold logic above.
    fn e4m3_values() -> Vec<f32> {
        (0u8..=0x7e)
            .map(|b| {
                let e = (b >> 3) as i32;
                let m = (b & 7) as f32;
                if e == 0 {
                    m / 8.0 * 2f32.powi(-6)
                } else {
                    (1.0 + m / 8.0) * 2f32.powi(e - 7)
                }
            })
            .collect()
    }

    /// Nearest e4m3 value by exhaustive search; ties go to the even mantissa.
    fn nearest_e4m3(x: f32) -> f32 {
        let vals = e4m3_values();
        let a = x.abs();
        let mut best = 0usize;
        for (i, v) in vals.iter().enumerate() {
            let d = (v - a).abs();
            let db = (vals[best] - a).abs();
            if d < db || (d == db && i % 2 == 0 && best % 2 == 1) {
                best = i;
            }
        }
        vals[best].copysign(x)
    }

    #[test]
    fn rounding_matches_exhaustive_search() {
        let vals = e4m3_values();
        let mut xs = vec![0.0f32, 448.0, -448.0, 1e-9, 2f32.powi(-10), 3.0 * 2f32.powi(-10)];
        // Every value, every midpoint between neighbours, and points just off the midpoints.
        for w in vals.windows(2) {
            let mid = (w[0] + w[1]) / 2.0;
            xs.extend([w[0], mid, mid * (1.0 + 1e-6), mid * (1.0 - 1e-6), -mid]);
        }
        let n = xs.len();
        let t = Tensor::<B, 1>::from_floats(xs.as_slice(), &Default::default());
        let got = round_e4m3(t).to_data().to_vec::<f32>().unwrap();
        for i in 0..n {
            assert_eq!(got[i], nearest_e4m3(xs[i]), "x = {:e}", xs[i]);
        }
    }

    #[test]
    fn pow2_scales_are_the_next_power_of_two() {
        let xs = [1e-7f32, 0.25, 0.3, 1.0, 1.5, 3.0, 4.0, 1000.0, 2f32.powi(-20) * 1.0001];
        let t = Tensor::<B, 1>::from_floats(xs, &Default::default());
        let got = pow2_ceil(t).to_data().to_vec::<f32>().unwrap();
        for (x, g) in xs.iter().zip(got) {
            let want = 2f64.powi((*x as f64).log2().ceil() as i32) as f32;
            assert_eq!(g, want, "x = {x:e}");
        }
    }

    /// The scale is `amax / 448` rounded once (the reference's division), not
    /// `amax · fl(1/448)`, which is an ulp off for about half of all amax (3.0 is one).
    #[test]
    fn scale_is_a_division() {
        for amax in [3.0f32, 0.3, 1.5, 6.0, 9.0, 2.5] {
            let x = burn::tensor::TensorData::new(vec![amax, -0.1], [1, 2]);
            let (_, scales) = quantize_blocks(Tensor::<B, 2>::from_data(x, &Default::default()), false);
            assert_eq!(scales.to_data().to_vec::<f32>().unwrap(), [amax / 448.0], "amax {amax}");
        }
    }

    #[test]
    fn blocks_quantise_independently_and_pad() {
        // 2 rows × 200 columns: one full block and one partial block of 72.
        let data: Vec<f32> = (0..400).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013 * (1 + i / 128) as f32).collect();
        let x = Tensor::<B, 2>::from_data(burn::tensor::TensorData::new(data.clone(), [2, 200]), &Default::default());
        let (codes, scales) = quantize_blocks(x, false);
        assert_eq!(scales.dims(), [2, 2]);
        let codes = codes.to_data().to_vec::<f32>().unwrap();
        let scales = scales.to_data().to_vec::<f32>().unwrap();
        for r in 0..2 {
            for b in 0..2 {
                let cols = (b * 128)..((b + 1) * 128).min(200);
                let amax = cols.clone().map(|c| data[r * 200 + c].abs()).fold(1e-4f32, f32::max);
                let s = amax / 448.0;
                assert_eq!(scales[r * 2 + b], s);
                for c in cols {
                    let want = nearest_e4m3((data[r * 200 + c] / s).clamp(-448.0, 448.0));
                    assert_eq!(codes[r * 200 + c], want);
                }
            }
        }
    }
}
