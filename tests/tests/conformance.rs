//! The whole model on every conformance case: prefill logits, every layer's hidden state,
//! indexer scores and selection, then the cached decode steps' logits and layer 0's last
//! selection, against DeepSeek's reference. Run with `-- --nocapture` to see each case's
//! measured errors.

use dsa_burn::DsaBackend;
use dsa_model::conformance::run_case;
use dsa_tests::conformance_cases;

fn check<B: DsaBackend>(device: &B::Device) {
    for dir in conformance_cases() {
        let report = run_case::<B>(&dir, device).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        println!("{report}");
        // The golden tensors every case has must all have been compared.
        let compared = |name: &str| report.checks.iter().any(|c| c.tensor() == name);
        assert!(compared("logits"), "{}: logits not compared", report.case);
        assert!(report.decode_steps == 0 || compared("decode_logits"), "{}: decode_logits not compared", report.case);
        assert!(report.passed(), "{}: conformance failed:\n{report}", report.case);
    }
}

#[cfg(feature = "ndarray")]
#[test]
fn model_matches_reference_ndarray() {
    check::<burn::backend::NdArray>(&Default::default());
}

#[cfg(feature = "wgpu")]
#[test]
fn model_matches_reference_wgpu() {
    check::<burn::backend::Wgpu>(&Default::default());
}

