//! `dsa-cli` end to end: `conformance` on every conformance case, `info`, and bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `$DSA_CONFORMANCE_DIR` (relative to the workspace root), else `../shared/conformance`
/// beside the workspace.
fn conformance_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    match std::env::var_os("DSA_CONFORMANCE_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("../shared/conformance"),
    }
}

fn cases() -> Vec<PathBuf> {
    let dir = conformance_dir();
    let cases = dsa_model::conformance::case_dirs(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    assert!(!cases.is_empty(), "no conformance case under {}", dir.display());
    cases
}

fn dsa_cli(args: &[&std::ffi::OsStr]) -> (Output, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dsa-cli")).args(args).output().expect("dsa-cli runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out, text)
}

#[test]
fn conformance_passes_on_every_case() {
    let cases = cases();
    let mut args = vec!["conformance".as_ref()];
    args.extend(cases.iter().map(|c| c.as_os_str()));
    let (out, text) = dsa_cli(&args);
    println!("{text}");
    assert!(out.status.success(), "dsa-cli conformance failed:\n{text}");
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy();
        assert!(text.contains(&format!("{name}: ")) && text.contains("PASSED"), "{name} not reported:\n{text}");
    }
    assert!(text.contains("logits") && text.contains("‖Δ‖/‖ref‖") && text.contains("selected tokens differ"), "{text}");
    assert!(text.contains(&format!("{} passed, 0 failed", cases.len())), "{text}");
}

#[test]
fn info_prints_sizes_and_cache_memory() {
    let case = &cases()[0];
    let (out, text) = dsa_cli(&["info".as_ref(), case.as_os_str()]);
    assert!(out.status.success(), "{text}");
    for needle in ["parameters:", "decode cache per token", "DeepSeek-V3.2 at full size", "671.", "78324 B"] {
        assert!(text.contains(needle), "`{needle}` missing from:\n{text}");
    }
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let (out, text) = dsa_cli(&["conformance".as_ref(), "/nonexistent/case".as_ref()]);
    assert!(!out.status.success());
    assert!(text.contains("/nonexistent/case") && text.contains("0 passed, 1 failed") && !text.contains("panicked"), "{text}");
    let (out, text) = dsa_cli(&["info".as_ref(), "/nonexistent/model".as_ref()]);
    assert!(!out.status.success());
    assert!(text.contains("error:") && text.contains("/nonexistent/model/config.json") && !text.contains("panicked"), "{text}");
}
