//! Layer 0 of every conformance case: the lightning indexer's scores and selection, and the
//! sparse MLA output, recomputed from the case's weights and its recorded layer-0 inputs.
//! Run with `-- --nocapture` to see each case's measured errors.

use std::path::Path;

use burn::tensor::Tensor;
use dsa_burn::ops::{indexer_scores, topk_select};
use dsa_burn::DsaBackend;
use dsa_model::conformance::{compare_selection, Precision, SelectionDiff};
use dsa_model::{hf, Checkpoint, DeepSeekV32Config};
use dsa_tests::{conformance_cases, golden, rel_error};

/// A conformance case: its name, config, weights and golden tensors.
struct Case {
    name: String,
    cfg: DeepSeekV32Config,
    ckpt: Checkpoint,
    gold: Checkpoint,
}

fn open_case(dir: &Path) -> Case {
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    let cfg = DeepSeekV32Config::from_file(dir.join("config.json")).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut ckpt = Checkpoint::open(dir.join("model.safetensors")).unwrap_or_else(|e| panic!("{name}: {e}"));
    if let Some(block) = cfg.weight_block_size() {
        ckpt = ckpt.with_weight_block_size(block).unwrap();
    }
    let gold = Checkpoint::open(dir.join("golden.safetensors")).unwrap_or_else(|e| panic!("{name}: {e}"));
    Case { name, cfg, ckpt, gold }
}

/// The largest near-tie gap a selection swap may have (f32's).
fn near_tie() -> f32 {
    Precision::F32.tolerances().near_tie.expect("f32 judges each selection")
}

/// Layer 0's raw indexer scores (no causal mask, as recorded) against the golden ones, and
/// their top-k against the recorded selection.
struct IndexerCheck {
    score_err: f64,
    diff: SelectionDiff,
    /// Tokens a causal top-k selects in all.
    expected_selected: usize,
}

impl IndexerCheck {
    fn new<B: DsaBackend>(case: &Case, scores: Tensor<B, 3>, device: &B::Device) -> Self {
        let want_scores: Tensor<B, 3> = golden(&case.gold, "layer0.index_scores", device);
        let score_err = rel_error(scores.clone(), want_scores.clone());
        let [b, t, s] = scores.dims();
        let (idx, valid) = topk_select(scores, case.cfg.index_topk, Some(0));
        let kk = idx.dims()[2];
        let idx = idx.into_data().convert::<i64>().into_vec::<i64>().unwrap();
        let valid: Vec<bool> = valid.int().into_data().convert::<i64>().into_vec::<i64>().unwrap().iter().map(|v| *v != 0).collect();
        let want_sel = case.gold.read_data("layer0.selected").unwrap().convert::<u8>().into_vec::<u8>().unwrap();
        let ref_scores = want_scores.into_data().convert::<f32>().into_vec::<f32>().unwrap();
        let diff = compare_selection(&idx, &valid, kk, &want_sel, &ref_scores, s, |row| row % t + 1);
        let expected_selected = (0..b * t).map(|row| (row % t + 1).min(kk)).sum::<usize>();
        IndexerCheck { score_err, diff, expected_selected }
    }

    fn report(&self) -> String {
        format!(
            "layer0.index_scores rel err {:.2e} (≤ 1e-3), selection mismatches {} of {} (worst near-tie gap {:.1e} of row range, ≤ {:.0e})",
            self.score_err,
            self.diff.mismatched,
            self.diff.selected,
            self.diff.worst_gap,
            near_tie()
        )
    }

    fn assert_ok(&self, name: &str) {
        assert!(self.score_err <= 1e-3, "{name}: index scores error {:e}", self.score_err);
        assert_eq!(self.diff.selected, self.expected_selected, "{name}: wrong number of selected tokens");
        assert!(self.diff.worst_gap <= near_tie(), "{name}: selection differs beyond near-ties ({:e})", self.diff.worst_gap);
    }
}

