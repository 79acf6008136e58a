use super::*;

/// Heads per cube and selected rows per chunk for kernel 6's cube-per-query kernels: the
/// largest pair whose shared memory (`(hg + kc)` padded rows of `d`, `pairs` floats per
/// (head, slot), a few per head and slot) fits.
fn indexer_loss_tiles(heads: usize, d: usize, pairs: usize, max_shared: usize) -> (usize, usize) {
    let bytes = |hg: usize, kc: usize| 4 * ((hg + kc) * (d | 1) + pairs * hg * kc + hg + 3 * kc);
    [(64, 32), (64, 16), (32, 32), (32, 16), (16, 16), (16, 8), (8, 8), (8, 4), (4, 4), (2, 2)]
        .into_iter()
        .map(|(hg, kc)| (hg.min(heads.max(1)), kc))
        .find(|&(hg, kc)| bytes(hg, kc) <= max_shared)
        .unwrap_or((1, 1))
}

/// Kernel 6: the indexer's scores at the selected keys on CubeCL; see
/// [`DsaBackend::indexer_selected_scores`].
pub fn indexer_selected_scores_primitive<R: CubeRuntime>(
    q: CubeTensor<R>,
    w: CubeTensor<R>,
    k: CubeTensor<R>,
    quant: IndexerQuant,
    indices: CubeTensor<R>,
    valid: CubeTensor<R>,
) -> CubeTensor<R> {
    let [b, t, h, d] = dims::<4, R>(&q);
    let [_, s, _] = dims::<3, R>(&k);
    let [_, _, kk] = dims::<3, R>(&indices);
    let (w, indices, valid) = (into_contiguous(w), into_contiguous(indices), into_contiguous(valid));
    if b * t * kk == 0 {
        return output(&q, Shape::new([b, t, kk]), q.dtype);
    }
    if let Some(kc) = mma_indexer(&q, quant, h, d)
        .then(|| mma_chunk(d, max_shared(&q)))
        .flatten()
    {
        // On tensor cores: the e4m3 codes' dot products, the scales applied afterwards.
        let (qc, sq) = quantize_codes(q, quant, Codes::F16);
        let (kc_codes, sk) = quantize_codes(k, quant, Codes::F16);
        let heads = HeadSums { hw: w, hs: sq, ks: sk, relu: true };
        let out = selected_head_sums(qc, kc_codes, indices, valid, heads, 1.0, kc);
        TENSOR_CORE_LAUNCHES[TensorCoreOp::SelectedScores as usize].fetch_add(1, Ordering::SeqCst);
        return out;
    }
    let q = fake_quant_primitive(into_contiguous(q), quant);
    let k = fake_quant_primitive(into_contiguous(k), quant);
    let out = output(&q, Shape::new([b, t, kk]), q.dtype);
    let n = b * t * kk;
    let threads = 128usize;
    kernels::indexer_loss::indexer_selected_scores::launch::<R>(
        &q.client,
        cube_count(n.div_ceil(threads), 1),
        CubeDim::new_1d(threads as u32),
        q.clone().into_tensor_arg(),
        w.into_tensor_arg(),
        k.into_tensor_arg(),
        indices.clone().into_tensor_arg(),
        valid.clone().into_tensor_arg(),
        out.clone().into_tensor_arg(),
        t,
        s,
        kk,
        h,
        d,
        f32::NEG_INFINITY,
        [q.dtype.into(), indices.dtype.into(), valid.dtype.into()],
    );
    out
}

/// Kernel 6: gradients `(dq, dw, dk)` of the selected scores on CubeCL; see
/// [`DsaBackend::indexer_selected_scores_backward`].
pub fn indexer_selected_scores_backward_primitive<R: CubeRuntime>(
    q: CubeTensor<R>,
    w: CubeTensor<R>,
    k: CubeTensor<R>,
    quant: IndexerQuant,
    indices: CubeTensor<R>,
    valid: CubeTensor<R>,
    grad: CubeTensor<R>,
) -> (CubeTensor<R>, CubeTensor<R>, CubeTensor<R>) {
    let [b, t, h, d] = dims::<4, R>(&q);
    let [_, s, _] = dims::<3, R>(&k);
    let [_, _, kk] = dims::<3, R>(&indices);
    let q = fake_quant_primitive(into_contiguous(q), quant);
    let k = fake_quant_primitive(into_contiguous(k), quant);
    let (w, indices, valid) = (into_contiguous(w), into_contiguous(indices), into_contiguous(valid));
    let grad = into_contiguous(grad);
    let dq = output(&q, Shape::new([b, t, h, d]), q.dtype);
    let dw = output(&q, Shape::new([b, t, h]), q.dtype);
    let dk = zeros_f32(&q, Shape::new([b, s, d]));
    if b * t * h > 0 {
        let (hg, kc) = indexer_loss_tiles(h, d, 2, max_shared(&q));
        let (native, acc_dtype) = f32_accumulation(&q);
        kernels::indexer_loss::indexer_selected_scores_bwd::launch::<R>(
            &q.client,
            cube_count(b * t, h.div_ceil(hg)),
            CubeDim::new_1d(128),
            q.clone().into_tensor_arg(),
            w.into_tensor_arg(),
            k.into_tensor_arg(),
            indices.clone().into_tensor_arg(),
            valid.clone().into_tensor_arg(),
            grad.into_tensor_arg(),
            dq.clone().into_tensor_arg(),
            dw.clone().into_tensor_arg(),
            dk.clone().into_tensor_arg(),
            b * t,
            t,
            s,
            kk,
            h,
            d,
            hg,
            kc,
            native,
            [
                q.dtype.into(),
                indices.dtype.into(),
                valid.dtype.into(),
                acc_dtype.into(),
            ],
        );
    }
    (dq, dw, from_f32(dk, q.dtype))
}

