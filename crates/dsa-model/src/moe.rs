//! DeepSeek-V3.2's mixture of experts: a router ([`Routing`]), routed experts executed in
//! batches (all tokens routed to an expert go through it in one matmul), and shared experts.
//!
//! Routing follows `Gate.forward` of DeepSeek's reference: scores `σ(x·W_g)` (or softmax);
//! `e_score_correction_bias` is added for *choosing* only; with expert groups, a group scores
//! the sum of its two best biased scores (its best score when there is no bias), the
//! `topk_group` best groups are kept, and the `num_experts_per_tok` best experts among them
//! are chosen; their weights are the *unbiased* scores, normalised to sum 1 when
//! `norm_topk_prob`, times `routed_scaling_factor`.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};

use crate::config::{DeepSeekV32Config, ScoringFunc, TopkMethod};
use crate::mlp::{Mlp, MlpConfig};

/// How a token's gate scores choose its experts and their weights.
#[derive(Clone, Debug, PartialEq)]
pub struct Routing {
    /// Gate logits → scores.
    pub scoring: ScoringFunc,
    /// Experts chosen per token.
    pub experts_per_token: usize,
    /// Expert groups (1: no group limit).
    pub n_group: usize,
    /// Groups kept per token.
    pub topk_group: usize,
    /// Whether the chosen experts' weights are normalised to sum 1.
    pub normalize: bool,
    /// Multiplier of the weights.
    pub scale: f64,
}

impl Routing {
    /// The routing of a model's MoE layers (`greedy` routing ignores the groups).
    pub fn from_config(cfg: &DeepSeekV32Config) -> Self {
        Self {
            scoring: cfg.scoring_func,
            experts_per_token: cfg.num_experts_per_tok,
            n_group: if cfg.topk_method == TopkMethod::Greedy { 1 } else { cfg.n_group },
            topk_group: cfg.topk_group,
            normalize: cfg.norm_topk_prob,
            scale: cfg.routed_scaling_factor,
        }
    }

    /// Routes one token given its gate `scores` (after the scoring function, one per expert)
    /// and the optional correction `bias`: the chosen experts, best first, with their weights.
    ///
    /// ```
    /// use dsa_model::config::ScoringFunc;
    /// use dsa_model::moe::Routing;
    /// let r = Routing { scoring: ScoringFunc::Sigmoid, experts_per_token: 2, n_group: 2,
    ///     topk_group: 1, normalize: true, scale: 2.0 };
    /// // Groups {0,1} and {2,3}; the bias makes group 1 win (0.4+0.5 + 0.1+0.1 > 0.9+0.0).
    /// let chosen = r.route(&[0.9, 0.0, 0.4, 0.5], Some(&[0.0, 0.0, 0.1, 0.1]));
    /// assert_eq!((chosen[0].0, chosen[1].0), (3, 2));
    /// // Weights: the unbiased scores 0.5 and 0.4, normalised, times 2.
    /// assert!((chosen[0].1 - 2.0 * 0.5 / 0.9).abs() < 1e-6);
    /// ```
    pub fn route(&self, scores: &[f32], bias: Option<&[f32]>) -> Vec<(usize, f32)> {
        let chosen = self.choose(scores, bias);
        let mut weights: Vec<f32> = chosen.iter().map(|&e| scores[e]).collect();
        if self.normalize {
            let sum: f32 = weights.iter().sum();
            weights.iter_mut().for_each(|w| *w /= sum);
        }
        let scale = self.scale as f32;
        chosen.into_iter().zip(weights).map(|(e, w)| (e, w * scale)).collect()
    }

    /// The experts [`Routing::route`] chooses for one token, best first.
    pub fn choose(&self, scores: &[f32], bias: Option<&[f32]>) -> Vec<usize> {
        let mut choice: Vec<f32> = match bias {
            Some(bias) => scores.iter().zip(bias).map(|(s, b)| s + b).collect(),
            None => scores.to_vec(),
        };
        if self.n_group > 1 {
            let per_group = choice.len() / self.n_group;
            let group_scores: Vec<f32> = choice
                .chunks(per_group)
                .map(|group| {
                    let best = best_indices(group, if bias.is_some() { 2 } else { 1 });
                    best.iter().map(|&i| group[i]).sum()
                })
                .collect();
            let kept = best_indices(&group_scores, self.topk_group);
            for (g, group) in choice.chunks_mut(per_group).enumerate() {
                if !kept.contains(&g) {
                    group.fill(f32::NEG_INFINITY);
                }
            }
        }
        best_indices(&choice, self.experts_per_token)
    }

