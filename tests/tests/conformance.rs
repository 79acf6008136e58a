//! The whole model on every conformance case: prefill logits, every layer's hidden state,
//! indexer scores, selection and routing, then the cached decode steps' logits and layer 0's
//! last selection, against DeepSeek's reference. Run with `-- --nocapture` to see each case's
//! measured errors.
//!
//! On the CPU (and wgpu) in f32, free-running and with the choices pinned to the case's, on
//! the shared cases and on this repository's (`tests/cases`). On CUDA (`--features cuda`, on
//! the device machine) in f32 with TF32 matmuls here, and in bf16 in `conformance_bf16.rs`:
//! Burn keeps one float dtype per device and process, so the two run in separate processes.

use dsa_model::conformance::{CaseOptions, Precision};
use dsa_tests::{check_conformance, conformance_cases, repo_cases};

fn f32(pin: bool) -> CaseOptions {
    CaseOptions { precision: Precision::F32, pin }
}

#[cfg(feature = "ndarray")]
#[test]
fn model_matches_reference_ndarray() {
    let cases = [conformance_cases(), repo_cases()].concat();
    check_conformance::<burn::backend::NdArray>(&cases, &Default::default(), f32(false));
}

/// Pinned to the case's choices, the CPU run is held to the same f32 tolerances (the pins
/// equal what it would choose), and its own top-k is compared with the pinned selection.
#[cfg(feature = "ndarray")]
#[test]
fn model_matches_reference_pinned_ndarray() {
    let cases = [conformance_cases(), repo_cases()].concat();
    check_conformance::<burn::backend::NdArray>(&cases, &Default::default(), f32(true));
}

#[cfg(feature = "wgpu")]
#[test]
fn model_matches_reference_wgpu() {
    check_conformance::<burn::backend::Wgpu>(&conformance_cases(), &Default::default(), f32(false));
}

/// f32 tensors on CUDA (matmuls on TF32), pinned, then free-running.
#[cfg(feature = "cuda")]
#[test]
fn model_matches_reference_cuda_f32() {
    for pin in [true, false] {
        let options = CaseOptions { precision: Precision::Tf32, pin };
        check_conformance::<burn::backend::Cuda>(&conformance_cases(), &Default::default(), options);
    }
}
