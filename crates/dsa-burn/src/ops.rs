//! The three operations of DeepSeek Sparse Attention: the [`DsaBackend`] extension trait
//! and typed wrappers over [`Tensor`].
//!
//! Every trait method has a default body built from Burn tensor operations (the *reference*
//! implementation, see [`crate::reference`]), so any Burn backend gets a correct DSA, and
//! autodiff through [`Autodiff`] (whose implementation is in `crate::autodiff`). Backends
//! with fast kernels override the methods; the reference stays the oracle they are tested
//! against.

#[cfg(doc)]
use burn::backend::Autodiff;
use burn::nn::Linear;
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::ops::{BoolTensor, FloatTensor, IntTensor};
use burn::tensor::{Bool, Int, Shape, Tensor, TensorMetadata, TensorPrimitive};

use crate::quant::IndexerQuant;
use crate::reference;
use crate::reference::adamw::AdamWStep;

/// A Burn backend that can run DeepSeek Sparse Attention.
///
/// Shapes use `B` batch, `T` query tokens, `S` key tokens, `H` heads, `K` selected tokens.
pub trait DsaBackend: Backend {
    /// Lightning-indexer scores `I[b,t,s] = Σ_j w[b,t,j] · ReLU(q̂[b,t,j] · k̂[b,s])`, f32
    /// `[B, T, S]`, where `q̂`, `k̂` are `q [B,T,H_I,D]` and `k [B,S,D]` after the FP8
    /// quantisation `quant` (dequantised). With `causal_offset = Some(o)`, entries with
    /// `s > t + o` are `-inf`; with `None` nothing is masked.
    fn indexer_scores(q: FloatTensor<Self>, w: FloatTensor<Self>, k: FloatTensor<Self>, quant: IndexerQuant, causal_offset: Option<usize>) -> FloatTensor<Self> {
        let out = reference::indexer::reference_scores(float::<Self, 4>(q), float::<Self, 3>(w), float::<Self, 3>(k), quant, causal_offset);
        out.into_primitive().tensor()
    }

    /// The `min(k, S)` best keys of every score row `[B, T, S]`: indices `[B, T, min(k,S)]`
    /// sorted by decreasing score (ties: lower index first) and a validity mask. Keys with
    /// `s > t + causal_offset` are never selected; a row with fewer candidates than slots
    /// fills the rest with index 0 marked invalid.
    fn topk_select(scores: FloatTensor<Self>, k: usize, causal_offset: Option<usize>) -> (IntTensor<Self>, BoolTensor<Self>) {
        let (indices, valid) = reference::topk::reference_topk(float::<Self, 3>(scores), k, causal_offset);
        (indices.into_primitive(), valid.into_primitive())
    }

