//! [`DsaBackend`] for Burn's [`Autodiff`] backend: every operation runs the inner backend's
//! forward, and the differentiable ones record a custom backward step that calls the inner
//! backend's backward operation (the kernels on CubeCL, the reference elsewhere).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::Autodiff;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::{BoolTensor, FloatTensor, IntTensor};

use crate::quant::IndexerQuant;
use crate::reference::adamw::AdamWStep;
use crate::DsaBackend;

/// Autodiff: the indexer scores are the reference operations differentiated by Burn's
/// autodiff; top-k and the attention probabilities (no gradient) run on the inner backend;
/// sparse MLA, the indexer's selected scores and the grouped product run the inner
/// backend's forward, and their backward steps are [`DsaBackend::sparse_mla_backward`],
/// [`DsaBackend::indexer_selected_scores_backward`] and [`DsaBackend::grouped_matmul`] /
/// [`DsaBackend::grouped_matmul_weight_grad`] of the inner backend (the kernels on CubeCL,
/// the reference elsewhere); the projections' product and its gradients are
/// [`DsaBackend::linear_matmul`] of the inner backend.
impl<B: DsaBackend, C: CheckpointStrategy> DsaBackend for Autodiff<B, C> {
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        swiglu::swiglu::<B, C>(gate, up)
    }

    fn rope(x: FloatTensor<Self>, freqs: FloatTensor<Self>, start: usize, interleaved: bool, inverse: bool) -> FloatTensor<Self> {
        rope::rope::<B, C>(x, freqs, start, interleaved, inverse)
    }

    fn rms_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self> {
        norm::rms_norm::<B, C>(x, gamma, epsilon)
    }

    fn fused_sparse_mla() -> bool {
        B::fused_sparse_mla()
    }

    fn topk_select(scores: FloatTensor<Self>, k: usize, causal_offset: Option<usize>) -> (IntTensor<Self>, BoolTensor<Self>) {
        B::topk_select(scores.primitive, k, causal_offset)
    }

    fn sparse_mla(q: FloatTensor<Self>, kv: FloatTensor<Self>, indices: IntTensor<Self>, valid: BoolTensor<Self>, d_v: usize, scale: f32) -> (FloatTensor<Self>, FloatTensor<Self>) {
        mla::sparse_mla::<B, C>(q, kv, indices, valid, d_v, scale)
    }

    fn indexer_selected_scores(q: FloatTensor<Self>, w: FloatTensor<Self>, k: FloatTensor<Self>, quant: IndexerQuant, indices: IntTensor<Self>,
        valid: BoolTensor<Self>) -> FloatTensor<Self> {
        indexer::selected_scores::<B, C>(q, w, k, quant, indices, valid)
    }

    fn sparse_mla_probs(q: FloatTensor<Self>, kv: FloatTensor<Self>, indices: IntTensor<Self>, valid: BoolTensor<Self>, lse: FloatTensor<Self>,
        scale: f32) -> FloatTensor<Self> {
        let p = B::sparse_mla_probs(q.primitive, kv.primitive, indices, valid, lse.primitive, scale);
        <Self as AutodiffBackend>::from_inner(p)
    }

    fn grouped_matmul(x: FloatTensor<Self>, w: FloatTensor<Self>, offsets: IntTensor<Self>) -> FloatTensor<Self> {
        grouped::grouped_matmul::<B, C>(x, w, offsets)
    }

    /// The inner backend's step on the untracked values (an optimizer step is not
    /// differentiated).
    fn adamw_step(param: FloatTensor<Self>, grad: FloatTensor<Self>, moment_1: FloatTensor<Self>, moment_2: FloatTensor<Self>,
        norm: Option<FloatTensor<Self>>, step: AdamWStep) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (p, m, v) = B::adamw_step(param.primitive, grad.primitive, moment_1.primitive, moment_2.primitive, norm.map(|n| n.primitive), step);
        let lift = <Self as AutodiffBackend>::from_inner;
        (lift(p), lift(m), lift(v))
    }

    fn dense_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, causal_offset: usize, scale: f32) -> (FloatTensor<Self>, FloatTensor<Self>) {
        dense::dense_attention::<B, C>(q, k, v, causal_offset, scale)
    }

    fn permute_rows(x: FloatTensor<Self>, perm: IntTensor<Self>, inverse: IntTensor<Self>) -> FloatTensor<Self> {
        permute::permute_rows::<B, C>(x, perm, inverse)
    }

    fn linear_matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        linear::linear_matmul::<B, C>(lhs, rhs)
    }
}

