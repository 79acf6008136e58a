use super::*;

/// The FMA grouped-product kernels' tiling `(rm, rn, bk)`: `16·rm × 16·rn` output tiles, the
/// reduction in chunks of `bk` (see `dsa_kernels::grouped_matmul`).
const GMM_TILE: (usize, usize, usize) = (4, 4, 16);

/// Whether the grouped products ([`DsaBackend::grouped_matmul`] and its weight gradient)
/// take their tensor-core kernels for inputs of `dtype` on `client`'s device: bf16 or f16,
/// and 16×16×16 cmma for that type with f32 accumulation in 32-wide planes (CUDA sm_80 and
/// later; not wgpu's lavapipe). Any shape: the kernels zero-pad the tiles. Else the FMA
/// kernels run.
pub fn grouped_matmul_tensor_cores<R: Runtime>(client: &ComputeClient<R>, dtype: DType) -> bool {
    let kind = match dtype {
        DType::BF16 => FloatKind::BF16,
        DType::F16 => FloatKind::F16,
        _ => return false,
    };
    has_mma(client, Mma::Cmma, kind, (16, 16, 16))
}

/// Vector width of the tensor-core grouped products' loads of `a` and `b` (rows of `k` and
/// `n` values): the widest of 8, 4, 2 and 1 values that divides `k`, `n` and both tensors'
/// starts in their buffers.
fn grouped_matmul_vector<R: CubeRuntime>(k: usize, n: usize, a: &CubeTensor<R>, b: &CubeTensor<R>) -> usize {
    let aligned = |t: &CubeTensor<R>, v: usize| t.handle.offset_start.unwrap_or(0).is_multiple_of((v * t.dtype.size()) as u64);
    [8usize, 4, 2]
        .into_iter()
        .find(|&v| k.is_multiple_of(v) && n.is_multiple_of(v) && aligned(a, v) && aligned(b, v))
        .unwrap_or(1)
}

/// The grouped matrix product on CubeCL; see [`DsaBackend::grouped_matmul`]. On tensor
/// cores where [`grouped_matmul_tensor_cores`] says so (64×64 output tiles), else by FMA
/// (`GMM_TILE`). Launches an upper bound of the row tiles (`⌈M/TM⌉ + G`): the kernels find
/// the groups in `offsets` on the device.
pub fn grouped_matmul_primitive<R: CubeRuntime>(x: CubeTensor<R>, w: CubeTensor<R>, offsets: CubeTensor<R>) -> CubeTensor<R> {
    let [m, k] = dims::<2, R>(&x);
    let [g, _, n] = dims::<3, R>(&w);
    assert_eq!(x.dtype, w.dtype, "grouped_matmul: x and w must have the same dtype");
    let (x, w, offsets) = (into_contiguous(x), into_contiguous(w), into_contiguous(offsets));
    let y = output(&x, Shape::new([m, n]), x.dtype);
    if m * n == 0 {
        return y;
    }
    let dtypes = [x.dtype.into(), offsets.dtype.into()];
    if grouped_matmul_tensor_cores(&x.client, x.dtype) {
        use kernels::grouped_matmul::{GMM_TC_TILE, GMM_TC_UNITS};
        let vector = grouped_matmul_vector(k, n, &x, &w);
        // SAFETY: every read and write of the kernel is guarded by the bounds passed (see
        // its docs); the tensors are contiguous with these shapes, their starts and rows
        // multiples of `vector`.
        unsafe {
            kernels::grouped_matmul::grouped_matmul_fwd_cmma::launch_unchecked::<R>(
                &x.client,
                cube_count(m.div_ceil(GMM_TC_TILE) + g, n.div_ceil(GMM_TC_TILE)),
                CubeDim::new_1d(GMM_TC_UNITS as u32),
                vector,
                x.clone().into_tensor_arg(),
                w.into_tensor_arg(),
                offsets.clone().into_tensor_arg(),
                y.clone().into_tensor_arg(),
                m,
                k,
                n,
                g,
                dtypes,
            );
        }
        TENSOR_CORE_LAUNCHES[TensorCoreOp::GroupedMatmul as usize].fetch_add(1, Ordering::SeqCst);
        return y;
    }
    let (rm, rn, bk) = GMM_TILE;
    kernels::grouped_matmul::grouped_matmul_fwd::launch::<R>(
        &x.client,
        cube_count(m.div_ceil(16 * rm) + g, n.div_ceil(16 * rn)),
        CubeDim::new_1d(kernels::grouped_matmul::GMM_UNITS as u32),
        x.clone().into_tensor_arg(),
        w.into_tensor_arg(),
        offsets.clone().into_tensor_arg(),
        y.clone().into_tensor_arg(),
        m,
        k,
        n,
        g,
        rm,
        rn,
        bk,
        dtypes,
    );
    y
}

