//! DeepSeek-V3.2's mixture of experts: a router ([`Routing`]), routed experts ([`Experts`],
//! stored stacked and executed in batches: all tokens routed to an expert go through it in
//! one matmul), and shared experts.
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
use burn::tensor::{DType, IndexingUpdateOp, Int, Tensor};
use dsa_burn::{ops, DsaBackend};

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

    /// The experts of every token, `[N, k]` best first, chosen on the device from the gate
    /// `scores [N, E]` (after the scoring function) and the optional correction `bias [E]`
    /// (ties: the lower expert first). Nothing is read back to the host.
    ///
    /// ```
    /// # use burn::backend::NdArray;
    /// # use burn::tensor::Tensor;
    /// use dsa_model::config::ScoringFunc;
    /// use dsa_model::moe::Routing;
    /// let r = Routing { scoring: ScoringFunc::Sigmoid, experts_per_token: 2, n_group: 2,
    ///     topk_group: 1, normalize: true, scale: 2.0 };
    /// let dev = Default::default();
    /// let scores = Tensor::<NdArray, 2>::from_floats([[0.9, 0.0, 0.4, 0.5]], &dev);
    /// let bias = Tensor::<NdArray, 1>::from_floats([0.0, 0.0, 0.1, 0.1], &dev);
    /// // Groups {0,1} and {2,3}; the bias makes group 1 win (0.4+0.5 + 0.1+0.1 > 0.9+0.0).
    /// let chosen = r.choose(scores.clone(), Some(bias));
    /// assert_eq!(chosen.to_data().to_vec::<i64>().unwrap(), [3, 2]);
    /// // Weights: the unbiased scores 0.5 and 0.4, normalised, times 2.
    /// let w: Vec<f32> = r.weights(scores.gather(1, chosen)).to_data().to_vec().unwrap();
    /// assert!((w[0] - 2.0 * 0.5 / 0.9).abs() < 1e-6);
    /// ```
    pub fn choose<B: DsaBackend>(&self, scores: Tensor<B, 2>, bias: Option<Tensor<B, 1>>) -> Tensor<B, 2, Int> {
        let [n, e] = scores.dims();
        let device = scores.device();
        let biased = bias.is_some();
        let mut choice = match bias {
            Some(bias) => scores.clone() + bias.cast(scores.dtype()).unsqueeze::<2>(),
            None => scores,
        };
        if self.n_group > 1 {
            let (g, per, kept) = (self.n_group, e / self.n_group, self.topk_group);
            // A group scores the sum of its two best biased scores (its best without bias).
            let grouped = choice.clone().reshape([1, n * g, per]);
            let (best, _) = ops::topk_select(grouped.clone(), if biased { 2 } else { 1 }, None);
            let group_scores = grouped.gather(2, best).sum_dim(2).reshape([1, n, g]);
            let (groups, _) = ops::topk_select(group_scores, kept, None);
            let keep = Tensor::<B, 2, Int>::zeros([n, g], &device).scatter(
                1,
                groups.reshape([n, kept]),
                Tensor::ones([n, kept], &device),
                IndexingUpdateOp::Add,
            );
            let dropped = keep.equal_elem(0).unsqueeze_dim::<3>(2).expand([n, g, per]).reshape([n, e]);
            choice = choice.mask_fill(dropped, f32::NEG_INFINITY);
        }
        let (chosen, _) = ops::topk_select(choice.reshape([1, n, e]), self.experts_per_token, None);
        chosen.reshape([n, self.experts_per_token])
    }

    /// The weights of the chosen experts from their gate scores `[N, k]` (the tensor form of
    /// the routing's weights (`Moe::route`), differentiable with respect to the scores).
    pub fn weights<B: Backend>(&self, chosen_scores: Tensor<B, 2>) -> Tensor<B, 2> {
        let weights = match self.normalize {
            true => chosen_scores.clone() / chosen_scores.sum_dim(1),
            false => chosen_scores,
        };
        weights.mul_scalar(self.scale)
    }
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
        Moe {
            gate: LinearConfig::new(self.d_model, self.n_routed_experts).with_bias(false).init(device),
            e_score_correction_bias: self
                .correction_bias
                .then(|| Param::from_tensor(Tensor::zeros([self.n_routed_experts], device))),
            experts: Experts::init(self.n_routed_experts, self.d_model, self.expert_hidden, device),
            shared_experts: self.shared().map(|c| c.init(device)),
            routing: self.routing.clone(),
        }
    }
}

