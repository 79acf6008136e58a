use super::*;

/// The indexer-scores kernel to launch, by instruction family (see `dsa_kernels::indexer`).
/// Each variant declares what it supports in one place (`IndexerKernel::supports`); one
/// dispatcher (`IndexerKernel::pick`) takes the first variant of the selected one's
/// preference list (`IndexerKernel::preference`: the selected one, then the slower ones down
/// to `Simt`) that supports the inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexerKernel {
    /// On CUDA the fastest kernel that applies (`WgmmaFp8`, `Mma`, `Cmma`, `SimtTiled`,
    /// `Simt`, in that order); `Simt` elsewhere (see `tiled_by_default`).
    Auto,
    /// One unit per score: the portable path, every runtime, every shape.
    Simt,
    /// Register-tiled GEMM with the head sum in shared memory, where one query's heads fit
    /// in a tile.
    SimtTiled,
    /// The e4m3 codes held in f16 and multiplied by 16×16×16 cmma with f32 accumulation, the
    /// FP8 scales applied afterwards: the tensor-core kernels' common conditions (a
    /// quantising indexer, one quantisation block per row (head dim ≤ 128), at most 128
    /// heads, f16 cmma in 32-wide planes, its shared memory).
    Cmma,
    /// The codes held in f16 on `mma.sync m16n8k16`, the ReLU, weights and head sum in
    /// registers: as `Cmma`, with at most 64 heads, a head dim divisible by 4 and the device's
    /// f16 `mma.sync`.
    Mma,
    /// The codes held in f16 on Hopper's f16 `wgmma` (`dsa_kernels::indexer::wgmma`: CUDA C++
    /// launched through CubeCL's runtime): as `Cmma`, at V3.2's 64 heads × 128 dims, bf16/f32
    /// weights and scores, on CUDA sm_90 (see [`has_wgmma`]). Exact products and f32 sums, as
    /// the reference.
    Wgmma,
    /// As `Wgmma` with the codes as e4m3 bytes on Hopper's FP8 `wgmma`: twice the tensor
    /// rate; each instruction's 32 products are added with about 14 bits (as in DeepSeek's
    /// own FP8 indexer), so the scores agree with the f32 reference to about 1e-4 rather than
    /// to rounding.
    WgmmaFp8,
}

/// The inputs an indexer-scores kernel is asked to support.
struct Problem<'a, R: CubeRuntime> {
    q: &'a CubeTensor<R>,
    w: &'a CubeTensor<R>,
    quant: IndexerQuant,
    heads: usize,
    d: usize,
}

