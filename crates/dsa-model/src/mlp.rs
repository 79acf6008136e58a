//! The SwiGLU feed-forward of DeepSeek-V3.2: the dense MLP of the first layers, every routed
//! expert and the shared experts.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use dsa_burn::{ops, DsaBackend};

/// Sizes of an [`Mlp`].
#[derive(Config, Debug)]
pub struct MlpConfig {
    /// Model width (input and output).
    pub d_model: usize,
    /// Hidden width.
    pub hidden: usize,
}

impl MlpConfig {
    /// Creates the MLP with random weights (initialised lazily, on first use).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Mlp<B> {
        let linear = |i, o| LinearConfig::new(i, o).with_bias(false).init(device);
        Mlp {
            gate_proj: linear(self.d_model, self.hidden),
            up_proj: linear(self.d_model, self.hidden),
            down_proj: linear(self.hidden, self.d_model),
        }
    }
}

/// `W2(SiLU(W1·x) ⊙ W3·x)` ([`dsa_burn::ops::swiglu`]), with DeepSeek's `w1`, `w3`, `w2` under their HuggingFace names
/// `gate_proj`, `up_proj`, `down_proj`.
///
/// ```
/// # use burn::backend::NdArray;
/// # use burn::tensor::{DType, Tensor};
/// use dsa_model::mlp::MlpConfig;
/// let mlp = MlpConfig::new(8, 16).init::<NdArray>(&Default::default());
/// let y = mlp.forward(Tensor::<NdArray, 3>::ones([2, 3, 8], &Default::default()));
/// assert_eq!(y.dims(), [2, 3, 8]);
/// ```
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `W1 [d_model, hidden]`, the gated branch.
    pub gate_proj: Linear<B>,
    /// `W3 [d_model, hidden]`, the linear branch.
    pub up_proj: Linear<B>,
    /// `W2 [hidden, d_model]`.
    pub down_proj: Linear<B>,
}

impl<B: DsaBackend> Mlp<B> {
    /// Applies the MLP to the last dimension of `x` (projections by [`ops::project`]).
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let gate = ops::project(&self.gate_proj, x.clone());
        ops::project(&self.down_proj, ops::swiglu(gate, ops::project(&self.up_proj, x)))
    }
}
