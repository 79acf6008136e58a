//! Reference implementation of SwiGLU ([`DsaBackend::swiglu`](crate::DsaBackend::swiglu)):
//! `SiLU(gate) ⊙ up` computed in f32 and returned in `gate`'s dtype, as DeepSeek's reference
//! does at reduced precision (`F.silu(w1(x).float()) * w3(x).float()`), and its gradient in
//! closed form (`σ` the logistic function):
//! `dgate = dy·up·σ(g)·(1 + g·(1 − σ(g)))`, `dup = dy·g·σ(g)`.

use burn::tensor::activation::{sigmoid, silu};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

/// `SiLU(gate) ⊙ up` (same shapes), in f32, returned in `gate`'s dtype.
pub fn reference_swiglu<B: Backend, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    let dtype = gate.dtype();
    (silu(gate.cast(DType::F32)) * up.cast(DType::F32)).cast(dtype)
}

/// Gradients `(dgate, dup)` of [`reference_swiglu`] for `dy`, in the inputs' dtypes.
pub fn reference_swiglu_backward<B: Backend, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>, dy: Tensor<B, D>) -> (Tensor<B, D>, Tensor<B, D>) {
    let (gate_dtype, up_dtype) = (gate.dtype(), up.dtype());
    let (g, u, dy) = (gate.cast(DType::F32), up.cast(DType::F32), dy.cast(DType::F32));
    let s = sigmoid(g.clone());
    let dup = dy.clone() * g.clone() * s.clone();
    let dgate = dy * u * s.clone() * (g * (s.neg() + 1.0) + 1.0);
    (dgate.cast(gate_dtype), dup.cast(up_dtype))
}
