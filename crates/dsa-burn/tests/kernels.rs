//! The CubeCL kernels (on wgpu — lavapipe on a machine without GPU — or on CUDA with the
//! `cuda` feature) against the reference implementations on NdArray with the same data:
//! fresh random inputs every run (the seed is printed; replay with `DSA_TEST_SEED`),
//! poisoned outputs (unwritten entries fail), odd sizes (T < k, sizes no multiple of any
//! tile, B > 1, k = 1, rows with nothing valid).
//!
//! `cargo test -p dsa-burn --features wgpu --test kernels`
//! `cargo test -p dsa-burn --features cuda --test kernels` (on a CUDA machine)
//!
//! Timings are in `benches/dsa.rs` (`cargo bench -p dsa-burn --features cuda --bench dsa`).
#![cfg(all(any(feature = "wgpu", feature = "cuda"), feature = "ndarray"))]

use burn::backend::NdArray;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use dsa_burn::cubecl::{IndexerKernel, MlaKernel};
use dsa_burn::ops::{indexer_scores, sparse_mla, topk_select};
use dsa_burn::IndexerQuant;

/// The GPU backend under test: CUDA when enabled, else wgpu (both bare CubeBackends).
#[cfg(feature = "cuda")]
type G = burn::backend::Cuda;
#[cfg(not(feature = "cuda"))]
type G = burn::backend::Wgpu;
type C = NdArray;

#[cfg(feature = "cuda")]
fn gdev() -> burn::backend::cuda::CudaDevice {
    Default::default()
}
#[cfg(not(feature = "cuda"))]
fn gdev() -> burn::backend::wgpu::WgpuDevice {
    Default::default()
}

/// The kernel versions each test runs: both on CUDA; on wgpu the ones its `Auto` choice
/// takes (lavapipe compiles the tiled SIMT shaders far too slowly for CI; they are tested on
/// CUDA, see `kernels/DESIGN.md`).
#[cfg(feature = "cuda")]
const INDEXER_KERNELS: &[IndexerKernel] = &[
    IndexerKernel::WgmmaFp8,
    IndexerKernel::Wgmma,
    IndexerKernel::Mma,
    IndexerKernel::Cmma,
    IndexerKernel::SimtTiled,
    IndexerKernel::Simt,
];
#[cfg(not(feature = "cuda"))]
const INDEXER_KERNELS: &[IndexerKernel] = &[IndexerKernel::Simt];
#[cfg(feature = "cuda")]
const MLA_KERNELS: &[MlaKernel] = &[MlaKernel::SimtTiled, MlaKernel::Simt];
#[cfg(not(feature = "cuda"))]
const MLA_KERNELS: &[MlaKernel] = &[MlaKernel::Simt];

/// Whether the device under test has `wgmma` (the `wgmma` kernels' condition).
#[cfg(feature = "cuda")]
fn wgmma_device() -> bool {
    use burn::backend::cuda::CudaDevice;
    use burn_cubecl::cubecl::Runtime;
    dsa_burn::cubecl::has_wgmma(&burn_cubecl::cubecl::cuda::CudaRuntime::client(&CudaDevice::default()))
}
#[cfg(not(feature = "cuda"))]
fn wgmma_device() -> bool {
    false
}

/// The kernel choice is process-wide: tests that set it hold this lock.
static KERNEL_CHOICE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn choose_kernels() -> std::sync::MutexGuard<'static, ()> {
    KERNEL_CHOICE.lock().unwrap_or_else(|e| e.into_inner())
}

/// xorshift64*, as in `tests/ops.rs`.
struct Rng(u64);
impl Rng {
    fn new(name: &str) -> Self {
        let seed = std::env::var("DSA_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        println!("{name}: DSA_TEST_SEED={seed}");
        dsa_burn::cubecl::update_kernel_settings(|s| s.poison_outputs = true);
        Rng(seed)
    }
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545F4914F6CDD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        ((self.next() * n as f64) as usize).min(n - 1)
    }
    fn normal(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                ((-2.0 * self.next().max(1e-300).ln()).sqrt()
                    * (std::f64::consts::TAU * self.next()).cos()) as f32
            })
            .collect()
    }
}

fn ft<B: Backend, const D: usize>(v: &[f32], shape: [usize; D], dev: &B::Device) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), dev)
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    // An empty read back from CUDA is a zero-length buffer that bytemuck will not cast.
    if t.shape().num_elements() == 0 {
        return Vec::new();
    }
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

/// The floor for f32 sparse-MLA gradients. Over one slot, `dq = scale · P(dP − δ) · K`
/// is zero exactly, and what both sides compute is the rounding of `dP − δ`: terms of size
/// `|dO|·|V|` (up to ~10 for unit normals) leave ~1e-7 per entry, times `scale · |K|`. At a
/// 1e-5 tolerance a floor of 0.1 allows an RMS difference of 1e-6, a few ulps of those
/// terms. (At 1e-2, the NdArray reference's own rounding, RMS 1.01e-7 against an exact 0
/// from the kernel, failed CI once: seed 1796300201321654819, case 1.) A gradient that
/// does not vanish has an RMS of order 1, where the floor does nothing.
const VANISHING_FLOOR: f64 = 0.1;

/// Relative error ‖a − b‖ / ‖b‖ over finite entries; infinities must match exactly, NaN fails.
fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f64) -> f64 {
    assert_close_floor(what, got, want, tol, 0.0)
}

/// As [`assert_close`], with `‖b‖` floored at `floor · sqrt(n)`: for gradients that vanish
/// mathematically (a softmax over one slot) and are rounding noise in both.
///
/// For f32 gradients use [`VANISHING_FLOOR`].
fn assert_close_floor(what: &str, got: &[f32], want: &[f32], tol: f64, floor: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(!g.is_nan(), "{what}[{i}] is NaN (unwritten?), want {w}");
        if w.is_infinite() || g.is_infinite() {
            assert_eq!(g, w, "{what}[{i}]");
            continue;
        }
        num += (*g as f64 - *w as f64).powi(2);
        den += (*w as f64).powi(2);
    }
    let n = want.len().max(1) as f64;
    let (rms_want, rms_diff) = ((den / n).sqrt(), (num / n).sqrt());
    let den = den.max(floor * floor * want.len() as f64);
    let rel = (num / den.max(1e-300)).sqrt();
    assert!(
        rel <= tol,
        "{what}: relative error {rel:e} > {tol:e} (rms of the reference {rms_want:e}, of the difference {rms_diff:e})"
    );
    rel
}

#[test]
fn fake_quant_is_bit_identical() {
    let mut rng = Rng::new("fake_quant");
    for (rows, d) in [(3usize, 200usize), (5, 128), (2, 64), (7, 300), (1, 1)] {
        // Rows of very different magnitudes: subnormal e4m3 codes, the 1e-4 floor, ties.
        let mut x = rng.normal(rows * d);
        for r in 0..rows {
            let mag = [1.0f32, 1e-3, 1e-6, 37.0, 2f32.powi(-9)][r % 5];
            x[r * d..(r + 1) * d].iter_mut().for_each(|v| *v *= mag);
        }
        // Exact e4m3 midpoints when the block scale is 1/448·448 = 1-ish: put 448 in a row.
        if rows > 3 {
            x[3 * d] = 448.0;
            for c in 1..d.min(128) {
                x[3 * d + c] =
                    (1.0 + (c % 8) as f32 / 8.0 + 1.0 / 16.0) * 2f32.powi((c % 14) as i32 - 6);
            }
        }
        for quant in [IndexerQuant::E4m3, IndexerQuant::E4m3Pow2] {
            let want = host(dsa_burn::reference::quant::fake_quant(
                ft::<C, 2>(&x, [rows, d], &Default::default()),
                quant,
            ));
            let got = host(dsa_burn::cubecl::fake_quant(
                ft::<G, 2>(&x, [rows, d], &gdev()),
                quant,
            ));
            // Bits, with ±0 equal: the kernel keeps the sign of a value that underflows to
            // zero (as a float8 cast does); the reference's tensor ops may return +0.
            let bits = |v: f32| if v == 0.0 { 0 } else { v.to_bits() };
            for i in 0..x.len() {
                assert_eq!(
                    bits(got[i]),
                    bits(want[i]),
                    "{quant:?} [{rows},{d}] at {i}: x = {:e}, got {:e}, want {:e}",
                    x[i],
                    got[i],
                    want[i]
                );
            }
        }
    }
}

#[test]
fn indexer_scores_match_reference() {
    let _choice = choose_kernels();
    let mut rng = Rng::new("indexer");
    for (b, t, h, d, s, causal) in [
        (2, 5, 3, 16, 7, Some(2)),
        (1, 9, 2, 200, 9, Some(0)),
        (2, 3, 4, 8, 11, None),
        (1, 37, 5, 128, 53, Some(16)),
        (3, 1, 1, 1, 1, Some(0)),
        (1, 150, 64, 128, 150, Some(0)),
        (2, 40, 1, 33, 70, None),
        (1, 20, 130, 8, 9, Some(0)),
        // Several key chunks of the tensor-core kernel, causal limits inside a chunk, and
        // decode (one query against a long key cache).
        (1, 5, 64, 128, 4500, Some(4495)),
        (2, 1, 64, 128, 3000, Some(2999)),
        (1, 70, 16, 64, 2100, Some(2030)),
        // The heads split over two planes (40 and 50: partial 16-head tiles), dims 96 of 128,
        // two key planes per query (two queries).
        (3, 6, 40, 96, 700, Some(694)),
        (2, 2, 50, 128, 900, Some(898)),
    ] {
        let (qv, wv, kv) = (
            rng.normal(b * t * h * d),
            rng.normal(b * t * h),
            rng.normal(b * s * d),
        );
        let variants = INDEXER_KERNELS.iter().flat_map(|&k| {
            [
                IndexerQuant::None,
                IndexerQuant::E4m3,
                IndexerQuant::E4m3Pow2,
            ]
            .map(|q| (q, k))
        });
        for (quant, kernel) in variants {
            dsa_burn::cubecl::update_kernel_settings(|s| s.indexer = kernel);
            let launches = || {
                use dsa_burn::cubecl::{tensor_core_launches, TensorCoreOp};
                [
                    TensorCoreOp::IndexerScores,
                    TensorCoreOp::IndexerScoresMma,
                    TensorCoreOp::IndexerScoresWgmma,
                    TensorCoreOp::IndexerScoresWgmmaFp8,
                ]
                .map(tensor_core_launches)
            };
            let before = launches();
            let want = dsa_burn::reference::indexer::reference_scores::<C>(
                ft(&qv, [b, t, h, d], &Default::default()),
                ft(&wv, [b, t, h], &Default::default()),
                ft(&kv, [b, s, d], &Default::default()),
                quant,
                causal,
            );
            let got = indexer_scores::<G>(
                ft(&qv, [b, t, h, d], &gdev()),
                ft(&wv, [b, t, h], &gdev()),
                ft(&kv, [b, s, d], &gdev()),
                quant,
                causal,
            );
            assert_eq!(got.dims(), [b, t, s]);
            let case = format!("scores {:?} {quant:?} {kernel:?}", (b, t, h, d, s, causal));
            // Read first: under Fusion the kernels run when the result is read.
            let (got, want) = (host(got), host(want));
            // The tensor-core kernels apply to quantised indexers with one block per row.
            let after = launches();
            let [mma_ran, f16_ran, wgmma_ran, wgmma_fp8_ran] = [0, 1, 2, 3].map(|i| after[i] > before[i]);
            let applies = matches!(
                kernel,
                IndexerKernel::WgmmaFp8
                    | IndexerKernel::Wgmma
                    | IndexerKernel::Mma
                    | IndexerKernel::Cmma
            )
                && quant != IndexerQuant::None
                && d <= 128
                && h <= 128;
            assert_eq!(mma_ran, applies, "{case}: tensor-core kernel ran: {mma_ran}");
            // wgmma at V3.2's 64 × 128 on Hopper, else f16 `mma.sync`: the default
            // tensor-core kernels.
            let wgmma_shape = applies && (h, d) == (64, 128) && wgmma_device();
            let wgmma_fp8 = wgmma_shape && kernel == IndexerKernel::WgmmaFp8;
            let wgmma = wgmma_fp8 || (wgmma_shape && kernel == IndexerKernel::Wgmma);
            assert_eq!(wgmma_ran, wgmma, "{case}: wgmma kernel ran: {wgmma_ran}");
            assert_eq!(wgmma_fp8_ran, wgmma_fp8, "{case}: FP8 wgmma kernel ran: {wgmma_fp8_ran}");
            // FP8 wgmma adds each instruction's 32 products with about 14 bits (DeepSeek-V3's
            // report): relative errors of order 2^-13, not f32 rounding.
            let tol = if wgmma_fp8 { 1e-3 } else { 1e-5 };
            let rel = assert_close(&case, &got, &want, tol);
            if wgmma_fp8 {
                eprintln!("{case}: relative error {rel:.2e}");
            }
            let f16 = applies && kernel != IndexerKernel::Cmma && !wgmma && h <= 64 && d % 4 == 0;
            assert_eq!(f16_ran, f16, "{case}: f16 MMA kernel ran: {f16_ran}");
        }
    }
    dsa_burn::cubecl::update_kernel_settings(|s| s.indexer = IndexerKernel::Auto);
}

