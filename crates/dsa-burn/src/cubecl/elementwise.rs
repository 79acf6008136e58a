use super::*;

/// [`DsaBackend::swiglu`] in one kernel ([`kernels::swiglu::swiglu_fwd()`]).
pub fn swiglu_primitive<R: CubeRuntime>(gate: CubeTensor<R>, up: CubeTensor<R>) -> CubeTensor<R> {
    let shape = gate.shape();
    let n = shape.num_elements();
    let dtype = gate.dtype;
    let (gate, up) = (into_contiguous(gate), into_contiguous(same_dtype(up, dtype)));
    let y = output(&gate, shape, dtype);
    if n == 0 {
        return y;
    }
    use kernels::swiglu::SWIGLU_UNITS;
    kernels::swiglu::swiglu_fwd::launch::<R>(
        &gate.client,
        cube_count(n.div_ceil(SWIGLU_UNITS), 1),
        CubeDim::new_1d(SWIGLU_UNITS as u32),
        gate.clone().into_tensor_arg(),
        up.into_tensor_arg(),
        y.clone().into_tensor_arg(),
        n,
        gate.dtype.into(),
    );
    y
}

/// [`DsaBackend::swiglu_backward`] in one kernel ([`kernels::swiglu::swiglu_bwd()`]); both
/// gradients in `gate`'s dtype.
pub fn swiglu_backward_primitive<R: CubeRuntime>(gate: CubeTensor<R>, up: CubeTensor<R>, dy: CubeTensor<R>) -> (CubeTensor<R>, CubeTensor<R>) {
    let shape = gate.shape();
    let n = shape.num_elements();
    let dtype = gate.dtype;
    let (gate, up, dy) = (into_contiguous(gate), into_contiguous(same_dtype(up, dtype)), into_contiguous(same_dtype(dy, dtype)));
    let (dgate, dup) = (output(&gate, shape.clone(), dtype), output(&gate, shape, dtype));
    if n == 0 {
        return (dgate, dup);
    }
    use kernels::swiglu::SWIGLU_UNITS;
    kernels::swiglu::swiglu_bwd::launch::<R>(
        &gate.client,
        cube_count(n.div_ceil(SWIGLU_UNITS), 1),
        CubeDim::new_1d(SWIGLU_UNITS as u32),
        gate.clone().into_tensor_arg(),
        up.into_tensor_arg(),
        dy.into_tensor_arg(),
        dgate.clone().into_tensor_arg(),
        dup.clone().into_tensor_arg(),
        n,
        dtype.into(),
    );
    (dgate, dup)
}

/// [`DsaBackend::rope`] in one kernel ([`kernels::rope::rope()`]).
pub fn rope_primitive<R: CubeRuntime>(x: CubeTensor<R>, freqs: CubeTensor<R>, start: usize, interleaved: bool, inverse: bool) -> CubeTensor<R> {
    let [b, t, h, d] = dims::<4, R>(&x);
    let x = into_contiguous(x);
    let freqs = into_contiguous(same_dtype(freqs, DType::F32));
    let y = output(&x, Shape::new([b, t, h, d]), x.dtype);
    let pairs = b * t * h * d / 2;
    if pairs == 0 {
        return y;
    }
    use kernels::rope::ROPE_UNITS;
    kernels::rope::rope::launch::<R>(
        &x.client,
        cube_count(pairs.div_ceil(ROPE_UNITS), 1),
        CubeDim::new_1d(ROPE_UNITS as u32),
        x.clone().into_tensor_arg(),
        freqs.into_tensor_arg(),
        y.clone().into_tensor_arg(),
        pairs,
        t,
        h,
        d / 2,
        start,
        interleaved,
        inverse,
        x.dtype.into(),
    );
    y
}

/// [`DsaBackend::rms_norm`] of `x [N, d]` and `gamma [d]` in one kernel
/// ([`kernels::norm::rms_norm_fwd()`]).
pub fn rms_norm_primitive<R: CubeRuntime>(x: CubeTensor<R>, gamma: CubeTensor<R>, epsilon: f64) -> CubeTensor<R> {
    let [rows, d] = dims::<2, R>(&x);
    let (x, gamma) = (into_contiguous(x), into_contiguous(gamma));
    let y = output(&x, Shape::new([rows, d]), x.dtype);
    if rows * d == 0 {
        return y;
    }
    let dtypes = [x.dtype.into(), gamma.dtype.into()];
    use kernels::norm::NORM_UNITS;
    kernels::norm::rms_norm_fwd::launch::<R>(
        &x.client,
        cube_count(rows, 1),
        CubeDim::new_1d(NORM_UNITS as u32),
        x.clone().into_tensor_arg(),
        gamma.into_tensor_arg(),
        y.clone().into_tensor_arg(),
        rows,
        d,
        epsilon as f32,
        dtypes,
    );
    y
}

/// [`DsaBackend::rms_norm_backward`]'s `dx` and the partial sums of `dgamma` (f32
/// `[⌈N / 32⌉, d]`, to be summed over rows) in one kernel ([`kernels::norm::rms_norm_bwd()`]).
pub fn rms_norm_backward_primitive<R: CubeRuntime>(x: CubeTensor<R>, gamma: CubeTensor<R>, dy: CubeTensor<R>, epsilon: f64) -> (CubeTensor<R>, CubeTensor<R>) {
    use kernels::norm::{NORM_BWD_ROWS, NORM_UNITS};
    let [rows, d] = dims::<2, R>(&x);
    let (x, gamma) = (into_contiguous(x), into_contiguous(gamma));
    let dy = into_contiguous(same_dtype(dy, x.dtype));
    let cubes = rows.div_ceil(NORM_BWD_ROWS);
    let dx = output(&x, Shape::new([rows, d]), x.dtype);
    let parts = if rows * d == 0 { zeros_f32(&x, Shape::new([1, d])) } else { output(&x, Shape::new([cubes, d]), DType::F32) };
    if rows * d == 0 {
        return (dx, parts);
    }
    let dtypes = [x.dtype.into(), gamma.dtype.into()];
    kernels::norm::rms_norm_bwd::launch::<R>(
        &x.client,
        cube_count(cubes, 1),
        CubeDim::new_1d(NORM_UNITS as u32),
        x.clone().into_tensor_arg(),
        gamma.into_tensor_arg(),
        dy.into_tensor_arg(),
        dx.clone().into_tensor_arg(),
        parts.clone().into_tensor_arg(),
        rows,
        d,
        epsilon as f32,
        d.div_ceil(NORM_UNITS),
        dtypes,
    );
    (dx, parts)
}
