//! [`DsaBackend`] for Burn's CubeCL backends (`Wgpu`, `Cuda` without fusion): the kernels of
//! the `dsa-kernels` crate.
//!
//! One file per operation holds its variants, the checks that choose among them and the
//! launches: `indexer.rs` (indexer scores), `topk.rs`, `quant.rs` (FP8 fake quantisation),
//! `sparse_mla.rs` (forward and backward), `indexer_loss.rs` (the sparse stage's scores and
//! probabilities at the selected keys), `dense_attention.rs` (flash attention),
//! `grouped_matmul.rs` (mixture-of-experts products), `adamw.rs`, `elementwise.rs` (RMSNorm,
//! RoPE, SwiGLU) and `linear.rs` (projections on cubek's matmuls); `device.rs` asks the device
//! what it has (tensor-core shapes, `wgmma`) and `settings.rs` holds [`KernelSettings`] (the
//! kernel choices tests and benchmarks make) and the launch counters. This file implements the
//! trait by calling them.
//!
//! Every operation makes its inputs contiguous, allocates its outputs and launches. Outputs
//! can be *poisoned* before the launch ([`KernelSettings::poison_outputs`]: NaN for floats,
//! garbage for ints, `true` for bools) so tests see any entry a kernel failed to write.

use std::sync::atomic::{AtomicUsize, Ordering};

use burn::tensor::ops::{BoolTensor, FloatTensor, IntTensor};
use burn::tensor::{get_device_settings, DType, Shape, Tensor, TensorMetadata, TensorPrimitive};
use burn_cubecl::cubecl::ir::{ElemType, FloatKind, StorageType};
use burn_cubecl::cubecl::prelude::{ComputeClient, CubeCount, CubeDim, InputScalar, Runtime};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::{empty_device_contiguous_dtype, full_device_dtype};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use dsa_kernels as kernels;
use dsa_kernels::quant::Codes;

use crate::adamw::AdamWStep;
use crate::matmul::{Layout, Strategy};
use crate::quant::{IndexerQuant, E4M3_MAX};
use crate::DsaBackend;

mod settings;
mod device;
mod quant;
mod indexer;
mod topk;
mod sparse_mla;
mod indexer_loss;
mod grouped_matmul;
mod adamw;
mod elementwise;
mod dense_attention;
mod linear;

pub use self::{settings::*, device::*, quant::*, indexer::*, topk::*, sparse_mla::*, indexer_loss::*, grouped_matmul::*, adamw::*, elementwise::*, dense_attention::*, linear::*};

/// A contiguous output tensor, poisoned if [`KernelSettings::poison_outputs`] is on.
fn output<R: CubeRuntime>(like: &CubeTensor<R>, shape: Shape, dtype: DType) -> CubeTensor<R> {
    if setting(|s| s.poison_outputs) {
        let value = match dtype {
            DType::F64 | DType::F32 | DType::F16 | DType::BF16 | DType::Flex32 => {
                InputScalar::new(f32::NAN, dtype)
            }
            DType::Bool(_) => InputScalar::new(1u8, dtype),
            _ => InputScalar::new(
                match dtype.size() {
                    1 => 0x7ei64,
                    2 => 0x7ead,
                    _ => 0x7ead_beef,
                },
                dtype,
            ),
        };
        // `full` may allocate with padded row pitch: the kernels index contiguously.
        return into_contiguous(full_device_dtype(
            like.client.clone(),
            shape,
            like.device.clone(),
            value,
            dtype,
        ));
    }
    empty_device_contiguous_dtype(like.client.clone(), like.device.clone(), shape, dtype)
}

/// A contiguous f32 tensor of zeros.
fn zeros_f32<R: CubeRuntime>(like: &CubeTensor<R>, shape: Shape) -> CubeTensor<R> {
    into_contiguous(full_device_dtype(
        like.client.clone(),
        shape,
        like.device.clone(),
        InputScalar::new(0.0f32, DType::F32),
        DType::F32,
    ))
}

