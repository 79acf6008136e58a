//! The whole model in bf16 on CUDA (the tensor-core kernels) on every conformance case,
//! pinned, then free-running (see `conformance.rs`; a test binary of its own, since Burn keeps
//! one float dtype per device and process). On the device machine:
//! `cargo test -p dsa-tests --features cuda --test conformance_bf16 -- --nocapture`.

#[cfg(feature = "cuda")]
#[test]
fn model_matches_reference_cuda_bf16() {
    use dsa_model::conformance::{CaseOptions, Precision};
    for pin in [true, false] {
        let options = CaseOptions { precision: Precision::Bf16, pin };
        let cases = dsa_tests::conformance_cases();
        dsa_tests::check_conformance::<burn::backend::Cuda<burn::tensor::bf16>>(&cases, &Default::default(), options);
    }
}