/// The backward step of an operation whose input gradients all come from one call:
/// `gradients(grad, state)` gives one gradient per parent (in the parents' order) from the
/// output gradient and the saved state, each registered where that parent is tracked.
fn register_all<B: DsaBackend, S, const N: usize>(ops: Ops<S, N>, grads: &mut Gradients, gradients: impl FnOnce(FloatTensor<B>, S) -> [FloatTensor<B>; N]) {
    let grad = grads.consume::<B>(&ops.node);
    for (node, g) in ops.parents.into_iter().zip(gradients(grad, ops.state)) {
        if let Some(node) = node {
            grads.register::<B>(node.id, g);
        }
    }
}

/// The backward step of [`DsaBackend::linear_matmul`] under [`Autodiff`]: `d(lhs) = grad ·
/// rhsᵀ` and `d(rhs) = lhsᵀ · grad` through the inner backend's `linear_matmul`, the
/// transposes as views (no copy), each only if its input is tracked. As Burn's matmul, it
/// checkpoints the operands it needs (`rhs` for `d(lhs)`, `lhs` for `d(rhs)`).
mod linear {
    use super::*;

    #[derive(Debug)]
    pub(super) struct LinearMatmulBackward;

    impl<B: DsaBackend> Backward<B, 2> for LinearMatmulBackward {
        type State = (Option<NodeId>, Option<NodeId>);

        fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
            let [node_lhs, node_rhs] = ops.parents;
            let grad = grads.consume::<B>(&ops.node);
            let (lhs, rhs) = ops.state;
            let lhs = lhs.map(|id| checkpointer.retrieve_node_output::<FloatTensor<B>>(id));
            let rhs = rhs.map(|id| checkpointer.retrieve_node_output::<FloatTensor<B>>(id));
            if let (Some(node), Some(rhs)) = (node_lhs, rhs) {
                grads.register::<B>(node.id, B::linear_matmul(grad.clone(), B::float_swap_dims(rhs, 0, 1)));
            }
            if let (Some(node), Some(lhs)) = (node_rhs, lhs) {
                grads.register::<B>(node.id, B::linear_matmul(B::float_swap_dims(lhs, 0, 1), grad));
            }
        }
    }

    pub(super) fn linear_matmul<B: DsaBackend, C: CheckpointStrategy>(lhs: FloatTensor<Autodiff<B, C>>, rhs: FloatTensor<Autodiff<B, C>>) -> FloatTensor<Autodiff<B, C>> {
        let (lhs_tracked, rhs_tracked) = (lhs.is_tracked(), rhs.is_tracked());
        match LinearMatmulBackward.prepare::<C>([lhs.node.clone(), rhs.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let lhs_state = rhs_tracked.then(|| prep.checkpoint(&lhs));
                let rhs_state = lhs_tracked.then(|| prep.checkpoint(&rhs));
                prep.finish((lhs_state, rhs_state), B::linear_matmul(lhs.primitive, rhs.primitive))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::linear_matmul(lhs.primitive, rhs.primitive)),
        }
    }
}

/// The backward step of [`DsaBackend::permute_rows`] under [`Autodiff`]: the gradient's
/// rows gathered with the inverse permutation.
mod permute {
    use super::*;

    #[derive(Debug)]
    pub(super) struct PermuteRowsBackward;