    /// Sparse MLA in MQA mode: every head of query `q [B,T,H,Dqk]` attends to the selected
    /// rows `indices [B,T,K]` (where `valid`) of the shared latent `kv [B,S,Dqk]`, whose
    /// first `d_v` dims are the values. Returns the output `[B,T,H,d_v]` and the
    /// log-sum-exp of the scaled scores `[B,T,H]` (`-inf` for rows with nothing valid,
    /// whose output is 0).
    fn sparse_mla(q: FloatTensor<Self>, kv: FloatTensor<Self>, indices: IntTensor<Self>, valid: BoolTensor<Self>, d_v: usize, scale: f32) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (out, lse) = reference::sparse_mla::reference_sparse_mla(float::<Self, 4>(q), float::<Self, 3>(kv),
            Tensor::<Self, 3, Int>::from_primitive(indices), Tensor::<Self, 3, Bool>::from_primitive(valid), d_v, scale);
        (out.into_primitive().tensor(), lse.into_primitive().tensor())
    }

    /// The indexer's scores at each query's selected keys, `[B, T, K]`:
    /// `I[b,t,j] = Σ_h w[b,t,h] · ReLU(q̂[b,t,h] · k̂[b, indices[b,t,j]])` with the
    /// quantisation of [`DsaBackend::indexer_scores`], `-inf` where not `valid`. The sparse
    /// stage's indexer loss needs only these, never the `[B, T, S]` scores.
    fn indexer_selected_scores(q: FloatTensor<Self>, w: FloatTensor<Self>, k: FloatTensor<Self>, quant: IndexerQuant, indices: IntTensor<Self>,
        valid: BoolTensor<Self>) -> FloatTensor<Self> {
        let out = reference::indexer_loss::reference_selected_scores(float::<Self, 4>(q), float::<Self, 3>(w), float::<Self, 3>(k), quant,
            Tensor::from_primitive(indices), Tensor::from_primitive(valid));
        out.into_primitive().tensor()
    }

    /// Gradients `(dq [B,T,H,D], dw [B,T,H], dk [B,S,D])` of
    /// [`DsaBackend::indexer_selected_scores`] given `grad [B,T,K]` (ignored where not
    /// valid), straight through the quantisation: with `c = grad · w · 1[q̂·k̂ > 0]`,
    /// `dq = Σ_j c · k̂_j`, `dw = Σ_j grad · ReLU(q̂·k̂_j)`, and each selected key gets
    /// `Σ_h c · q̂` summed over every query and slot that selects it.
    #[allow(clippy::too_many_arguments)]
    fn indexer_selected_scores_backward(q: FloatTensor<Self>, w: FloatTensor<Self>, k: FloatTensor<Self>, quant: IndexerQuant,
        indices: IntTensor<Self>, valid: BoolTensor<Self>, grad: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (dq, dw, dk) = reference::indexer_loss::reference_selected_scores_backward(float::<Self, 4>(q), float::<Self, 3>(w), float::<Self, 3>(k),
            quant, Tensor::from_primitive(indices), Tensor::from_primitive(valid), float::<Self, 3>(grad));
        (dq.into_primitive().tensor(), dw.into_primitive().tensor(), dk.into_primitive().tensor())
    }

    /// Sparse MLA's attention probabilities at the selected rows, averaged over heads:
    /// `[B, T, K]`, `(1/H) Σ_h exp(scale · q[h] · kv[indices] − lse[h])` from the
    /// log-sum-exp [`DsaBackend::sparse_mla`] returned, 0 where not `valid`. A target: no
    /// gradient flows through it.
    fn sparse_mla_probs(q: FloatTensor<Self>, kv: FloatTensor<Self>, indices: IntTensor<Self>, valid: BoolTensor<Self>, lse: FloatTensor<Self>,
        scale: f32) -> FloatTensor<Self> {
        let p = reference::indexer_loss::reference_sparse_mla_probs(float::<Self, 4>(q), float::<Self, 3>(kv), Tensor::from_primitive(indices),
            Tensor::from_primitive(valid), float::<Self, 3>(lse), scale);
        p.into_primitive().tensor()
    }

    /// Whether [`DsaBackend::sparse_mla`] and its backward are fused kernels that keep no
    /// per-slot intermediates (the CubeCL backends). [`dense_mla`] (dense attention of
    /// single decode queries in the MQA form) then runs as sparse MLA over every causal key
    /// instead of materialising `T·H·S` probabilities.
    fn fused_sparse_mla() -> bool {
        false
    }

    /// Gradients `(dq [B,T,H,Dqk], dkv [B,S,Dqk])` of [`DsaBackend::sparse_mla`] from the
    /// saved forward `out` and `lse`, given the output gradient `d_out [B,T,H,d_v]` and/or
    /// the log-sum-exp gradient `d_lse [B,T,H]` (`None` counts as zero). With
    /// `p = exp(scale·q·kvᵀ − lse)` over the valid slots and `δ = Σ d_out·out`:
    /// `ds = p·(d_out·vᵀ − δ + d_lse)`, `dq = scale·ds·kv`, and every selected row gets
    /// `scale·dsᵀ·q` plus `pᵀ·d_out` on its first `d_v` dims, summed over all the slots and
    /// queries that select it. Used by the [`Autodiff`] backward of `sparse_mla`.
    #[allow(clippy::too_many_arguments)]
    fn sparse_mla_backward(q: FloatTensor<Self>, kv: FloatTensor<Self>, indices: IntTensor<Self>, valid: BoolTensor<Self>, out: FloatTensor<Self>,
        lse: FloatTensor<Self>, d_out: Option<FloatTensor<Self>>, d_lse: Option<FloatTensor<Self>>, d_v: usize, scale: f32) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (dq, dkv) = reference::sparse_mla::reference_sparse_mla_backward(float::<Self, 4>(q), float::<Self, 3>(kv),
            Tensor::<Self, 3, Int>::from_primitive(indices), Tensor::<Self, 3, Bool>::from_primitive(valid), float::<Self, 4>(out),
            float::<Self, 3>(lse), d_out.map(float::<Self, 4>), d_lse.map(float::<Self, 3>), d_v, scale);
        (dq.into_primitive().tensor(), dkv.into_primitive().tensor())
    }

    /// Dense causal attention in MHA form: every head of `q [B,H,T,Dqk]` (query `t` at
    /// position `t + causal_offset`) attends to the keys `s ≤ t + causal_offset` of
    /// `k [B,H,S,Dqk]`, values `v [B,H,S,Dv]`. Returns the output `[B,H,T,Dv]` and the
    /// log-sum-exp of the scaled scores `[B,H,T]` (f32). The dense baseline's and the
    /// indexer warm-up's attention (see [`crate::reference::dense_attention`]: blockwise, no
    /// `T × S` tensor per head is kept).
    fn dense_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, causal_offset: usize, scale: f32) -> (FloatTensor<Self>, FloatTensor<Self>) {
        reference::dense_attention::reference_primitive::<Self>(q, k, v, causal_offset, scale)
    }

    /// Gradients `(dq, dk, dv)` of [`DsaBackend::dense_attention`] from its saved `out` and
    /// `lse` and the output gradient `d_out [B,H,T,Dv]`, recomputing the probabilities
    /// blockwise. Used by the [`Autodiff`] backward of `dense_attention`.
    #[allow(clippy::too_many_arguments)]
    fn dense_attention_backward(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, out: FloatTensor<Self>, lse: FloatTensor<Self>,
        d_out: FloatTensor<Self>, causal_offset: usize, scale: f32) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        reference::dense_attention::reference_backward_primitive::<Self>([q, k, v, out, lse, d_out], causal_offset, scale)
    }

    /// Rows of `x [N, D]` reordered by the permutation `perm [N]` (`y[i] = x[perm[i]]`),
    /// whose inverse is `inverse` (`perm[inverse[j]] = j`). The [`Autodiff`] backward
    /// gathers the gradient with `inverse` instead of scattering it with atomic adds, as
    /// `select`'s backward does: a mixture of experts sorts its (token, expert) slots by
    /// expert and back with it.
    fn permute_rows(x: FloatTensor<Self>, perm: IntTensor<Self>, _inverse: IntTensor<Self>) -> FloatTensor<Self> {
        Self::float_select(x, 0, perm)
    }

    /// Grouped matrix product for mixture-of-experts layers: `x [M, K]`, `w [G, K, N]` and
    /// `offsets [G + 1]` (int; `offsets[0] = 0`, `offsets[G] = M`, non-decreasing) give
    /// `y [M, N]` with `y[r] = x[r] · w[g]` for `offsets[g] ≤ r < offsets[g+1]`. Groups may
    /// be empty. Overrides must not read `offsets` on the host (the reference does, see
    /// [`crate::reference::grouped_matmul`]).
    fn grouped_matmul(x: FloatTensor<Self>, w: FloatTensor<Self>, offsets: IntTensor<Self>) -> FloatTensor<Self> {
        let y = reference::grouped_matmul::reference_grouped_matmul(float::<Self, 2>(x), float::<Self, 3>(w), Tensor::from_primitive(offsets));
        y.into_primitive().tensor()
    }

    /// The weight gradient of [`DsaBackend::grouped_matmul`]: `dw [G, K, N]` with
    /// `dw[g] = x_gᵀ · dy_g` over the rows of group `g` of `x [M, K]` and `dy [M, N]` (zero
    /// for an empty group). Used by the [`Autodiff`] backward of `grouped_matmul`, whose
    /// input gradient is `grouped_matmul(dy, wᵀ, offsets)`.
    fn grouped_matmul_weight_grad(x: FloatTensor<Self>, dy: FloatTensor<Self>, offsets: IntTensor<Self>) -> FloatTensor<Self> {
        let dw = reference::grouped_matmul::reference_grouped_matmul_weight_grad(float::<Self, 2>(x), float::<Self, 2>(dy), Tensor::from_primitive(offsets));
        dw.into_primitive().tensor()
    }

    /// Rotary position embedding of `x [B,T,H,d]` whose tokens sit at positions
    /// `start..start + T`: the pairs `(2i, 2i+1)` when `interleaved`, else `(i, i + d/2)`,
    /// rotated by `f32(position) · freqs[i]` (`freqs [d/2]`, f32), or by minus that angle when
    /// `inverse` (the transpose: the [`Autodiff`] backward). See [`crate::rope`] and
    /// [`crate::reference::rope`].
    fn rope(x: FloatTensor<Self>, freqs: FloatTensor<Self>, start: usize, interleaved: bool, inverse: bool) -> FloatTensor<Self> {
        reference::rope::reference_rope(float::<Self, 4>(x), float::<Self, 1>(freqs), start, interleaved, inverse).into_primitive().tensor()
    }

    /// SwiGLU, `SiLU(gate) ⊙ up` (same shapes; computed in f32, the result in `gate`'s
    /// dtype; see [`crate::reference::swiglu`]).
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        let shape = gate.shape();
        let y = reference::swiglu::reference_swiglu(float::<Self, 1>(flat::<Self>(gate)), float::<Self, 1>(flat::<Self>(up)));
        Self::float_reshape(y.into_primitive().tensor(), shape)
    }

    /// Gradients `(dgate, dup)` of [`DsaBackend::swiglu`] for `dy`, in the inputs' dtypes.
    /// Used by its [`Autodiff`] backward.
    fn swiglu_backward(gate: FloatTensor<Self>, up: FloatTensor<Self>, dy: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let shape = gate.shape();
        let (dg, du) = reference::swiglu::reference_swiglu_backward(float::<Self, 1>(flat::<Self>(gate)), float::<Self, 1>(flat::<Self>(up)), float::<Self, 1>(flat::<Self>(dy)));
        (Self::float_reshape(dg.into_primitive().tensor(), shape.clone()), Self::float_reshape(du.into_primitive().tensor(), shape))
    }

    /// RMSNorm of the rows of `x [N, D]` with the scale `gamma [D]` (see [`crate::norm`] and
    /// [`crate::reference::norm`]: computed in f32, the result in `x`'s dtype).
    fn rms_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self> {
        reference::norm::reference_rms_norm(float::<Self, 2>(x), float::<Self, 1>(gamma), epsilon).into_primitive().tensor()
    }

    /// Gradients `(dx, dgamma)` of [`DsaBackend::rms_norm`] for the output gradient
    /// `dy [N, D]`, in the dtypes of `x` and `gamma`. Used by its [`Autodiff`] backward.
    fn rms_norm_backward(x: FloatTensor<Self>, gamma: FloatTensor<Self>, dy: FloatTensor<Self>, epsilon: f64) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (dx, dgamma) = reference::norm::reference_rms_norm_backward(float::<Self, 2>(x), float::<Self, 1>(gamma), float::<Self, 2>(dy), epsilon);
        (dx.into_primitive().tensor(), dgamma.into_primitive().tensor())
    }

    /// One AdamW step of a parameter tensor (see [`crate::adamw`]): `param`, `grad`,
    /// `moment_1` and `moment_2` of one shape and float type give the new parameter and
    /// moments. With `norm` (a 1-element tensor holding the L2 norm of `grad`, computed on
    /// the device) the gradient is first clipped to `step.max_norm` as Burn's
    /// `GradientClipping::Norm` does; without, it is used as it is. Overrides must not read
    /// `norm` on the host. The reference is [`crate::reference::adamw::reference_adamw_step`].
    fn adamw_step(param: FloatTensor<Self>, grad: FloatTensor<Self>, moment_1: FloatTensor<Self>, moment_2: FloatTensor<Self>,
        norm: Option<FloatTensor<Self>>, step: AdamWStep) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let shape = param.shape();
        let flat = |t: FloatTensor<Self>| float::<Self, 1>(Self::float_reshape(t, Shape::new([shape.num_elements()])));
        let (p, m, v) = reference::adamw::reference_adamw_step(flat(param), flat(grad), flat(moment_1), flat(moment_2), norm.map(|n| float::<Self, 1>(Self::float_reshape(n, Shape::new([1])))), step);
        let unflat = |t: Tensor<Self, 1>| Self::float_reshape(t.into_primitive().tensor(), shape.clone());
        (unflat(p), unflat(m), unflat(v))
    }

    /// The matrix product of the projections, `lhs [M, K] · rhs [K, N] → [M, N]`, whose
    /// operands may be transposed views: [`linear`] runs its forward `x · W` with it, and
    /// under [`Autodiff`] its gradients `dY · Wᵀ` and `Xᵀ · dY`. The reference is Burn's
    /// matmul; the CubeCL backends launch the cubek strategy of a dispatcher table
    /// (`cubecl::linear_strategy`).
    fn linear_matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_matmul(lhs, rhs)
    }
}

