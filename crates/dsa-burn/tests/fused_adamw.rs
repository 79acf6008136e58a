//! [`FusedAdamW`] against Burn's `AdamW` with `GradientClipping::Norm` (the independent
//! reference): the same parameters after every step for the same gradients, with clipping
//! that triggers, that does not, that triggers for one tensor and not the other, and
//! without clipping; inside [`MasterWeights`]; and a saved optimizer record resumes exactly.
//! On NdArray (the fused step's reference body); the CubeCL kernel is compared with that
//! body in `tests/kernels.rs`.

use burn::backend::{Autodiff, NdArray};
use burn::grad_clipping::GradientClippingConfig;
use burn::module::Param;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::{DType, Tensor, TensorData};
use dsa_burn::{FusedAdamWConfig, MasterWeights};

type IB = NdArray;
type B = Autodiff<IB>;

const LR: f64 = 0.01;
const WEIGHT_DECAY: f32 = 0.1;

/// A linear layer with bias: a `[6, 5]` and a `[5]` parameter, deterministic random.
fn layer() -> Linear<B> {
    let device = Default::default();
    let mut l = LinearConfig::new(6, 5).init::<B>(&device);
    l.weight = Param::from_tensor(Tensor::from_data(TensorData::new(values(30, 7), [6, 5]), &device));
    l.bias = Some(Param::from_tensor(Tensor::from_data(TensorData::new(values(5, 8), [5]), &device)));
    l
}

/// `n` values uniform in [-1, 1) from `seed` (xorshift64*).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            ((s.wrapping_mul(0x2545F4914F6CDD1D) >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}

/// The gradients of step `step`: fixed random values, the weight's scaled by `scales[step
/// % len][0]`, the bias's by `[1]`. Also returns their L2 norms.
fn gradients(l: &Linear<B>, step: usize, scales: &[[f32; 2]]) -> (GradientsParams, [f64; 2]) {
    let device = Default::default();
    let [sw, sb] = scales[step % scales.len()];
    let w: Vec<f32> = values(30, 100 + step as u64).iter().map(|v| v * sw).collect();
    let b: Vec<f32> = values(5, 200 + step as u64).iter().map(|v| v * sb).collect();
    let norm = |v: &[f32]| v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let norms = [norm(&w), norm(&b)];
    let mut grads = GradientsParams::new();
    grads.register::<IB, 2>(l.weight.id, Tensor::from_data(TensorData::new(w, [6, 5]), &device));
    grads.register::<IB, 1>(l.bias.as_ref().expect("a bias").id, Tensor::from_data(TensorData::new(b, [5]), &device));
    (grads, norms)
}

fn params(l: &Linear<B>) -> Vec<f64> {
    let mut v = l.weight.val().into_data().convert::<f64>().into_vec::<f64>().unwrap();
    v.extend(l.bias.as_ref().unwrap().val().into_data().convert::<f64>().into_vec::<f64>().unwrap());
    v
}

/// ‖a − b‖ / ‖b‖.
fn rel(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}

/// Steps `fused` and `burn` from the same layer with the same gradients; after each of the
/// `steps` steps their parameters agree to 1e-6 (relative). Returns Burn's parameters after
/// each step and the gradient norms seen.
fn compare<O1: Optimizer<Linear<B>, B>, O2: Optimizer<Linear<B>, B>>(what: &str, fused: &mut O1, burn: &mut O2, steps: usize, scales: &[[f32; 2]]) -> (Vec<Vec<f64>>, Vec<[f64; 2]>) {
    let (mut a, mut b) = (layer(), layer());
    let (mut trajectory, mut norms) = (Vec::new(), Vec::new());
    let start = params(&a);
    for step in 0..steps {
        let (ga, n) = gradients(&a, step, scales);
        let (gb, _) = gradients(&b, step, scales);
        a = fused.step(LR, a, ga);
        b = burn.step(LR, b, gb);
        let (pa, pb) = (params(&a), params(&b));
        let r = rel(&pa, &pb);
        assert!(r <= 1e-6, "{what}, step {}: relative difference {r:e}\nfused {pa:?}\nburn  {pb:?}", step + 1);
        assert!(rel(&pb, &start) > 1e-3, "{what}, step {}: the parameters did not move", step + 1);
        trajectory.push(pb);
        norms.push(n);
    }
    (trajectory, norms)
}

fn burn_adamw(clip: Option<f32>) -> AdamWConfig {
    AdamWConfig::new().with_weight_decay(WEIGHT_DECAY).with_grad_clipping(clip.map(GradientClippingConfig::Norm))
}

fn fused_adamw(clip: Option<f32>) -> FusedAdamWConfig {
    FusedAdamWConfig::new().with_weight_decay(WEIGHT_DECAY).with_grad_clip(clip)
}

/// Gradient norms that vary from step to step (so that clipping changes the direction of
/// Adam's updates, not only their scale).
const VARYING: &[[f32; 2]] = &[[10.0, 0.05], [0.5, 0.02], [30.0, 0.1], [2.0, 0.01], [0.1, 0.3]];

