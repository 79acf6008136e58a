use super::*;

/// The dispatcher table of the projections ([`crate::ops::linear`]): the cubek strategy that
/// [`DsaBackend::linear_matmul`] launches on a `runtime` device (`cuda`, `wgpu`, ...) for
/// each [`Layout`] of its operands, by its name in `dsa-cli bench-matmul`'s lines (see
/// [`crate::matmul::strategy_name`]); `tensor_cores`: the device multiplies the operands'
/// dtype on tensor cores (bf16 or f16 cmma, see [`grouped_matmul_tensor_cores`]). `None`:
/// Burn's own matmul. The entries come from the benchmark's numbers; the unmeasured `TT`
/// keeps the kernel Burn's matmul runs without autotuning (`simple_cyclic_cmma`).
///
/// ```
/// use dsa_burn::cubecl::linear_strategy_name;
/// use dsa_burn::matmul::Layout;
/// assert_eq!(linear_strategy_name("cuda", true, Layout::NN), Some("specialized_tma_mma"));
/// assert_eq!(linear_strategy_name("wgpu", false, Layout::NN), None);
/// ```
pub fn linear_strategy_name(runtime: &str, tensor_cores: bool, layout: Layout) -> Option<&'static str> {
    match (runtime, tensor_cores, layout) {
        // CUDA, bf16/f16: the forward y = x·W, dX = dY·Wᵀ, dW = Xᵀ·dY, both transposed.
        // `dsa-cli bench-matmul` on an H200 (bf16, the small preset's lm_head, mlp.down_proj,
        // attn.wq_b and attn.wo at 8192 rows): specialized_tma_mma 2.6 ms over the twelve
        // products against 8.8 ms for simple_cyclic_cmma (Burn's matmul without autotuning).
        ("cuda", true, Layout::NN) => Some("specialized_tma_mma"),
        ("cuda", true, Layout::NT) => Some("specialized_tma_mma"),
        ("cuda", true, Layout::TN) => Some("specialized_tma_mma"),
        ("cuda", true, Layout::TT) => Some("simple_cyclic_cmma"),
        // f32 (TF32 on CUDA), devices without tensor cores, wgpu: Burn's matmul.
        _ => None,
    }
}

/// The cubek strategy of [`DsaBackend::linear_matmul`] for operands of `dtype` in `layout` on
/// `client`'s device: the one [`KernelSettings::linear`] forces, else the entry of
/// [`linear_strategy_name`]'s table, except with Burn's `autotune` feature, where Burn's
/// autotuned matmul runs (`None`) as it would without `ops::linear`.
///
/// # Panics
///
/// If the table names a strategy that [`crate::matmul::strategy_by_name`] does not know.
pub fn linear_strategy<R: Runtime>(client: &ComputeClient<R>, dtype: DType, layout: Layout) -> Option<Strategy> {
    if let Some(forced) = setting(|s| s.linear.clone()) {
        return Some(forced);
    }
    if cfg!(feature = "autotune") {
        return None;
    }
    let name = linear_strategy_name(R::name(client), grouped_matmul_tensor_cores(client, dtype), layout)?;
    Some(crate::matmul::strategy_by_name(name).unwrap_or_else(|| panic!("linear_strategy_name: cubek has no strategy `{name}`")))
}

/// The projections' matrix product on CubeCL, `lhs [M, K] · rhs [K, N]` (any strides); see
/// [`DsaBackend::linear_matmul`]. Launches [`linear_strategy`]'s cubek strategy; where there
/// is none, it does not apply (an error, nothing launched), the inputs are quantized or of
/// two dtypes, or a dim is 0, Burn's matmul runs as `float_matmul` would (`Strategy::Auto`,
/// or the autotuner).
pub fn linear_matmul_primitive<R: CubeRuntime>(lhs: CubeTensor<R>, rhs: CubeTensor<R>) -> CubeTensor<R> {
    let dtype = lhs.dtype;
    let [m, k] = dims::<2, R>(&lhs);
    let n = dims::<2, R>(&rhs)[1];
    let plain = lhs.qparams.is_none() && rhs.qparams.is_none() && rhs.dtype == dtype && m * k * n > 0;
    let layout = Layout::of(lhs.meta.strides(), rhs.meta.strides());
    if let Some(strategy) = plain.then(|| linear_strategy(&lhs.client, dtype, layout)).flatten() {
        if let Ok(out) = crate::matmul::matmul(&strategy, lhs.clone(), rhs.clone()) {
            LINEAR_LAUNCHES[0].fetch_add(1, Ordering::SeqCst);
            return out;
        }
    }
    LINEAR_LAUNCHES[1].fetch_add(1, Ordering::SeqCst);
    use burn_cubecl::kernel::matmul::{matmul, MatmulStrategy};
    matmul(lhs, rhs, None, MatmulStrategy::default(), dtype).expect("Burn's matmul launches")
}
