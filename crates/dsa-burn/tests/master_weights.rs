//! [`MasterWeights`]: updates below the model's float resolution reach its weights through
//! the master copies, and a saved optimizer record resumes exactly. On the CPU the model is
//! f32 with f64 masters; on CUDA (`--features cuda`) bf16 with f32 masters, at the sparse
//! stage's scale of learning rate.

use burn::backend::Autodiff;
use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor};
use dsa_burn::MasterWeights;

/// A linear layer whose weights are all `w0`, in `dtype`.
fn layer<B: Backend>(w0: f32, dtype: DType, device: &B::Device) -> Linear<B> {
    let mut l = LinearConfig::new(8, 4).with_bias(false).init::<B>(device);
    l.weight = Param::from_tensor(Tensor::<B, 2>::full([8, 4], w0, device).cast(dtype));
    l
}

/// `steps` Adam steps of `lr` on a loss whose gradient is positive everywhere.
fn train<B: AutodiffBackend, O: Optimizer<Linear<B>, B>>(mut l: Linear<B>, optim: &mut O, lr: f64, steps: usize) -> Linear<B> {
    let device = l.devices()[0].clone();
    for _ in 0..steps {
        let x = Tensor::<B, 2>::ones([2, 8], &device).cast(l.weight.val().dtype());
        let grads = GradientsParams::from_grads(l.forward(x).sum().backward(), &l);
        l = optim.step(lr, l, grads);
    }
    l
}

fn weights<B: Backend>(l: &Linear<B>) -> Vec<f64> {
    l.weight.val().into_data().convert::<f64>().into_vec::<f64>().unwrap()
}

/// `lr` is below half a unit in the last place of the weights' dtype at `w0`: stepped in
/// their own dtype they never move; with masters in `master` they move by `steps · lr`.
fn small_updates_reach_the_weights<B: AutodiffBackend>(dtype: DType, master: DType, w0: f32, lr: f64, steps: usize, device: &B::Device) {
    // `w0` as `dtype` holds it (0.02 is 0.02001953125 in bf16).
    let w0 = weights(&layer::<B>(w0, dtype, device))[0];
    let plain = train(layer::<B>(w0 as f32, dtype, device), &mut AdamConfig::new().init(), lr, steps);
    assert!(weights(&plain).iter().all(|&w| w == w0), "{dtype:?} weights moved by themselves: {:?}", weights(&plain));

    let mut optim = MasterWeights::new(AdamConfig::new().init(), master);
    let mixed = train(layer::<B>(w0 as f32, dtype, device), &mut optim, lr, steps);
    assert_eq!(mixed.weight.val().dtype(), dtype, "the model keeps its dtype");
    let moved = steps as f64 * lr;
    for w in weights(&mixed) {
        // Adam's first steps are ±lr each; the weight is the master rounded to `dtype`.
        let ulp = w0 * if dtype == DType::BF16 { 2f64.powi(-8) } else { 2f64.powi(-24) };
        assert!((w - (w0 - moved)).abs() <= ulp, "weight {w}, expected {} ± {ulp}", w0 - moved);
        assert!(w < w0, "weight {w} did not move");
    }
}

/// Saving the optimizer (with its masters) and loading it into a fresh one continues as if
/// never interrupted.
fn resume_is_exact<B: AutodiffBackend>(dtype: DType, master: DType, lr: f64, device: &B::Device) {
    let mut optim = MasterWeights::new(AdamConfig::new().init(), master);
    let l = train(layer::<B>(1.0, dtype, device), &mut optim, lr, 3);
    let mut resumed = MasterWeights::new(AdamConfig::new().init(), master).load_record(optim.to_record());
    let a = train(l.clone(), &mut optim, lr, 2);
    let b = train(l, &mut resumed, lr, 2);
    assert_eq!(weights(&a), weights(&b));
}

#[test]
fn small_updates_reach_f32_weights_through_f64_masters() {
    let device = Default::default();
    // Half an ulp of 1.0 in f32 is 6e-8.
    small_updates_reach_the_weights::<Autodiff<burn::backend::NdArray>>(DType::F32, DType::F64, 1.0, 2e-8, 10, &device);
    resume_is_exact::<Autodiff<burn::backend::NdArray>>(DType::F32, DType::F64, 1e-8, &device);
}

/// The sparse stage's case: a bf16 model at lr = 1e-6 (bf16's half ulp at 0.02 is 6e-5).
#[cfg(feature = "cuda")]
#[test]
fn small_updates_reach_bf16_weights_through_f32_masters() {
    type B = Autodiff<burn::backend::Cuda>;
    let device = Default::default();
    small_updates_reach_the_weights::<B>(DType::BF16, DType::F32, 0.02, 1e-6, 100, &device);
    resume_is_exact::<B>(DType::BF16, DType::F32, 1e-6, &device);
}
