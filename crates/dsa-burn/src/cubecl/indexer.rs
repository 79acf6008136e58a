use super::*;

/// The indexer-scores kernel to launch (see `dsa_kernels::indexer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexerKernel {
    /// On CUDA the fastest tensor-core kernel that applies (v6 in FP8, v4.3, v3; else v2), v1
    /// elsewhere (see `tiled_by_default`).
    Auto,
    /// v1: one unit per score.
    Naive,
    /// v2: register-tiled GEMM with the head sum in shared memory (falls back to `Naive`
    /// when the heads of one query do not fit in a tile).
    Tiled,
    /// The e4m3 codes (held in f16, exactly) multiplied on tensor cores, the FP8 scales
    /// applied afterwards: v4.3 (f16 `mma.sync m16n8k16`, the ReLU, weights and head sum in
    /// registers) where the device has that MMA, at most 64 heads and a head dim divisible
    /// by 4; else v3 (`HalfTensorCores`). Taken where the indexer quantises and each row is
    /// one quantisation block (head dim ≤ 128); else `Tiled`. The fastest on the H200
    /// (`kernels/NOTES.md`, version 4).
    TensorCores,
    /// v3: the e4m3 codes held in f16 and multiplied by 16×16×16 cmma with f32 accumulation.
    /// Taken where the device has that cmma shape and 32-wide planes, the indexer
    /// quantises, each row is one quantisation block and there are at most 128 heads; else
    /// `Tiled`.
    HalfTensorCores,
    /// v4: the codes as e4m3 bytes on FP8 `mma.sync m16n8k32` (see [`has_fp8_mma`]), all
    /// of a query's heads in one plane; at most 64 heads and a head dim divisible by 8, else
    /// as `TensorCores`. Native on Ada and Blackwell; on Hopper ptxas runs it as f16 MMAs
    /// with conversions, slower than `TensorCores` there (GPU runs 41–42).
    Fp8TensorCores,
    /// v6: the codes held in f16 on Hopper's f16 `wgmma` (`dsa_kernels::indexer_wgmma`: CUDA
    /// C++ launched through CubeCL's runtime), at V3.2's 64 heads × 128 dims on CUDA sm_90
    /// (see [`has_wgmma`]); elsewhere as `TensorCores`. Exact products and f32 sums, as the
    /// reference.
    Wgmma,
    /// v6 in FP8: as `Wgmma` with the codes as e4m3 bytes on Hopper's FP8 `wgmma`: twice the tensor
    /// rate; each instruction's 32 products are added with about 14 bits (as in DeepSeek's
    /// own FP8 indexer), so the scores agree with the f32 reference to about 1e-4 rather than
    /// to rounding. `Auto` takes it where it applies.
    WgmmaFp8,
}

fn tiled_indexer<R: CubeRuntime>(t: &CubeTensor<R>) -> bool {
    match setting(|s| s.indexer) {
        IndexerKernel::Auto => tiled_by_default(t),
        k => k != IndexerKernel::Naive,
    }
}

/// Whether the indexer scores take the tensor-core kernel (v3) for `h` heads of dim `d`.
pub(super) fn mma_indexer<R: CubeRuntime>(t: &CubeTensor<R>, quant: IndexerQuant, h: usize, d: usize) -> bool {
    let selected = match setting(|s| s.indexer) {
        IndexerKernel::Auto => tiled_by_default(t),
        k => matches!(
            k,
            IndexerKernel::TensorCores
                | IndexerKernel::HalfTensorCores
                | IndexerKernel::Fp8TensorCores
                | IndexerKernel::Wgmma
                | IndexerKernel::WgmmaFp8
        ),
    };
    selected
        && quant != IndexerQuant::None
        && d <= kernels::quant::FP8_BLOCK
        && h <= kernels::indexer_mma::MMA_ROWS
        && has_cmma(t, FloatKind::F16)
        && indexer_mma_shared_bytes(d) <= max_shared(t)
}

/// How the tensor-core indexer (already chosen by [`mma_indexer`]) holds the codes on v6
/// (`wgmma`) for `h` heads of dim `d`, if it takes v6: `Auto` or [`IndexerKernel::WgmmaFp8`]
/// (e4m3 bytes) or [`IndexerKernel::Wgmma`] (f16) selected, V3.2's 64 × 128, bf16/f32
/// weights and scores, the device's `wgmma`.
fn wgmma_indexer<R: CubeRuntime>(q: &CubeTensor<R>, w: &CubeTensor<R>, h: usize, d: usize) -> Option<Codes> {
    use kernels::indexer_wgmma::{WGMMA_INDEXER_D, WGMMA_INDEXER_HEADS};
    let codes = match setting(|s| s.indexer) {
        IndexerKernel::Auto | IndexerKernel::WgmmaFp8 => Codes::E4m3,
        IndexerKernel::Wgmma => Codes::F16,
        _ => return None,
    };
    let applies = (h, d) == (WGMMA_INDEXER_HEADS, WGMMA_INDEXER_D)
        && [q.dtype, w.dtype].iter().all(|t| matches!(t, DType::F32 | DType::BF16))
        && kernels::indexer_wgmma::has_wgmma(&q.client);
    applies.then_some(codes)
}