    /// The weights of the chosen experts from their gate scores `[N, k]` (the tensor form of
    /// [`Routing::route`]'s weights, differentiable with respect to the scores).
    pub fn weights<B: Backend>(&self, chosen_scores: Tensor<B, 2>) -> Tensor<B, 2> {
        let weights = match self.normalize {
            true => chosen_scores.clone() / chosen_scores.sum_dim(1),
            false => chosen_scores,
        };
        weights.mul_scalar(self.scale)
    }
}

/// Indices of the `k` largest values, largest first (ties: lower index first; NaN last).
fn best_indices(values: &[f32], k: usize) -> Vec<usize> {
    let key = |v: f32| if v.is_nan() { f32::NEG_INFINITY } else { v };
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| key(values[b]).total_cmp(&key(values[a])).then(a.cmp(&b)));
    order.truncate(k);
    order
}

/// Sizes and routing of a [`Moe`] layer.
#[derive(Clone, Debug, PartialEq)]
pub struct MoeConfig {
    /// Model width.
    pub d_model: usize,
    /// Routed experts.
    pub n_routed_experts: usize,
    /// Hidden width of each expert.
    pub expert_hidden: usize,
    /// Shared experts, fused into one MLP of width `n_shared_experts · expert_hidden`.
    pub n_shared_experts: usize,
    /// Whether the gate has an `e_score_correction_bias` (`noaux_tc` routing).
    pub correction_bias: bool,
    /// The routing.
    pub routing: Routing,
}

impl MoeConfig {
    /// The MoE layer of a model configuration.
    pub fn from_config(cfg: &DeepSeekV32Config) -> Self {
        Self {
            d_model: cfg.hidden_size,
            n_routed_experts: cfg.n_routed_experts,
            expert_hidden: cfg.moe_intermediate_size,
            n_shared_experts: cfg.n_shared_experts,
            correction_bias: cfg.topk_method == TopkMethod::NoauxTc,
            routing: Routing::from_config(cfg),
        }
    }

    /// The shared experts' MLP, if there are any.
    pub fn shared(&self) -> Option<MlpConfig> {
        (self.n_shared_experts > 0).then(|| MlpConfig::new(self.d_model, self.n_shared_experts * self.expert_hidden))
    }

    /// Creates the layer with random weights (initialised lazily, on first use) and a zero
    /// correction bias.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Moe<B> {
        let expert = MlpConfig::new(self.d_model, self.expert_hidden);
        Moe {
            gate: LinearConfig::new(self.d_model, self.n_routed_experts).with_bias(false).init(device),
            e_score_correction_bias: self
                .correction_bias
                .then(|| Param::from_tensor(Tensor::zeros([self.n_routed_experts], device))),
            experts: (0..self.n_routed_experts).map(|_| expert.init(device)).collect(),
            shared_experts: self.shared().map(|c| c.init(device)),
            routing: self.routing.clone(),
        }
    }
}

/// A mixture-of-experts feed-forward (HF names under `mlp`: `gate.weight`,
/// `gate.e_score_correction_bias`, `experts.<e>.*`, `shared_experts.*`).
///
/// ```
/// # use burn::backend::NdArray;
/// # use burn::tensor::{Distribution, Tensor};
/// use dsa_model::moe::MoeConfig;
/// use dsa_model::DeepSeekV32Config;
/// let moe = MoeConfig::from_config(&DeepSeekV32Config::tiny(64)).init::<NdArray>(&Default::default());
/// let x = Tensor::<NdArray, 3>::random([2, 5, 256], Distribution::Default, &Default::default());
/// assert_eq!(moe.forward(x).dims(), [2, 5, 256]);
/// ```
#[derive(Module, Debug)]
pub struct Moe<B: Backend> {
    /// Router `[d_model, n_routed_experts]`.
    pub gate: Linear<B>,
    /// Added to the scores to choose experts (not to weight them).
    pub e_score_correction_bias: Option<Param<Tensor<B, 1>>>,
    /// The routed experts.
    pub experts: Vec<Mlp<B>>,
    /// The shared experts (applied to every token).
    pub shared_experts: Option<Mlp<B>>,
    #[module(skip)]
    routing: Routing,
}