#[test]
fn matches_burn_adamw_when_clipping_triggers() {
    let c = 0.5;
    let (clipped, norms) = compare("clip 0.5", &mut fused_adamw(Some(c)).init(), &mut burn_adamw(Some(c)).init(), 5, &[[10.0, 8.0], [3.0, 5.0], [20.0, 1.0]]);
    assert!(norms.iter().all(|n| n[0] > c as f64 && n[1] > c as f64), "every gradient is clipped: norms {norms:?}");
    // Clipping matters here: without it the parameters go elsewhere.
    let (unclipped, _) = compare("no clip", &mut fused_adamw(None).init(), &mut burn_adamw(None).init(), 5, &[[10.0, 8.0], [3.0, 5.0], [20.0, 1.0]]);
    let r = rel(&clipped[4], &unclipped[4]);
    assert!(r > 1e-3, "clipping changed nothing ({r:e})");
}

#[test]
fn matches_burn_adamw_when_clipping_does_not_trigger() {
    let c = 1e3;
    let (_, norms) = compare("clip 1e3", &mut fused_adamw(Some(c)).init(), &mut burn_adamw(Some(c)).init(), 5, VARYING);
    assert!(norms.iter().all(|n| n[0] < c as f64 && n[1] < c as f64), "no gradient is clipped: norms {norms:?}");
}

/// Clipping is per tensor, as Burn's: the weight's gradient is clipped on some steps, the
/// bias's never.
#[test]
fn matches_burn_adamw_when_clipping_one_tensor() {
    let c = 1.0;
    let (clipped, norms) = compare("clip 1", &mut fused_adamw(Some(c)).init(), &mut burn_adamw(Some(c)).init(), 5, VARYING);
    assert!(norms.iter().any(|n| n[0] > c as f64) && norms.iter().any(|n| n[0] < c as f64), "the weight is clipped on some steps: {norms:?}");
    assert!(norms.iter().all(|n| n[1] < c as f64), "the bias is never clipped: {norms:?}");
    let (unclipped, _) = compare("no clip", &mut fused_adamw(None).init(), &mut burn_adamw(None).init(), 5, VARYING);
    assert!(rel(&clipped[4], &unclipped[4]) > 1e-3, "clipping changed nothing");
}

/// Burn's other defaults (β, ε, weight decay) are FusedAdamW's, and with no weight decay.
#[test]
fn matches_burn_adamw_defaults() {
    compare("defaults", &mut FusedAdamWConfig::new().init(), &mut AdamWConfig::new().init(), 4, VARYING);
    let (eps, beta_1, beta_2) = (1e-3, 0.8, 0.99);
    compare(
        "no decay",
        &mut FusedAdamWConfig::new().with_weight_decay(0.0).with_epsilon(eps).with_beta_1(beta_1).with_beta_2(beta_2).with_grad_clip(Some(2.0)).init(),
        &mut AdamWConfig::new().with_weight_decay(0.0).with_epsilon(eps).with_beta_1(beta_1).with_beta_2(beta_2).with_grad_clipping(Some(GradientClippingConfig::Norm(2.0))).init(),
        4,
        VARYING,
    );
}

/// Inside [`MasterWeights`] (f64 masters of an f32 layer, the CPU's stand-in for f32 masters
/// of a bf16 model), as the training command uses it.
#[test]
fn matches_burn_adamw_inside_master_weights() {
    compare(
        "master weights",
        &mut MasterWeights::new(fused_adamw(Some(1.0)).init(), DType::F64),
        &mut MasterWeights::new(burn_adamw(Some(1.0)).init(), DType::F64),
        4,
        VARYING,
    );
}

/// Saving the optimizer's record (moments and step counts) and loading it into a fresh
/// optimizer continues bit for bit; a fresh optimizer without the record does not.
#[test]
fn saved_record_resumes_identically() {
    let device = Default::default();
    let mut optim = fused_adamw(Some(1.0)).init::<B, Linear<B>>();
    let mut l = layer();
    for step in 0..3 {
        let grads = gradients(&l, step, VARYING).0;
        l = optim.step(LR, l, grads);
    }
    let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
    let bytes = recorder.record(optim.to_record(), ()).unwrap();
    let mut resumed = fused_adamw(Some(1.0)).init::<B, Linear<B>>().load_record(recorder.load(bytes, &device).unwrap());
    let mut fresh = fused_adamw(Some(1.0)).init::<B, Linear<B>>();
    let (mut a, mut b, mut c) = (l.clone(), l.clone(), l);
    for step in 3..6 {
        let grads = gradients(&a, step, VARYING).0;
        a = optim.step(LR, a, grads);
        let grads = gradients(&b, step, VARYING).0;
        b = resumed.step(LR, b, grads);
        let grads = gradients(&c, step, VARYING).0;
        c = fresh.step(LR, c, grads);
        assert_eq!(params(&a), params(&b), "step {}", step + 1);
    }
    assert!(rel(&params(&c), &params(&a)) > 1e-4, "the record made no difference");
}