/// How kernels accumulate into an f32 gradient tensor ([`zeros_f32`]) on `t`'s device:
/// whether by native f32 atomic adds, and the atomic element type the launch defines for it
/// (f32, or u32 for compare-and-swap on the bits).
fn f32_accumulation<R: CubeRuntime>(t: &CubeTensor<R>) -> (bool, DType) {
    use burn_cubecl::cubecl::ir::{features::AtomicUsage, ElemType, FloatKind, StorageType, Type};
    let ty = Type::new(StorageType::Atomic(ElemType::Float(FloatKind::F32)));
    let native = !setting(|s| s.force_cas_atomics)
        && t.client.properties().atomic_type_usage(ty).contains(AtomicUsage::Add);
    (native, if native { DType::F32 } else { DType::U32 })
}

/// An f32 accumulator returned as `dtype`.
fn from_f32<R: CubeRuntime>(acc: CubeTensor<R>, dtype: DType) -> CubeTensor<R> {
    if dtype == DType::F32 {
        acc
    } else {
        burn_cubecl::kernel::cast(acc, dtype)
    }
}

fn dims<const D: usize, R: CubeRuntime>(t: &CubeTensor<R>) -> [usize; D] {
    t.shape().dims::<D>()
}

fn cube_count(cubes: usize, z: usize) -> CubeCount {
    let (x, y) = kernels::grid_1d(cubes);
    CubeCount::Static(x, y, z as u32)
}

fn max_shared<R: CubeRuntime>(t: &CubeTensor<R>) -> usize {
    t.client.properties().hardware.max_shared_memory_size
}

/// `t` in `dtype` (a cast where it differs).
fn same_dtype<R: CubeRuntime>(t: CubeTensor<R>, dtype: DType) -> CubeTensor<R> {
    if t.dtype == dtype {
        t
    } else {
        burn_cubecl::kernel::cast(t, dtype)
    }
}