impl<B: Backend> Moe<B> {
    /// Applies the layer to every token of `x [B, T, d_model]`. Each expert runs once, on
    /// the rows of the tokens routed to it, and its weighted output is added back to them.
    /// The choice of experts is discrete; their weights are taken from the gate's score
    /// tensor, so the gate learns.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.forward_pinned(x, None).0
    }

    /// [`Moe::forward`] with the experts of every token given instead of chosen (`pinned`:
    /// `B · T · k` experts, token-major, best first; `None`: the router
    /// chooses), and the experts that ran. Their weights still come from the gate's scores
    /// at those experts. Pinning fixes a discrete choice when comparing runs at different
    /// precisions, where a near-tie may go either way.
    ///
    /// # Panics
    /// If `pinned` does not hold `k` experts below the expert count for every token.
    ///
    /// ```
    /// # use burn::backend::NdArray;
    /// # use burn::tensor::{Distribution, Tensor};
    /// use dsa_model::moe::MoeConfig;
    /// use dsa_model::DeepSeekV32Config;
    /// let moe = MoeConfig::from_config(&DeepSeekV32Config::tiny(64)).init::<NdArray>(&Default::default());
    /// let x = Tensor::<NdArray, 3>::random([1, 2, 256], Distribution::Default, &Default::default());
    /// let (y, chosen) = moe.forward_pinned(x.clone(), None);
    /// let (pinned, same) = moe.forward_pinned(x, Some(chosen.clone()));
    /// assert_eq!(chosen, same);
    /// y.into_data().assert_eq(&pinned.into_data(), true);
    /// ```
    pub fn forward_pinned(&self, x: Tensor<B, 3>, pinned: Option<Vec<usize>>) -> (Tensor<B, 3>, Vec<usize>) {
        let [b, t, d] = x.dims();
        let device = x.device();
        let x = x.reshape([b * t, d]);
        let (chosen, weights) = self.route(x.clone(), pinned);
        let k = weights.dims()[1];
        let weights = weights.reshape([b * t * k, 1]);
        let mut slots = vec![Vec::new(); self.experts.len()];
        for (slot, &expert) in chosen.iter().enumerate() {
            slots[expert].push(slot as i64);
        }
        let mut y = Tensor::<B, 2>::zeros([b * t, d], &device);
        for (expert, slots) in self.experts.iter().zip(slots) {
            let n = slots.len();
            if n == 0 {
                continue;
            }
            let rows: Vec<i64> = slots.iter().map(|s| s / k as i64).collect();
            let rows = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [n]), &device);
            let slots = Tensor::<B, 1, Int>::from_data(TensorData::new(slots, [n]), &device);
            let out = expert.forward(x.clone().select(0, rows.clone())) * weights.clone().select(0, slots);
            y = y.select_assign(0, rows, out, IndexingUpdateOp::Add);
        }
        if let Some(shared) = &self.shared_experts {
            y = y + shared.forward(x);
        }
        (y.reshape([b, t, d]), chosen)
    }

    /// Routes the tokens `x [N, d_model]`: the experts chosen for each token (`N · k`
    /// entries, token-major, best first; the `pinned` ones where given) and their weights
    /// `[N, k]`.
    fn route(&self, x: Tensor<B, 2>, pinned: Option<Vec<usize>>) -> (Vec<usize>, Tensor<B, 2>) {
        let n = x.dims()[0];
        let logits = self.gate.forward(x);
        let scores = match self.routing.scoring {
            ScoringFunc::Sigmoid => sigmoid(logits),
            ScoringFunc::Softmax => softmax(logits, 1),
        };
        let chosen = match pinned {
            Some(chosen) => {
                let (k, e) = (self.routing.experts_per_token, self.experts.len());
                assert!(
                    chosen.len() == n * k && chosen.iter().all(|&c| c < e),
                    "pinned experts: {} entries, expected {n} tokens × {k} experts below {e}",
                    chosen.len()
                );
                chosen
            }
            None => {
                let host = host_f32(scores.clone().into_data());
                let bias = self.e_score_correction_bias.as_ref().map(|b| host_f32(b.val().into_data()));
                host.chunks_exact(self.experts.len()).flat_map(|row| self.routing.choose(row, bias.as_deref())).collect()
            }
        };
        let k = chosen.len() / n.max(1);
        let index: Vec<i64> = chosen.iter().map(|&e| e as i64).collect();
        let index = Tensor::<B, 2, Int>::from_data(TensorData::new(index, [n, k]), &scores.device());
        (chosen, self.routing.weights(scores.gather(1, index)))
    }
}