fn check<B: DsaBackend>(device: &B::Device) {
    for dir in conformance_cases() {
        let case = open_case(&dir);
        let name = &case.name;
        let attn = hf::attention::<B>(&case.ckpt, &case.cfg, 0, device).unwrap_or_else(|e| panic!("{name}: {e}"));
        let x: Tensor<B, 3> = golden(&case.gold, "layer0.attn_in", device);
        let qr: Tensor<B, 3> = golden(&case.gold, "layer0.qr", device);

        let ix = attn.indexer.as_ref().expect("layer 0 has an indexer (it cannot be shared)");
        let (q, w) = ix.queries(x.clone(), qr, attn.rope(), 0);
        let k = ix.keys(x.clone(), attn.rope(), 0);
        let indexer = IndexerCheck::new(&case, indexer_scores(q, w, k, ix.quant(), None), device);

        // Sparse MLA output of the whole layer.
        let out = attn.forward(x);
        let want_out: Tensor<B, 3> = golden(&case.gold, "layer0.attn_out", device);
        let out_err = rel_error(out, want_out);

        println!("{name}: {}, layer0.attn_out rel err {out_err:.2e} (≤ 1e-4)", indexer.report());
        indexer.assert_ok(name);
        assert!(out_err <= 1e-4, "{name}: attention output error {out_err:e}");
    }
}

#[cfg(feature = "ndarray")]
#[test]
fn layer0_matches_reference_ndarray() {
    check::<burn::backend::NdArray>(&Default::default());
}

#[cfg(feature = "wgpu")]
#[test]
fn layer0_matches_reference_wgpu() {
    check::<burn::backend::Wgpu>(&Default::default());
}


/// The indexer kernels alone against DeepSeek's reference: the indexer's inputs (`q`, `w`,
/// `k`) projected on NdArray in f32, then the scores and the top-k on `B`. On CUDA this is
/// the conformance check of the tensor-core indexer: the whole layer on CUDA in f32 is not
/// held to the f32 tolerances, since Burn's CUDA matmuls of f32 tensors run in TF32
/// (cubek-matmul's `adjust_dtypes`), which moves the projections by ~1e-3 before the FP8
/// rounding.
#[cfg(all(feature = "ndarray", any(feature = "wgpu", feature = "cuda")))]
fn check_indexer_kernels<B: DsaBackend>(device: &B::Device) {
    type P = burn::backend::NdArray;
    let to = |t: Tensor<P, 3>| Tensor::<B, 3>::from_data(t.into_data(), device);
    for dir in conformance_cases() {
        let case = open_case(&dir);
        let name = &case.name;
        let pdev = Default::default();
        let attn = hf::attention::<P>(&case.ckpt, &case.cfg, 0, &pdev).unwrap_or_else(|e| panic!("{name}: {e}"));
        let x: Tensor<P, 3> = golden(&case.gold, "layer0.attn_in", &pdev);
        let qr: Tensor<P, 3> = golden(&case.gold, "layer0.qr", &pdev);
        let ix = attn.indexer.as_ref().expect("layer 0 has an indexer (it cannot be shared)");
        let (q, w) = ix.queries(x.clone(), qr, attn.rope(), 0);
        let k = ix.keys(x, attn.rope(), 0);
        let q = Tensor::<B, 4>::from_data(q.into_data(), device);
        let scores = indexer_scores(q, to(w), to(k), ix.quant(), None);
        let indexer = IndexerCheck::new(&case, scores, device);
        println!("{name}: layer0 indexer kernels: {}", indexer.report());
        indexer.assert_ok(name);
    }
}

#[cfg(all(feature = "wgpu", feature = "ndarray"))]
#[test]
fn layer0_indexer_kernels_match_reference_wgpu() {
    check_indexer_kernels::<burn::backend::Wgpu>(&Default::default());
}

/// On the device machine: the tensor-core indexer (the `Auto` choice on CUDA) and the
/// tiled one.
#[cfg(all(feature = "cuda", feature = "ndarray"))]
#[test]
fn layer0_indexer_kernels_match_reference_cuda() {
    use dsa_burn::cubecl::{update_kernel_settings, tensor_core_launches, IndexerKernel, TensorCoreOp};
    for kernel in [IndexerKernel::Mma, IndexerKernel::SimtTiled] {
        println!("{kernel:?}:");
        update_kernel_settings(|s| s.indexer = kernel);
        let before = tensor_core_launches(TensorCoreOp::IndexerScores);
        check_indexer_kernels::<burn::backend::Cuda>(&Default::default());
        let ran = tensor_core_launches(TensorCoreOp::IndexerScores) > before;
        assert_eq!(ran, kernel == IndexerKernel::Mma, "{kernel:?}: tensor-core kernel ran: {ran}");
    }
    update_kernel_settings(|s| s.indexer = IndexerKernel::Auto);
}