    impl<B: DsaBackend> Backward<B, 1> for PermuteRowsBackward {
        type State = IntTensor<B>;

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            register_all::<B, _, 1>(ops, grads, |grad, inverse| [B::float_select(grad, 0, inverse)]);
        }
    }

    pub(super) fn permute_rows<B: DsaBackend, C: CheckpointStrategy>(x: FloatTensor<Autodiff<B, C>>, perm: IntTensor<Autodiff<B, C>>,
        inverse: IntTensor<Autodiff<B, C>>) -> FloatTensor<Autodiff<B, C>> {
        let y = B::permute_rows(x.primitive.clone(), perm, inverse.clone());
        match PermuteRowsBackward.prepare::<C>([x.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(inverse, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}

/// The backward step of [`DsaBackend::swiglu`] under [`Autodiff`]:
/// [`DsaBackend::swiglu_backward`] of the inner backend from the saved inputs.
mod swiglu {
    use super::*;

    #[derive(Debug)]
    pub(super) struct SwigluBackward;

    impl<B: DsaBackend> Backward<B, 2> for SwigluBackward {
        type State = [FloatTensor<B>; 2];

        fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            register_all::<B, _, 2>(ops, grads, |dy, [gate, up]| B::swiglu_backward(gate, up, dy).into());
        }
    }

    pub(super) fn swiglu<B: DsaBackend, C: CheckpointStrategy>(gate: FloatTensor<Autodiff<B, C>>, up: FloatTensor<Autodiff<B, C>>) -> FloatTensor<Autodiff<B, C>> {
        let y = B::swiglu(gate.primitive.clone(), up.primitive.clone());
        match SwigluBackward.prepare::<C>([gate.node.clone(), up.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish([gate.primitive, up.primitive], y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}

/// The backward step of [`DsaBackend::rope`] under [`Autodiff`]: the inverse rotation of
/// the gradient (the frequencies are constants).
mod rope {
    use super::*;

    #[derive(Debug)]
    pub(super) struct RopeBackward {
        start: usize,
        interleaved: bool,
        inverse: bool,
    }

    impl<B: DsaBackend> Backward<B, 1> for RopeBackward {
        type State = FloatTensor<B>;

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            register_all::<B, _, 1>(ops, grads, |grad, freqs| [B::rope(grad, freqs, self.start, self.interleaved, !self.inverse)]);
        }
    }

    pub(super) fn rope<B: DsaBackend, C: CheckpointStrategy>(x: FloatTensor<Autodiff<B, C>>, freqs: FloatTensor<Autodiff<B, C>>, start: usize,
        interleaved: bool, inverse: bool) -> FloatTensor<Autodiff<B, C>> {
        let y = B::rope(x.primitive.clone(), freqs.primitive.clone(), start, interleaved, inverse);
        match (RopeBackward { start, interleaved, inverse }).prepare::<C>([x.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(freqs.primitive, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}

/// The backward step of [`DsaBackend::rms_norm`] under [`Autodiff`]:
/// [`DsaBackend::rms_norm_backward`] of the inner backend from the saved input and scale.
mod norm {
    use super::*;

    #[derive(Debug)]
    pub(super) struct RmsNormBackward {
        epsilon: f64,
    }

    impl<B: DsaBackend> Backward<B, 2> for RmsNormBackward {
        type State = [FloatTensor<B>; 2];

        fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            register_all::<B, _, 2>(ops, grads, |dy, [x, gamma]| B::rms_norm_backward(x, gamma, dy, self.epsilon).into());
        }
    }

    pub(super) fn rms_norm<B: DsaBackend, C: CheckpointStrategy>(x: FloatTensor<Autodiff<B, C>>, gamma: FloatTensor<Autodiff<B, C>>, epsilon: f64) -> FloatTensor<Autodiff<B, C>> {
        let y = B::rms_norm(x.primitive.clone(), gamma.primitive.clone(), epsilon);
        match (RmsNormBackward { epsilon }).prepare::<C>([x.node.clone(), gamma.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish([x.primitive, gamma.primitive], y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}

/// Two float primitives of [`Autodiff`] (an output and its log-sum-exp).
type AutodiffPair<B, C> = (FloatTensor<Autodiff<B, C>>, FloatTensor<Autodiff<B, C>>);

/// The custom backward step of dense attention under [`Autodiff`]:
/// [`DsaBackend::dense_attention_backward`] of the inner backend from the saved inputs,
/// output and log-sum-exp. The log-sum-exp is returned untracked (a target, no gradient).
mod dense {
    use super::*;

    #[derive(Debug)]
    pub(super) struct DenseAttentionBackward {
        causal_offset: usize,
        scale: f32,
    }

    impl<B: DsaBackend> Backward<B, 3> for DenseAttentionBackward {
        type State = [FloatTensor<B>; 5];

        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            register_all::<B, _, 3>(ops, grads, |d_out, [q, k, v, out, lse]| {
                B::dense_attention_backward(q, k, v, out, lse, d_out, self.causal_offset, self.scale).into()
            });
        }
    }

    pub(super) fn dense_attention<B: DsaBackend, C: CheckpointStrategy>(q: FloatTensor<Autodiff<B, C>>, k: FloatTensor<Autodiff<B, C>>,
        v: FloatTensor<Autodiff<B, C>>, causal_offset: usize, scale: f32) -> AutodiffPair<B, C> {
        let (out, lse) = B::dense_attention(q.primitive.clone(), k.primitive.clone(), v.primitive.clone(), causal_offset, scale);
        let node = DenseAttentionBackward { causal_offset, scale };
        let out = match node.prepare::<C>([q.node.clone(), k.node.clone(), v.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish([q.primitive, k.primitive, v.primitive, out.clone(), lse.clone()], out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        };
        (out, <Autodiff<B, C> as AutodiffBackend>::from_inner(lse))
    }
}

/// The custom backward step of the indexer's selected scores under [`Autodiff`]:
/// [`DsaBackend::indexer_selected_scores_backward`] of the inner backend.
mod indexer {
    use super::*;

    #[derive(Debug)]
    pub(super) struct SelectedScoresBackward;

    impl<B: DsaBackend> Backward<B, 3> for SelectedScoresBackward {
        type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, IndexerQuant, IntTensor<B>, BoolTensor<B>);

        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            register_all::<B, _, 3>(ops, grads, |grad, (q, w, k, quant, indices, valid)| {
                B::indexer_selected_scores_backward(q, w, k, quant, indices, valid, grad).into()
            });
        }
    }

    pub(super) fn selected_scores<B: DsaBackend, C: CheckpointStrategy>(q: FloatTensor<Autodiff<B, C>>, w: FloatTensor<Autodiff<B, C>>,
        k: FloatTensor<Autodiff<B, C>>, quant: IndexerQuant, indices: IntTensor<Autodiff<B, C>>, valid: BoolTensor<Autodiff<B, C>>) -> FloatTensor<Autodiff<B, C>> {
        let out = B::indexer_selected_scores(q.primitive.clone(), w.primitive.clone(), k.primitive.clone(), quant, indices.clone(), valid.clone());
        match SelectedScoresBackward
            .prepare::<C>([q.node.clone(), w.node.clone(), k.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((q.primitive, w.primitive, k.primitive, quant, indices, valid), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }
}

/// The custom backward step of the grouped product under [`Autodiff`]: `dx` is the grouped
/// product of `dy` with every group's `wᵀ`, `dw` is [`DsaBackend::grouped_matmul_weight_grad`],
/// each computed only if its input is tracked.
mod grouped {
    use super::*;

    #[derive(Debug)]
    pub(super) struct GroupedMatmulBackward;

    impl<B: DsaBackend> Backward<B, 2> for GroupedMatmulBackward {
        type State = (FloatTensor<B>, FloatTensor<B>, IntTensor<B>);

        fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            let [node_x, node_w] = ops.parents;
            let dy = grads.consume::<B>(&ops.node);
            let (x, w, offsets) = ops.state;
            if let Some(node) = node_x {
                let dx = B::grouped_matmul(dy.clone(), B::float_swap_dims(w, 1, 2), offsets.clone());
                grads.register::<B>(node.id, dx);
            }
            if let Some(node) = node_w {
                grads.register::<B>(node.id, B::grouped_matmul_weight_grad(x, dy, offsets));
            }
        }
    }

    pub(super) fn grouped_matmul<B: DsaBackend, C: CheckpointStrategy>(x: FloatTensor<Autodiff<B, C>>, w: FloatTensor<Autodiff<B, C>>,
        offsets: IntTensor<Autodiff<B, C>>) -> FloatTensor<Autodiff<B, C>> {
        let y = B::grouped_matmul(x.primitive.clone(), w.primitive.clone(), offsets.clone());
        match GroupedMatmulBackward.prepare::<C>([x.node.clone(), w.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((x.primitive, w.primitive, offsets), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}

/// The custom backward steps of sparse MLA under [`Autodiff`]: one node for the output and
/// one for the log-sum-exp, both children of `q` and `kv`, so that each runs only when its
/// output is part of the differentiated graph (their gradients add up in `q` and `kv`).
mod mla {
    use super::*;

    /// Everything the backward needs: inputs and the forward's outputs (inner primitives).
    #[derive(Debug, Clone)]
    pub(super) struct State<B: DsaBackend> {
        q: FloatTensor<B>,
        kv: FloatTensor<B>,
        indices: IntTensor<B>,
        valid: BoolTensor<B>,
        out: FloatTensor<B>,
        lse: FloatTensor<B>,
        d_v: usize,
        scale: f32,
    }

    /// Which forward output a node stands for.
    #[derive(Debug)]
    pub(super) struct SparseMlaBackward {
        lse: bool,
    }

    impl<B: DsaBackend> Backward<B, 2> for SparseMlaBackward {
        type State = State<B>;

        fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            register_all::<B, _, 2>(ops, grads, |grad, st| {
                let (d_out, d_lse) = if self.lse { (None, Some(grad)) } else { (Some(grad), None) };
                B::sparse_mla_backward(st.q, st.kv, st.indices, st.valid, st.out, st.lse, d_out, d_lse, st.d_v, st.scale).into()
            });
        }
    }

    pub(super) fn sparse_mla<B: DsaBackend, C: CheckpointStrategy>(q: FloatTensor<Autodiff<B, C>>, kv: FloatTensor<Autodiff<B, C>>,
        indices: IntTensor<Autodiff<B, C>>, valid: BoolTensor<Autodiff<B, C>>, d_v: usize, scale: f32) -> AutodiffPair<B, C> {
        let (out, lse) = B::sparse_mla(q.primitive.clone(), kv.primitive.clone(), indices.clone(), valid.clone(), d_v, scale);
        let state = State::<B> { q: q.primitive.clone(), kv: kv.primitive.clone(), indices, valid, out: out.clone(), lse: lse.clone(), d_v, scale };
        let wrap = |is_lse: bool, value: FloatTensor<B>| match (SparseMlaBackward { lse: is_lse })
            .prepare::<C>([q.node.clone(), kv.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(state.clone(), value),
            OpsKind::UnTracked(prep) => prep.finish(value),
        };
        let out = wrap(false, out);
        let lse = wrap(true, lse);
        (out, lse)
    }
}