fn host_f32(data: TensorData) -> Vec<f32> {
    data.convert::<f32>().into_vec::<f32>().expect("float tensors convert to f32")
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::Distribution;

    type B = NdArray;

    fn routing(scoring: ScoringFunc, n_group: usize, topk_group: usize, normalize: bool) -> Routing {
        Routing { scoring, experts_per_token: 2, n_group, topk_group, normalize, scale: 1.5 }
    }

    fn assert_route(got: Vec<(usize, f32)>, want: &[(usize, f32)]) {
        assert_eq!(got.iter().map(|c| c.0).collect::<Vec<_>>(), want.iter().map(|c| c.0).collect::<Vec<_>>());
        for ((_, g), (_, w)) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "weight {g} != {w}");
        }
    }

    #[test]
    fn group_limits_and_weights() {
        let scores = [0.9, 0.1, 0.2, 0.3, 0.35, 0.05, 0.8, 0.0];
        // Without bias a group scores its best expert: groups {0..4}: 0.9, {4..8}: 0.8.
        let r = routing(ScoringFunc::Sigmoid, 2, 1, true);
        assert_route(r.route(&scores, None), &[(0, 1.5 * 0.9 / 1.2), (3, 1.5 * 0.3 / 1.2)]);
        // With bias, the sum of the two best biased scores: {0..4}: 0.9 + 0.3 = 1.2,
        // {4..8}: 0.8 + 0.45 = 1.25. Group 1 wins; its best biased scores are experts 6
        // (0.8) and 4 (0.45); the weights use the unbiased scores 0.8 and 0.35.
        let bias = [0.0, 0.0, 0.0, 0.0, 0.1, 0.0, 0.0, 0.0];
        assert_route(r.route(&scores, Some(&bias)), &[(6, 1.5 * 0.8 / 1.15), (4, 1.5 * 0.35 / 1.15)]);
        // Two groups kept: the best experts overall.
        let r = routing(ScoringFunc::Sigmoid, 2, 2, true);
        assert_route(r.route(&scores, None), &[(0, 1.5 * 0.9 / 1.7), (6, 1.5 * 0.8 / 1.7)]);
        // Without normalisation (softmax style) the scores are only scaled.
        let r = routing(ScoringFunc::Softmax, 1, 1, false);
        assert_route(r.route(&scores, None), &[(0, 1.5 * 0.9), (6, 1.5 * 0.8)]);
    }

    /// The batched execution equals routing and running every token on its own.
    #[test]
    fn batched_experts_equal_per_token_computation() {
        let dev = Default::default();
        let mut cfg = DeepSeekV32Config::tiny(64);
        cfg.hidden_size = 32;
        cfg.moe_intermediate_size = 16;
        let moe_cfg = MoeConfig::from_config(&cfg);
        let mut moe = moe_cfg.init::<B>(&dev);
        moe.e_score_correction_bias = Some(Param::from_tensor(Tensor::random([8], Distribution::Normal(0.0, 0.1), &dev)));
        let x = Tensor::<B, 3>::random([2, 7, 32], Distribution::Normal(0.0, 1.0), &dev);
        let got = moe.forward(x.clone());

        let rows = x.reshape([14, 32]);
        let scores = host_f32(sigmoid(moe.gate.forward(rows.clone())).into_data());
        let bias = host_f32(moe.e_score_correction_bias.as_ref().unwrap().val().into_data());
        let shared = moe.shared_experts.as_ref().expect("tiny has a shared expert");
        let mut want = Vec::new();
        for token in 0..14 {
            let xt = rows.clone().narrow(0, token, 1);
            let mut y = shared.forward(xt.clone());
            for (e, w) in moe_cfg.routing.route(&scores[token * 8..token * 8 + 8], Some(&bias)) {
                y = y + moe.experts[e].forward(xt.clone()).mul_scalar(w);
            }
            want.push(y);
        }
        let want = Tensor::cat(want, 0).reshape([2, 7, 32]);
        got.into_data().assert_approx_eq::<f32>(&want.into_data(), burn::tensor::Tolerance::rel_abs(1e-5, 1e-6));
    }

    /// The routed weights come from the gate's scores, so training reaches the gate.
    #[test]
    fn the_gate_gets_a_gradient() {
        type A = burn::backend::Autodiff<B>;
        let dev = Default::default();
        let mut cfg = DeepSeekV32Config::tiny(64);
        cfg.hidden_size = 16;
        cfg.moe_intermediate_size = 8;
        let moe = MoeConfig::from_config(&cfg).init::<A>(&dev);
        let x = Tensor::<A, 3>::random([1, 5, 16], Distribution::Normal(0.0, 1.0), &dev);
        let grads = moe.forward(x).powi_scalar(2).sum().backward();
        let grad = moe.gate.weight.grad(&grads).expect("the gate is trained");
        assert!(grad.abs().max().into_scalar() > 0.0);
    }
}
