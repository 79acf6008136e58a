use super::*;

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
    let max_units = scores.client.properties().hardware.max_units_per_cube as usize;
    let kernels::topk::Config { buf, hist_bits, threads } = kernels::topk::Config::new(kk, s, max_shared(&scores), max_units)?;
    // Loads of up to 16 bytes (`s` a multiple of the width, so that rows start aligned).
    let max_vector = scores.client.properties().hardware.max_vector_size;
    let mut vector = (16 / scores.dtype.size()).clamp(1, max_vector.max(1));
    while s % vector != 0 {
        vector /= 2;
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
        vector,
        scores.clone().into_tensor_arg(),
        indices.clone().into_tensor_arg(),
        valid.clone().into_tensor_arg(),
        rows,
        t,
        s,
        kk,
        causal_offset.unwrap_or(0),
        causal_offset.is_some(),
        buf,
        hist_bits,
        threads,
        [scores.dtype.into(), int_dtype.into(), bool_dtype.into()],
    );
    Some((indices, valid))
}