/// A mixture-of-experts feed-forward (HF names under `mlp`: `gate.weight`,
/// `gate.e_score_correction_bias`, `experts.<e>.*` (held stacked, see [`Experts`]),
/// `shared_experts.*`).
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
    pub experts: Experts<B>,
    /// The shared experts (applied to every token).
    pub shared_experts: Option<Mlp<B>>,
    #[module(skip)]
    routing: Routing,
}

impl<B: DsaBackend> Moe<B> {
    /// Applies the layer to every token of `x [B, T, d_model]`. The (token, expert) pairs are
    /// sorted by expert on the device and each expert's projections run as one grouped
    /// matrix product ([`ops::grouped_matmul`]); nothing is read back to the host. The
    /// choice of experts is discrete; their weights are taken from the gate's score tensor,
    /// so the gate learns.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.forward_pinned(x, None).0
    }

    /// [`Moe::forward`] with the experts of every token given instead of chosen (`pinned`:
    /// `[B · T, k]`, token-major, best first; `None`: the router chooses), and the experts
    /// that ran (`[B · T, k]`). Their weights still come from the gate's scores at those
    /// experts. Pinning fixes a discrete choice when comparing runs at different precisions,
    /// where a near-tie may go either way.
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
    /// chosen.into_data().assert_eq(&same.into_data(), true);
    /// y.into_data().assert_eq(&pinned.into_data(), true);
    /// ```
    pub fn forward_pinned(&self, x: Tensor<B, 3>, pinned: Option<Tensor<B, 2, Int>>) -> (Tensor<B, 3>, Tensor<B, 2, Int>) {
        let [b, t, d] = x.dims();
        let x = x.reshape([b * t, d]);
        let (chosen, weights) = self.route(x.clone(), pinned);
        let [n, k] = chosen.dims();
        let (order, position, offsets) = sort_by_expert(chosen.clone().reshape([n * k]), self.experts.count());
        // Each token's row once per slot (token-major), then sorted by expert and back: row
        // permutations whose gradients are gathers, not scattered atomic adds.
        let slots = x.clone().unsqueeze_dim::<3>(1).expand([n, k, d]).reshape([n * k, d]);
        let out = self.experts.forward(ops::permute_rows(slots, order.clone(), position.clone()), offsets);
        let out = ops::permute_rows(out, position, order).reshape([n, k, d]);
        // Weighted and summed in f32, as the reference does.
        let out = out.cast(DType::F32) * weights.reshape([n, k, 1]);
        let mut y = out.sum_dim(1).reshape([n, d]);
        if let Some(shared) = &self.shared_experts {
            y = y + shared.forward(x.clone()).cast(DType::F32);
        }
        let y = y.cast(x.dtype());
        (y.reshape([b, t, d]), chosen)
    }

    /// Routes the tokens `x [N, d_model]`: the experts chosen for each token (`[N, k]`,
    /// best first; the `pinned` ones where given) and their weights `[N, k]`.
    /// The gate runs in f32 whatever `x`'s dtype, as in DeepSeek's reference: at bf16 its
    /// scores would tie and flip choices.
    fn route(&self, x: Tensor<B, 2>, pinned: Option<Tensor<B, 2, Int>>) -> (Tensor<B, 2, Int>, Tensor<B, 2>) {
        let logits = x.cast(DType::F32).matmul(self.gate.weight.val().cast(DType::F32));
        let scores = match self.routing.scoring {
            ScoringFunc::Sigmoid => sigmoid(logits),
            ScoringFunc::Softmax => softmax(logits, 1),
        };
        let chosen = match pinned {
            Some(chosen) => {
                let (n, k) = (scores.dims()[0], self.routing.experts_per_token);
                assert_eq!(chosen.dims(), [n, k], "pinned experts: expected {n} tokens × {k} experts");
                chosen
            }
            None => self.routing.choose(scores.clone(), self.e_score_correction_bias.as_ref().map(|b| b.val())),
        };
        (chosen.clone(), self.routing.weights(scores.gather(1, chosen)))
    }
}