/// The weight gradient of the grouped product on CubeCL; see
/// [`DsaBackend::grouped_matmul_weight_grad`]: `[G, K, N]` with `G + 1` the length of
/// `offsets`. On tensor cores where [`grouped_matmul_tensor_cores`] says so (64×64 tiles of
/// `dw[g]`), else by FMA (`GMM_TILE`).
pub fn grouped_matmul_weight_grad_primitive<R: CubeRuntime>(x: CubeTensor<R>, dy: CubeTensor<R>, offsets: CubeTensor<R>) -> CubeTensor<R> {
    let [m, k] = dims::<2, R>(&x);
    let [_, n] = dims::<2, R>(&dy);
    let [o] = dims::<1, R>(&offsets);
    let g = o.checked_sub(1).expect("grouped_matmul_weight_grad: offsets hold G + 1 entries");
    assert_eq!(x.dtype, dy.dtype, "grouped_matmul_weight_grad: x and dy must have the same dtype");
    let (x, dy, offsets) = (into_contiguous(x), into_contiguous(dy), into_contiguous(offsets));
    let dw = output(&x, Shape::new([g, k, n]), x.dtype);
    if g * k * n == 0 {
        return dw;
    }
    let dtypes = [x.dtype.into(), offsets.dtype.into()];
    if grouped_matmul_tensor_cores(&x.client, x.dtype) {
        use kernels::grouped_matmul::{GMM_TC_TILE, GMM_TC_UNITS};
        let vector = grouped_matmul_vector(k, n, &x, &dy);
        // SAFETY: every read and write of the kernel is guarded by the bounds passed (see
        // its docs); the tensors are contiguous with these shapes, their starts and rows
        // multiples of `vector`.
        unsafe {
            kernels::grouped_matmul::grouped_matmul_wgrad_cmma::launch_unchecked::<R>(
                &x.client,
                cube_count(g * k.div_ceil(GMM_TC_TILE), n.div_ceil(GMM_TC_TILE)),
                CubeDim::new_1d(GMM_TC_UNITS as u32),
                vector,
                x.clone().into_tensor_arg(),
                dy.into_tensor_arg(),
                offsets.clone().into_tensor_arg(),
                dw.clone().into_tensor_arg(),
                m,
                k,
                n,
                g,
                dtypes,
            );
        }
        TENSOR_CORE_LAUNCHES[TensorCoreOp::GroupedMatmulWeightGrad as usize].fetch_add(1, Ordering::SeqCst);
        return dw;
    }
    let (rm, rn, bk) = GMM_TILE;
    kernels::grouped_matmul::grouped_matmul_wgrad::launch::<R>(
        &x.client,
        cube_count(g * k.div_ceil(16 * rm), n.div_ceil(16 * rn)),
        CubeDim::new_1d(kernels::grouped_matmul::GMM_UNITS as u32),
        x.clone().into_tensor_arg(),
        dy.into_tensor_arg(),
        offsets.clone().into_tensor_arg(),
        dw.clone().into_tensor_arg(),
        m,
        k,
        n,
        g,
        rm,
        rn,
        bk,
        dtypes,
    );
    dw
}
