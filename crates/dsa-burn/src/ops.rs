//! The three operations of DeepSeek Sparse Attention: the [`DsaBackend`] extension trait
//! and typed wrappers over [`Tensor`].
//!
//! Every trait method has a default body built from Burn tensor operations (the *reference*
//! implementation, see [`crate::indexer`], [`crate::topk`] and [`crate::sparse_mla`]), so
//! any Burn backend gets a correct DSA, and autodiff through [`Autodiff`]. Backends with
//! fast kernels override the methods; the reference stays the oracle they are tested
//! against.

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::{BoolTensor, FloatTensor, IntTensor};
use burn::tensor::{Bool, Int, Tensor, TensorPrimitive};

use crate::quant::IndexerQuant;

/// A Burn backend that can run DeepSeek Sparse Attention.
///
/// Shapes use `B` batch, `T` query tokens, `S` key tokens, `H` heads, `K` selected tokens.
pub trait DsaBackend: Backend {
    /// Lightning-indexer scores `I[b,t,s] = Σ_j w[b,t,j] · ReLU(q̂[b,t,j] · k̂[b,s])`, f32
    /// `[B, T, S]`, where `q̂`, `k̂` are `q [B,T,H_I,D]` and `k [B,S,D]` after the FP8
    /// quantisation `quant` (dequantised). With `causal_offset = Some(o)`, entries with
    /// `s > t + o` are `-inf`; with `None` nothing is masked.
    fn indexer_scores(
        q: FloatTensor<Self>,
        w: FloatTensor<Self>,
        k: FloatTensor<Self>,
        quant: IndexerQuant,
        causal_offset: Option<usize>,
    ) -> FloatTensor<Self> {
        let out = crate::indexer::reference_scores(
            float::<Self, 4>(q),
            float::<Self, 3>(w),
            float::<Self, 3>(k),
            quant,
            causal_offset,
        );
        out.into_primitive().tensor()
    }

    /// The `min(k, S)` best keys of every score row `[B, T, S]`: indices `[B, T, min(k,S)]`
    /// sorted by decreasing score (ties: lower index first) and a validity mask. Keys with
    /// `s > t + causal_offset` are never selected; a row with fewer candidates than slots
    /// fills the rest with index 0 marked invalid.
    fn topk_select(
        scores: FloatTensor<Self>,
        k: usize,
        causal_offset: Option<usize>,
    ) -> (IntTensor<Self>, BoolTensor<Self>) {
        let (indices, valid) = crate::topk::reference_topk(float::<Self, 3>(scores), k, causal_offset);
        (indices.into_primitive(), valid.into_primitive())
    }

    /// Sparse MLA in MQA mode: every head of query `q [B,T,H,Dqk]` attends to the selected
    /// rows `indices [B,T,K]` (where `valid`) of the shared latent `kv [B,S,Dqk]`, whose
    /// first `d_v` dims are the values. Returns the output `[B,T,H,d_v]` and the
    /// log-sum-exp of the scaled scores `[B,T,H]` (`-inf` for rows with nothing valid,
    /// whose output is 0).
    fn sparse_mla(
        q: FloatTensor<Self>,
        kv: FloatTensor<Self>,
        indices: IntTensor<Self>,
        valid: BoolTensor<Self>,
        d_v: usize,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (out, lse) = crate::sparse_mla::reference_sparse_mla(
            float::<Self, 4>(q),
            float::<Self, 3>(kv),
            Tensor::<Self, 3, Int>::from_primitive(indices),
            Tensor::<Self, 3, Bool>::from_primitive(valid),
            d_v,
            scale,
        );
        (out.into_primitive().tensor(), lse.into_primitive().tensor())
    }
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

/// Autodiff: the reference operations are differentiated by Burn's autodiff.
impl<B: DsaBackend, C: CheckpointStrategy> DsaBackend for Autodiff<B, C> {}

// `DsaBackend for burn_cubecl::CubeBackend` (the CubeCL kernels) lives in `crate::cubecl`.

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
pub fn indexer_scores<B: DsaBackend>(
    q: Tensor<B, 4>,
    w: Tensor<B, 3>,
    k: Tensor<B, 3>,
    quant: IndexerQuant,
    causal_offset: Option<usize>,
) -> Tensor<B, 3> {
    float(B::indexer_scores(
        q.into_primitive().tensor(),
        w.into_primitive().tensor(),
        k.into_primitive().tensor(),
        quant,
        causal_offset,
    ))
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
pub fn topk_select<B: DsaBackend>(
    scores: Tensor<B, 3>,
    k: usize,
    causal_offset: Option<usize>,
) -> (Tensor<B, 3, Int>, Tensor<B, 3, Bool>) {
    let (indices, valid) = B::topk_select(scores.into_primitive().tensor(), k, causal_offset);
    (Tensor::from_primitive(indices), Tensor::from_primitive(valid))
}

/// Sparse MLA output `[B, T, H, d_v]` and log-sum-exp `[B, T, H]`; see
/// [`DsaBackend::sparse_mla`].
pub fn sparse_mla<B: DsaBackend>(
    q: Tensor<B, 4>,
    kv: Tensor<B, 3>,
    indices: Tensor<B, 3, Int>,
    valid: Tensor<B, 3, Bool>,
    d_v: usize,
    scale: f32,
) -> (Tensor<B, 4>, Tensor<B, 3>) {
    let (out, lse) = B::sparse_mla(
        q.into_primitive().tensor(),
        kv.into_primitive().tensor(),
        indices.into_primitive(),
        valid.into_primitive(),
        d_v,
        scale,
    );
    (float(out), float(lse))
}