/// The routed experts of a [`Moe`] layer: each projection of every expert in one parameter,
/// the experts' Linear weights (`[in, out]`) stacked on dim 0, so that a forward uses them
/// as they are in [`ops::grouped_matmul`] and the optimizer sees three tensors per layer,
/// not three per expert. HuggingFace stores them per expert
/// (`experts.<e>.{gate,up,down}_proj.weight`); [`crate::hf::experts`] stacks them.
#[derive(Module, Debug)]
pub struct Experts<B: Backend> {
    /// Every expert's `W1`, `[E, d_model, hidden]`: the gated branch.
    pub gate_proj: Param<Tensor<B, 3>>,
    /// Every expert's `W3`, `[E, d_model, hidden]`: the linear branch.
    pub up_proj: Param<Tensor<B, 3>>,
    /// Every expert's `W2`, `[E, hidden, d_model]`.
    pub down_proj: Param<Tensor<B, 3>>,
}

impl<B: Backend> Experts<B> {
    /// `n` experts `d_model → hidden → d_model` with random weights (initialised lazily, on
    /// first use), each drawn as Burn's [`LinearConfig`] draws a Linear's.
    ///
    /// ```
    /// # use burn::backend::NdArray;
    /// use dsa_model::moe::Experts;
    /// let experts = Experts::<NdArray>::init(4, 8, 16, &Default::default());
    /// assert_eq!((experts.count(), experts.down_proj.val().dims()), (4, [4, 16, 8]));
    /// ```
    pub fn init(n: usize, d_model: usize, hidden: usize, device: &B::Device) -> Self {
        let weights = |d_in, d_out| LinearConfig::new(d_in, d_out).initializer.init_with([n, d_in, d_out], Some(d_in), Some(d_out), device);
        Self { gate_proj: weights(d_model, hidden), up_proj: weights(d_model, hidden), down_proj: weights(hidden, d_model) }
    }

    /// The number of experts (`E`).
    pub fn count(&self) -> usize {
        self.gate_proj.lazy_shape()[0]
    }
}

impl<B: DsaBackend> Experts<B> {
    /// Each expert's SwiGLU MLP (as [`Mlp::forward`]) on its rows of `x [S, d_model]`, which
    /// are sorted by expert: expert `e`'s are `offsets[e]..offsets[e + 1]` (`offsets
    /// [E + 1]`). Each projection of all experts is one [`ops::grouped_matmul`].
    pub fn forward(&self, x: Tensor<B, 2>, offsets: Tensor<B, 1, Int>) -> Tensor<B, 2> {
        let gate = ops::grouped_matmul(x.clone(), self.gate_proj.val(), offsets.clone());
        let up = ops::grouped_matmul(x, self.up_proj.val(), offsets.clone());
        ops::grouped_matmul(ops::swiglu(gate, up), self.down_proj.val(), offsets)
    }
}