/// `t` as one dimension.
fn flat<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
    let n = t.shape().num_elements();
    B::float_reshape(t, Shape::new([n]))
}

fn float<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

#[cfg(feature = "ndarray")]
impl<E, I, Q> DsaBackend for burn::backend::NdArray<E, I, Q>
where
    E: burn::backend::ndarray::FloatNdArrayElement,
    I: burn::backend::ndarray::IntNdArrayElement,
    Q: burn::backend::ndarray::QuantElement,
    burn::backend::ndarray::NdArrayTensor: From<burn::backend::ndarray::SharedArray<E>>,
    burn::backend::ndarray::NdArrayTensor: From<burn::backend::ndarray::SharedArray<I>>,
{
}

// `DsaBackend for Autodiff` lives in `crate::autodiff`, `DsaBackend for
// burn_cubecl::CubeBackend` (the CubeCL kernels) in `crate::cubecl`.

/// Lightning-indexer scores `[B, T, S]`; see [`DsaBackend::indexer_scores`].
///
/// ```
/// # use burn::backend::NdArray;
/// # use burn::tensor::Tensor;
/// use dsa_burn::{ops::indexer_scores, quant::IndexerQuant};
/// let dev = Default::default();
/// let q = Tensor::<NdArray, 4>::ones([1, 3, 2, 4], &dev); // B=1, T=3, H_I=2, D=4
/// let w = Tensor::<NdArray, 3>::ones([1, 3, 2], &dev);
/// let k = Tensor::<NdArray, 3>::ones([1, 3, 4], &dev);
/// let scores = indexer_scores(q, w, k, IndexerQuant::None, Some(0));
/// assert_eq!(scores.to_data().to_vec::<f32>().unwrap()[..2], [8.0, f32::NEG_INFINITY]);
/// ```
pub fn indexer_scores<B: DsaBackend>(q: Tensor<B, 4>, w: Tensor<B, 3>, k: Tensor<B, 3>, quant: IndexerQuant, causal_offset: Option<usize>) -> Tensor<B, 3> {
    float(B::indexer_scores(q.into_primitive().tensor(), w.into_primitive().tensor(), k.into_primitive().tensor(), quant, causal_offset))
}

