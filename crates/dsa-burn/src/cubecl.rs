//! [`DsaBackend`] for Burn's CubeCL backends (`Wgpu`, `Cuda` without fusion): the kernels of
//! the `dsa-kernels` crate.
//!
//! Every operation makes its inputs contiguous, allocates its outputs and launches. Outputs
//! can be *poisoned* before the launch ([`set_poison_outputs`]: NaN for floats, garbage for
//! ints, `true` for bools) so tests see any entry a kernel failed to write.

use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::ops::{BoolTensor, FloatTensor, IntTensor};
use burn::tensor::{get_device_settings, DType, Shape, Tensor, TensorMetadata, TensorPrimitive};
use burn_cubecl::cubecl::prelude::{CubeCount, CubeDim, InputScalar};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::{empty_device_contiguous_dtype, full_device_dtype};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use dsa_kernels as kernels;

use crate::quant::{IndexerQuant, E4M3_MAX};
use crate::DsaBackend;

static POISON: AtomicBool = AtomicBool::new(false);

/// Fill every output with garbage before the kernels run (NaN floats, `0x7eadbeef` ints,
/// `true` bools), so that tests catch entries a kernel does not write. Off by default.
pub fn set_poison_outputs(on: bool) {
    POISON.store(on, Ordering::SeqCst);
}