/// A stable counting sort of the `S` (token, expert) slots by expert, on the device: the
/// slots in expert order `order [S]`, each slot's position in that order `position [S]`
/// (the inverse permutation) and each expert's first position, `offsets [E + 1]` (expert
/// `e`'s slots are `order[offsets[e]..offsets[e + 1]]`).
fn sort_by_expert<B: Backend>(experts: Tensor<B, 1, Int>, e: usize) -> (Tensor<B, 1, Int>, Tensor<B, 1, Int>, Tensor<B, 1, Int>) {
    let s = experts.dims()[0];
    let device = experts.device();
    let one_hot = experts
        .clone()
        .reshape([s, 1])
        .expand([s, e])
        .equal(Tensor::<B, 1, Int>::arange(0..e as i64, &device).reshape([1, e]).expand([s, e]))
        .int();
    let counts = one_hot.clone().sum_dim(0).reshape([e]);
    let offsets = Tensor::cat(vec![Tensor::zeros([1], &device), counts.cumsum(0)], 0);
    // A slot's rank among its expert's slots: its column of the running count, minus one.
    let rank = (running_count(one_hot.clone()) * one_hot).sum_dim(1).reshape([s]) - 1;
    let position = offsets.clone().select(0, experts) + rank;
    let order = Tensor::<B, 1, Int>::zeros([s], &device).scatter(
        0,
        position.clone(),
        Tensor::arange(0..s as i64, &device),
        IndexingUpdateOp::Add,
    );
    (order, position, offsets)
}

/// Rows of a running (inclusive) sum over the rows of `x [S, E]`, in two levels: within
/// blocks of [`SCAN_BLOCK`] rows, then over the blocks' totals. Burn's `cumsum` sums each
/// output's whole prefix (`O(S²·E)`: seconds at V3.2's 64K slots × 256 experts); this is
/// `O(S·E·SCAN_BLOCK + (S/SCAN_BLOCK)²·E)`.
fn running_count<B: Backend>(x: Tensor<B, 2, Int>) -> Tensor<B, 2, Int> {
    let [s, e] = x.dims();
    let blocks = s.div_ceil(SCAN_BLOCK).max(1);
    let padded = match blocks * SCAN_BLOCK - s {
        0 => x,
        pad => Tensor::cat(vec![x.clone(), Tensor::zeros([pad, e], &x.device())], 0),
    };
    let within = padded.reshape([blocks, SCAN_BLOCK, e]).cumsum(1);
    let totals = within.clone().narrow(1, SCAN_BLOCK - 1, 1);
    let before = totals.clone().cumsum(0) - totals;
    (within + before).reshape([blocks * SCAN_BLOCK, e]).narrow(0, 0, s)
}