impl IndexerKernel {
    /// The variants tried, in order, when `self` is selected: the selected one, then the
    /// slower ones down to `Simt`. `Auto` is `WgmmaFp8`'s list on CUDA, `Simt` elsewhere.
    fn preference<R: CubeRuntime>(self, t: &CubeTensor<R>) -> &'static [IndexerKernel] {
        use IndexerKernel::*;
        match self {
            Auto if tiled_by_default(t) => WgmmaFp8.preference(t),
            Auto | Simt => &[Simt],
            SimtTiled => &[SimtTiled, Simt],
            Cmma => &[Cmma, SimtTiled, Simt],
            Mma => &[Mma, Cmma, SimtTiled, Simt],
            Wgmma => &[Wgmma, Mma, Cmma, SimtTiled, Simt],
            WgmmaFp8 => &[WgmmaFp8, Mma, Cmma, SimtTiled, Simt],
        }
    }

    /// Whether this variant computes `p` on its device; `Err` names the first condition
    /// that fails.
    fn supports<R: CubeRuntime>(self, p: &Problem<'_, R>) -> Result<(), &'static str> {
        use kernels::indexer::{cmma, mma, simt, wgmma};
        let check = |ok: bool, reason: &'static str| if ok { Ok(()) } else { Err(reason) };
        match self {
            IndexerKernel::Auto => Err("Auto is a preference list, not a kernel"),
            IndexerKernel::Simt => Ok(()),
            IndexerKernel::SimtTiled => check(simt::Tile::new(p.heads, max_shared(p.q)).is_some(), "a query's heads exceed a tile"),
            IndexerKernel::Cmma => {
                check(p.quant != IndexerQuant::None, "the indexer does not quantise")?;
                check(p.d <= kernels::quant::FP8_BLOCK, "more than one quantisation block per row")?;
                check(p.heads <= cmma::ROWS, "more heads than a cube's rows")?;
                check(has_cmma(p.q, FloatKind::F16), "no f16 cmma in 32-wide planes")?;
                check(cmma::shared_bytes(p.d) <= max_shared(p.q), "shared memory")
            }
            IndexerKernel::Mma => {
                IndexerKernel::Cmma.supports(p)?;
                check(p.heads <= mma::MAX_HEADS, "more heads than two planes hold")?;
                check(p.d.is_multiple_of(4), "head dim not a multiple of 4")?;
                check(has_f16_mma(p.q), "no f16 mma.sync in 32-wide planes")
            }
            IndexerKernel::Wgmma | IndexerKernel::WgmmaFp8 => {
                IndexerKernel::Cmma.supports(p)?;
                check((p.heads, p.d) == (wgmma::HEADS, wgmma::D), "not 64 heads × 128 dims")?;
                check(
                    [p.q.dtype, p.w.dtype].iter().all(|t| matches!(t, DType::F32 | DType::BF16)),
                    "weights or scores neither f32 nor bf16",
                )?;
                check(wgmma::has_wgmma(&p.q.client), "no wgmma (CUDA sm_90)")
            }
        }
    }

    /// The first variant of the selected kernel's preference list that supports `p`.
    fn pick<R: CubeRuntime>(self, p: &Problem<'_, R>) -> IndexerKernel {
        let list = self.preference(p.q);
        list.iter().copied().find(|k| k.supports(p).is_ok()).unwrap_or(IndexerKernel::Simt)
    }
}

