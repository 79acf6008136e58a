//! RMSNorm as DeepSeek's reference computes it (see [`crate::norm`]): the reciprocal root
//! mean square multiplied in f32 whatever the input's dtype, and its gradient in closed form.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

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
