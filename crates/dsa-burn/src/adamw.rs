//! AdamW with gradient-norm clipping as one fused operation per parameter tensor:
//! [`FusedAdamW`], the same update as Burn's `AdamW` behind `GradientClipping::Norm` in
//! [`DsaBackend::adamw_step`] (one kernel on CubeCL instead of about twenty element-wise
//! launches per tensor; with a few hundred parameter tensors, a training step's optimizer
//! is otherwise bound by kernel launches).
//!
//! Per parameter tensor `p` with gradient `g` and moments `m`, `v` at step `t` (from 1):
//!
//! ```text
//! g  ← g · min(max_norm / (‖g‖₂ + min_positive), 1)     (when clipping; per tensor, as Burn)
//! m  ← β₁ m + (1 − β₁) g
//! v  ← β₂ v + (1 − β₂) g²
//! p  ← p (1 − lr·λ) − lr · (m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + ε)
//! ```
//!
//! with the moments starting at zero (Burn's first step, `m = (1 − β₁) g`, is the same
//! value) and `ε` added after the square root. `‖g‖₂` is computed on the device with Burn
//! operations before the fused step (no host read). The reference
//! [`reference_adamw_step`](crate::reference::adamw::reference_adamw_step) is these formulas
//! in Burn tensor operations, in Burn's order.

use burn::config::Config;
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{LearningRate, SimpleOptimizer};
use burn::record::Record;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;

pub use crate::reference::adamw::AdamWStep;
use crate::DsaBackend;

/// [`FusedAdamW`]'s configuration: the hyper-parameters other than the learning rate, with
/// the defaults of Burn's `AdamWConfig`.
#[derive(Config, Debug)]
pub struct FusedAdamWConfig {
    /// Decay of the first moment.
    #[config(default = 0.9)]
    pub beta_1: f32,
    /// Decay of the second moment.
    #[config(default = 0.999)]
    pub beta_2: f32,
    /// Added to the bias-corrected second moment's square root.
    #[config(default = 1e-5)]
    pub epsilon: f32,
    /// Decoupled weight decay.
    #[config(default = 1e-4)]
    pub weight_decay: f32,
    /// Clip every parameter tensor's gradient to this L2 norm (as Burn's
    /// `GradientClippingConfig::Norm`, per tensor); `None`: no clipping.
    pub grad_clip: Option<f32>,
}

impl FusedAdamWConfig {
    /// The simple optimizer.
    pub fn build(&self) -> FusedAdamW {
        FusedAdamW {
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            weight_decay: self.weight_decay,
            grad_clip: self.grad_clip,
        }
    }

    /// The optimizer of a module (without Burn's gradient clipping: the fused step clips).
    pub fn init<B, M>(&self) -> OptimizerAdaptor<FusedAdamW, M, B>
    where
        B: AutodiffBackend,
        B::InnerBackend: DsaBackend,
        M: AutodiffModule<B>,
    {
        OptimizerAdaptor::from(self.build())
    }
}

/// AdamW with optional gradient clipping by norm, one [`DsaBackend::adamw_step`] (and, when
/// clipping, the gradient's norm by three reductions on the device) per parameter tensor;
/// see the [module docs](self). The same update as Burn's
/// `AdamWConfig::new().with_grad_clipping(Some(GradientClippingConfig::Norm(c)))`.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::module::Module;
/// use burn::nn::LinearConfig;
/// use burn::optim::{GradientsParams, Optimizer};
/// use burn::tensor::{DType, Tensor};
/// use dsa_burn::{FusedAdamWConfig, MasterWeights};
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let model = LinearConfig::new(4, 2).init::<B>(&device);
/// let adamw = FusedAdamWConfig::new().with_weight_decay(0.01).with_grad_clip(Some(1.0));
/// // Alone, or inside `MasterWeights` (f32 masters for a bf16 model on CUDA).
/// let mut optim = MasterWeights::new(adamw.init(), DType::F32);
/// let x = Tensor::<B, 2>::ones([3, 4], &device);
/// let grads = GradientsParams::from_grads(model.forward(x).sum().backward(), &model);
/// let before = model.weight.val().into_data().to_vec::<f32>().unwrap();
/// let stepped = optim.step(1e-3, model, grads);
/// let after = stepped.weight.val().into_data().to_vec::<f32>().unwrap();
/// // The first step moves every weight by about lr against its gradient (here positive).
/// for (b, a) in before.iter().zip(&after) {
///     assert!((b - a - 1e-3).abs() < 1e-4, "{b} -> {a}");
/// }
/// ```
#[derive(Clone, Debug)]
pub struct FusedAdamW {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    weight_decay: f32,
    grad_clip: Option<f32>,
}

/// [`FusedAdamW`]'s state of a parameter tensor.
#[derive(Record, Clone)]
pub struct FusedAdamWState<B: Backend, const D: usize> {
    /// The first moment.
    pub moment_1: Tensor<B, D>,
    /// The second moment.
    pub moment_2: Tensor<B, D>,
    /// Steps taken.
    pub time: usize,
}

impl<B: DsaBackend> SimpleOptimizer<B> for FusedAdamW {
    type State<const D: usize> = FusedAdamWState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let (moment_1, moment_2, time) = match state {
            Some(s) => (s.moment_1, s.moment_2, s.time + 1),
            None => (grad.zeros_like(), grad.zeros_like(), 1),
        };
        let norm = self.grad_clip.map(|_| grad.clone().square().sum().sqrt());
        let step = AdamWStep {
            lr,
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            weight_decay: self.weight_decay,
            max_norm: self.grad_clip.unwrap_or(f32::INFINITY),
            time,
        };
        let (tensor, moment_1, moment_2) = crate::ops::adamw_step(tensor, grad, moment_1, moment_2, norm, step);
        (tensor, Some(FusedAdamWState { moment_1, moment_2, time }))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        FusedAdamWState { moment_1: state.moment_1.to_device(device), moment_2: state.moment_2.to_device(device), time: state.time }
    }
}
