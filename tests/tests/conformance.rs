//! The whole model on every conformance case: prefill logits, every layer's hidden state,
//! indexer scores, selection and routing, then the cached decode steps' logits and layer 0's
//! last selection, against DeepSeek's reference. Run with `-- --nocapture` to see each case's
//! measured errors.
//!
//! On the CPU (and wgpu) in f32, free-running and with the choices pinned to the case's. On
//! CUDA (`--features cuda`, on the device machine) in f32 with TF32 matmuls and in bf16:
//! pinned at those precisions' tolerances, and free-running with the flips judged.

use dsa_burn::DsaBackend;
use dsa_model::conformance::{run_case_with, CaseOptions, Precision};
use dsa_tests::conformance_cases;

fn check<B: DsaBackend>(device: &B::Device, options: CaseOptions) {
    for dir in conformance_cases() {
        let report = run_case_with::<B>(&dir, device, options).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        println!("{report}");
        // The golden tensors every case has must all have been compared.
        let compared = |name: &str| report.checks.iter().any(|c| c.tensor() == name);
        assert!(compared("logits"), "{}: logits not compared", report.case);
        assert!(report.decode_steps == 0 || compared("decode_logits"), "{}: decode_logits not compared", report.case);
        assert!(report.passed(), "{}: conformance failed:\n{report}", report.case);
    }
}

fn f32(pin: bool) -> CaseOptions {
    CaseOptions { precision: Precision::F32, pin }
}

#[cfg(feature = "ndarray")]
#[test]
fn model_matches_reference_ndarray() {
    check::<burn::backend::NdArray>(&Default::default(), f32(false));
}

/// Pinned to the case's choices, the CPU run is held to the same f32 tolerances (the pins
/// equal what it would choose), and its own top-k is compared with the pinned selection.
#[cfg(feature = "ndarray")]
#[test]
fn model_matches_reference_pinned_ndarray() {
    check::<burn::backend::NdArray>(&Default::default(), f32(true));
}

#[cfg(feature = "wgpu")]
#[test]
fn model_matches_reference_wgpu() {
    check::<burn::backend::Wgpu>(&Default::default(), f32(false));
}

/// f32 tensors on CUDA (matmuls on TF32), pinned, then free-running.
#[cfg(feature = "cuda")]
#[test]
fn model_matches_reference_cuda_f32() {
    for pin in [true, false] {
        check::<burn::backend::Cuda>(&Default::default(), CaseOptions { precision: Precision::Tf32, pin });
    }
}

/// bf16 tensors on CUDA (the tensor-core kernels), pinned, then free-running.
#[cfg(feature = "cuda")]
#[test]
fn model_matches_reference_cuda_bf16() {
    for pin in [true, false] {
        check::<burn::backend::Cuda<burn::tensor::bf16>>(&Default::default(), CaseOptions { precision: Precision::Bf16, pin });
    }
}
