//! RMSNorm as DeepSeek's reference computes it.
//!
//! Burn's `RmsNorm` divides by the root mean square in the input's dtype
//! (`x / sqrt(mean(x²) + ε)`); DeepSeek's reference multiplies by its reciprocal in f32,
//! whatever the input's dtype: `(weight · (x · rsqrt(mean(x²) + ε))).to(dtype)`. The two
//! differ by one rounding per element, which the FP8 quantisation downstream (the indexer's
//! query comes from `q_norm`'s output) turns into whole-step flips of a few values. This
//! module computes the reference's expression, so bf16 inputs are normalised in f32 too, and
//! its gradient in closed form ([`reference_rms_norm_backward`]), which backends fuse into one
//! kernel each way.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use crate::DsaBackend;

/// Root-mean-square normalisation over the last dimension with a learned scale
/// ([`crate::ops::rms_norm`]).
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
/// use dsa_burn::RmsNorm;
///
/// let device = Default::default();
/// let norm = RmsNorm::<NdArray>::new(4, 1e-6, &device);
/// let y = norm.forward(Tensor::<NdArray, 2>::from_floats([[3.0, -3.0, 3.0, -3.0]], &device));
/// let y: Vec<f32> = y.into_data().to_vec().unwrap();
/// assert!(y.iter().zip([1.0, -1.0, 1.0, -1.0]).all(|(a, b)| (a - b).abs() < 1e-6));
/// ```
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// The learned scale, `[d]` (a checkpoint's `<prefix>.weight`).
    pub gamma: Param<Tensor<B, 1>>,
    /// Added to the mean square before the reciprocal square root.
    pub epsilon: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// A norm over `d` features with a unit scale.
    pub fn new(d: usize, epsilon: f64, device: &B::Device) -> Self {
        Self { gamma: Param::from_tensor(Tensor::ones([d], device)), epsilon }
    }
}

impl<B: DsaBackend> RmsNorm<B> {
    /// Normalises `x` (`[..., d]`) over its last dimension; the result has `x`'s dtype.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        crate::ops::rms_norm(x, self.gamma.val(), self.epsilon)
    }
}

/// The reference's expression on `x [N, d]` and `gamma [d]`:
/// `(gamma · (x · 1/√(mean(x²) + ε))).to(dtype)`, in f32.
pub fn reference_rms_norm<B: Backend>(x: Tensor<B, 2>, gamma: Tensor<B, 1>, epsilon: f64) -> Tensor<B, 2> {
    let dtype = x.dtype();
    let x = x.cast(DType::F32);
    let inv_rms = (x.clone().square().mean_dim(1) + epsilon).sqrt().recip();
    (gamma.cast(DType::F32).unsqueeze::<2>() * (x * inv_rms)).cast(dtype)
}

/// Gradients `(dx, dgamma)` of [`reference_rms_norm`] for `dy [N, d]`, in f32 and returned
/// in the dtypes of `x` and `gamma`: with `r = 1/√(mean(x²) + ε)` and `g = dy · gamma`,
/// `dx = r·g − x·r³·mean(g·x)` and `dgamma = Σ_rows dy·x·r`.
pub fn reference_rms_norm_backward<B: Backend>(x: Tensor<B, 2>, gamma: Tensor<B, 1>, dy: Tensor<B, 2>, epsilon: f64) -> (Tensor<B, 2>, Tensor<B, 1>) {
    let (x_dtype, gamma_dtype) = (x.dtype(), gamma.dtype());
    let d = x.dims()[1];
    let (x, dy) = (x.cast(DType::F32), dy.cast(DType::F32));
    let inv = (x.clone().square().mean_dim(1) + epsilon).sqrt().recip(); // [N, 1]
    let g = dy.clone() * gamma.cast(DType::F32).unsqueeze::<2>();
    let coef = inv.clone().powi_scalar(3) * (g.clone() * x.clone()).mean_dim(1);
    let dx = g * inv.clone() - x.clone() * coef;
    let dgamma = (dy * (x * inv)).sum_dim(0).reshape([d]);
    (dx.cast(x_dtype), dgamma.cast(gamma_dtype))
}