/// Top-k indices `[B, T, min(k, S)]` and validity; see [`DsaBackend::topk_select`].
///
/// ```
/// # use burn::backend::NdArray;
/// # use burn::tensor::Tensor;
/// use dsa_burn::ops::topk_select;
/// let scores = Tensor::<NdArray, 3>::from_floats([[[0.5, 2.0, 2.0, 1.0]]], &Default::default());
/// let (idx, valid) = topk_select(scores, 2, None);
/// assert_eq!(idx.to_data().to_vec::<i64>().unwrap(), [1, 2]); // tie: lower index first
/// assert_eq!(valid.to_data().to_vec::<bool>().unwrap(), [true, true]);
/// ```
pub fn topk_select<B: DsaBackend>(scores: Tensor<B, 3>, k: usize, causal_offset: Option<usize>) -> (Tensor<B, 3, Int>, Tensor<B, 3, Bool>) {
    let (indices, valid) = B::topk_select(scores.into_primitive().tensor(), k, causal_offset);
    (Tensor::from_primitive(indices), Tensor::from_primitive(valid))
}

/// Sparse MLA output `[B, T, H, d_v]` and log-sum-exp `[B, T, H]`; see
/// [`DsaBackend::sparse_mla`].
pub fn sparse_mla<B: DsaBackend>(q: Tensor<B, 4>, kv: Tensor<B, 3>, indices: Tensor<B, 3, Int>, valid: Tensor<B, 3, Bool>, d_v: usize, scale: f32) -> (Tensor<B, 4>, Tensor<B, 3>) {
    let (q, kv) = (q.into_primitive().tensor(), kv.into_primitive().tensor());
    let (out, lse) = B::sparse_mla(q, kv, indices.into_primitive(), valid.into_primitive(), d_v, scale);
    (float(out), float(lse))
}

/// The indexer's scores `[B, T, K]` at the selected keys; see
/// [`DsaBackend::indexer_selected_scores`]. Equal to [`indexer_scores`] gathered at
/// `indices`, without the `[B, T, S]` scores.
///
/// ```
/// # use burn::backend::NdArray;
/// # use burn::tensor::{Distribution, Tensor};
/// use dsa_burn::ops::{indexer_scores, indexer_selected_scores, topk_select};
/// use dsa_burn::IndexerQuant;
/// let dev = Default::default();
/// let q = Tensor::<NdArray, 4>::random([1, 5, 2, 8], Distribution::Default, &dev);
/// let w = Tensor::<NdArray, 3>::random([1, 5, 2], Distribution::Default, &dev);
/// let k = Tensor::<NdArray, 3>::random([1, 5, 8], Distribution::Default, &dev);
/// let all = indexer_scores(q.clone(), w.clone(), k.clone(), IndexerQuant::E4m3, None);
/// let (idx, valid) = topk_select(all.clone(), 3, None);
/// let picked = indexer_selected_scores(q, w, k, IndexerQuant::E4m3, idx.clone(), valid);
/// picked.into_data().assert_approx_eq::<f32>(&all.gather(2, idx).into_data(), Default::default());
/// ```
pub fn indexer_selected_scores<B: DsaBackend>(q: Tensor<B, 4>, w: Tensor<B, 3>, k: Tensor<B, 3>, quant: IndexerQuant, indices: Tensor<B, 3, Int>,
    valid: Tensor<B, 3, Bool>) -> Tensor<B, 3> {
    float(B::indexer_selected_scores(q.into_primitive().tensor(), w.into_primitive().tensor(), k.into_primitive().tensor(), quant,
        indices.into_primitive(), valid.into_primitive()))
}

