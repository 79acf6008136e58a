use super::*;

/// FP8 e4m3 block fake-quantisation (dequantised values) of a CubeCL tensor along its last
/// dim, bit-identical to [`crate::reference::quant::fake_quant`]'s forward value.
pub fn fake_quant_primitive<R: CubeRuntime>(
    x: CubeTensor<R>,
    quant: IndexerQuant,
) -> CubeTensor<R> {
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
    kernels::quant::fake_quant_block_kernel::launch::<R>(
        &x.client,
        cube_count(units, 1),
        CubeDim::new_1d(kernels::quant::FP8_BLOCK as u32),
        x.clone().into_tensor_arg(),
        out.clone().into_tensor_arg(),
        rows,
        d,
        kernels::quant::AMAX_FLOOR,
        E4M3_MAX,
        quant == IndexerQuant::E4m3Pow2,
        x.dtype.into(),
    );
    out
}

/// FP8 e4m3 block quantisation of a CubeCL tensor along its last dim into its codes (stored
/// as `codes` says) and f32 block scales `[.., ⌈D/128⌉]`: the factors of
/// [`fake_quant_primitive`]'s values (same rounding), for the tensor-core indexers.
pub(super) fn quantize_codes<R: CubeRuntime>(
    x: CubeTensor<R>,
    quant: IndexerQuant,
    codes: Codes,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let x = into_contiguous(x);
    let shape = x.shape();
    let nd = shape.num_dims();
    let d = shape[nd - 1];
    let rows = shape.num_elements() / d.max(1);
    let nb = d.div_ceil(kernels::quant::FP8_BLOCK);
    let mut scale_dims: Vec<usize> = (0..nd).map(|i| shape[i]).collect();
    scale_dims[nd - 1] = nb;
    let (dtype, code_type): (DType, StorageType) = match codes {
        Codes::F16 => (DType::F16, DType::F16.into()),
        Codes::E4m3 => (DType::U8, ElemType::Float(FloatKind::E4M3).into()),
    };
    let codes = output(&x, shape, dtype);
    let scales = output(&x, Shape::from(scale_dims), DType::F32);
    if rows * d > 0 {
        kernels::quant::quantize_block_kernel::launch::<R>(
            &x.client,
            cube_count(rows * nb, 1),
            CubeDim::new_1d(kernels::quant::FP8_BLOCK as u32),
            x.clone().into_tensor_arg(),
            codes.clone().into_tensor_arg(),
            scales.clone().into_tensor_arg(),
            rows,
            d,
            kernels::quant::AMAX_FLOOR,
            E4M3_MAX,
            quant == IndexerQuant::E4m3Pow2,
            [x.dtype.into(), code_type, DType::F32.into()],
        );
    }
    (codes, scales)
}

/// [`fake_quant_primitive`] over a Burn tensor.
pub fn fake_quant<R, F, I, BT, const D: usize>(
    x: Tensor<CubeBackend<R, F, I, BT>, D>,
    quant: IndexerQuant,
) -> Tensor<CubeBackend<R, F, I, BT>, D>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    Tensor::from_primitive(TensorPrimitive::Float(fake_quant_primitive(
        x.into_primitive().tensor(),
        quant,
    )))
}
