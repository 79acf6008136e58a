//! RMSNorm as DeepSeek's reference computes it.
//!
//! Burn's `RmsNorm` divides by the root mean square in the input's dtype
//! (`x / sqrt(mean(x²) + ε)`); DeepSeek's reference multiplies by its reciprocal in f32,
//! whatever the input's dtype: `(weight · (x · rsqrt(mean(x²) + ε))).to(dtype)`. The two
//! differ by one rounding per element, which the FP8 quantisation downstream (the indexer's
//! query comes from `q_norm`'s output) turns into whole-step flips of a few values.
//! [`RmsNorm`] computes the reference's expression ([`crate::ops::rms_norm`]), so bf16 inputs
//! are normalised in f32 too; [`crate::reference::norm`] holds it and its gradient in closed
//! form, which backends fuse into one kernel each way.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

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