/// Head-averaged attention probabilities `[B, T, K]` of sparse MLA at the selected rows,
/// from its log-sum-exp; see [`DsaBackend::sparse_mla_probs`]. Not differentiated.
pub fn sparse_mla_probs<B: DsaBackend>(
    q: Tensor<B, 4>, kv: Tensor<B, 3>, indices: Tensor<B, 3, Int>, valid: Tensor<B, 3, Bool>, lse: Tensor<B, 3>, scale: f32,
) -> Tensor<B, 3> {
    float(B::sparse_mla_probs(q.into_primitive().tensor(), kv.into_primitive().tensor(), indices.into_primitive(), valid.into_primitive(),
        lse.into_primitive().tensor(), scale))
}

/// Grouped matrix product `y [M, N]` of `x [M, K]` with one weight `w[g] [K, N]` per group
/// of consecutive rows, the groups given by `offsets [G + 1]` (rows `offsets[g] ..
/// offsets[g+1]` belong to group `g`; `offsets[0] = 0`, `offsets[G] = M`, non-decreasing,
/// empty groups allowed): a mixture-of-experts layer's expert products over its rows sorted
/// by expert. See [`DsaBackend::grouped_matmul`]; differentiable in `x` and `w`. The CubeCL
/// backends never read `offsets` on the host.
///
/// ```
/// # use burn::backend::NdArray;
/// # use burn::tensor::{Int, Tensor};
/// use dsa_burn::ops::grouped_matmul;
/// let dev = Default::default();
/// let x = Tensor::<NdArray, 2>::from_floats([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], &dev);
/// // Group 0: the identity, group 1 (empty): anything, group 2: doubles and swaps.
/// let w = Tensor::<NdArray, 3>::from_floats(
///     [[[1.0, 0.0], [0.0, 1.0]], [[9.0, 9.0], [9.0, 9.0]], [[0.0, 2.0], [2.0, 0.0]]],
///     &dev,
/// );
/// let offsets = Tensor::<NdArray, 1, Int>::from_ints([0, 1, 1, 3], &dev);
/// let y = grouped_matmul(x, w, offsets);
/// assert_eq!(y.to_data().to_vec::<f32>().unwrap(), [1.0, 2.0, 8.0, 6.0, 12.0, 10.0]);
/// ```
pub fn grouped_matmul<B: DsaBackend>(x: Tensor<B, 2>, w: Tensor<B, 3>, offsets: Tensor<B, 1, Int>) -> Tensor<B, 2> {
    let ([_, k], [g, wk, _], [o]) = (x.dims(), w.dims(), offsets.dims());
    assert!(wk == k && o == g + 1, "grouped_matmul: x {:?}, w {:?} and offsets {:?} do not fit", x.dims(), w.dims(), offsets.dims());
    float(B::grouped_matmul(x.into_primitive().tensor(), w.into_primitive().tensor(), offsets.into_primitive()))
}

/// One AdamW step of the parameter tensor `param` with gradient `grad` and moments
/// `moment_1`, `moment_2` (all of one shape): the new parameter and moments. With `norm`
/// (`[1]`, the L2 norm of `grad`, e.g. `grad.clone().square().sum().sqrt()`) the gradient is
/// first clipped to `step.max_norm`. See [`DsaBackend::adamw_step`] and [`crate::adamw`]; one
/// kernel on CubeCL. Not differentiable.
///
/// ```
/// # use burn::backend::NdArray;
/// # use burn::tensor::Tensor;
/// use dsa_burn::adamw::AdamWStep;
/// use dsa_burn::ops::adamw_step;
/// let dev = Default::default();
/// let p = Tensor::<NdArray, 1>::from_floats([1.0, -1.0], &dev);
/// let g = Tensor::<NdArray, 1>::from_floats([3.0, -4.0], &dev); // norm 5
/// let step = AdamWStep { lr: 0.1, beta_1: 0.9, beta_2: 0.999, epsilon: 0.0, weight_decay: 0.0, max_norm: 1.0, time: 1 };
/// let norm = g.clone().square().sum().sqrt();
/// let (p, m, _) = adamw_step(p, g.clone(), g.zeros_like(), g.zeros_like(), Some(norm), step);
/// // First step: m = 0.1 · g / 5, and the update is lr · sign(g).
/// let m = m.to_data().to_vec::<f32>().unwrap();
/// assert!((m[0] - 0.06).abs() < 1e-7 && (m[1] + 0.08).abs() < 1e-7);
/// let p = p.to_data().to_vec::<f32>().unwrap();
/// assert!((p[0] - 0.9).abs() < 1e-6 && (p[1] + 0.9).abs() < 1e-6);
/// ```
pub fn adamw_step<B: DsaBackend, const D: usize>(param: Tensor<B, D>, grad: Tensor<B, D>, moment_1: Tensor<B, D>, moment_2: Tensor<B, D>,
    norm: Option<Tensor<B, 1>>, step: AdamWStep) -> (Tensor<B, D>, Tensor<B, D>, Tensor<B, D>) {
    let dims = param.dims();
    assert!(
        grad.dims() == dims && moment_1.dims() == dims && moment_2.dims() == dims,
        "adamw_step: param {dims:?}, grad {:?} and moments {:?}, {:?} must have one shape",
        grad.dims(),
        moment_1.dims(),
        moment_2.dims()
    );
    if let Some(n) = &norm {
        assert_eq!(n.dims(), [1], "adamw_step: the norm is a 1-element tensor");
    }
    let (p, m, v) = B::adamw_step(param.into_primitive().tensor(), grad.into_primitive().tensor(), moment_1.into_primitive().tensor(),
        moment_2.into_primitive().tensor(), norm.map(|n| n.into_primitive().tensor()), step);
    (float(p), float(m), float(v))
}

