//! One AdamW step with gradient-norm clipping ([`DsaBackend::adamw_step`](crate::DsaBackend::adamw_step),
//! the update of [`crate::adamw::FusedAdamW`]) in Burn tensor operations, in the order of
//! Burn's `AdamW` and `GradientClipping::Norm`, and the step's scalars.

use burn::optim::LearningRate;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor};

/// The scalars of one step of [`DsaBackend::adamw_step`](crate::DsaBackend::adamw_step).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWStep {
    /// Learning rate.
    pub lr: LearningRate,
    /// Decay of the first moment.
    pub beta_1: f32,
    /// Decay of the second moment.
    pub beta_2: f32,
    /// Added to the bias-corrected second moment's square root.
    pub epsilon: f32,
    /// Decoupled weight decay: the parameter is multiplied by `1 − lr · weight_decay`.
    pub weight_decay: f32,
    /// The gradient's norm is clipped to this (when the step is given the norm).
    pub max_norm: f32,
    /// The step number, from 1 (for the bias corrections).
    pub time: usize,
}

impl AdamWStep {
    /// `1 − β₁ᵗ`, in f32 as Burn computes it.
    pub fn bias_correction_1(&self) -> f32 {
        1f32 - self.beta_1.powi(self.time as i32)
    }

    /// `1 − β₂ᵗ`, in f32 as Burn computes it.
    pub fn bias_correction_2(&self) -> f32 {
        1f32 - self.beta_2.powi(self.time as i32)
    }

    /// `lr · weight_decay` (in f64, as Burn).
    pub fn decay_rate(&self) -> f64 {
        self.lr * self.weight_decay as f64
    }
}

/// The smallest positive normal value of `dtype` (f32's for non-float types), which clipping
/// adds to the norm, as Burn's `GradientClipping::Norm`.
pub fn min_positive(dtype: DType) -> f64 {
    dtype.finfo().unwrap_or(FloatDType::F32.finfo()).min_positive
}

/// Reference AdamW step with gradient clipping by `norm` (when given; the L2 norm of `grad`)
/// in Burn tensor operations, in the order of Burn's `AdamW` and `GradientClipping::Norm`;
/// see [`DsaBackend::adamw_step`](crate::DsaBackend::adamw_step). Returns the new parameter and moments.
pub fn reference_adamw_step<B: Backend, const D: usize>(param: Tensor<B, D>, grad: Tensor<B, D>, moment_1: Tensor<B, D>, moment_2: Tensor<B, D>, norm: Option<Tensor<B, 1>>, step: AdamWStep) -> (Tensor<B, D>, Tensor<B, D>, Tensor<B, D>) {
    let grad = match norm {
        Some(norm) => {
            let coef = (step.max_norm / norm.add_scalar(min_positive(grad.dtype()))).clamp_max(1.0);
            grad.mul(coef.unsqueeze())
        }
        None => grad,
    };
    let moment_1 = moment_1.mul_scalar(step.beta_1).add(grad.clone().mul_scalar(1.0 - step.beta_1));
    let moment_2 = moment_2.mul_scalar(step.beta_2).add(grad.square().mul_scalar(1.0 - step.beta_2));
    let m_hat = moment_1.clone().div_scalar(step.bias_correction_1());
    let v_hat = moment_2.clone().div_scalar(step.bias_correction_2());
    let delta = m_hat.div(v_hat.sqrt().add_scalar(step.epsilon));
    let decay_rate = step.decay_rate();
    let decayed = if decay_rate == 0.0 { param } else { param.mul_scalar(1.0 - decay_rate) };
    (decayed - delta.mul_scalar(step.lr), moment_1, moment_2)
}
