use super::*;

/// One fused AdamW step on CubeCL; see [`DsaBackend::adamw_step`]: one launch of
/// `dsa_kernels::adamw::adamw_step` over the flattened tensors (which must share a float
/// type), writing new parameter and moment tensors. The norm is read on the device.
pub fn adamw_step_primitive<R: CubeRuntime>(
    param: CubeTensor<R>,
    grad: CubeTensor<R>,
    moment_1: CubeTensor<R>,
    moment_2: CubeTensor<R>,
    norm: Option<CubeTensor<R>>,
    step: AdamWStep,
) -> (CubeTensor<R>, CubeTensor<R>, CubeTensor<R>) {
    let (dtype, shape) = (param.dtype, param.shape());
    for (name, t) in [("grad", &grad), ("moment_1", &moment_1), ("moment_2", &moment_2)] {
        assert!(t.dtype == dtype && t.shape() == shape, "adamw_step: {name} is {:?} {:?}, the parameter {dtype:?} {shape:?}", t.dtype, t.shape());
    }
    // An empty tensor launches nothing (a launch of zero cubes, even a copy, fails on CUDA).
    let n = shape.num_elements();
    if n == 0 {
        return (param, moment_1, moment_2);
    }
    let (param, grad, moment_1, moment_2) = (into_contiguous(param), into_contiguous(grad), into_contiguous(moment_1), into_contiguous(moment_2));
    let outs = [(); 3].map(|_| output(&param, shape.clone(), dtype));
    let clip = norm.is_some();
    // Without clipping the kernel never reads `norm`: any tensor of the type will do.
    let norm = match norm {
        Some(t) if t.dtype == dtype => into_contiguous(t),
        Some(t) => burn_cubecl::kernel::cast(into_contiguous(t), dtype),
        None => grad.clone(),
    };
    let [p_out, m_out, v_out] = outs;
    use kernels::adamw::ADAMW_UNITS;
    kernels::adamw::adamw_step::launch::<R>(
        &param.client,
        cube_count(n.div_ceil(ADAMW_UNITS), 1),
        CubeDim::new_1d(ADAMW_UNITS as u32),
        param.clone().into_tensor_arg(),
        grad.into_tensor_arg(),
        moment_1.into_tensor_arg(),
        moment_2.into_tensor_arg(),
        norm.into_tensor_arg(),
        p_out.clone().into_tensor_arg(),
        m_out.clone().into_tensor_arg(),
        v_out.clone().into_tensor_arg(),
        n,
        step.lr as f32,
        (1.0 - step.decay_rate()) as f32,
        step.beta_1,
        1.0 - step.beta_1,
        step.beta_2,
        1.0 - step.beta_2,
        step.epsilon,
        step.bias_correction_1(),
        step.bias_correction_2(),
        step.max_norm,
        crate::reference::adamw::min_positive(dtype) as f32,
        clip,
        dtype.into(),
    );
    (p_out, m_out, v_out)
}