/// Dense causal attention in MHA form, output `[B,H,T,Dv]` and log-sum-exp `[B,H,T]`; see
/// [`DsaBackend::dense_attention`]. Differentiable in `q`, `k` and `v` (not through the
/// log-sum-exp).
///
/// ```
/// # use burn::backend::NdArray;
/// # use burn::tensor::{Distribution, Tensor};
/// let dev = Default::default();
/// let q = Tensor::<NdArray, 4>::random([1, 2, 5, 8], Distribution::Default, &dev);
/// let k = Tensor::<NdArray, 4>::random([1, 2, 5, 8], Distribution::Default, &dev);
/// let v = Tensor::<NdArray, 4>::random([1, 2, 5, 4], Distribution::Default, &dev);
/// let (out, lse) = dsa_burn::ops::dense_attention(q, k, v.clone(), 0, 0.35);
/// assert_eq!((out.dims(), lse.dims()), ([1, 2, 5, 4], [1, 2, 5]));
/// // The first query sees only the first key: its output is that key's value.
/// let first = out.narrow(2, 0, 1).into_data();
/// first.assert_approx_eq::<f32>(&v.narrow(2, 0, 1).into_data(), Default::default());
/// ```
pub fn dense_attention<B: DsaBackend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>, causal_offset: usize, scale: f32) -> (Tensor<B, 4>, Tensor<B, 3>) {
    let ([b, h, _, d], [kb, kh, s, kd], [vb, vh, vs, _]) = (q.dims(), k.dims(), v.dims());
    assert!(
        [kb, vb] == [b, b] && [kh, vh] == [h, h] && kd == d && vs == s,
        "dense_attention: q {:?}, k {:?} and v {:?} do not fit",
        q.dims(),
        k.dims(),
        v.dims()
    );
    let (out, lse) = B::dense_attention(q.into_primitive().tensor(), k.into_primitive().tensor(), v.into_primitive().tensor(), causal_offset, scale);
    (float(out), float(lse))
}

/// SwiGLU, `SiLU(gate) ⊙ up` (same shapes), computed in f32 and returned in `gate`'s dtype
/// (see [`crate::reference::swiglu`]). Differentiable in both inputs.
///
/// ```
/// # use burn::backend::NdArray;
/// # use burn::tensor::Tensor;
/// let dev = Default::default();
/// let y = dsa_burn::ops::swiglu(Tensor::<NdArray, 2>::from_floats([[0.0, 1.0]], &dev), Tensor::from_floats([[5.0, 2.0]], &dev));
/// let y: Vec<f32> = y.into_data().to_vec().unwrap();
/// assert!(y[0] == 0.0 && (y[1] - 2.0 / (1.0 + (-1.0f32).exp())).abs() < 1e-6);
/// ```
pub fn swiglu<B: DsaBackend, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    assert_eq!(gate.dims(), up.dims(), "swiglu: gate and up differ in shape");
    Tensor::from_primitive(TensorPrimitive::Float(B::swiglu(gate.into_primitive().tensor(), up.into_primitive().tensor())))
}

/// Rotary position embedding of `x [B,T,H,d]` at positions `start..start + T` with the
/// frequencies `freqs [d/2]` (f32): pairs `(2i, 2i+1)` when `interleaved`, else
/// `(i, i + d/2)`; see [`DsaBackend::rope`] and [`crate::rope::Rope::apply`].
/// Differentiable in `x`.
///
/// ```
/// # use burn::backend::NdArray;
/// # use burn::tensor::Tensor;
/// let dev = Default::default();
/// let x = Tensor::<NdArray, 4>::from_floats([[[[1.0, 0.0]]], [[[1.0, 0.0]]]], &dev); // [2,1,1,2]
/// let freqs = Tensor::<NdArray, 1>::from_floats([std::f32::consts::FRAC_PI_2], &dev);
/// // Position 1 turns (1, 0) a quarter to (0, 1).
/// let y: Vec<f32> = dsa_burn::ops::rope(x, freqs, 1, true).into_data().to_vec().unwrap();
/// assert!((y[0]).abs() < 1e-6 && (y[1] - 1.0).abs() < 1e-6);
/// ```
pub fn rope<B: DsaBackend>(x: Tensor<B, 4>, freqs: Tensor<B, 1>, start: usize, interleaved: bool) -> Tensor<B, 4> {
    let d = x.dims()[3];
    assert!(d.is_multiple_of(2) && freqs.dims() == [d / 2], "rope: x {:?} and freqs {:?} do not fit", x.dims(), freqs.dims());
    let y = B::rope(x.into_primitive().tensor(), freqs.into_primitive().tensor(), start, interleaved, false);
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

/// RMSNorm of `x [..., d]` over its last dimension with the scale `gamma [d]`, as DeepSeek's
/// reference computes it (see [`crate::norm`]); the result has `x`'s dtype. Differentiable
/// in `x` and `gamma`.
///
/// ```
/// # use burn::backend::NdArray;
/// # use burn::tensor::Tensor;
/// let dev = Default::default();
/// let x = Tensor::<NdArray, 3>::from_floats([[[3.0, -3.0], [1.0, 1.0]]], &dev);
/// let y = dsa_burn::ops::rms_norm(x, Tensor::from_floats([1.0, 2.0], &dev), 0.0);
/// assert_eq!(y.into_data().to_vec::<f32>().unwrap(), [1.0, -2.0, 1.0, 2.0]);
/// ```
pub fn rms_norm<B: DsaBackend, const D: usize>(x: Tensor<B, D>, gamma: Tensor<B, 1>, epsilon: f64) -> Tensor<B, D> {
    let dims = x.dims();
    let d = dims[D - 1];
    assert_eq!(gamma.dims(), [d], "rms_norm: x {dims:?} and gamma {:?} do not fit", gamma.dims());
    let x = x.reshape([dims[..D - 1].iter().product(), d]);
    let y = B::rms_norm(x.into_primitive().tensor(), gamma.into_primitive().tensor(), epsilon);
    Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(y)).reshape(dims)
}