#[test]
fn topk_matches_reference() {
    let mut rng = Rng::new("topk");
    // Scores: N(0, 1), rounded to multiples of 1/x (exact ties), squeezed into
    // [100 - 1/64, 100 + 1/64] (one bin of the first radix level), all -inf (masked rows:
    // only ties, taken in index order), ReLU'd (mostly exact zeros of either sign straddling
    // the cut, as the indexer's scores) or all zeros (±0). Rows longer than the kernel's
    // buffer (4096 entries on CUDA at k ≤ 2048; 2048 on lavapipe, whose 32 KiB of shared
    // memory give k = 1000 the layout k = 2048 has on CUDA) take its radix levels: the first
    // level's bin gathered at once (normal), more levels (squeezed), too many exact ties at
    // the n-th score (the index-order tie pass: rounded to quarters, masked, ReLU, zeros).
    #[derive(Debug, Clone, Copy)]
    enum Scores {
        Normal,
        Rounded(f32),
        Squeezed,
        Masked,
        Relu,
        Zeros,
    }
    use Scores::*;
    for (b, t, s, k, causal, kind) in [
        (2, 6, 6, 4, Some(0), Rounded(2.0)),
        (1, 5, 13, 3, Some(8), Rounded(2.0)),
        (3, 4, 9, 1, None, Rounded(2.0)),
        (2, 7, 7, 20, Some(0), Normal),
        (1, 2, 300, 37, None, Rounded(2.0)),
        (2, 3, 1000, 100, None, Normal),
        (1, 70, 70, 64, Some(0), Rounded(2.0)),
        (1, 3, 700, 600, Some(400), Rounded(2.0)),
        (1, 4, 5000, 1, None, Rounded(2.0)),
        (1, 4, 20000, 1, None, Normal),
        (1, 3, 1500, 2048, Some(1400), Normal),
        (2, 4, 20000, 2048, Some(16000), Normal),
        (1, 3, 20000, 1000, Some(18000), Normal),
        (1, 3, 20000, 2048, Some(19000), Rounded(2.0)),
        (1, 3, 20000, 2048, None, Rounded(0.25)),
        (1, 3, 12000, 300, Some(11000), Squeezed),
        (1, 2, 9000, 2048, None, Squeezed),
        (1, 2, 6000, 2048, Some(5000), Masked),
        (2, 5, 40, 8, Some(20), Relu),
        (1, 3, 9000, 2048, Some(8000), Relu),
        (2, 4, 30, 6, Some(10), Zeros),
        (1, 2, 6000, 2048, None, Zeros),
    ] {
        let mut scores: Vec<f32> = (rng.normal(b * t * s).into_iter().enumerate())
            .map(|(i, v)| match kind {
                Normal => v,
                Rounded(x) => (v * x).round() / x,
                Squeezed => 100.0 + v / 256.0,
                Masked => f32::NEG_INFINITY,
                Relu if v > 0.8 => v,
                Relu | Zeros => if i % 3 == 0 { -0.0 } else { 0.0 },
            })
            .collect();
        // A few -inf (masked by an earlier step) and NaN scores: both rank last.
        for _ in 0..(b * t * s) / 10 {
            let i = rng.below(b * t * s);
            scores[i] = if rng.next() < 0.5 {
                f32::NEG_INFINITY
            } else {
                f32::NAN
            };
        }
        let (want_i, want_v) = dsa_burn::reference::topk::reference_topk::<C>(
            ft(&scores, [b, t, s], &Default::default()),
            k,
            causal,
        );
        let (got_i, got_v) = topk_select::<G>(ft(&scores, [b, t, s], &gdev()), k, causal);
        let case = format!("{:?}", (b, t, s, k, causal, kind));
        assert_eq!(got_i.dims(), [b, t, k.min(s)], "{case}");
        assert_eq!(
            got_v
                .into_data()
                .convert::<bool>()
                .into_vec::<bool>()
                .unwrap(),
            want_v.into_data().into_vec::<bool>().unwrap(),
            "valid {case}"
        );
        let (got_i, want_i) = (
            got_i
                .into_data()
                .convert::<i64>()
                .into_vec::<i64>()
                .unwrap(),
            want_i
                .into_data()
                .convert::<i64>()
                .into_vec::<i64>()
                .unwrap(),
        );
        let kk = k.min(s);
        if let Some(row) =
            (0..b * t).find(|r| got_i[r * kk..(r + 1) * kk] != want_i[r * kk..(r + 1) * kk])
        {
            let show = |v: &[i64]| {
                v.iter()
                    .map(|i| format!("{i}:{}", scores[row * s + *i as usize]))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            panic!(
                "indices {case}, row {row}:\n got  {}\n want {}",
                show(&got_i[row * kk..(row + 1) * kk]),
                show(&want_i[row * kk..(row + 1) * kk])
            );
        }
    }
}

/// `indexer_topk` in blocks of query rows (each block scoring only the keys it can see) selects
/// exactly what one top-k over the whole causal score matrix selects, on the same kernels.
#[test]
fn indexer_topk_blocks_match_whole() {
    let _choice = choose_kernels();
    let mut rng = Rng::new("indexer_topk");
    let dev = gdev();
    // V3.2's indexer shape (the wgmma kernels on Hopper); T not a multiple of any tile; an
    // offset; blocks whose rows see fewer keys than `topk`.
    for (t, s, offset, topk, rows) in [(520, 520, 0, 48, 96), (300, 310, 10, 200, 64)] {
        let (h, d) = (64, 128);
        let q = ft::<G, 4>(&rng.normal(t * h * d), [1, t, h, d], &dev);
        let w = ft::<G, 3>(&rng.normal(t * h), [1, t, h], &dev);
        let k = ft::<G, 3>(&rng.normal(s * d), [1, s, d], &dev);
        let quant = IndexerQuant::E4m3;
        let (idx, valid) = dsa_burn::ops::indexer_topk(q.clone(), w.clone(), k.clone(), quant, topk, Some(offset), rows);
        let (want_idx, want_valid) = topk_select(indexer_scores(q, w, k, quant, Some(offset)), topk, Some(offset));
        let case = format!("T={t} S={s} offset={offset} topk={topk} rows={rows}");
        assert_eq!(valid.into_data(), want_valid.into_data(), "{case}: validity");
        assert_eq!(idx.into_data(), want_idx.into_data(), "{case}: indices");
    }
}

#[test]
fn sparse_mla_matches_reference() {
    let _choice = choose_kernels();
    let mut rng = Rng::new("sparse_mla");
    for (b, t, h, d, dv, s, k, empty_rows) in [
        (2, 5, 3, 12, 8, 5, 4, 1),
        (1, 3, 2, 9, 9, 10, 16, 0),
        (2, 6, 1, 5, 3, 6, 1, 2),
        (1, 4, 11, 72, 64, 40, 37, 1),
        (2, 2, 16, 40, 32, 100, 20, 0),
        (1, 3, 40, 24, 17, 50, 70, 1),
    ] {
        let (qv, kvv) = (rng.normal(b * t * h * d), rng.normal(b * s * d));
        // Random selections (duplicates allowed: the semantics is per slot) and validity,
        // with some rows entirely invalid.
        let sel: Vec<i64> = (0..b * t * k).map(|_| rng.below(s) as i64).collect();
        let mut valid: Vec<bool> = (0..b * t * k).map(|_| rng.next() < 0.8).collect();
        for r in 0..empty_rows {
            let row = rng.below(b * t);
            valid[row * k..(row + 1) * k]
                .iter_mut()
                .for_each(|v| *v = false);
            let _ = r;
        }
        let scale = 1.0 / (d as f32).sqrt();
        let idx = |dev: &burn::backend::ndarray::NdArrayDevice| {
            Tensor::<C, 3, Int>::from_data(TensorData::new(sel.clone(), [b, t, k]), dev)
        };
        let (want_o, want_l) = dsa_burn::reference::sparse_mla::reference_sparse_mla::<C>(
            ft(&qv, [b, t, h, d], &Default::default()),
            ft(&kvv, [b, s, d], &Default::default()),
            idx(&Default::default()),
            Tensor::<C, 3, Bool>::from_data(
                TensorData::new(valid.clone(), [b, t, k]),
                &Default::default(),
            ),
            dv,
            scale,
        );
        let (want_o, want_l) = (host(want_o), host(want_l));
        for &version in MLA_KERNELS {
            dsa_burn::cubecl::update_kernel_settings(|s| s.mla = version);
            let (got_o, got_l) = sparse_mla::<G>(
                ft(&qv, [b, t, h, d], &gdev()),
                ft(&kvv, [b, s, d], &gdev()),
                Tensor::<G, 3, Int>::from_data(
                    TensorData::new(sel.iter().map(|v| *v as i32).collect::<Vec<_>>(), [b, t, k]),
                    &gdev(),
                ),
                Tensor::<G, 3, Bool>::from_data(TensorData::new(valid.clone(), [b, t, k]), &gdev()),
                dv,
                scale,
            );
            let case = format!("{:?} {version:?}", (b, t, h, d, dv, s, k));
            assert_eq!(got_o.dims(), [b, t, h, dv]);
            assert_close(&format!("out {case}"), &host(got_o), &want_o, 1e-5);
            assert_close(&format!("lse {case}"), &host(got_l), &want_l, 1e-5);
        }
    }
    dsa_burn::cubecl::update_kernel_settings(|s| s.mla = MlaKernel::Auto);
}

/// `v` rounded to bf16 (and back to f32).
#[cfg(feature = "cuda")]
fn bf(v: Vec<f32>) -> Vec<f32> {
    v.into_iter().map(|x| burn::tensor::bf16::from_f32(x).to_f32()).collect()
}

/// The latent `kv [b, s, d]` as a bf16 view of wider rows whose extra 8 values are NaN: a
/// kernel must read it at its stride, in place (as CUDA's pitched allocations are), and
/// never past `d`.
#[cfg(feature = "cuda")]
fn nan_padded_view(kv: &[f32], [b, s, d]: [usize; 3]) -> Tensor<burn::backend::Cuda<burn::tensor::bf16>, 3> {
    let padded: Vec<f32> = kv.chunks(d).flat_map(|row| row.iter().copied().chain([f32::NAN; 8])).collect();
    ft(&padded, [b, s, d + 8], &Default::default()).cast(burn::tensor::FloatDType::BF16).narrow(2, 0, d)
}

/// The tensor-core forwards (cmma, `mma.sync`, `wgmma`; bf16 inputs) against the f32 reference on the same
/// bf16-rounded inputs. Its probabilities are rounded to bf16 before `P·V` (as FlashMLA's)
/// and its outputs are bf16, hence the 1e-2 tolerance. Shapes: V3.2's latent (576/512, 128
/// heads, three chunks of slots), heads not a multiple of 64, dims not a multiple of 16 or
/// of the load width, one slot, empty rows; the latent as a strided view. The forward runs
/// with every tile it supports (`FORWARD_TILES`).
#[cfg(feature = "cuda")]
#[test]
fn sparse_mla_tensor_cores_match_reference() {
    type GB = burn::backend::Cuda<burn::tensor::bf16>;
    use dsa_burn::cubecl::MlaTile;
    // Wgmma (where it applies: V3.2's latent sizes on a device with `wgmma`), Mma, then Cmma
    // with each of its tiles.
    const FORWARDS: [(MlaKernel, Option<MlaTile>); 7] = [
        (MlaKernel::Wgmma, None),
        (MlaKernel::Mma, None),
        (MlaKernel::Cmma, None),
        (MlaKernel::Cmma, Some(MlaTile { heads: 64, planes: 8, slots: 32 })),
        (MlaKernel::Cmma, Some(MlaTile { heads: 32, planes: 8, slots: 32 })),
        (MlaKernel::Cmma, Some(MlaTile { heads: 32, planes: 8, slots: 64 })),
        (MlaKernel::Cmma, Some(MlaTile { heads: 32, planes: 4, slots: 32 })),
    ];
    let bf16 = burn::tensor::FloatDType::BF16;
    let _choice = choose_kernels();
    let mut rng = Rng::new("sparse_mla_mma");
    for (b, t, h, d, dv, s, k, empty_rows, rising) in [
        (1, 3, 128, 576, 512, 300, 150, 1, false),
        (2, 5, 3, 12, 8, 5, 4, 1, false),
        (1, 3, 2, 9, 9, 10, 16, 0, false),
        (2, 6, 1, 5, 3, 6, 1, 2, false),
        (1, 4, 70, 72, 64, 40, 37, 1, false),
        (2, 2, 16, 40, 32, 100, 65, 0, false),
        // Enough queries (B·T·⌈H/64⌉ ≥ 1024 cubes) that the slots are not split.
        (2, 520, 3, 12, 8, 30, 100, 3, false),
        // Not split and more slots than the kernels' window of selections (2048).
        (1, 1030, 3, 16, 8, 60, 2100, 0, false),
        // Decode-like: one query, many slots split over cubes, one split with no valid slot.
        (1, 1, 128, 576, 512, 3000, 2048, 0, false),
        // Scores that grow along the slots: the forward's reference max moves chunk after chunk.
        (1, 2, 40, 64, 48, 200, 200, 0, true),
    ] {
        let mut m = Mla::new(&mut rng, [b, t, h, d, dv, s, k], empty_rows);
        if k == 2048 {
            m.valid[..200].iter_mut().for_each(|v| *v = false);
        }
        if rising {
            // Slot j selects row j, whose values are scaled by 1 + j/4.
            m.sel = (0..b * t * k).map(|i| (i % k) as i64).collect();
            for (i, v) in m.kv.iter_mut().enumerate() {
                *v *= 1.0 + (i / d % s) as f32 / 4.0;
            }
        }
        m.q = bf(m.q);
        m.kv = bf(m.kv);
        let (want_o, want_l) = dsa_burn::reference::sparse_mla::reference_sparse_mla::<C>(
            ft(&m.q, [b, t, h, d], &Default::default()),
            ft(&m.kv, [b, s, d], &Default::default()),
            m.indices(&Default::default()),
            m.valid(&Default::default()),
            dv,
            m.scale,
        );
        let (want_o, want_l) = (host(want_o), host(want_l));
        let mut got_l = Vec::new();
        for (kernel, tile) in FORWARDS {
            if kernel == MlaKernel::Wgmma && !((d, dv) == (576, 512) && wgmma_device()) {
                continue;
            }
            dsa_burn::cubecl::update_kernel_settings(|s| { s.mla = kernel; s.mla_tile = tile });
            let before = dsa_burn::cubecl::mla_forward_launches(kernel);
            let kv_view = nan_padded_view(&m.kv, [b, s, d]);
            // Cast: a device first used by the f32 backend keeps creating f32 tensors.
            let (got_o, lse) = sparse_mla::<GB>(
                ft::<GB, 4>(&m.q, [b, t, h, d], &Default::default()).cast(bf16),
                kv_view,
                m.indices(&Default::default()),
                m.valid(&Default::default()),
                dv,
                m.scale,
            );
            let case = format!("{:?} {kernel:?} tile {tile:?}", (b, t, h, d, dv, s, k));
            assert_eq!(got_o.dims(), [b, t, h, dv]);
            let got_o = host(got_o);
            got_l = host(lse);
            // After the reads: Fusion runs the op lazily. No other test launches the tensor-core forwards.
            assert!(
                dsa_burn::cubecl::mla_forward_launches(kernel) > before,
                "{case}: the tensor-core kernel did not run"
            );
            assert_close(&format!("out {case}"), &got_o, &want_o, 1e-2);
            assert_close(&format!("lse {case}"), &got_l, &want_l, 1e-2);
        }
        dsa_burn::cubecl::update_kernel_settings(|s| s.mla_tile = None);
        let case = format!("{:?}", (b, t, h, d, dv, s, k));

        // Kernel 6's probabilities on tensor cores, from the lse the forward wrote (bf16):
        // the reference gets the same lse.
        use dsa_burn::DsaBackend;
        let probs_before =
            dsa_burn::cubecl::tensor_core_launches(dsa_burn::cubecl::TensorCoreOp::SparseMlaProbs);
        let want_p = dsa_burn::reference::indexer_loss::reference_sparse_mla_probs::<C>(
            ft(&m.q, [b, t, h, d], &Default::default()),
            ft(&m.kv, [b, s, d], &Default::default()),
            m.indices(&Default::default()),
            m.valid(&Default::default()),
            ft(&got_l, [b, t, h], &Default::default()),
            m.scale,
        );
        let got_p = <GB as DsaBackend>::sparse_mla_probs(
            prim(ft::<GB, 4>(&m.q, [b, t, h, d], &Default::default()).cast(bf16)),
            prim(ft::<GB, 3>(&m.kv, [b, s, d], &Default::default()).cast(bf16)),
            m.indices::<GB>(&Default::default()).into_primitive(),
            m.valid::<GB>(&Default::default()).into_primitive(),
            prim(ft::<GB, 3>(&got_l, [b, t, h], &Default::default()).cast(bf16)),
            m.scale,
        );
        let got_p = host(unprim::<GB, 3>(got_p));
        assert!(
            dsa_burn::cubecl::tensor_core_launches(dsa_burn::cubecl::TensorCoreOp::SparseMlaProbs)
                > probs_before,
            "{case}: the tensor-core probabilities did not run"
        );
        assert_close(&format!("probs {case}"), &got_p, &host(want_p), 1e-2);
    }
    dsa_burn::cubecl::update_kernel_settings(|s| s.mla = MlaKernel::Auto);
}

/// Random sparse MLA problem: q, kv, selections (duplicates allowed), validity with some
/// empty rows.
struct Mla {
    dims: [usize; 7], // b, t, h, d, dv, s, k
    q: Vec<f32>,
    kv: Vec<f32>,
    sel: Vec<i64>,
    valid: Vec<bool>,
    scale: f32,
}

impl Mla {
    fn new(rng: &mut Rng, [b, t, h, d, dv, s, k]: [usize; 7], empty_rows: usize) -> Self {
        let (q, kv) = (rng.normal(b * t * h * d), rng.normal(b * s * d));
        let sel: Vec<i64> = (0..b * t * k).map(|_| rng.below(s) as i64).collect();
        let mut valid: Vec<bool> = (0..b * t * k).map(|_| rng.next() < 0.8).collect();
        for _ in 0..empty_rows {
            let row = rng.below(b * t);
            valid[row * k..(row + 1) * k]
                .iter_mut()
                .for_each(|v| *v = false);
        }
        Mla {
            dims: [b, t, h, d, dv, s, k],
            q,
            kv,
            sel,
            valid,
            scale: 1.0 / (d as f32).sqrt(),
        }
    }
    fn indices<B: Backend>(&self, dev: &B::Device) -> Tensor<B, 3, Int> {
        let [b, t, _, _, _, _, k] = self.dims;
        Tensor::from_data(TensorData::new(self.sel.clone(), [b, t, k]), dev)
    }
    fn valid<B: Backend>(&self, dev: &B::Device) -> Tensor<B, 3, Bool> {
        let [b, t, _, _, _, _, k] = self.dims;
        Tensor::from_data(TensorData::new(self.valid.clone(), [b, t, k]), dev)
    }
    /// The reference backward (`dq`, `dkv`) on NdArray at the forward's `out`, `lse` and the
    /// gradients given.
    fn reference_backward(
        &self,
        out: &[f32],
        lse: &[f32],
        d_out: Option<&[f32]>,
        d_lse: Option<&[f32]>,
    ) -> (Tensor<C, 4>, Tensor<C, 3>) {
        let [b, t, h, d, dv, s, _] = self.dims;
        let dev = Default::default();
        dsa_burn::reference::sparse_mla::reference_sparse_mla_backward::<C>(
            ft(&self.q, [b, t, h, d], &dev),
            ft(&self.kv, [b, s, d], &dev),
            self.indices(&dev),
            self.valid(&dev),
            ft(out, [b, t, h, dv], &dev),
            ft(lse, [b, t, h], &dev),
            d_out.map(|g| ft(g, [b, t, h, dv], &dev)),
            d_lse.map(|g| ft(g, [b, t, h], &dev)),
            dv,
            self.scale,
        )
    }
}

fn prim<B: Backend, const D: usize>(t: Tensor<B, D>) -> burn::tensor::ops::FloatTensor<B> {
    t.into_primitive().tensor()
}

fn unprim<B: Backend, const D: usize>(t: burn::tensor::ops::FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(burn::tensor::TensorPrimitive::Float(t))
}

#[test]
fn sparse_mla_backward_matches_reference() {
    use dsa_burn::DsaBackend;
    let _choice = choose_kernels();
    let mut rng = Rng::new("sparse_mla_backward");
    let cases = [
        [2, 5, 3, 12, 8, 5, 4],
        [2, 6, 1, 5, 3, 6, 1],
        [1, 4, 11, 72, 64, 40, 37],
        [1, 2, 37, 24, 17, 20, 45],
    ];
    for (ci, dims) in cases.into_iter().enumerate() {
        let [b, t, h, d, dv, s, _] = dims;
        let m = Mla::new(&mut rng, dims, 1);
        let (gov, glv) = (rng.normal(b * t * h * dv), rng.normal(b * t * h));
        let cdev = Default::default();
        let (out, lse) = dsa_burn::reference::sparse_mla::reference_sparse_mla::<C>(
            ft(&m.q, [b, t, h, d], &cdev),
            ft(&m.kv, [b, s, d], &cdev),
            m.indices(&cdev),
            m.valid(&cdev),
            dv,
            m.scale,
        );
        let (outv, lsev) = (host(out), host(lse));
        for (which, with_out, with_lse) in [
            ("d_out", true, false),
            ("d_lse", false, true),
            ("both", true, true),
        ] {
            // The CAS-loop atomics (devices without f32 atomic add) with both gradients.
            let cas: &[bool] = if which == "both" {
                &[false, true]
            } else {
                &[false]
            };
            for (&version, &force_cas) in MLA_KERNELS
                .iter()
                .flat_map(|v| cas.iter().map(move |c| (v, c)))
            {
                dsa_burn::cubecl::update_kernel_settings(|s| { s.force_cas_atomics = force_cas; s.mla = version });
                let want = m.reference_backward(&outv, &lsev, with_out.then_some(&gov[..]), with_lse.then_some(&glv[..]));
                let g = gdev();
                let (dq, dkv) = <G as DsaBackend>::sparse_mla_backward(
                    prim(ft::<G, 4>(&m.q, [b, t, h, d], &g)),
                    prim(ft::<G, 3>(&m.kv, [b, s, d], &g)),
                    m.indices::<G>(&g).into_primitive(),
                    m.valid::<G>(&g).into_primitive(),
                    prim(ft::<G, 4>(&outv, [b, t, h, dv], &g)),
                    prim(ft::<G, 3>(&lsev, [b, t, h], &g)),
                    with_out.then(|| prim(ft::<G, 4>(&gov, [b, t, h, dv], &g))),
                    with_lse.then(|| prim(ft::<G, 3>(&glv, [b, t, h], &g))),
                    dv,
                    m.scale,
                );
                let case = format!("case {ci} {dims:?} {which} {version:?} cas={force_cas}");
                assert_close_floor(
                    &format!("dq {case}"),
                    &host(unprim::<G, 4>(dq)),
                    &host(want.0),
                    1e-5,
                    VANISHING_FLOOR,
                );
                assert_close_floor(
                    &format!("dkv {case}"),
                    &host(unprim::<G, 3>(dkv)),
                    &host(want.1),
                    1e-5,
                    VANISHING_FLOOR,
                );
            }
        }
    }
    dsa_burn::cubecl::update_kernel_settings(|s| { s.force_cas_atomics = false; s.mla = MlaKernel::Auto });
}

/// The tensor-core backwards (cmma, and at V3.2's latent sizes on a device with `wgmma` the
/// `wgmma` one; bf16 inputs) against the f32 reference on the same bf16-rounded inputs (`q`,
/// `kv`, the forward's `out` and `lse`, the gradients). They round `P` and `dS` to bf16
/// before their products and return bf16 `dq`/`dkv`, hence the 1e-2 tolerance. Shapes:
/// V3.2's latent (576/512: 128 heads; 70 heads, slots not a multiple of 64 and rows selected
/// several times; an odd number of 64-slot blocks), heads not a multiple of 64, dims not a
/// multiple of 16 or of the load width, rows selected several times (S small), an empty row,
/// each gradient alone and both, both atomic paths, the latent as a strided view.
#[cfg(feature = "cuda")]
#[test]
fn sparse_mla_backward_tensor_cores_match_reference() {
    use dsa_burn::cubecl::{tensor_core_launches, TensorCoreOp};
    use dsa_burn::DsaBackend;
    type GB = burn::backend::Cuda<burn::tensor::bf16>;
    let _choice = choose_kernels();
    let mut rng = Rng::new("sparse_mla_bwd_mma");
    let bf16 = burn::tensor::FloatDType::BF16;
    let g = Default::default();
    for (dims, empty_rows) in [
        ([1, 3, 128, 576, 512, 300, 150], 1),
        ([2, 3, 70, 576, 512, 50, 200], 1),
        ([1, 2, 64, 576, 512, 4000, 2100], 0),
        ([2, 5, 3, 12, 8, 5, 4], 1),
        ([1, 3, 2, 9, 9, 10, 40], 0),
        ([1, 4, 70, 72, 64, 40, 37], 1),
        ([2, 2, 16, 40, 32, 100, 65], 0),
        // More slots than the kernels' window of selections (2048).
        ([1, 2, 3, 16, 8, 60, 2100], 0),
        // Batch × latent rows past the `wgmma` backward's DSB_PREFETCH_ROWS (32K): its dkv prefetch runs.
        ([2, 2, 64, 576, 512, 20000, 300], 0),
    ] {
        let [b, t, h, d, dv, s, _] = dims;
        let mut m = Mla::new(&mut rng, dims, empty_rows);
        m.q = bf(m.q);
        m.kv = bf(m.kv);
        let cdev = Default::default();
        let (out, lse) = dsa_burn::reference::sparse_mla::reference_sparse_mla::<C>(
            ft(&m.q, [b, t, h, d], &cdev),
            ft(&m.kv, [b, s, d], &cdev),
            m.indices(&cdev),
            m.valid(&cdev),
            dv,
            m.scale,
        );
        let (outv, lsev) = (bf(host(out)), bf(host(lse)));
        let (gov, glv) = (bf(rng.normal(b * t * h * dv)), bf(rng.normal(b * t * h)));
        for (which, with_out, with_lse, force_cas) in [
            ("both", true, true, false),
            ("d_out", true, false, false),
            ("d_lse", false, true, false),
            ("both", true, true, true),
        ] {
            let want = m.reference_backward(&outv, &lsev, with_out.then_some(&gov[..]), with_lse.then_some(&glv[..]));
            let want = (host(want.0), host(want.1));
            let wgmma = (d, dv) == (576, 512) && wgmma_device();
            for (kernel, op) in [
                (MlaKernel::Wgmma, TensorCoreOp::SparseMlaBackwardWgmma),
                (MlaKernel::Cmma, TensorCoreOp::SparseMlaBackward),
            ] {
                if kernel == MlaKernel::Wgmma && !wgmma {
                    continue;
                }
                dsa_burn::cubecl::update_kernel_settings(|s| { s.force_cas_atomics = force_cas; s.mla = kernel });
                let kv_view = nan_padded_view(&m.kv, [b, s, d]);
                let before = tensor_core_launches(op);
                let (dq, dkv) = <GB as DsaBackend>::sparse_mla_backward(
                    prim(ft::<GB, 4>(&m.q, [b, t, h, d], &g).cast(bf16)),
                    prim(kv_view),
                    m.indices::<GB>(&g).into_primitive(),
                    m.valid::<GB>(&g).into_primitive(),
                    prim(ft::<GB, 4>(&outv, [b, t, h, dv], &g).cast(bf16)),
                    prim(ft::<GB, 3>(&lsev, [b, t, h], &g).cast(bf16)),
                    with_out.then(|| prim(ft::<GB, 4>(&gov, [b, t, h, dv], &g).cast(bf16))),
                    with_lse.then(|| prim(ft::<GB, 3>(&glv, [b, t, h], &g).cast(bf16))),
                    dv,
                    m.scale,
                );
                let case = format!("{dims:?} {which} cas={force_cas} {kernel:?}");
                let (dq, dkv) = (host(unprim::<GB, 4>(dq)), host(unprim::<GB, 3>(dkv)));
                assert!(
                    tensor_core_launches(op) > before,
                    "{case}: the tensor-core backward ({op:?}) did not run"
                );
                assert_close_floor(&format!("dq {case}"), &dq, &want.0, 1e-2, 1e-2);
                assert_close_floor(&format!("dkv {case}"), &dkv, &want.1, 1e-2, 1e-2);
            }
        }
    }
    dsa_burn::cubecl::update_kernel_settings(|s| { s.force_cas_atomics = false; s.mla = MlaKernel::Auto });
}

/// Kernel 6, the pieces of the sparse-stage indexer loss, against the reference on NdArray:
/// the indexer's scores at the selected keys (unquantised and FP8), their gradients (f32
/// atomic adds and CAS loops; keys selected several times), and sparse MLA's head-averaged
/// probabilities from its log-sum-exp. Fresh inputs, poisoned outputs, invalid slots and an
/// empty row per case, odd sizes, more heads than one group.
#[test]
fn indexer_loss_kernels_match_reference() {
    use dsa_burn::reference::indexer_loss::{
        reference_selected_scores, reference_selected_scores_backward, reference_sparse_mla_probs,
    };
    use dsa_burn::DsaBackend;
    let _choice = choose_kernels();
    let mut rng = Rng::new("indexer_loss");
    let cases = [
        [2, 5, 3, 12, 8, 5, 4],
        [2, 6, 1, 5, 3, 6, 1],
        [1, 4, 11, 72, 64, 40, 37],
        [1, 3, 70, 40, 40, 20, 33],
        [1, 2, 9, 128, 128, 50, 45],
    ];
    let (cdev, g) = (Default::default(), gdev());
    for (ci, dims) in cases.into_iter().enumerate() {
        let [b, t, h, d, dv, s, k] = dims;
        let m = Mla::new(&mut rng, dims, 1);
        let (wv, gv) = (rng.normal(b * t * h), rng.normal(b * t * k));
        let c_in = || {
            (
                ft::<C, 4>(&m.q, [b, t, h, d], &cdev),
                ft::<C, 3>(&wv, [b, t, h], &cdev),
                ft::<C, 3>(&m.kv, [b, s, d], &cdev),
            )
        };
        let g_in = || {
            (
                prim(ft::<G, 4>(&m.q, [b, t, h, d], &g)),
                prim(ft::<G, 3>(&wv, [b, t, h], &g)),
                prim(ft::<G, 3>(&m.kv, [b, s, d], &g)),
            )
        };
        for quant in [IndexerQuant::None, IndexerQuant::E4m3] {
            let case = format!("case {ci} {dims:?} {quant:?}");
            let (q, w, kk) = c_in();
            let want = reference_selected_scores(q, w, kk, quant, m.indices(&cdev), m.valid(&cdev));
            let (q, w, kk) = g_in();
            let mma_before = dsa_burn::cubecl::tensor_core_launches(
                dsa_burn::cubecl::TensorCoreOp::SelectedScores,
            );
            let got = <G as DsaBackend>::indexer_selected_scores(
                q,
                w,
                kk,
                quant,
                m.indices::<G>(&g).into_primitive(),
                m.valid::<G>(&g).into_primitive(),
            );
            assert_close(
                &format!("selected scores {case}"),
                &host(unprim::<G, 3>(got)),
                &host(want),
                1e-5,
            );
            // On CUDA the quantised case takes the tensor-core kernel (one block per row).
            let mma_ran = dsa_burn::cubecl::tensor_core_launches(
                dsa_burn::cubecl::TensorCoreOp::SelectedScores,
            ) > mma_before;
            let expected = cfg!(feature = "cuda") && quant != IndexerQuant::None && d <= 128;
            assert_eq!(mma_ran, expected, "{case}: tensor-core selected scores ran: {mma_ran}");
            for force_cas in [false, true] {
                dsa_burn::cubecl::update_kernel_settings(|s| s.force_cas_atomics = force_cas);
                let (q, w, kk) = c_in();
                let want = reference_selected_scores_backward(
                    q,
                    w,
                    kk,
                    quant,
                    m.indices(&cdev),
                    m.valid(&cdev),
                    ft(&gv, [b, t, k], &cdev),
                );
                let (q, w, kk) = g_in();
                let (dq, dw, dk) = <G as DsaBackend>::indexer_selected_scores_backward(
                    q,
                    w,
                    kk,
                    quant,
                    m.indices::<G>(&g).into_primitive(),
                    m.valid::<G>(&g).into_primitive(),
                    prim(ft::<G, 3>(&gv, [b, t, k], &g)),
                );
                let case = format!("{case} cas={force_cas}");
                let got = [
                    host(unprim::<G, 4>(dq)),
                    host(unprim::<G, 3>(dw)),
                    host(unprim::<G, 3>(dk)),
                ];
                let want = [host(want.0), host(want.1), host(want.2)];
                for ((name, got), want) in ["dq", "dw", "dk"].iter().zip(&got).zip(&want) {
                    assert_close_floor(&format!("{name} {case}"), got, want, 1e-5, 1e-3);
                }
            }
        }
        dsa_burn::cubecl::update_kernel_settings(|s| s.force_cas_atomics = false);
        let (q, _, kv) = c_in();
        let lse = dsa_burn::reference::sparse_mla::reference_sparse_mla::<C>(
            q.clone(),
            kv.clone(),
            m.indices(&cdev),
            m.valid(&cdev),
            dv,
            m.scale,
        )
        .1;
        let lsev = host(lse.clone());
        let want = reference_sparse_mla_probs(q, kv, m.indices(&cdev), m.valid(&cdev), lse, m.scale);
        let (q, _, kv) = g_in();
        let got = <G as DsaBackend>::sparse_mla_probs(
            q,
            kv,
            m.indices::<G>(&g).into_primitive(),
            m.valid::<G>(&g).into_primitive(),
            prim(ft::<G, 3>(&lsev, [b, t, h], &g)),
            m.scale,
        );
        assert_close(
            &format!("probs case {ci} {dims:?}"),
            &host(unprim::<G, 3>(got)),
            &host(want),
            1e-5,
        );
    }
}

/// Gradients through `ops::sparse_mla` on Autodiff<Wgpu> (forward and backward kernels) and
/// on Autodiff<NdArray> (reference backward) against Burn's autodiff of the reference forward.
#[test]
fn sparse_mla_autodiff_matches_reference() {
    use burn::backend::Autodiff;
    type AG = Autodiff<G>;
    type AC = Autodiff<C>;
    let _choice = choose_kernels();
    let mut rng = Rng::new("sparse_mla_autodiff");
    for dims in [
        [2, 5, 3, 12, 8, 5, 4],
        [1, 4, 11, 72, 64, 40, 37],
        [2, 6, 1, 5, 3, 6, 1],
    ] {
        let [b, t, h, _, dv, _, _] = dims;
        let m = Mla::new(&mut rng, dims, 1);
        let (gov, glv) = (rng.normal(b * t * h * dv), rng.normal(b * t * h));
        // loss = Σ out·G + Σ lse·G2 over the finite lse.
        fn run<B: burn::tensor::backend::AutodiffBackend + dsa_burn::DsaBackend>(
            m: &Mla,
            gov: &[f32],
            glv: &[f32],
            dev: &B::Device,
            reference: bool,
        ) -> (Vec<f32>, Vec<f32>) {
            let [b, t, h, d, dv, s, _] = m.dims;
            let q = ft::<B, 4>(&m.q, [b, t, h, d], dev).require_grad();
            let kv = ft::<B, 3>(&m.kv, [b, s, d], dev).require_grad();
            let (out, lse) = if reference {
                dsa_burn::reference::sparse_mla::reference_sparse_mla(
                    q.clone(),
                    kv.clone(),
                    m.indices(dev),
                    m.valid(dev),
                    dv,
                    m.scale,
                )
            } else {
                sparse_mla(
                    q.clone(),
                    kv.clone(),
                    m.indices(dev),
                    m.valid(dev),
                    dv,
                    m.scale,
                )
            };
            let lse = lse.clone().mask_fill(lse.is_inf(), 0.0);
            let loss = (out * ft::<B, 4>(gov, [b, t, h, dv], dev)).sum()
                + (lse * ft::<B, 3>(glv, [b, t, h], dev)).sum();
            let grads = loss.backward();
            (
                host(q.grad(&grads).unwrap()),
                host(kv.grad(&grads).unwrap()),
            )
        }
        let want = run::<AC>(&m, &gov, &glv, &Default::default(), true);
        let got_ref = run::<AC>(&m, &gov, &glv, &Default::default(), false);
        let got = run::<AG>(&m, &gov, &glv, &gdev(), false);
        assert_close_floor(
            &format!("dq reference backward {dims:?}"),
            &got_ref.0,
            &want.0,
            1e-5,
            VANISHING_FLOOR,
        );
        assert_close_floor(
            &format!("dkv reference backward {dims:?}"),
            &got_ref.1,
            &want.1,
            1e-5,
            VANISHING_FLOOR,
        );
        assert_close_floor(
            &format!("dq kernels {dims:?}"),
            &got.0,
            &want.0,
            1e-5,
            VANISHING_FLOOR,
        );
        assert_close_floor(
            &format!("dkv kernels {dims:?}"),
            &got.1,
            &want.1,
            1e-5,
            VANISHING_FLOOR,
        );
    }
}

/// `ops::dense_mla` on CubeCL (sparse MLA kernels over every causal key) against the
/// materialised softmax on NdArray: output and both gradients, for training (`start` 0)
/// and for new tokens after a cached prefix (`start` > 0, `S = start + T`).
#[test]
fn dense_mla_by_kernels_matches_materialised() {
    use burn::backend::Autodiff;
    use burn::tensor::backend::AutodiffBackend;
    use dsa_burn::ops::dense_mla;
    let _choice = choose_kernels();
    let mut rng = Rng::new("dense_mla");
    for (b, t, h, d, dv, start) in [(2, 7, 3, 12, 8, 0), (1, 4, 5, 40, 32, 6), (1, 1, 2, 9, 9, 0)] {
        let s = start + t;
        let (qv, kvv, gv) = (rng.normal(b * t * h * d), rng.normal(b * s * d), rng.normal(b * t * h * dv));
        fn run<B: AutodiffBackend + dsa_burn::DsaBackend>(
            [b, t, h, d, dv, s, start]: [usize; 7],
            (qv, kvv, gv): (&[f32], &[f32], &[f32]),
            scale: f32,
            dev: &B::Device,
        ) -> [Vec<f32>; 3] {
            let q = ft::<B, 4>(qv, [b, t, h, d], dev).require_grad();
            let kv = ft::<B, 3>(kvv, [b, s, d], dev).require_grad();
            let out = dense_mla(q.clone(), kv.clone(), start, dv, scale);
            let grads = (out.clone() * ft::<B, 4>(gv, [b, t, h, dv], dev)).sum().backward();
            [host(out), host(q.grad(&grads).unwrap()), host(kv.grad(&grads).unwrap())]
        }
        let dims = [b, t, h, d, dv, s, start];
        let scale = 1.0 / (d as f32).sqrt();
        assert!(<Autodiff<G> as dsa_burn::DsaBackend>::fused_sparse_mla() && !<Autodiff<C> as dsa_burn::DsaBackend>::fused_sparse_mla());
        let want = run::<Autodiff<C>>(dims, (&qv, &kvv, &gv), scale, &Default::default());
        let got = run::<Autodiff<G>>(dims, (&qv, &kvv, &gv), scale, &gdev());
        for (name, g, w) in [("out", &got[0], &want[0]), ("dq", &got[1], &want[1]), ("dkv", &got[2], &want[2])] {
            assert_close(&format!("{name} {dims:?}"), g, w, 1e-5);
        }
    }
}

/// `ops::dense_attention` (blockwise, MHA form) on CubeCL against NdArray: output,
/// log-sum-exp and the three gradients, for training (`start` 0) and after a cached prefix.
/// Burn's CUDA matmuls of f32 run on TF32, hence the looser tolerance there.
#[test]
fn dense_attention_on_cubecl_matches_ndarray() {
    use burn::backend::Autodiff;
    use burn::tensor::backend::AutodiffBackend;
    use dsa_burn::ops::dense_attention;
    let tol = if cfg!(feature = "cuda") { 4e-3 } else { 1e-5 };
    let mut rng = Rng::new("dense_attention");
    for (b, h, t, d, dv, start) in [(2, 3, 9, 24, 16, 0), (1, 2, 5, 40, 32, 6)] {
        let s = start + t;
        let (qv, kv, vv, gv) = (rng.normal(b * h * t * d), rng.normal(b * h * s * d), rng.normal(b * h * s * dv), rng.normal(b * h * t * dv));
        fn run<B: AutodiffBackend + dsa_burn::DsaBackend>([b, h, t, d, dv, s, start]: [usize; 7], [qv, kv, vv, gv]: [&[f32]; 4], dev: &B::Device) -> [Vec<f32>; 5] {
            let q = ft::<B, 4>(qv, [b, h, t, d], dev).require_grad();
            let k = ft::<B, 4>(kv, [b, h, s, d], dev).require_grad();
            let v = ft::<B, 4>(vv, [b, h, s, dv], dev).require_grad();
            let (out, lse) = dense_attention(q.clone(), k.clone(), v.clone(), start, 1.0 / (d as f32).sqrt());
            let grads = (out.clone() * ft::<B, 4>(gv, [b, h, t, dv], dev)).sum().backward();
            [host(out), host(lse), host(q.grad(&grads).unwrap()), host(k.grad(&grads).unwrap()), host(v.grad(&grads).unwrap())]
        }
        let dims = [b, h, t, d, dv, s, start];
        let want = run::<Autodiff<C>>(dims, [&qv, &kv, &vv, &gv], &Default::default());
        let got = run::<Autodiff<G>>(dims, [&qv, &kv, &vv, &gv], &gdev());
        for ((name, g), w) in ["out", "lse", "dq", "dk", "dv"].iter().zip(&got).zip(&want) {
            assert_close(&format!("{name} {dims:?}"), g, w, tol);
        }
    }
}

/// The flash kernels (dense attention on `mma.sync`, bf16 and f16 inputs) against the f32
/// reference on NdArray with the same rounded inputs: output, log-sum-exp and the three
/// gradients. Probabilities and `dS` are rounded to the input type before their products and
/// the results are bf16/f16, hence the 1e-2 tolerance. Shapes: the small preset's heads
/// (96/64), lengths no multiple of the 64-row tiles, B > 1, a cached prefix (keys past the
/// queries), dims of 16 and 128, `q` as a strided view; poisoned outputs.
#[cfg(feature = "cuda")]
#[test]
fn dense_attention_flash_matches_reference() {
    use burn::backend::Autodiff;
    use burn::tensor::backend::AutodiffBackend;
    use burn::tensor::FloatDType;
    use dsa_burn::cubecl::{tensor_core_launches, TensorCoreOp};
    use dsa_burn::ops::dense_attention;
    type GB = burn::backend::Cuda<burn::tensor::bf16>;
    let mut rng = Rng::new("dense_attention_flash");
    for (dtype, (b, h, t, d, dv, start)) in [
        (FloatDType::BF16, (2, 3, 130, 96, 64, 0)),
        (FloatDType::BF16, (1, 2, 77, 32, 16, 50)),
        (FloatDType::BF16, (1, 1, 64, 128, 128, 0)),
        (FloatDType::F16, (2, 2, 200, 64, 48, 3)),
    ] {
        let s = start + t;
        let round = |v: Vec<f32>| -> Vec<f32> {
            v.into_iter()
                .map(|x| if dtype == FloatDType::BF16 { burn::tensor::bf16::from_f32(x).to_f32() } else { burn::tensor::f16::from_f32(x).to_f32() })
                .collect()
        };
        let (qv, kv, vv, gv) = (round(rng.normal(b * t * h * d)), round(rng.normal(b * h * s * d)), round(rng.normal(b * h * s * dv)), round(rng.normal(b * h * t * dv)));
        // `q` arrives as [B,T,H,D] with heads and tokens swapped (a strided view), as the model's.
        fn run<B: AutodiffBackend + dsa_burn::DsaBackend>(
            [b, h, t, d, dv, s, start]: [usize; 7],
            [qv, kv, vv, gv]: [&[f32]; 4],
            dtype: Option<FloatDType>,
            dev: &B::Device,
        ) -> [Vec<f32>; 5] {
            let cast = |x: Tensor<B, 4>| match dtype {
                Some(dt) => x.cast(dt),
                None => x,
            };
            let q = cast(ft::<B, 4>(qv, [b, t, h, d], dev)).require_grad();
            let k = cast(ft::<B, 4>(kv, [b, h, s, d], dev)).require_grad();
            let v = cast(ft::<B, 4>(vv, [b, h, s, dv], dev)).require_grad();
            let (out, lse) = dense_attention(q.clone().swap_dims(1, 2), k.clone(), v.clone(), start, 1.0 / (d as f32).sqrt());
            let grads = (out.clone() * cast(ft::<B, 4>(gv, [b, h, t, dv], dev))).sum().backward();
            [host(out), host(lse), host(q.grad(&grads).unwrap().swap_dims(1, 2)), host(k.grad(&grads).unwrap()), host(v.grad(&grads).unwrap())]
        }
        let dims = [b, h, t, d, dv, s, start];
        let want = run::<Autodiff<C>>(dims, [&qv, &kv, &vv, &gv], None, &Default::default());
        let (fwd, bwd) = (tensor_core_launches(TensorCoreOp::DenseAttention), tensor_core_launches(TensorCoreOp::DenseAttentionBackward));
        let got = run::<Autodiff<GB>>(dims, [&qv, &kv, &vv, &gv], Some(dtype), &Default::default());
        assert!(tensor_core_launches(TensorCoreOp::DenseAttention) > fwd, "{dims:?}: the flash forward did not run");
        assert!(tensor_core_launches(TensorCoreOp::DenseAttentionBackward) > bwd, "{dims:?}: the flash backward did not run");
        for ((name, g), w) in ["out", "lse", "dq", "dk", "dv"].iter().zip(&got).zip(&want) {
            let err = assert_close(&format!("{name} {dtype:?} {dims:?}"), g, w, 1e-2);
            println!("flash {name} {dtype:?} {dims:?}: {err:.2e}");
        }
    }
}

/// `ops::swiglu` (one kernel each way on CubeCL) against NdArray, in f32 and, on CUDA, bf16.
#[test]
fn swiglu_on_cubecl_matches_ndarray() {
    use burn::backend::Autodiff;
    use burn::tensor::backend::AutodiffBackend;
    use dsa_burn::ops::swiglu;
    let mut rng = Rng::new("swiglu");
    let (n, d) = (37, 300);
    let (gv, uv, dyv) = (rng.normal(n * d), rng.normal(n * d), rng.normal(n * d));
    fn run<B: AutodiffBackend + dsa_burn::DsaBackend>([n, d]: [usize; 2], [gv, uv, dyv]: [&[f32]; 3], dev: &B::Device) -> [Vec<f32>; 3] {
        let gate = ft::<B, 2>(gv, [n, d], dev).require_grad();
        let up = ft::<B, 2>(uv, [n, d], dev).require_grad();
        let y = swiglu(gate.clone(), up.clone());
        let grads = (y.clone() * ft::<B, 2>(dyv, [n, d], dev)).sum().backward();
        [host(y), host(gate.grad(&grads).unwrap()), host(up.grad(&grads).unwrap())]
    }
    let want = run::<Autodiff<C>>([n, d], [&gv, &uv, &dyv], &Default::default());
    let got = run::<Autodiff<G>>([n, d], [&gv, &uv, &dyv], &gdev());
    for ((name, g), w) in ["y", "dgate", "dup"].iter().zip(&got).zip(&want) {
        assert_close(&format!("swiglu {name}"), g, w, 1e-5);
    }
    #[cfg(feature = "cuda")]
    {
        let (gb, ub, db) = (bf(gv.clone()), bf(uv.clone()), bf(dyv.clone()));
        let want = run::<Autodiff<C>>([n, d], [&gb, &ub, &db], &Default::default());
        let got = run::<Autodiff<burn::backend::Cuda<burn::tensor::bf16>>>([n, d], [&gb, &ub, &db], &Default::default());
        for ((name, g), w) in ["y", "dgate", "dup"].iter().zip(&got).zip(&want) {
            assert_close(&format!("bf16 swiglu {name}"), g, w, 1e-2);
        }
    }
}

/// `ops::rope` (one kernel on CubeCL; the angles' cosines in f32 on the device, the
/// reference's from f64) against NdArray: both pair layouts, a start past 0, gradients.
#[test]
fn rope_on_cubecl_matches_ndarray() {
    use burn::backend::Autodiff;
    use burn::tensor::backend::AutodiffBackend;
    use dsa_burn::ops::rope;
    let mut rng = Rng::new("rope");
    let rope_cfg = dsa_burn::rope::RopeConfig::new(32, 4096).init();
    for (b, t, h, start, interleaved) in [(2, 37, 3, 0, true), (1, 5, 1, 4000, false)] {
        let d = 32;
        let (xv, gv) = (rng.normal(b * t * h * d), rng.normal(b * t * h * d));
        let run = |dev_is_gpu: bool| -> [Vec<f32>; 2] {
            fn go<B: AutodiffBackend + dsa_burn::DsaBackend>(r: &dsa_burn::rope::Rope, [b, t, h, d, start]: [usize; 5], interleaved: bool, [xv, gv]: [&[f32]; 2], dev: &B::Device) -> [Vec<f32>; 2] {
                let x = ft::<B, 4>(xv, [b, t, h, d], dev).require_grad();
                let y = rope(x.clone(), r.freqs(dev), start, interleaved);
                let grads = (y.clone() * ft::<B, 4>(gv, [b, t, h, d], dev)).sum().backward();
                [host(y), host(x.grad(&grads).unwrap())]
            }
            let dims = [b, t, h, d, start];
            if dev_is_gpu {
                go::<Autodiff<G>>(&rope_cfg, dims, interleaved, [&xv, &gv], &gdev())
            } else {
                go::<Autodiff<C>>(&rope_cfg, dims, interleaved, [&xv, &gv], &Default::default())
            }
        };
        let (want, got) = (run(false), run(true));
        for ((name, g), w) in ["y", "dx"].iter().zip(&got).zip(&want) {
            assert_close(&format!("rope {name} {interleaved} {start}"), g, w, 1e-5);
        }
    }
}

/// `ops::rms_norm` (one kernel each way on CubeCL) against NdArray: output and gradients in
/// `x` and `gamma`, rows of fewer columns than a cube's units and of several per unit, a
/// row count no multiple of the backward's 32; in bf16 on CUDA too.
#[test]
fn rms_norm_on_cubecl_matches_ndarray() {
    use burn::backend::Autodiff;
    use burn::tensor::backend::AutodiffBackend;
    use dsa_burn::ops::rms_norm;
    let mut rng = Rng::new("rms_norm");
    for (rows, d) in [(70, 300), (5, 768), (33, 7)] {
        let (xv, gv, dyv) = (rng.normal(rows * d), rng.normal(d), rng.normal(rows * d));
        fn run<B: AutodiffBackend + dsa_burn::DsaBackend>([rows, d]: [usize; 2], [xv, gv, dyv]: [&[f32]; 3], dtype: Option<burn::tensor::FloatDType>, dev: &B::Device) -> [Vec<f32>; 3] {
            let cast = |t: Tensor<B, 2>| match dtype {
                Some(dt) => t.cast(dt),
                None => t,
            };
            let x = cast(ft::<B, 2>(xv, [rows, d], dev)).require_grad();
            let gamma = ft::<B, 1>(gv, [d], dev).require_grad();
            let y = rms_norm(x.clone(), gamma.clone(), 1e-6);
            let grads = (y.clone() * cast(ft::<B, 2>(dyv, [rows, d], dev))).sum().backward();
            [host(y), host(x.grad(&grads).unwrap()), host(gamma.grad(&grads).unwrap())]
        }
        let dims = [rows, d];
        let want = run::<Autodiff<C>>(dims, [&xv, &gv, &dyv], None, &Default::default());
        let got = run::<Autodiff<G>>(dims, [&xv, &gv, &dyv], None, &gdev());
        for ((name, g), w) in ["y", "dx", "dgamma"].iter().zip(&got).zip(&want) {
            assert_close(&format!("{name} {dims:?}"), g, w, 1e-5);
        }
        #[cfg(feature = "cuda")]
        {
            let bf16 = Some(burn::tensor::FloatDType::BF16);
            let (xb, gb, dyb) = (bf(xv.clone()), bf(gv.clone()), bf(dyv.clone()));
            let want = run::<Autodiff<C>>(dims, [&xb, &gb, &dyb], None, &Default::default());
            let got = run::<Autodiff<burn::backend::Cuda<burn::tensor::bf16>>>(dims, [&xb, &gb, &dyb], bf16, &Default::default());
            for ((name, g), w) in ["y", "dx", "dgamma"].iter().zip(&got).zip(&want) {
                assert_close(&format!("bf16 {name} {dims:?}"), g, w, 1e-2);
            }
        }
    }
}

/// Group sizes for the grouped products: `g` random sizes below `max`, with an empty group
/// and a group of one row at random places.
fn group_sizes(rng: &mut Rng, g: usize, max: usize) -> Vec<usize> {
    let mut sizes: Vec<usize> = (0..g).map(|_| rng.below(max)).collect();
    sizes[rng.below(g)] = 0;
    sizes[rng.below(g)] = 1;
    sizes
}

/// `offsets [G + 1]` of consecutive groups of `sizes` rows, as the device's int type cast to
/// `dtype`.
fn group_offsets<B: Backend>(sizes: &[usize], dtype: burn::tensor::IntDType, dev: &B::Device) -> Tensor<B, 1, Int> {
    let offsets: Vec<i64> = std::iter::once(0).chain(sizes.iter().scan(0i64, |end, &s| {
        *end += s as i64;
        Some(*end)
    })).collect();
    Tensor::<B, 1, Int>::from_data(TensorData::new(offsets, [sizes.len() + 1]), dev).cast(dtype)
}

/// The grouped-product kernels (forward and weight gradient) against the reference on
/// NdArray, on sizes no multiple of the tiles: groups of random sizes with an empty one and
/// one of a single row, empty groups first and last, a single group, rows of one column,
/// `K = 1`; offsets in i32 and i64. Poisoned outputs: every row and weight must be written.
#[test]
fn grouped_matmul_matches_reference() {
    use burn::tensor::IntDType;
    use dsa_burn::ops::grouped_matmul;
    use dsa_burn::DsaBackend;
    let mut rng = Rng::new("grouped_matmul");
    let random = group_sizes(&mut rng, 7, 90);
    for (k, n, sizes) in [
        (72, 40, vec![120, 0, 1, 97, 83]),
        (72 + rng.below(60), 1 + rng.below(140), random),
        (130, 70, vec![0, 5, 200, 0]),
        (16, 64, vec![64]),
        (1, 33, vec![3, 0, 70]),
    ] {
        let (m, g) = (sizes.iter().sum::<usize>(), sizes.len());
        let (xv, wv, dyv) = (rng.normal(m * k), rng.normal(g * k * n), rng.normal(m * n));
        for dtype in [IntDType::I32, IntDType::I64] {
            let what = format!("K={k} N={n} groups {sizes:?} {dtype:?}");
            let (dc, dg) = (Default::default(), gdev());
            let want = grouped_matmul(ft::<C, 2>(&xv, [m, k], &dc), ft::<C, 3>(&wv, [g, k, n], &dc), group_offsets::<C>(&sizes, dtype, &dc));
            let got = grouped_matmul(ft::<G, 2>(&xv, [m, k], &dg), ft::<G, 3>(&wv, [g, k, n], &dg), group_offsets::<G>(&sizes, dtype, &dg));
            assert_close(&format!("y {what}"), &host(got), &host(want), 1e-5);
            let want = C::grouped_matmul_weight_grad(prim(ft::<C, 2>(&xv, [m, k], &dc)), prim(ft::<C, 2>(&dyv, [m, n], &dc)), group_offsets::<C>(&sizes, dtype, &dc).into_primitive());
            let got = G::grouped_matmul_weight_grad(prim(ft::<G, 2>(&xv, [m, k], &dg)), prim(ft::<G, 2>(&dyv, [m, n], &dg)), group_offsets::<G>(&sizes, dtype, &dg).into_primitive());
            assert_close(&format!("dw {what}"), &host(unprim::<G, 3>(got)), &host(unprim::<C, 3>(want)), 1e-5);
        }
    }
}

/// Gradients of `Σ grouped_matmul(x, w, offsets)·G` through Autodiff<GPU> (the kernels, `dx`
/// as the grouped product with `wᵀ`) against Autodiff<NdArray> (the reference).
#[test]
fn grouped_matmul_autodiff_matches_reference() {
    use burn::backend::Autodiff;
    use burn::tensor::backend::AutodiffBackend;
    use burn::tensor::IntDType;
    use dsa_burn::ops::grouped_matmul;
    let mut rng = Rng::new("grouped_matmul_autodiff");
    for (k, n, sizes) in [(72, 40, vec![120, 0, 1, 97, 83]), (20, 90, group_sizes(&mut rng, 4, 70))] {
        let (m, g) = (sizes.iter().sum::<usize>(), sizes.len());
        let (xv, wv, gv) = (rng.normal(m * k), rng.normal(g * k * n), rng.normal(m * n));
        fn run<B: AutodiffBackend + dsa_burn::DsaBackend>(
            [m, k, n, g]: [usize; 4],
            (xv, wv, gv): (&[f32], &[f32], &[f32]),
            sizes: &[usize],
            dev: &B::Device,
        ) -> [Vec<f32>; 3] {
            let x = ft::<B, 2>(xv, [m, k], dev).require_grad();
            let w = ft::<B, 3>(wv, [g, k, n], dev).require_grad();
            let y = grouped_matmul(x.clone(), w.clone(), group_offsets::<B>(sizes, IntDType::I32, dev));
            let grads = (y.clone() * ft::<B, 2>(gv, [m, n], dev)).sum().backward();
            [host(y), host(x.grad(&grads).unwrap()), host(w.grad(&grads).unwrap())]
        }
        let dims = [m, k, n, g];
        let want = run::<Autodiff<C>>(dims, (&xv, &wv, &gv), &sizes, &Default::default());
        let got = run::<Autodiff<G>>(dims, (&xv, &wv, &gv), &sizes, &gdev());
        for (name, got, want) in [("y", &got[0], &want[0]), ("dx", &got[1], &want[1]), ("dw", &got[2], &want[2])] {
            assert_close(&format!("{name} K={k} N={n} groups {sizes:?}"), got, want, 1e-5);
        }
    }
}

/// Whether the grouped products take their tensor-core kernels for inputs of `dtype` on the
/// device under test (bf16/f16 cmma; not on lavapipe).
#[cfg(feature = "cuda")]
fn grouped_tensor_cores(dtype: burn::tensor::DType) -> bool {
    use burn::backend::cuda::CudaDevice;
    use burn_cubecl::cubecl::Runtime;
    dsa_burn::cubecl::grouped_matmul_tensor_cores(&burn_cubecl::cubecl::cuda::CudaRuntime::client(&CudaDevice::default()), dtype)
}
#[cfg(not(feature = "cuda"))]
fn grouped_tensor_cores(dtype: burn::tensor::DType) -> bool {
    use burn::backend::wgpu::WgpuDevice;
    use burn_cubecl::cubecl::Runtime;
    dsa_burn::cubecl::grouped_matmul_tensor_cores(&burn_cubecl::cubecl::wgpu::WgpuRuntime::client(&WgpuDevice::default()), dtype)
}

/// The tensor-core grouped products (forward and weight gradient; bf16 and f16 inputs and
/// outputs, f32 accumulation) against the f32 reference on NdArray on the same rounded
/// inputs, where the device has them (else skipped, as on lavapipe). Shapes: rows no multiple
/// of the 64-row tile with an empty group and a one-row group, `K` and `N` no multiple of 16
/// (vector loads of 8, 2 and 1 values), several row, `K` and column tiles, empty groups first
/// and last, a single group; offsets in i64 and i32. Poisoned outputs: every row and weight
/// must be written. The tolerance is the outputs' rounding (RMS about 2⁻⁹ relative in bf16,
/// 2⁻¹² in f16).
#[test]
fn grouped_matmul_tensor_cores_match_reference() {
    use burn::tensor::{DType, FloatDType, IntDType};
    use dsa_burn::cubecl::{tensor_core_launches, TensorCoreOp};
    use dsa_burn::ops::grouped_matmul;
    use dsa_burn::DsaBackend;
    let mut rng = Rng::new("grouped_matmul_tensor_cores");
    for (dtype, float, offsets_dtype, tol) in [
        (DType::BF16, FloatDType::BF16, IntDType::I64, 4e-3),
        (DType::F16, FloatDType::F16, IntDType::I32, 1e-3),
    ] {
        if !grouped_tensor_cores(dtype) {
            println!("grouped_matmul_tensor_cores: no {dtype:?} cmma on this device, skipped");
            continue;
        }
        let round = |v: Vec<f32>| -> Vec<f32> {
            let bf16 = dtype == DType::BF16;
            v.into_iter()
                .map(|x| if bf16 { burn::tensor::bf16::from_f32(x).to_f32() } else { burn::tensor::f16::from_f32(x).to_f32() })
                .collect()
        };
        let random = group_sizes(&mut rng, 9, 200);
        for (k, n, sizes) in [
            (72, 40, vec![120, 0, 1, 97, 83]),
            (256, 192, random),
            (130, 70, vec![0, 5, 200, 0]),
            (33, 65, vec![1, 64, 63, 0, 129]),
            (16, 64, vec![64]),
        ] {
            let (m, g) = (sizes.iter().sum::<usize>(), sizes.len());
            let (xv, wv, dyv) = (round(rng.normal(m * k)), round(rng.normal(g * k * n)), round(rng.normal(m * n)));
            let what = format!("{dtype:?} K={k} N={n} groups {sizes:?}");
            let (dc, dg) = (Default::default(), gdev());
            let want = grouped_matmul(ft::<C, 2>(&xv, [m, k], &dc), ft::<C, 3>(&wv, [g, k, n], &dc), group_offsets::<C>(&sizes, offsets_dtype, &dc));
            let before = tensor_core_launches(TensorCoreOp::GroupedMatmul);
            let got = grouped_matmul(
                ft::<G, 2>(&xv, [m, k], &dg).cast(float),
                ft::<G, 3>(&wv, [g, k, n], &dg).cast(float),
                group_offsets::<G>(&sizes, offsets_dtype, &dg),
            );
            assert_close(&format!("y {what}"), &host(got), &host(want), tol);
            assert!(tensor_core_launches(TensorCoreOp::GroupedMatmul) > before, "y {what}: the tensor-core kernel did not run");
            let want = C::grouped_matmul_weight_grad(prim(ft::<C, 2>(&xv, [m, k], &dc)), prim(ft::<C, 2>(&dyv, [m, n], &dc)), group_offsets::<C>(&sizes, offsets_dtype, &dc).into_primitive());
            let before = tensor_core_launches(TensorCoreOp::GroupedMatmulWeightGrad);
            let got = G::grouped_matmul_weight_grad(
                prim(ft::<G, 2>(&xv, [m, k], &dg).cast(float)),
                prim(ft::<G, 2>(&dyv, [m, n], &dg).cast(float)),
                group_offsets::<G>(&sizes, offsets_dtype, &dg).into_primitive(),
            );
            assert_close(&format!("dw {what}"), &host(unprim::<G, 3>(got)), &host(unprim::<C, 3>(want)), tol);
            assert!(tensor_core_launches(TensorCoreOp::GroupedMatmulWeightGrad) > before, "dw {what}: the tensor-core kernel did not run");
        }
    }
}

/// The fused AdamW kernel against the reference step on NdArray (Burn's AdamW formulas):
/// clipping that triggers, that does not, of a zero gradient (norm 0) and none; the first
/// step (zero moments, `t = 1`) and later ones (bias corrections far from and near 1);
/// sizes no multiple of the 256-unit cubes, one element, none. Both sides get the same norm
/// (computed on the host), so that only the kernel is compared. Poisoned outputs.
#[test]
fn adamw_step_matches_reference() {
    use dsa_burn::adamw::AdamWStep;
    use dsa_burn::ops::adamw_step;
    let mut rng = Rng::new("adamw_step");
    for (shape, max_norm, time, grad_scale, first) in [
        ([8usize, 125usize], Some(0.5f32), 1usize, 1.0f32, true),
        ([3, 257], Some(1e3), 7, 1.0, false),
        ([1, 1], Some(1.0), 3, 4.0, false),
        ([280, 251], None, 2, 1.0, false),
        ([5, 60], Some(1.0), 1000, 1e-3, false),
        ([4, 33], Some(1.0), 5, 0.0, false),
        ([0, 7], Some(1.0), 1, 1.0, true),
    ] {
        let n = shape[0] * shape[1];
        let what = format!("{shape:?} max_norm {max_norm:?} t={time} grad ×{grad_scale}");
        println!("{what}");
        let p = rng.normal(n);
        let g: Vec<f32> = rng.normal(n).iter().map(|x| x * grad_scale).collect();
        let (m, v): (Vec<f32>, Vec<f32>) = match first {
            true => (vec![0.0; n], vec![0.0; n]),
            false => (rng.normal(n).iter().map(|x| 0.1 * x).collect(), rng.normal(n).iter().map(|x| 0.01 * x * x).collect()),
        };
        let norm = g.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt() as f32;
        if let Some(c) = max_norm.filter(|_| n > 1) {
            assert!((norm > c) == (c < 1e3 && grad_scale >= 1.0), "{what}: norm {norm}, clipping as intended");
        }
        let step = AdamWStep { lr: 1e-3, beta_1: 0.9, beta_2: 0.999, epsilon: 1e-8, weight_decay: 0.1, max_norm: max_norm.unwrap_or(f32::INFINITY), time };
        fn run<B: dsa_burn::DsaBackend>(shape: [usize; 2], [p, g, m, v]: [&[f32]; 4], norm: Option<f32>, step: AdamWStep, dev: &B::Device) -> [Vec<f32>; 3] {
            let norm = norm.map(|x| ft::<B, 1>(&[x], [1], dev));
            let (p, m, v) = adamw_step(ft::<B, 2>(p, shape, dev), ft::<B, 2>(g, shape, dev), ft::<B, 2>(m, shape, dev), ft::<B, 2>(v, shape, dev), norm, step);
            [host(p), host(m), host(v)]
        }
        let inputs = [&p[..], &g[..], &m[..], &v[..]];
        let want = run::<C>(shape, inputs, max_norm.map(|_| norm), step, &Default::default());
        let got = run::<G>(shape, inputs, max_norm.map(|_| norm), step, &gdev());
        for ((name, got), want) in ["param", "moment_1", "moment_2"].iter().zip(&got).zip(&want) {
            assert_close(&format!("{name} {what}"), got, want, 1e-6);
        }
        // The step did something: the parameters moved (an update can cancel the decay).
        let moved = got[0].iter().zip(&p).filter(|(a, b)| a != b).count();
        assert!(moved * 100 >= n * 99, "{what}: {moved} of {n} parameters moved");
    }
}

/// [`dsa_burn::FusedAdamW`] (the norm by Burn's reductions on the device, then the kernel)
/// on a GPU layer against the same optimizer on NdArray over a few clipped steps.
#[test]
fn fused_adamw_on_cubecl_matches_ndarray() {
    use burn::backend::Autodiff;
    use burn::module::Param;
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::{GradientsParams, Optimizer};
    use burn::tensor::backend::AutodiffBackend;
    let mut rng = Rng::new("fused_adamw");
    let (w0, b0) = (rng.normal(40 * 30), rng.normal(30));
    let grads: Vec<(Vec<f32>, Vec<f32>)> = [5.0f32, 0.1, 20.0].iter().map(|s| (rng.normal(40 * 30).iter().map(|x| x * s).collect(), rng.normal(30).iter().map(|x| x * s).collect())).collect();
    fn run<B: AutodiffBackend>(w0: &[f32], b0: &[f32], grads: &[(Vec<f32>, Vec<f32>)], dev: &B::Device) -> Vec<f32>
    where
        B::InnerBackend: dsa_burn::DsaBackend,
    {
        let mut l: Linear<B> = LinearConfig::new(40, 30).init(dev);
        l.weight = Param::from_tensor(ft::<B, 2>(w0, [40, 30], dev));
        l.bias = Some(Param::from_tensor(ft::<B, 1>(b0, [30], dev)));
        let mut optim = dsa_burn::FusedAdamWConfig::new().with_weight_decay(0.1).with_grad_clip(Some(1.0)).init::<B, Linear<B>>();
        for (gw, gb) in grads {
            let mut g = GradientsParams::new();
            g.register::<B::InnerBackend, 2>(l.weight.id, ft(gw, [40, 30], dev));
            g.register::<B::InnerBackend, 1>(l.bias.as_ref().unwrap().id, ft(gb, [30], dev));
            l = optim.step(0.01, l, g);
        }
        let mut out = host(l.weight.val());
        out.extend(host(l.bias.unwrap().val()));
        out
    }
    let want = run::<Autodiff<C>>(&w0, &b0, &grads, &Default::default());
    let got = run::<Autodiff<G>>(&w0, &b0, &grads, &gdev());
    assert_close("parameters", &got, &want, 1e-6);
}

/// The operands of a projection product `[m, k] · [k, n]` in `layout`, from row-major data
/// `a [m, k]` and `b [k, n]`: a transposed operand is the transposed view (`swap_dims`) of
/// its transpose's row-major data, as [`dsa_burn::ops::linear`]'s backward passes `Wᵀ` and `Xᵀ`.
fn layout_operands<B: Backend>(layout: dsa_burn::matmul::Layout, a: &[f32], b: &[f32], [m, k, n]: [usize; 3], dev: &B::Device) -> (Tensor<B, 2>, Tensor<B, 2>) {
    use dsa_burn::matmul::Layout;
    let transpose = |v: &[f32], rows: usize, cols: usize| -> Vec<f32> { (0..cols * rows).map(|i| v[(i % rows) * cols + i / rows]).collect() };
    let lhs = match layout {
        Layout::TN | Layout::TT => ft::<B, 2>(&transpose(a, m, k), [k, m], dev).swap_dims(0, 1),
        _ => ft::<B, 2>(a, [m, k], dev),
    };
    let rhs = match layout {
        Layout::NT | Layout::TT => ft::<B, 2>(&transpose(b, k, n), [n, k], dev).swap_dims(0, 1),
        _ => ft::<B, 2>(b, [k, n], dev),
    };
    (lhs, rhs)
}

/// The projections' product on CubeCL (`DsaBackend::linear_matmul`) against NdArray in every
/// layout, on sizes no multiple of any tile and a single row (decode): with the dispatcher
/// table's choice (Burn's matmul on wgpu), with cubek strategies forced (the unit and naive
/// kernels run on lavapipe), and with a strategy the device may not have (tensor-core cmma:
/// unavailable on lavapipe, where Burn's matmul must take over). The launch counters say
/// which path ran.
#[test]
fn linear_matmul_matches_reference() {
    use dsa_burn::cubecl::{linear_launches, update_kernel_settings};
    use dsa_burn::matmul::{strategy_by_name, Layout};
    use dsa_burn::DsaBackend;
    let _choice = choose_kernels();
    let mut rng = Rng::new("linear_matmul");
    let forced = ["simple_unit_max_tile_size", "double_unit_min_tile_size", "naive", "simple_cyclic_cmma"];
    for name in std::iter::once(None).chain(forced.map(Some)) {
        update_kernel_settings(|s| s.linear = name.map(|n| strategy_by_name(n).expect("a known strategy")));
        for [m, k, n] in [[37, 19, 23], [1, 64, 40], [70, 33, 8]] {
            let (a, b) = (rng.normal(m * k), rng.normal(k * n));
            for layout in [Layout::NN, Layout::NT, Layout::TN, Layout::TT] {
                let what = format!("{name:?} {layout} [{m}, {k}] · [{k}, {n}]");
                let (lc, rc) = layout_operands::<C>(layout, &a, &b, [m, k, n], &Default::default());
                let (lg, rg) = layout_operands::<G>(layout, &a, &b, [m, k, n], &gdev());
                let want = unprim::<C, 2>(C::linear_matmul(prim(lc), prim(rc)));
                let before = linear_launches();
                let got = unprim::<G, 2>(G::linear_matmul(prim(lg), prim(rg)));
                assert_eq!(got.dims(), [m, n], "{what}");
                // CUDA's matmuls of f32 run on TF32.
                assert_close(&what, &host(got), &host(want), if cfg!(feature = "cuda") { 4e-3 } else { 1e-5 });
                let (cubek, burn) = linear_launches();
                assert_eq!(cubek + burn, before.0 + before.1 + 1, "{what}: one call, one count");
                if matches!(name, Some("simple_unit_max_tile_size" | "naive")) {
                    assert_eq!(cubek, before.0 + 1, "{what}: the forced strategy did not run");
                }
            }
        }
    }
    update_kernel_settings(|s| s.linear = None);
}

/// `ops::linear` (3-d input with a bias, 2-d, 4-d, a strided input, a weight stored
/// transposed) and its gradients on Autodiff<GPU> against Autodiff<NdArray>, with Burn's
/// matmul (the table's choice on wgpu) and with a cubek strategy forced, so that the
/// backward's `dY · Wᵀ` and `Xᵀ · dY` launch cubek on transposed views.
#[test]
fn linear_autodiff_matches_reference() {
    use burn::backend::Autodiff;
    use burn::tensor::backend::AutodiffBackend;
    use dsa_burn::cubecl::update_kernel_settings;
    use dsa_burn::matmul::strategy_by_name;
    use dsa_burn::ops::linear;
    let _choice = choose_kernels();
    let mut rng = Rng::new("linear_autodiff");
    /// `[y, dx, dw, db]` of `Σ linear(x, w, b) · G` with `x [2, 5, 3, 9]`, `w [9, 6]`.
    fn run<B: AutodiffBackend + dsa_burn::DsaBackend>(case: usize, (xv, wv, bv, gv): (&[f32], &[f32], &[f32], &[f32]), dev: &B::Device) -> [Vec<f32>; 4] {
        let x = ft::<B, 4>(xv, [2, 5, 3, 9], dev).require_grad();
        let w = ft::<B, 2>(wv, [9, 6], dev).require_grad();
        let bias = ft::<B, 1>(bv, [6], dev).require_grad();
        let g = ft::<B, 4>(gv, [2, 5, 3, 6], dev);
        let y = match case {
            0 => linear(x.clone().reshape([10, 3, 9]), w.clone(), Some(bias.clone())).reshape([2, 5, 3, 6]),
            1 => linear(x.clone().reshape([30, 9]), w.clone(), None).reshape([2, 5, 3, 6]),
            2 => linear(x.clone(), w.clone(), Some(bias.clone())),
            // x through strided views (its rows 12 apart, its tokens transposed), the weight a
            // transposed view (as `nn::Linear` with `LinearLayout::Col` stores it).
            _ => {
                let wide = Tensor::cat(vec![x.clone(), Tensor::zeros([2, 5, 3, 3], dev)], 3).swap_dims(1, 2);
                let strided = wide.narrow(3, 0, 9);
                let w_col = w.clone().transpose().mul_scalar(1.0).transpose();
                linear(strided, w_col, Some(bias.clone())).swap_dims(1, 2)
            }
        };
        let grads = (y.clone() * g).sum().backward();
        let db = bias.grad(&grads).map(host).unwrap_or_default();
        [host(y), host(x.grad(&grads).unwrap()), host(w.grad(&grads).unwrap()), db]
    }
    let (xv, wv, bv, gv) = (rng.normal(2 * 5 * 3 * 9), rng.normal(9 * 6), rng.normal(6), rng.normal(2 * 5 * 3 * 6));
    for name in [None, Some("simple_unit_max_tile_size")] {
        update_kernel_settings(|s| s.linear = name.map(|n| strategy_by_name(n).unwrap()));
        for case in 0..4 {
            let want = run::<Autodiff<C>>(case, (&xv, &wv, &bv, &gv), &Default::default());
            let got = run::<Autodiff<G>>(case, (&xv, &wv, &bv, &gv), &gdev());
            for (what, got, want) in [("y", &got[0], &want[0]), ("dx", &got[1], &want[1]), ("dw", &got[2], &want[2]), ("db", &got[3], &want[3])] {
                assert_close(&format!("{what} case {case} {name:?}"), got, want, if cfg!(feature = "cuda") { 4e-3 } else { 1e-5 });
            }
        }
    }
    update_kernel_settings(|s| s.linear = None);
}

/// `dsa_burn::matmul::bench` on the device under test, one small product per layout: Burn's
/// matmul and a unit strategy run and agree, a tensor-core strategy runs or reports why not
/// (no panic escapes), every line has its product's dims.
#[test]
fn matmul_bench_reports_every_candidate() {
    use dsa_burn::matmul::{bench, strategy_by_name, BenchSettings, Candidate, Layout, MatmulShape};
    let _choice = choose_kernels();
    let shape = MatmulShape { name: "tiny".into(), m: 40, k: 24, n: 16 };
    let candidates = [
        Candidate::Burn,
        Candidate::Cubek(strategy_by_name("simple_unit_max_tile_size").unwrap()),
        Candidate::Cubek(strategy_by_name("double_cyclic_mma").unwrap()),
    ];
    let settings = BenchSettings { warm: 1, iters: 2, rounds: 3 };
    // The error is against Burn's matmul, which runs f32 on TF32 on CUDA.
    let exact_tol = if cfg!(feature = "cuda") { 4e-3 } else { 1e-5 };
    let mut emitted = 0;
    let timings = bench::<G>(&[shape], &[Layout::NN, Layout::NT, Layout::TN], &candidates, settings, &gdev(), |_| emitted += 1);
    assert_eq!((timings.len(), emitted), (9, 9));
    for t in &timings {
        println!("{}", serde_json_like(t));
        let want = match t.layout {
            Layout::NT => [40, 16, 24],
            Layout::TN => [24, 40, 16],
            _ => [40, 24, 16],
        };
        assert_eq!([t.m, t.k, t.n], want, "{t:?}");
        assert_eq!((t.op, t.dtype.as_str()), ("matmul", "f32"));
        match t.strategy.as_str() {
            "burn" => assert!(t.status == "ok" && t.ms.unwrap() > 0.0 && t.rel_err.is_none(), "{t:?}"),
            "simple_unit_max_tile_size" => assert!(t.status == "ok" && t.tflops.unwrap() > 0.0 && t.rel_err.unwrap() < exact_tol, "{t:?}"),
            _ => assert!(t.status == "ok" && t.rel_err.unwrap() < 1e-2 || t.status != "ok" && t.ms.is_none(), "{t:?}"),
        }
    }
}

fn serde_json_like(t: &dsa_burn::matmul::MatmulTiming) -> String {
    format!("{} {} {} {}: {} {:?} ms, err {:?}", t.shape, t.layout, t.dtype, t.strategy, t.status, t.ms, t.rel_err)
}
