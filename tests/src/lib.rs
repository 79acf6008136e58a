//! Helpers for the cross-crate integration tests: the conformance cases and tensor errors.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use dsa_burn::DsaBackend;
use dsa_model::conformance::{run_case_with, CaseOptions};
use dsa_model::Checkpoint;

/// The conformance directory: `$DSA_CONFORMANCE_DIR` (relative paths are taken from the
/// workspace root), else `../shared/conformance` beside the workspace.
pub fn conformance_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    match std::env::var_os("DSA_CONFORMANCE_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("../shared/conformance"),
    }
}

/// Every case directory under [`conformance_dir`] (see
/// [`dsa_model::conformance::case_dirs`]), sorted. Panics if there is none: a misplaced
/// directory must not pass silently.
pub fn conformance_cases() -> Vec<PathBuf> {
    let dir = conformance_dir();
    let cases = dsa_model::conformance::case_dirs(&dir)
        .unwrap_or_else(|e| panic!("conformance directory {} unreadable ({e}); set DSA_CONFORMANCE_DIR", dir.display()));
    assert!(!cases.is_empty(), "no conformance case under {}", dir.display());
    cases
}

/// The cases this repository makes itself (`tests/cases`, see its README), sorted.
pub fn repo_cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("cases");
    dsa_model::conformance::case_dirs(&dir).unwrap_or_else(|e| panic!("{} unreadable ({e})", dir.display()))
}

/// Runs every case of `cases` with `options` on `B`, prints each report and asserts that it
/// passed and compared the logits (and the decode logits where the case decodes).
pub fn check_conformance<B: DsaBackend>(cases: &[PathBuf], device: &B::Device, options: CaseOptions) {
    for dir in cases {
        let report = run_case_with::<B>(dir, device, options).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        println!("{report}");
        let compared = |name: &str| report.checks.iter().any(|c| c.tensor() == name);
        assert!(compared("logits"), "{}: logits not compared", report.case);
        assert!(report.decode_steps == 0 || compared("decode_logits"), "{}: decode_logits not compared", report.case);
        assert!(report.passed(), "{}: conformance failed:\n{report}", report.case);
    }
}

/// A golden tensor with the shape stored in the file.
pub fn golden<B: Backend, const D: usize>(golden: &Checkpoint, name: &str, device: &B::Device) -> Tensor<B, D> {
    let shape: [usize; D] = golden
        .shape(name)
        .unwrap_or_else(|e| panic!("{e}"))
        .try_into()
        .unwrap_or_else(|_| panic!("golden tensor {name} is not {D}-D"));
    golden.read_tensor(name, shape, device).unwrap_or_else(|e| panic!("{e}"))
}

/// `‖a − b‖ / ‖b‖` over the entries where `b` is finite (see
/// [`dsa_model::conformance::rel_error`]).
pub fn rel_error<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f64 {
    let host = |t: Tensor<B, D>| t.into_data().convert::<f32>().into_vec::<f32>().unwrap();
    dsa_model::conformance::rel_error(&host(a), &host(b))
}

/// The workspace README's examples, compiled and run as doctests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