/// Rows of `x [N, D]` in the order of the permutation `perm [N]`, `y[i] = x[perm[i]]`,
/// given its inverse `inverse [N]` (`perm[inverse[j]] = j`), which the backward uses to
/// gather the gradient; see [`DsaBackend::permute_rows`].
///
/// ```
/// # use burn::backend::NdArray;
/// # use burn::tensor::{Int, Tensor};
/// let dev = Default::default();
/// let x = Tensor::<NdArray, 2>::from_floats([[0.0], [1.0], [2.0]], &dev);
/// let perm = Tensor::<NdArray, 1, Int>::from_ints([2, 0, 1], &dev);
/// let inverse = Tensor::<NdArray, 1, Int>::from_ints([1, 2, 0], &dev);
/// let y = dsa_burn::ops::permute_rows(x, perm, inverse);
/// assert_eq!(y.into_data().to_vec::<f32>().unwrap(), [2.0, 0.0, 1.0]);
/// ```
pub fn permute_rows<B: DsaBackend>(x: Tensor<B, 2>, perm: Tensor<B, 1, Int>, inverse: Tensor<B, 1, Int>) -> Tensor<B, 2> {
    let (n, [p], [i]) = (x.dims()[0], perm.dims(), inverse.dims());
    assert!(p == n && i == n, "permute_rows: x {:?}, perm [{p}] and inverse [{i}] do not fit", x.dims());
    float(B::permute_rows(x.into_primitive().tensor(), perm.into_primitive(), inverse.into_primitive()))
}

/// A linear layer `y = x · weight (+ bias)` over the last dim of `x [.., K]`, with
/// `weight [K, N]` as Burn's `nn::Linear` stores it and `bias [N]`: `y [.., N]`. The leading
/// dims of `x` are flattened into the rows of one product [`DsaBackend::linear_matmul`]
/// (Burn's matmul on most backends, a cubek strategy from a dispatcher table on CubeCL);
/// under [`Autodiff`] the gradients `dX = dY · Wᵀ` and `dW = Xᵀ · dY` (summed over the
/// leading dims by that product) run through it too. The same values as
/// `burn::tensor::module::linear(x, weight, bias)` (`nn::Linear::forward`), up to rounding.
/// See [`project`] for a `Linear` layer.
///
/// ```
/// # use burn::backend::{Autodiff, NdArray};
/// # use burn::tensor::Tensor;
/// use dsa_burn::ops::linear;
/// let dev = Default::default();
/// let x = Tensor::<Autodiff<NdArray>, 3>::from_floats([[[1.0, 2.0], [3.0, 4.0]]], &dev).require_grad();
/// let w = Tensor::<Autodiff<NdArray>, 2>::from_floats([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], &dev).require_grad();
/// let b = Tensor::<Autodiff<NdArray>, 1>::from_floats([0.5, 0.5, 0.5], &dev);
/// let y = linear(x.clone(), w.clone(), Some(b));
/// assert_eq!(y.dims(), [1, 2, 3]);
/// assert_eq!(y.to_data().to_vec::<f32>().unwrap(), [1.5, 2.5, 3.5, 3.5, 4.5, 7.5]);
/// // d(Σy)/dW = Xᵀ · 1 (rows summed over the tokens), d(Σy)/dX = 1 · Wᵀ.
/// let grads = y.sum().backward();
/// assert_eq!(w.grad(&grads).unwrap().to_data().to_vec::<f32>().unwrap(), [4.0, 4.0, 4.0, 6.0, 6.0, 6.0]);
/// assert_eq!(x.grad(&grads).unwrap().to_data().to_vec::<f32>().unwrap(), [2.0, 2.0, 2.0, 2.0]);
/// ```
pub fn linear<B: DsaBackend, const D: usize>(x: Tensor<B, D>, weight: Tensor<B, 2>, bias: Option<Tensor<B, 1>>) -> Tensor<B, D> {
    let dims = x.dims();
    let [k, n] = weight.dims();
    assert!(D >= 1 && dims[D - 1] == k, "linear: x {dims:?} does not fit the weight [{k}, {n}]");
    if let Some(b) = &bias {
        assert_eq!(b.dims(), [n], "linear: the bias must be [{n}]");
    }
    let m = dims[..D - 1].iter().product();
    let y = float::<B, 2>(B::linear_matmul(x.reshape([m, k]).into_primitive().tensor(), weight.into_primitive().tensor()));
    let y = match bias {
        Some(b) => y + b.unsqueeze::<2>(),
        None => y,
    };
    let mut out = dims;
    out[D - 1] = n;
    y.reshape(out)
}

/// A Burn `nn::Linear` layer applied to `x` by [`linear`], with its weight and bias: the
/// layer's `forward(x)` through [`DsaBackend::linear_matmul`]. The model's projections call
/// this; the layer and its record are unchanged.
///
/// ```
/// # use burn::backend::NdArray;
/// # use burn::tensor::{Distribution, Tensor};
/// use burn::nn::LinearConfig;
/// let dev = Default::default();
/// let layer = LinearConfig::new(8, 3).init::<NdArray>(&dev);
/// let x = Tensor::<NdArray, 3>::random([2, 5, 8], Distribution::Default, &dev);
/// let y = dsa_burn::ops::project(&layer, x.clone());
/// y.into_data().assert_approx_eq::<f32>(&layer.forward(x).into_data(), Default::default());
/// ```
pub fn project<B: DsaBackend, const D: usize>(layer: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    linear(x, layer.weight.val(), layer.bias.as_ref().map(|b| b.val()))
}