/// Whether the tensor-core indexer (already chosen by [`mma_indexer`]) takes v4.3 (f16
/// manual MMA) for `h` heads of dim `d`.
fn mma16_indexer<R: CubeRuntime>(t: &CubeTensor<R>, h: usize, d: usize) -> bool {
    setting(|s| s.indexer) != IndexerKernel::HalfTensorCores
        && h <= kernels::indexer_mma16::MMA16_MAX_HEADS
        && d.is_multiple_of(4)
        && has_f16_mma(t)
}

/// Whether the tensor-core indexer (already chosen by [`mma_indexer`]) takes the FP8 MMA
/// kernel (v4) for `h` heads of dim `d`.
fn fp8_indexer<R: CubeRuntime>(t: &CubeTensor<R>, h: usize, d: usize) -> bool {
    setting(|s| s.indexer) == IndexerKernel::Fp8TensorCores
        && h <= kernels::indexer_fp8::FP8_MAX_HEADS
        && d.is_multiple_of(8)
        && d <= kernels::indexer_fp8::FP8_MAX_DIM
        && has_fp8_mma(&t.client)
}

/// Shared memory of the tensor-core indexer kernel: the query and key tiles of f16 codes,
/// the f32 staging of one tile's products (those three aligned to `CMMA_ALIGN`), the row
/// weights, partial sums and two tiles' key scales.
fn indexer_mma_shared_bytes(d: usize) -> usize {
    let dp = kernels::shared::cmma::padded(d);
    let rows = kernels::indexer_mma::MMA_ROWS;
    2 * (rows + 64) * dp + 4 * (rows * 64 + rows + 8 * 64 + 2 * 64) + 3 * kernels::shared::cmma::CMMA_ALIGN
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
    assert_eq!(
        dims::<3, R>(&w),
        [b, t, h],
        "indexer weights must be [B, T, H_I]"
    );
    let w = into_contiguous(w);
    let out = output(&q, Shape::new([b, t, s]), q.dtype);
    let n = b * t * s;
    if n == 0 {
        return out;
    }
    let mma = mma_indexer(&q, quant, h, d);
    if mma && fp8_indexer(&q, h, d) {
        let dtype = q.dtype;
        let (qc, sq) = quantize_codes(q, quant, Codes::E4m3);
        let (kc, sk) = quantize_codes(k, quant, Codes::E4m3);
        // Planes per query: 1 for prefill (8 queries per cube), more for few queries (decode).
        let kp = match t {
            8.. => 1,
            4..=7 => 2,
            _ => 4,
        };
        let tq = 8 / kp;
        let chunk = 2048;
        // SAFETY: every read and write of the kernel is guarded by its own bounds (see its
        // docs); the tensors match the shapes passed.
        unsafe {
            kernels::indexer_fp8::indexer_scores_fp8::launch_unchecked::<R>(
                &out.client,
                cube_count(b * t.div_ceil(tq), s.div_ceil(chunk)),
                CubeDim::new_1d(kernels::indexer_fp8::FP8_UNITS as u32),
                qc.into_tensor_arg(),
                w.into_tensor_arg(),
                sq.into_tensor_arg(),
                kc.into_tensor_arg(),
                sk.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                t,
                s,
                h,
                causal_offset.unwrap_or(0),
                f32::NEG_INFINITY,
                causal_offset.is_some(),
                d,
                h.div_ceil(16),
                kp,
                chunk,
                [dtype.into(), DType::F32.into()],
            );
        }
        for op in [TensorCoreOp::IndexerScores, TensorCoreOp::IndexerScoresFp8] {
            TENSOR_CORE_LAUNCHES[op as usize].fetch_add(1, Ordering::SeqCst);
        }
        return out;
    }
    if let Some(codes) = wgmma_indexer(&q, &w, h, d).filter(|_| mma) {
        let (qc, sq) = quantize_codes(q, quant, codes);
        let (kc, sk) = quantize_codes(k, quant, codes);
        let params = kernels::indexer_wgmma::WgmmaIndexerParams {
            batch: b,
            t_len: t,
            s_len: s,
            causal_offset,
            w_bytes: w.dtype.size(),
            out_bytes: out.dtype.size(),
            codes,
        };
        // SAFETY: the codes, scales and weights are contiguous at the shapes of `params`
        // (`quantize_codes` writes new tensors; `w` made contiguous above), `out` is new, and
        // the device has `wgmma`.
        unsafe {
            kernels::indexer_wgmma::launch_indexer_scores_wgmma(
                &out.client,
                qc.handle.clone().binding(),
                w.handle.clone().binding(),
                sq.handle.clone().binding(),
                kc.handle.clone().binding(),
                sk.handle.clone().binding(),
                out.handle.clone().binding(),
                params,
            );
        }
        TENSOR_CORE_LAUNCHES[TensorCoreOp::IndexerScores as usize].fetch_add(1, Ordering::SeqCst);
        TENSOR_CORE_LAUNCHES[TensorCoreOp::IndexerScoresWgmma as usize].fetch_add(1, Ordering::SeqCst);
        if codes == Codes::E4m3 {
            TENSOR_CORE_LAUNCHES[TensorCoreOp::IndexerScoresWgmmaFp8 as usize].fetch_add(1, Ordering::SeqCst);
        }
        return out;
    }
    if mma && mma16_indexer(&q, h, d) {
        let dtype = q.dtype;
        let (qc, sq) = quantize_codes(q, quant, Codes::F16);
        let (kc, sk) = quantize_codes(k, quant, Codes::F16);
        let mt = h.div_ceil(16).min(2);
        let pp = h.div_ceil(32);
        let mut kp = 1;
        while kp < 4 && t * pp * kp * 2 <= 8 {
            kp *= 2;
        }
        let tq = 8 / (pp * kp);
        let chunk = 2048;
        // SAFETY: every read and write of the kernel is guarded by its own bounds (see its
        // docs); the tensors match the shapes passed.
        unsafe {
            kernels::indexer_mma16::indexer_scores_mma16::launch_unchecked::<R>(
                &out.client,
                cube_count(b * t.div_ceil(tq), s.div_ceil(chunk)),
                CubeDim::new_1d(kernels::indexer_mma16::MMA16_UNITS as u32),
                qc.into_tensor_arg(),
                w.into_tensor_arg(),
                sq.into_tensor_arg(),
                kc.into_tensor_arg(),
                sk.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                t,
                s,
                h,
                causal_offset.unwrap_or(0),
                f32::NEG_INFINITY,
                causal_offset.is_some(),
                d,
                mt,
                pp,
                kp,
                chunk,
                [dtype.into(), DType::F16.into(), DType::F32.into()],
            );
        }
        for op in [TensorCoreOp::IndexerScores, TensorCoreOp::IndexerScoresF16Mma] {
            TENSOR_CORE_LAUNCHES[op as usize].fetch_add(1, Ordering::SeqCst);
        }
        return out;
    }
    if mma {
        let dtype = q.dtype;
        let (qc, sq) = quantize_codes(q, quant, Codes::F16);
        let (kc, sk) = quantize_codes(k, quant, Codes::F16);
        // Heads padded to a multiple of 16 (one plane's rows), queries per cube, and keys per
        // cube (32 tiles: enough cubes for decode's single query, few query reloads).
        let hp = h.div_ceil(16) * 16;
        let tq = kernels::indexer_mma::MMA_ROWS / hp;
        let chunk = 2048;
        let vector = load_width(d);
        // SAFETY: every read and write of the kernel is guarded by its own bounds (see its
        // docs); the tensors match the shapes passed.
        unsafe {
            kernels::indexer_mma::indexer_scores_mma::launch_unchecked::<R>(
                &out.client,
                cube_count(b * t.div_ceil(tq), s.div_ceil(chunk)),
                CubeDim::new_1d(kernels::indexer_mma::MMA_UNITS as u32),
                vector,
                qc.into_tensor_arg(),
                w.into_tensor_arg(),
                sq.into_tensor_arg(),
                kc.into_tensor_arg(),
                sk.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                t,
                s,
                h,
                causal_offset.unwrap_or(0),
                f32::NEG_INFINITY,
                causal_offset.is_some(),
                d,
                hp,
                chunk,
                [dtype.into(), DType::F16.into(), DType::F32.into()],
            );
        }
        TENSOR_CORE_LAUNCHES[TensorCoreOp::IndexerScores as usize].fetch_add(1, Ordering::SeqCst);
        return out;
    }
    let q = fake_quant_primitive(into_contiguous(q), quant);
    let k = fake_quant_primitive(into_contiguous(k), quant);
    // Tiles: 16·rm rows (t, h) × 16·rn keys, head dim in chunks of dk.
    let (rm, rn, dk) = if max_shared(&q) >= 32 * 1024 + 1024 {
        (8usize, 4usize, 32usize)
    } else {
        (4, 4, 16)
    };
    let tt = (16 * rm) / h.max(1);
    if tiled_indexer(&q) && tt > 0 {
        let tiles = b * t.div_ceil(tt) * s.div_ceil(16 * rn);
        kernels::indexer::indexer_scores_tiled::launch::<R>(
            &q.client,
            cube_count(tiles, 1),
            CubeDim::new_1d(256),
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
            tt,
            rm,
            rn,
            dk,
            q.dtype.into(),
        );
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