/// Whether the indexer scores are selected to run on tensor cores and `Cmma`, the tensor-core
/// kernels' common conditions, supports `h` heads of dim `d` (the sparse stage's selected
/// scores take the tensor cores then).
pub(super) fn mma_indexer<R: CubeRuntime>(t: &CubeTensor<R>, quant: IndexerQuant, h: usize, d: usize) -> bool {
    // `Cmma`'s checks do not read the weights.
    let p = Problem { q: t, w: t, quant, heads: h, d };
    setting(|s| s.indexer).preference(t).contains(&IndexerKernel::Cmma) && IndexerKernel::Cmma.supports(&p).is_ok()
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
    let kernel = setting(|s| s.indexer).pick(&Problem { q: &q, w: &w, quant, heads: h, d });
    match kernel {
        IndexerKernel::Wgmma | IndexerKernel::WgmmaFp8 => {
            let codes = if kernel == IndexerKernel::Wgmma { Codes::F16 } else { Codes::E4m3 };
            let (qc, sq) = quantize_codes(q, quant, codes);
            let (kc, sk) = quantize_codes(k, quant, codes);
            let params = kernels::indexer::wgmma::Params {
                batch: b,
                t_len: t,
                s_len: s,
                causal_offset,
                w_bytes: w.dtype.size(),
                out_bytes: out.dtype.size(),
                codes,
            };
            // SAFETY: the codes, scales and weights are contiguous at the shapes of `params`
            // (`quantize_codes` writes new tensors; `w` made contiguous above), `out` is new,
            // and the device has `wgmma`.
            unsafe {
                kernels::indexer::wgmma::launch_indexer_scores_wgmma(
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
            count_launches(&[TensorCoreOp::IndexerScores, TensorCoreOp::IndexerScoresWgmma]);
            if codes == Codes::E4m3 {
                count_launches(&[TensorCoreOp::IndexerScoresWgmmaFp8]);
            }
        }
        IndexerKernel::Mma => {
            use kernels::indexer::mma;
            let dtype = q.dtype;
            let (qc, sq) = quantize_codes(q, quant, Codes::F16);
            let (kc, sk) = quantize_codes(k, quant, Codes::F16);
            let split = mma::Split::new(h, t);
            // SAFETY: every read and write of the kernel is guarded by its own bounds (see its
            // docs); the tensors match the shapes passed.
            unsafe {
                mma::indexer_scores_mma::launch_unchecked::<R>(
                    &out.client,
                    cube_count(b * t.div_ceil(split.tq), s.div_ceil(mma::CHUNK)),
                    CubeDim::new_1d(mma::UNITS as u32),
                    qc.into_tensor_arg(),
                    w.into_tensor_arg(),
                    sq.into_tensor_arg(),
                    kc.into_tensor_arg(),
                    sk.into_tensor_arg(),
                    out.clone().into_tensor_arg(),
                    kernels::indexer::score_sizes(t, s, h, causal_offset),
                    d,
                    split.mt,
                    split.pp,
                    split.kp,
                    mma::CHUNK,
                    [dtype.into(), DType::F16.into(), DType::F32.into()],
                );
            }
            count_launches(&[TensorCoreOp::IndexerScores, TensorCoreOp::IndexerScoresMma]);
        }
        IndexerKernel::Cmma => {
            use kernels::indexer::cmma;
            let dtype = q.dtype;
            let (qc, sq) = quantize_codes(q, quant, Codes::F16);
            let (kc, sk) = quantize_codes(k, quant, Codes::F16);
            let (hp, tq) = cmma::padded_heads(h);
            // SAFETY: every read and write of the kernel is guarded by its own bounds (see its
            // docs); the tensors match the shapes passed.
            unsafe {
                cmma::indexer_scores_cmma::launch_unchecked::<R>(
                    &out.client,
                    cube_count(b * t.div_ceil(tq), s.div_ceil(cmma::CHUNK)),
                    CubeDim::new_1d(cmma::UNITS as u32),
                    load_width(d),
                    qc.into_tensor_arg(),
                    w.into_tensor_arg(),
                    sq.into_tensor_arg(),
                    kc.into_tensor_arg(),
                    sk.into_tensor_arg(),
                    out.clone().into_tensor_arg(),
                    kernels::indexer::score_sizes(t, s, h, causal_offset),
                    d,
                    hp,
                    cmma::CHUNK,
                    [dtype.into(), DType::F16.into(), DType::F32.into()],
                );
            }
            count_launches(&[TensorCoreOp::IndexerScores]);
        }
        IndexerKernel::SimtTiled | IndexerKernel::Simt | IndexerKernel::Auto => {
            use kernels::indexer::simt;
            let q = fake_quant_primitive(into_contiguous(q), quant);
            let k = fake_quant_primitive(into_contiguous(k), quant);
            match simt::Tile::new(h, max_shared(&q)).filter(|_| kernel == IndexerKernel::SimtTiled) {
                Some(tile) => simt::indexer_scores_tiled::launch::<R>(
                    &q.client,
                    cube_count(tile.cubes(b, t, s), 1),
                    CubeDim::new_1d(simt::TILED_UNITS as u32),
                    q.clone().into_tensor_arg(),
                    w.into_tensor_arg(),
                    k.into_tensor_arg(),
                    out.clone().into_tensor_arg(),
                    kernels::indexer::score_sizes(t, s, h, causal_offset),
                    d,
                    tile.tt,
                    tile.rm,
                    tile.rn,
                    tile.dk,
                    q.dtype.into(),
                ),
                None => simt::indexer_scores_naive::launch::<R>(
                    &q.client,
                    cube_count(n.div_ceil(simt::NAIVE_UNITS), 1),
                    CubeDim::new_1d(simt::NAIVE_UNITS as u32),
                    q.clone().into_tensor_arg(),
                    w.into_tensor_arg(),
                    k.into_tensor_arg(),
                    out.clone().into_tensor_arg(),
                    kernels::indexer::score_sizes(t, s, h, causal_offset),
                    d,
                    q.dtype.into(),
                ),
            }
        }
    }
    out
}

/// Counts one launch of each of `ops` (see [`tensor_core_launches`]).
fn count_launches(ops: &[TensorCoreOp]) {
    for &op in ops {
        TENSOR_CORE_LAUNCHES[op as usize].fetch_add(1, Ordering::SeqCst);
    }
}