/// Dense causal MLA in MQA mode: every head of `q [B,T,H,D]` (query `t` at position
/// `t + start`) attends to the keys `s ≤ t + start` of the latent `kv [B,S,D]`, whose first
/// `d_v` dims are the values; returns `[B,T,H,d_v]`. Where the backend's sparse MLA is fused
/// ([`DsaBackend::fused_sparse_mla`]) this is [`sparse_mla`] over every causal key (`T×S`
/// int32 indices; the backward recomputes the probabilities from the log-sum-exp); elsewhere
/// the softmax of the full `[B,T,H,S]` scores.
///
/// ```
/// # use burn::backend::NdArray;
/// # use burn::tensor::{Distribution, Tensor};
/// let dev = Default::default();
/// let q = Tensor::<NdArray, 4>::random([1, 5, 2, 8], Distribution::Default, &dev);
/// let kv = Tensor::<NdArray, 3>::random([1, 5, 8], Distribution::Default, &dev);
/// let out = dsa_burn::ops::dense_mla(q, kv, 0, 6, 0.35);
/// assert_eq!(out.dims(), [1, 5, 2, 6]);
/// ```
pub fn dense_mla<B: DsaBackend>(q: Tensor<B, 4>, kv: Tensor<B, 3>, start: usize, d_v: usize, scale: f32) -> Tensor<B, 4> {
    let [b, t, h, d] = q.dims();
    let s = kv.dims()[1];
    let device = kv.device();
    if B::fused_sparse_mla() {
        let keys = Tensor::<B, 1, Int>::arange(0..s as i64, &device).reshape([1, 1, s]).expand([b, t, s]);
        let valid = reference::causal_mask::<B>(t, s, start, &device).bool_not().reshape([1, t, s]).expand([b, t, s]);
        return sparse_mla(q, kv, keys, valid, d_v, scale).0;
    }
    let scores = q.reshape([b, t * h, d]).matmul(kv.clone().swap_dims(1, 2)).reshape([b, t, h, s]);
    let future = reference::causal_mask::<B>(t, s, start, &device).reshape([1, t, 1, s]).expand([b, t, h, s]);
    let p = softmax(scores.mul_scalar(scale).mask_fill(future, f32::NEG_INFINITY), 3);
    p.reshape([b, t * h, s]).matmul(kv.narrow(2, 0, d_v)).reshape([b, t, h, d_v])
}

/// Indexer scores then top-k ([`indexer_scores`] + [`topk_select`]) over blocks of at most
/// `block_rows` query tokens, so that only `B × block_rows × S` scores exist at a time
/// (at L = 128K, the whole `T × S` f32 score matrix would take 64 GiB); with a causal offset
/// each block scores only the keys its rows can see. Same result as the two calls on the
/// whole sequence.
///
/// ```
/// # use burn::backend::NdArray;
/// # use burn::tensor::{Distribution, Tensor};
/// use dsa_burn::ops::{indexer_scores, indexer_topk, topk_select};
/// use dsa_burn::IndexerQuant;
/// let dev = Default::default();
/// let q = Tensor::<NdArray, 4>::random([1, 9, 2, 8], Distribution::Default, &dev);
/// let w = Tensor::<NdArray, 3>::random([1, 9, 2], Distribution::Default, &dev);
/// let k = Tensor::<NdArray, 3>::random([1, 9, 8], Distribution::Default, &dev);
/// let (idx, valid) = indexer_topk(q.clone(), w.clone(), k.clone(), IndexerQuant::E4m3, 4, Some(0), 4);
/// let whole = indexer_scores(q, w, k, IndexerQuant::E4m3, Some(0));
/// let (want_idx, want_valid) = topk_select(whole, 4, Some(0));
/// assert_eq!(idx.into_data(), want_idx.into_data());
/// assert_eq!(valid.into_data(), want_valid.into_data());
/// ```
pub fn indexer_topk<B: DsaBackend>(q: Tensor<B, 4>, w: Tensor<B, 3>, k: Tensor<B, 3>, quant: IndexerQuant, topk: usize, causal_offset: Option<usize>,
    block_rows: usize) -> (Tensor<B, 3, Int>, Tensor<B, 3, Bool>) {
    assert!(block_rows > 0, "indexer_topk: block_rows must be at least 1");
    let t = q.dims()[1];
    if t <= block_rows {
        return topk_select(indexer_scores(q, w, k, quant, causal_offset), topk, causal_offset);
    }
    let s = k.dims()[1];
    let (mut indices, mut valid) = (Vec::new(), Vec::new());
    for t0 in (0..t).step_by(block_rows) {
        let rows = block_rows.min(t - t0);
        let offset = causal_offset.map(|o| o + t0);
        // Causal: only the keys some row of the block sees (at least `topk`, so that every
        // block's selection is `min(topk, S)` wide); later ones could never be selected.
        let keys = offset.map_or(s, |o| (o + rows).max(topk).min(s));
        let scores = indexer_scores(q.clone().narrow(1, t0, rows), w.clone().narrow(1, t0, rows), k.clone().narrow(1, 0, keys), quant, offset);
        let (i, v) = topk_select(scores, topk, offset);
        indices.push(i);
        valid.push(v);
    }
    (Tensor::cat(indices, 1), Tensor::cat(valid, 1))
}