/// A contiguous output tensor, poisoned if [`set_poison_outputs`] is on.
fn output<R: CubeRuntime>(like: &CubeTensor<R>, shape: Shape, dtype: DType) -> CubeTensor<R> {
    if POISON.load(Ordering::Relaxed) {
        let value = match dtype {
            DType::F64 | DType::F32 | DType::F16 | DType::BF16 | DType::Flex32 => InputScalar::new(f32::NAN, dtype),
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
        return full_device_dtype(like.client.clone(), shape, like.device.clone(), value, dtype);
    }
    empty_device_contiguous_dtype(like.client.clone(), like.device.clone(), shape, dtype)
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

/// FP8 e4m3 block fake-quantisation (dequantised values) of a CubeCL tensor along its last
/// dim, bit-identical to [`crate::quant::fake_quant`]'s forward value.
pub fn fake_quant_primitive<R: CubeRuntime>(x: CubeTensor<R>, quant: IndexerQuant) -> CubeTensor<R> {
    if quant == IndexerQuant::None {
        return x;
    }
    let x = into_contiguous(x);
    let shape = x.shape();
    let d = shape[shape.num_dims() - 1];
    let rows = shape.num_elements() / d.max(1);
    let out = output(&x, shape.clone(), x.dtype);
    if rows * d == 0 {
        return out;
    }
    let units = rows * d.div_ceil(kernels::quant::FP8_BLOCK);
    let threads = 64usize;
    kernels::quant::fake_quant_kernel::launch::<R>(
        &x.client,
        cube_count(units.div_ceil(threads), 1),
        CubeDim::new_1d(threads as u32),
        x.clone().into_tensor_arg(),
        out.clone().into_tensor_arg(),
        rows,
        d,
        kernels::quant::AMAX_FLOOR,
        1.0f32 / E4M3_MAX,
        quant == IndexerQuant::E4m3Pow2,
        x.dtype.into(),
    );
    out
}

/// [`fake_quant_primitive`] over a Burn tensor.
pub fn fake_quant<R, F, I, BT, const D: usize>(x: Tensor<CubeBackend<R, F, I, BT>, D>, quant: IndexerQuant) -> Tensor<CubeBackend<R, F, I, BT>, D>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    Tensor::from_primitive(TensorPrimitive::Float(fake_quant_primitive(x.into_primitive().tensor(), quant)))
}

/// Lightning-indexer scores on CubeCL: fake-quantise `q` and `k`, then the scores kernel.
pub fn indexer_scores_primitive<R: CubeRuntime>(
    q: CubeTensor<R>,
    w: CubeTensor<R>,
    k: CubeTensor<R>,
    quant: IndexerQuant,
    causal_offset: Option<usize>,
) -> CubeTensor<R> {
    let [b, t, h, d] = dims::<4, R>(&q);
    let [_, s, dk] = dims::<3, R>(&k);
    assert_eq!(d, dk, "indexer query dim {d} != key dim {dk}");
    assert_eq!(dims::<3, R>(&w), [b, t, h], "indexer weights must be [B, T, H_I]");
    let q = fake_quant_primitive(into_contiguous(q), quant);
    let k = fake_quant_primitive(into_contiguous(k), quant);
    let w = into_contiguous(w);
    let out = output(&q, Shape::new([b, t, s]), q.dtype);
    let n = b * t * s;
    if n == 0 {
        return out;
    }
    let threads = 128usize;
    kernels::indexer::indexer_scores_naive::launch::<R>(
        &q.client,
        cube_count(n.div_ceil(threads), 1),
        CubeDim::new_1d(threads as u32),
        q.clone().into_tensor_arg(),
        w.into_tensor_arg(),
        k.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        t,
        s,
        h,
        d,
        causal_offset.unwrap_or(0),
        f32::NEG_INFINITY,
        causal_offset.is_some(),
        q.dtype.into(),
    );
    out
}

/// Shared memory the top-k kernel needs for a sort buffer of `cap` entries.
fn topk_shared_bytes(cap: usize, threads: usize) -> usize {
    cap * 8 + 256 * 4 + 4 + 8 + threads * 4
}

/// Top-k on CubeCL; `None` when the sort buffer does not fit in shared memory (the caller
/// then falls back to the reference).
pub fn topk_primitive<R: CubeRuntime>(
    scores: CubeTensor<R>,
    k: usize,
    causal_offset: Option<usize>,
    int_dtype: DType,
    bool_dtype: DType,
) -> Option<(CubeTensor<R>, CubeTensor<R>)> {
    let [b, t, s] = dims::<3, R>(&scores);
    let kk = k.min(s);
    let cap = kk.next_power_of_two().max(2);
    let threads = 256usize.min(cap.max(32));
    if topk_shared_bytes(cap, threads) > max_shared(&scores) {
        return None;
    }
    let scores = into_contiguous(scores);
    let indices = output(&scores, Shape::new([b, t, kk]), int_dtype);
    let valid = output(&scores, Shape::new([b, t, kk]), bool_dtype);
    let rows = b * t;
    if rows * kk == 0 {
        return Some((indices, valid));
    }
    kernels::topk::topk_kernel::launch::<R>(
        &scores.client,
        cube_count(rows, 1),
        CubeDim::new_1d(threads as u32),
        scores.clone().into_tensor_arg(),
        indices.clone().into_tensor_arg(),
        valid.clone().into_tensor_arg(),
        rows,
        t,
        s,
        kk,
        causal_offset.unwrap_or(0),
        causal_offset.is_some(),
        cap,
        threads,
        [scores.dtype.into(), int_dtype.into(), bool_dtype.into()],
    );
    Some((indices, valid))
}

/// Tiling of the sparse MLA kernels: heads per cube and slots per chunk that fit in shared
/// memory (`(hg + kc) · (d | 1)` f32 plus small buffers).
fn mla_tiles(heads: usize, d: usize, max_shared: usize) -> (usize, usize) {
    let dp = d | 1;
    let mut hg = heads.clamp(1, 8);
    let mut kc = 16usize;
    let bytes = |hg: usize, kc: usize| 4 * ((hg + kc) * dp + hg * kc + 2 * kc + 4 * hg) + 64;
    while bytes(hg, kc) > max_shared && kc > 4 {
        kc /= 2;
    }
    while bytes(hg, kc) > max_shared && hg > 1 {
        hg /= 2;
    }
    assert!(bytes(hg, kc) <= max_shared, "sparse MLA: latent dim {d} does not fit in shared memory");
    (hg, kc)
}

/// Sparse MLA forward on CubeCL: output `[B,T,H,d_v]` and lse `[B,T,H]`.
pub fn sparse_mla_primitive<R: CubeRuntime>(
    q: CubeTensor<R>,
    kv: CubeTensor<R>,
    indices: CubeTensor<R>,
    valid: CubeTensor<R>,
    d_v: usize,
    scale: f32,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let [b, t, h, d] = dims::<4, R>(&q);
    let [_, s, dk] = dims::<3, R>(&kv);
    let [_, _, kk] = dims::<3, R>(&indices);
    assert_eq!(d, dk, "sparse MLA: query dim {d} != latent dim {dk}");
    assert!(d_v <= d, "sparse MLA: d_v {d_v} > latent dim {d}");
    let q = into_contiguous(q);
    let kv = into_contiguous(kv);
    let indices = into_contiguous(indices);
    let valid = into_contiguous(valid);
    let out = output(&q, Shape::new([b, t, h, d_v]), q.dtype);
    let lse = output(&q, Shape::new([b, t, h]), q.dtype);
    if b * t * h == 0 {
        return (out, lse);
    }
    let threads = 128usize;
    let (hg, kc) = mla_tiles(h, d, max_shared(&q));
    kernels::sparse_mla::sparse_mla_fwd::launch::<R>(
        &q.client,
        cube_count(b * t, h.div_ceil(hg)),
        CubeDim::new_1d(threads as u32),
        q.clone().into_tensor_arg(),
        kv.into_tensor_arg(),
        indices.clone().into_tensor_arg(),
        valid.clone().into_tensor_arg(),
        out.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        b * t,
        t,
        h,
        s,
        kk,
        scale,
        f32::NEG_INFINITY,
        d,
        d_v,
        hg,
        kc,
        threads,
        [q.dtype.into(), indices.dtype.into(), valid.dtype.into()],
    );
    (out, lse)
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

    fn topk_select(scores: FloatTensor<Self>, k: usize, causal_offset: Option<usize>) -> (IntTensor<Self>, BoolTensor<Self>) {
        let settings = get_device_settings::<Self>(&scores.device);
        match topk_primitive(scores.clone(), k, causal_offset, settings.int_dtype.into(), settings.bool_dtype.into()) {
            Some(out) => out,
            None => {
                let (indices, valid) = crate::topk::reference_topk(
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
}
