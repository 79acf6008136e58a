use super::*;

/// Whether dense attention over `q [B,H,T,Dqk]`, `k` and `v [B,H,S,Dv]` runs on the flash
/// kernels ([`kernels::flash_attention`]): CUDA with bf16/f16 `mma.sync` (sm_80 and later),
/// all three in one of those dtypes, dims the kernels take, something to compute.
pub(super) fn flash_applies<R: CubeRuntime>(q: &CubeTensor<R>, k: &CubeTensor<R>, v: &CubeTensor<R>) -> bool {
    let [b, h, t, dqk] = dims::<4, R>(q);
    let [_, _, s, dv] = dims::<4, R>(v);
    let Some(kind) = half_kind(q) else { return false };
    k.dtype == q.dtype
        && v.dtype == q.dtype
        && kernels::flash_attention::flash_supports(dqk, dv)
        && b * h * t * s > 0
        && b.max(h) <= 65535
        && R::name(&q.client) == "cuda"
        && has_mma(&q.client, Mma::Manual, kind, (16, 8, 16))
        && {
            let params = flash_params([q, k, v], None, 0, 1.0);
            params.fwd_shared_bytes().max(params.bwd_shared_bytes()) <= max_shared(q)
        }
}

/// The flash kernels' sizes and strides for `q`, `k`, `v` (and the backward's `d_out`).
fn flash_params<R: CubeRuntime>([q, k, v]: [&CubeTensor<R>; 3], d_out: Option<&CubeTensor<R>>, offset: usize, scale: f32) -> kernels::flash_attention::FlashParams {
    let [b, h, t, dqk] = dims::<4, R>(q);
    let [_, _, s, dv] = dims::<4, R>(v);
    let strides = |x: &CubeTensor<R>| {
        let st = x.meta.strides();
        [st[0], st[1], st[2]]
    };
    kernels::flash_attention::FlashParams {
        batch: b,
        heads: h,
        t_len: t,
        s_len: s,
        offset,
        dqk,
        dv,
        q_strides: strides(q),
        k_strides: strides(k),
        v_strides: strides(v),
        o_strides: d_out.map(strides).unwrap_or_default(),
        scale,
        f16: q.dtype == DType::F16,
    }
}

/// [`DsaBackend::dense_attention`] on the flash kernels where `flash_applies`: the output
/// (the inputs' dtype) and the log-sum-exp (f32); `None` elsewhere.
pub fn flash_attention<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    causal_offset: usize,
    scale: f32,
) -> Option<(CubeTensor<R>, CubeTensor<R>)> {
    if !flash_applies(&q, &k, &v) {
        return None;
    }
    let (q, k, v) = (aligned_rows(q), aligned_rows(k), aligned_rows(v));
    let params = flash_params([&q, &k, &v], None, causal_offset, scale);
    let [b, h, t, _] = dims::<4, R>(&q);
    let out = output(&q, Shape::new([b, h, t, params.dv]), q.dtype);
    let lse = output(&q, Shape::new([b, h, t]), DType::F32);
    let binding = |x: &CubeTensor<R>| x.handle.clone().binding();
    // SAFETY: the inputs' rows are aligned above and have the shapes and strides of
    // `params`, the outputs are contiguous with the shapes the kernel writes, and
    // `flash_applies` checked the dims, the sizes and the device.
    unsafe { kernels::flash_attention::launch_flash_fwd(&q.client, [&q, &k, &v, &out, &lse].map(binding), params) }
    TENSOR_CORE_LAUNCHES[TensorCoreOp::DenseAttention as usize].fetch_add(1, Ordering::SeqCst);
    Some((out, lse))
}

/// [`DsaBackend::dense_attention_backward`] on the flash kernels where `flash_applies`,
/// given the forward's `lse` and `delta = Σ_dv d_out · out` (`[B,H,T]`): `(dq, dk, dv)` in
/// the inputs' dtype; `None` elsewhere.
#[allow(clippy::too_many_arguments)]
pub fn flash_attention_backward<R: CubeRuntime>(
    [q, k, v]: [CubeTensor<R>; 3],
    d_out: CubeTensor<R>,
    lse: CubeTensor<R>,
    delta: CubeTensor<R>,
    causal_offset: usize,
    scale: f32,
) -> Option<(CubeTensor<R>, CubeTensor<R>, CubeTensor<R>)> {
    if !flash_applies(&q, &k, &v) || d_out.dtype != q.dtype {
        return None;
    }
    let (q, k, v, d_out) = (aligned_rows(q), aligned_rows(k), aligned_rows(v), aligned_rows(d_out));
    let f32_contiguous = |x: CubeTensor<R>| into_contiguous(same_dtype(x, DType::F32));
    let (lse, delta) = (f32_contiguous(lse), f32_contiguous(delta));
    let params = flash_params([&q, &k, &v], Some(&d_out), causal_offset, scale);
    let [b, h, t, dqk] = dims::<4, R>(&q);
    let s = params.s_len;
    let dq = zeros_f32(&q, Shape::new([b, h, t, dqk]));
    let dk = output(&q, Shape::new([b, h, s, dqk]), q.dtype);
    let dv = output(&q, Shape::new([b, h, s, params.dv]), q.dtype);
    let binding = |x: &CubeTensor<R>| x.handle.clone().binding();
    // SAFETY: as in `flash_attention`; `dq` is zeroed f32, `lse` and `delta` contiguous f32.
    unsafe {
        kernels::flash_attention::launch_flash_bwd(
            &q.client,
            [&q, &k, &v, &d_out, &lse, &delta].map(binding),
            [&dq, &dk, &dv].map(binding),
            params,
        )
    }
    TENSOR_CORE_LAUNCHES[TensorCoreOp::DenseAttentionBackward as usize].fetch_add(1, Ordering::SeqCst);
    Some((from_f32(dq, q.dtype), dk, dv))
}