/// The per-head inputs of [`selected_head_sums`]: `hw` `[B,T,H]` (the lse, or the indexer
/// weights), `hs` `[B,T,H]` and `ks` `[B,S]` (the FP8 query and key scales, read with
/// `relu` only).
struct HeadSums<R: CubeRuntime> {
    hw: CubeTensor<R>,
    hs: CubeTensor<R>,
    ks: CubeTensor<R>,
    relu: bool,
}

/// `dsa_kernels::sparse_mla_mma::selected_head_sums_mma`: `q [B,T,H,d]`, `kv [B,S,d]` (both
/// of one half type, read as [`readable_rows`]), the selections (contiguous), `kc` slots per
/// chunk; returns `[B,T,K]` in `hw`'s dtype.
fn selected_head_sums<R: CubeRuntime>(
    q: CubeTensor<R>,
    kv: CubeTensor<R>,
    indices: CubeTensor<R>,
    valid: CubeTensor<R>,
    heads: HeadSums<R>,
    scale: f32,
    kc: usize,
) -> CubeTensor<R> {
    let [b, t, h, d] = dims::<4, R>(&q);
    let [_, s, _] = dims::<3, R>(&kv);
    let [_, _, kk] = dims::<3, R>(&indices);
    let (native, acc_dtype) = f32_accumulation(&q);
    let acc = zeros_f32(&q, Shape::new([b, t, kk]));
    let out_dtype = heads.hw.dtype;
    let vector = load_width(d);
    let dtypes = [
        q.dtype.into(),
        indices.dtype.into(),
        valid.dtype.into(),
        acc_dtype.into(),
        heads.hw.dtype.into(),
        DType::F32.into(),
    ];
    // SAFETY: every read and write of the kernel is guarded by its own bounds (see its
    // docs); the tensors match the shapes passed.
    unsafe {
        kernels::sparse_mla_mma::selected_head_sums_mma::launch_unchecked::<R>(
            &q.client,
            cube_count(b * t, h.div_ceil(kernels::sparse_mla_mma::MMA_HEADS)),
            CubeDim::new_1d(kernels::sparse_mla_mma::MMA_UNITS as u32),
            vector,
            q.clone().into_tensor_arg(),
            kv.into_tensor_arg(),
            indices.into_tensor_arg(),
            valid.into_tensor_arg(),
            heads.hw.into_tensor_arg(),
            heads.hs.into_tensor_arg(),
            heads.ks.into_tensor_arg(),
            acc.clone().into_tensor_arg(),
            b * t,
            h,
            t,
            s,
            kk,
            scale,
            f32::NEG_INFINITY,
            d,
            kc,
            native,
            heads.relu,
            dtypes,
        );
    }
    from_f32(acc, out_dtype)
}

/// Kernel 6: sparse MLA's head-averaged probabilities at the selected rows on CubeCL; see
/// [`DsaBackend::sparse_mla_probs`].
pub fn sparse_mla_probs_primitive<R: CubeRuntime>(
    q: CubeTensor<R>,
    kv: CubeTensor<R>,
    indices: CubeTensor<R>,
    valid: CubeTensor<R>,
    lse: CubeTensor<R>,
    scale: f32,
) -> CubeTensor<R> {
    let [b, t, h, d] = dims::<4, R>(&q);
    let [_, s, _] = dims::<3, R>(&kv);
    let [_, _, kk] = dims::<3, R>(&indices);
    let lse = into_contiguous(lse);
    let (indices, valid) = (into_contiguous(indices), into_contiguous(valid));
    if b * t * kk == 0 {
        return output(&q, Shape::new([b, t, kk]), q.dtype);
    }
    if let Some(kc) = mma_mla(&q).then(|| mma_chunk(d, max_shared(&q))).flatten() {
        // On tensor cores, with the scores of the v3 forward (which computed `lse`).
        let vector = load_width(d);
        let (q, kv) = (readable_rows(q, vector), readable_rows(kv, vector));
        let unread = zeros_f32(&q, Shape::new([1]));
        let heads = HeadSums { hw: lse, hs: unread.clone(), ks: unread, relu: false };
        let out = selected_head_sums(q, kv, indices, valid, heads, scale, kc);
        TENSOR_CORE_LAUNCHES[TensorCoreOp::SparseMlaProbs as usize].fetch_add(1, Ordering::SeqCst);
        return out;
    }
    let (q, kv) = (into_contiguous(q), into_contiguous(kv));
    let out = output(&q, Shape::new([b, t, kk]), q.dtype);
    let (hg, kc) = indexer_loss_tiles(h, d, 1, max_shared(&q));
    kernels::indexer_loss::sparse_mla_probs::launch::<R>(
        &q.client,
        cube_count(b * t, 1),
        CubeDim::new_1d(128),
        q.clone().into_tensor_arg(),
        kv.into_tensor_arg(),
        indices.clone().into_tensor_arg(),
        valid.clone().into_tensor_arg(),
        lse.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        b * t,
        t,
        s,
        kk,
        h,
        scale,
        d,
        hg,
        kc,
        [q.dtype.into(), indices.dtype.into(), valid.dtype.into()],
    );
    out
}