impl<R, F, I, BT> DsaBackend for CubeBackend<R, F, I, BT>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    fn indexer_scores(
        q: FloatTensor<Self>,
        w: FloatTensor<Self>,
        k: FloatTensor<Self>,
        quant: IndexerQuant,
        causal_offset: Option<usize>,
    ) -> FloatTensor<Self> {
        indexer_scores_primitive(q, w, k, quant, causal_offset)
    }

    fn topk_select(
        scores: FloatTensor<Self>,
        k: usize,
        causal_offset: Option<usize>,
    ) -> (IntTensor<Self>, BoolTensor<Self>) {
        let settings = get_device_settings::<Self>(&scores.device);
        match topk_primitive(
            scores.clone(),
            k,
            causal_offset,
            settings.int_dtype.into(),
            settings.bool_dtype.into(),
        ) {
            Some(out) => out,
            None => {
                let (indices, valid) = crate::reference::topk::reference_topk(
                    Tensor::<Self, 3>::from_primitive(TensorPrimitive::Float(scores)),
                    k,
                    causal_offset,
                );
                (indices.into_primitive(), valid.into_primitive())
            }
        }
    }

    fn sparse_mla(
        q: FloatTensor<Self>,
        kv: FloatTensor<Self>,
        indices: IntTensor<Self>,
        valid: BoolTensor<Self>,
        d_v: usize,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        sparse_mla_primitive(q, kv, indices, valid, d_v, scale)
    }

    fn fused_sparse_mla() -> bool {
        true
    }

    fn rms_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self> {
        rms_norm_primitive(x, gamma, epsilon)
    }

    fn rope(x: FloatTensor<Self>, freqs: FloatTensor<Self>, start: usize, interleaved: bool, inverse: bool) -> FloatTensor<Self> {
        rope_primitive(x, freqs, start, interleaved, inverse)
    }

    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        swiglu_primitive(gate, up)
    }

    fn swiglu_backward(gate: FloatTensor<Self>, up: FloatTensor<Self>, dy: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let up_dtype = up.dtype;
        let (dgate, dup) = swiglu_backward_primitive(gate, up, dy);
        (dgate, same_dtype(dup, up_dtype))
    }

    fn rms_norm_backward(x: FloatTensor<Self>, gamma: FloatTensor<Self>, dy: FloatTensor<Self>, epsilon: f64) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let gamma_dtype = gamma.dtype;
        let (dx, parts) = rms_norm_backward_primitive(x, gamma, dy, epsilon);
        let d = dims::<2, R>(&parts)[1];
        let dgamma = Tensor::<Self, 2>::from_primitive(TensorPrimitive::Float(parts)).sum_dim(0).reshape([d]);
        (dx, from_f32(dgamma.into_primitive().tensor(), gamma_dtype))
    }

    fn dense_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        causal_offset: usize,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if let Some(out) = flash_attention(q.clone(), k.clone(), v.clone(), causal_offset, scale) {
            return out;
        }
        crate::reference::dense_attention::reference_primitive::<Self>(q, k, v, causal_offset, scale)
    }

    fn dense_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        d_out: FloatTensor<Self>,
        causal_offset: usize,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let float = |t| Tensor::<Self, 4>::from_primitive(TensorPrimitive::Float(t));
        if flash_applies(&q, &k, &v) {
            let f32 = burn::tensor::FloatDType::F32;
            let [b, h, t, _] = dims::<4, R>(&q);
            let delta = (float(d_out.clone()).cast(f32) * float(out.clone()).cast(f32)).sum_dim(3).reshape([b, h, t]);
            let delta = delta.into_primitive().tensor();
            if let Some(grads) = flash_attention_backward([q.clone(), k.clone(), v.clone()], d_out.clone(), lse.clone(), delta, causal_offset, scale) {
                return grads;
            }
        }
        crate::reference::dense_attention::reference_backward_primitive::<Self>([q, k, v, out, lse, d_out], causal_offset, scale)
    }

    fn sparse_mla_backward(
        q: FloatTensor<Self>,
        kv: FloatTensor<Self>,
        indices: IntTensor<Self>,
        valid: BoolTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        d_out: Option<FloatTensor<Self>>,
        d_lse: Option<FloatTensor<Self>>,
        d_v: usize,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        sparse_mla_backward_primitive(q, kv, indices, valid, out, lse, d_out, d_lse, d_v, scale)
    }

    fn indexer_selected_scores(
        q: FloatTensor<Self>,
        w: FloatTensor<Self>,
        k: FloatTensor<Self>,
        quant: IndexerQuant,
        indices: IntTensor<Self>,
        valid: BoolTensor<Self>,
    ) -> FloatTensor<Self> {
        indexer_selected_scores_primitive(q, w, k, quant, indices, valid)
    }

    fn indexer_selected_scores_backward(
        q: FloatTensor<Self>,
        w: FloatTensor<Self>,
        k: FloatTensor<Self>,
        quant: IndexerQuant,
        indices: IntTensor<Self>,
        valid: BoolTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        indexer_selected_scores_backward_primitive(q, w, k, quant, indices, valid, grad)
    }

    fn sparse_mla_probs(
        q: FloatTensor<Self>,
        kv: FloatTensor<Self>,
        indices: IntTensor<Self>,
        valid: BoolTensor<Self>,
        lse: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        sparse_mla_probs_primitive(q, kv, indices, valid, lse, scale)
    }
    fn grouped_matmul(x: FloatTensor<Self>, w: FloatTensor<Self>, offsets: IntTensor<Self>) -> FloatTensor<Self> {
        grouped_matmul_primitive(x, w, offsets)
    }

    fn grouped_matmul_weight_grad(x: FloatTensor<Self>, dy: FloatTensor<Self>, offsets: IntTensor<Self>) -> FloatTensor<Self> {
        grouped_matmul_weight_grad_primitive(x, dy, offsets)
    }

    fn adamw_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        norm: Option<FloatTensor<Self>>,
        step: AdamWStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        adamw_step_primitive(param, grad, moment_1, moment_2, norm, step)
    }

    fn linear_matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        linear_matmul_primitive(lhs, rhs)
    }
}



#[cfg(test)]
mod tests {
    use super::*;

    /// Every strategy the dispatcher table names is one `dsa-cli bench-matmul` knows (a typo
    /// would panic at the first projection).
    #[test]
    fn linear_table_names_known_strategies() {
        for runtime in ["cuda", "hip", "wgpu", "cpu"] {
            for tensor_cores in [false, true] {
                for layout in [Layout::NN, Layout::NT, Layout::TN, Layout::TT] {
                    if let Some(name) = linear_strategy_name(runtime, tensor_cores, layout) {
                        assert!(crate::matmul::strategy_by_name(name).is_some(), "{runtime} {tensor_cores} {layout}: no strategy `{name}`");
                    }
                }
            }
        }
    }
}