/// Rows per block of [`running_count`]'s first level.
const SCAN_BLOCK: usize = 128;

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::{Distribution, TensorData};

    type B = NdArray;

    fn host_f32(data: TensorData) -> Vec<f32> {
        data.convert::<f32>().into_vec::<f32>().expect("float tensors convert to f32")
    }

    fn host_usize(t: Tensor<B, 2, Int>) -> Vec<usize> {
        t.into_data().convert::<i64>().into_vec::<i64>().unwrap().into_iter().map(|e| e as usize).collect()
    }

    /// Indices of the `k` largest values, largest first (ties: lower index first).
    fn best_indices(values: &[f32], k: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..values.len()).collect();
        order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
        order.truncate(k);
        order
    }

    /// The test's oracle: DeepSeek's `Gate.forward` for one token, written out on the host
    /// (the chosen experts, best first, with their weights).
    fn host_route(r: &Routing, scores: &[f32], bias: Option<&[f32]>) -> Vec<(usize, f32)> {
        let mut choice: Vec<f32> = match bias {
            Some(bias) => scores.iter().zip(bias).map(|(s, b)| s + b).collect(),
            None => scores.to_vec(),
        };
        if r.n_group > 1 {
            let per_group = choice.len() / r.n_group;
            let group_scores: Vec<f32> = choice
                .chunks(per_group)
                .map(|group| best_indices(group, if bias.is_some() { 2 } else { 1 }).iter().map(|&i| group[i]).sum())
                .collect();
            let kept = best_indices(&group_scores, r.topk_group);
            for (g, group) in choice.chunks_mut(per_group).enumerate() {
                if !kept.contains(&g) {
                    group.fill(f32::NEG_INFINITY);
                }
            }
        }
        let chosen = best_indices(&choice, r.experts_per_token);
        let mut weights: Vec<f32> = chosen.iter().map(|&e| scores[e]).collect();
        if r.normalize {
            let sum: f32 = weights.iter().sum();
            weights.iter_mut().for_each(|w| *w /= sum);
        }
        chosen.into_iter().zip(weights).map(|(e, w)| (e, w * r.scale as f32)).collect()
    }

    /// [`Routing::choose`] and [`Routing::weights`] for one token's scores.
    fn route(r: &Routing, scores: &[f32], bias: Option<&[f32]>) -> Vec<(usize, f32)> {
        let dev = Default::default();
        let s = Tensor::<B, 2>::from_data(TensorData::new(scores.to_vec(), [1, scores.len()]), &dev);
        let bias = bias.map(|b| Tensor::<B, 1>::from_data(TensorData::new(b.to_vec(), [b.len()]), &dev));
        let chosen = r.choose(s.clone(), bias);
        let weights = host_f32(r.weights(s.gather(1, chosen.clone())).into_data());
        host_usize(chosen).into_iter().zip(weights).collect()
    }

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
        assert_route(route(&r, &scores, None), &[(0, 1.5 * 0.9 / 1.2), (3, 1.5 * 0.3 / 1.2)]);
        // With bias, the sum of the two best biased scores: {0..4}: 0.9 + 0.3 = 1.2,
        // {4..8}: 0.8 + 0.45 = 1.25. Group 1 wins; its best biased scores are experts 6
        // (0.8) and 4 (0.45); the weights use the unbiased scores 0.8 and 0.35.
        let bias = [0.0, 0.0, 0.0, 0.0, 0.1, 0.0, 0.0, 0.0];
        assert_route(route(&r, &scores, Some(&bias)), &[(6, 1.5 * 0.8 / 1.15), (4, 1.5 * 0.35 / 1.15)]);
        // Two groups kept: the best experts overall.
        let r = routing(ScoringFunc::Sigmoid, 2, 2, true);
        assert_route(route(&r, &scores, None), &[(0, 1.5 * 0.9 / 1.7), (6, 1.5 * 0.8 / 1.7)]);
        // Without normalisation (softmax style) the scores are only scaled.
        let r = routing(ScoringFunc::Softmax, 1, 1, false);
        assert_route(route(&r, &scores, None), &[(0, 1.5 * 0.9), (6, 1.5 * 0.8)]);
        // Ties go to the lower expert.
        assert_route(route(&r, &[0.5, 0.7, 0.5, 0.7], None), &[(1, 1.5 * 0.7), (3, 1.5 * 0.7)]);
    }

    /// On many random tokens, with and without bias and group limits, the device routing
    /// chooses what the host oracle chooses.
    #[test]
    fn device_routing_equals_the_oracle() {
        let dev = Default::default();
        for (n_group, topk_group, biased) in [(1, 1, false), (4, 2, true), (4, 1, false), (2, 1, true)] {
            let r = Routing { scoring: ScoringFunc::Sigmoid, experts_per_token: 3, n_group, topk_group, normalize: true, scale: 2.5 };
            let scores = Tensor::<B, 2>::random([50, 16], Distribution::Uniform(0.0, 1.0), &dev);
            let bias = biased.then(|| Tensor::<B, 1>::random([16], Distribution::Normal(0.0, 0.1), &dev));
            let got = host_usize(r.choose(scores.clone(), bias.clone()));
            let (scores, bias) = (host_f32(scores.into_data()), bias.map(|b| host_f32(b.into_data())));
            let want: Vec<usize> = scores
                .chunks(16)
                .flat_map(|row| host_route(&r, row, bias.as_deref()).into_iter().map(|c| c.0))
                .collect();
            assert_eq!(got, want, "groups {n_group} keep {topk_group} bias {biased}");
        }
    }

    /// The counting sort orders the slots by expert, keeps each expert's slots in their
    /// original order, and its offsets delimit the experts (also empty ones).
    #[test]
    fn slots_sort_by_expert() {
        let experts = [3i64, 0, 3, 1, 0, 3, 5, 1];
        let (order, _, offsets) = sort_by_expert(Tensor::<B, 1, Int>::from_data(TensorData::new(experts.to_vec(), [8]), &Default::default()), 6);
        assert_eq!(order.into_data().convert::<i64>().to_vec::<i64>().unwrap(), [1, 4, 3, 7, 0, 2, 5, 6]);
        assert_eq!(offsets.into_data().convert::<i64>().to_vec::<i64>().unwrap(), [0, 2, 4, 4, 7, 7, 8]);
    }

    /// On many slots (several scan blocks, a partial last one) the sort is the host's stable
    /// sort by expert.
    #[test]
    fn many_slots_sort_as_a_stable_sort() {
        let dev = Default::default();
        let (s, e) = (1000, 37);
        let experts = Tensor::<B, 1>::random([s], Distribution::Uniform(0.0, e as f64), &dev).int().clamp(0, e as i64 - 1);
        let host: Vec<i64> = experts.to_data().convert::<i64>().to_vec::<i64>().unwrap();
        let (order, position, offsets) = sort_by_expert(experts, e);
        let mut want: Vec<i64> = (0..s as i64).collect();
        want.sort_by_key(|&i| host[i as usize]);
        assert_eq!(order.into_data().convert::<i64>().to_vec::<i64>().unwrap(), want);
        // `position` is the inverse permutation.
        let position = position.into_data().convert::<i64>().to_vec::<i64>().unwrap();
        assert!(position.iter().enumerate().all(|(slot, &p)| want[p as usize] == slot as i64));
        let mut bounds = vec![0i64];
        for x in 0..e as i64 {
            bounds.push(bounds[x as usize] + host.iter().filter(|&&h| h == x).count() as i64);
        }
        assert_eq!(offsets.into_data().convert::<i64>().to_vec::<i64>().unwrap(), bounds);
    }

    /// Expert `e` of `experts` as an [`Mlp`] of its own.
    fn expert(experts: &Experts<B>, e: usize) -> Mlp<B> {
        let linear = |w: &Param<Tensor<B, 3>>| {
            let [_, d_in, d_out] = w.val().dims();
            Linear { weight: Param::from_tensor(w.val().narrow(0, e, 1).reshape([d_in, d_out])), bias: None }
        };
        Mlp { gate_proj: linear(&experts.gate_proj), up_proj: linear(&experts.up_proj), down_proj: linear(&experts.down_proj) }
    }

    /// The grouped execution equals routing (by the oracle) and running every token on its own.
    #[test]
    fn grouped_experts_equal_per_token_computation() {
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
            for (e, w) in host_route(&moe_cfg.routing, &scores[token * 8..token * 8 + 8], Some(&bias)) {
                y = y + expert(&moe.experts, e).forward(xt.clone()).mul_scalar(w);
            }
            want.push(y);
        }
        let want = Tensor::cat(want, 0).reshape([2, 7, 32]);
        got.into_data().assert_approx_eq::<f32>(&want.into_data(), burn::tensor::Tolerance::rel_abs(1e-5, 1e-6));
    }

    /// The routed weights come from the gate's scores, so training reaches the gate; the
    /// experts' weights get their gradients through the grouped products.
    #[test]
    fn the_gate_and_the_experts_get_gradients() {
        type A = burn::backend::Autodiff<B>;
        let dev = Default::default();
        let mut cfg = DeepSeekV32Config::tiny(64);
        cfg.hidden_size = 16;
        cfg.moe_intermediate_size = 8;
        let moe = MoeConfig::from_config(&cfg).init::<A>(&dev);
        let x = Tensor::<A, 3>::random([1, 5, 16], Distribution::Normal(0.0, 1.0), &dev);
        let (y, chosen) = moe.forward_pinned(x, None);
        let grads = y.powi_scalar(2).sum().backward();
        let grad = moe.gate.weight.grad(&grads).expect("the gate is trained");
        assert!(grad.abs().max().into_scalar() > 0.0);
        let used = chosen.into_data().convert::<i64>().to_vec::<i64>().unwrap()[0] as usize;
        let grad = moe.experts.down_proj.grad(&grads).expect("the experts are trained");
        assert!(grad.narrow(0, used, 1).abs().max().into_scalar() > 0.0, "a chosen expert is trained");
    }
}
