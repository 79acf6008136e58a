//! `dsa-cli` end to end: `conformance` on every conformance case, `info`, and bad input.

use std::process::{Command, Output};

use dsa_tests::conformance_cases as cases;

fn dsa_cli(args: &[&std::ffi::OsStr]) -> (Output, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dsa-cli")).args(args).output().expect("dsa-cli runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out, text)
}

/// `dsa-cli --backend <backend> conformance <flags>` on `cases` passes and reports each
/// tensor; its output.
fn conformance_passes(backend: &str, flags: &[&str], cases: &[std::path::PathBuf]) -> String {
    let mut args = vec!["--backend".as_ref(), backend.as_ref(), "conformance".as_ref()];
    args.extend(flags.iter().map(std::ffi::OsStr::new));
    args.extend(cases.iter().map(|c| c.as_os_str()));
    let (out, text) = dsa_cli(&args);
    println!("{text}");
    assert!(out.status.success(), "dsa-cli conformance failed:\n{text}");
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy();
        assert!(text.contains(&format!("{name}: ")) && text.contains("PASSED"), "{name} not reported:\n{text}");
    }
    assert!(text.contains("logits") && text.contains("‖Δ‖/‖ref‖") && text.contains("selected tokens differ"), "{text}");
    assert!(text.contains(&format!("{} passed, 0 failed", cases.len())), "{text}");
    text
}

#[cfg(feature = "ndarray")]
#[test]
fn conformance_passes_on_every_case_ndarray() {
    conformance_passes("ndarray", &[], &cases());
}

/// `--pin` takes the selections and experts from the case and says so; on the CPU the
/// f32 tolerances still hold (dsa-tests runs every case pinned).
#[cfg(feature = "ndarray")]
#[test]
fn pinned_conformance_passes_ndarray() {
    let text = conformance_passes("ndarray", &["--pin"], &cases()[..1]);
    assert!(text.contains("F32, choices pinned: PASSED"), "{text}");
}

/// The wgpu dispatch of the command, on one case (dsa-tests' conformance test covers every
/// case on wgpu; software Vulkan is slow).
#[cfg(feature = "wgpu")]
#[test]
fn conformance_passes_on_wgpu() {
    conformance_passes("wgpu", &[], &cases()[..1]);
}

/// `bench-matmul` times cubek's kernels, which only the CubeCL backends have: on ndarray
/// it says what it needs, without a panic.
#[cfg(feature = "ndarray")]
#[test]
fn bench_matmul_needs_a_cubecl_backend() {
    let (out, text) = dsa_cli(&["bench-matmul".as_ref(), "--list".as_ref()]);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("needs --backend cuda or --backend wgpu") && !text.contains("panicked"), "{text}");
}

#[cfg(feature = "ndarray")]
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

/// Bad training data and settings end `train`, `warmup` and `generate` with a message
/// naming the problem, before anything is written.
#[cfg(feature = "ndarray")]
#[test]
fn bad_training_input_is_an_error_not_a_panic() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let file = |name: &str, contents: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path.display().to_string()
    };
    let text = "ABSURDITY, n.  A statement or belief manifestly inconsistent with one's own opinion.\n".repeat(40);
    let (empty, bad, short, good) = (file("empty.txt", b" \n\n"), file("bad.txt", b"fine\nnot \xff fine\n"), file("short.txt", b"Too short."), file("text.txt", text.as_bytes()));
    let run = dir.join("run").display().to_string();
    let cases: [(&[&str], String); 8] = [
        (&["--dtype", "bf16", "train", "--data", &good], "--dtype bf16 needs --backend cuda (got Ndarray)".into()),
        (&["train", "--data", &empty], format!("{empty} has no text")),
        (&["warmup", "--data", &bad], format!("{bad}:2: not valid UTF-8")),
        (&["train", "--dense", "--data", &short, "--vocab", "260"], "too few for one sequence of 256 (+1) tokens".into()),
        (&["train", "--data", &good, "--vocab", "300", "--seq-len", "4096"], "--seq-len 4096 exceeds the model's maximum of 2048 positions".into()),
        (&["warmup", "--data", &good, "--vocab", "300", "--seq-len", "64", "--steps", "0"], "--steps must be at least 1".into()),
        (&["train", "--resume"], format!("cannot read {run}/train.json")),
        (&["generate", "--model", &run, "hello"], format!("cannot load tokenizer {run}/tokenizer.json")),
    ];
    for (args, message) in cases {
        let out_flag = ["--out", run.as_str()];
        let args: Vec<&std::ffi::OsStr> = args.iter().chain(if args[0] == "generate" { &[][..] } else { &out_flag }).map(|a| a.as_ref()).collect();
        let (out, text) = dsa_cli(&args);
        assert!(!out.status.success(), "{args:?} succeeded:\n{text}");
        assert!(text.contains("error: ") && text.contains(&message) && !text.contains("panicked"), "{args:?}: expected `{message}`:\n{text}");
        assert!(!dir.join("run").exists(), "{args:?} wrote {run}");
    }
}

/// Zero and other out-of-range values of `--seq-len`, `--vocab` and `--scale` are refused
/// when the arguments are parsed, naming the flag and the allowed range, before anything
/// is read or written.
#[test]
fn out_of_range_flags_name_the_flag_and_the_range() {
    let temp = tempfile::tempdir().unwrap();
    let out = temp.path().join("out");
    let out = out.to_str().unwrap();
    let seq_len = "invalid value '0' for '--seq-len <SEQ_LEN>': 0 is not in 1..";
    let vocab = "invalid value '0' for '--vocab <VOCAB>': 0 is not in 257..";
    let scale = "for '--scale <SCALE>': must be a finite number above 0";
    let cases: [(&[&str], &str); 8] = [
        (&["train", "--out", out, "--seq-len", "0"], seq_len),
        (&["warmup", "--out", out, "--seq-len", "0"], seq_len),
        (&["tokenizer", "train", "--out", out, "--vocab", "0"], vocab),
        (&["tokenizer", "train", "--out", out, "--vocab", "256"], "'256' for '--vocab <VOCAB>': 256 is not in 257.."),
        (&["train", "--out", out, "--vocab", "0"], vocab),
        (&["demo", "--out", out, "--scale", "0"], scale),
        (&["demo", "--out", out, "--scale=-1"], scale),
        (&["demo", "--out", out, "--scale", "nan"], scale),
    ];
    for (args, message) in cases {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        let (status, text) = dsa_cli(&args);
        assert!(!status.status.success(), "{args:?} succeeded:\n{text}");
        assert!(text.contains("error: ") && text.contains(message) && !text.contains("panicked"), "{args:?}: expected `{message}`:\n{text}");
        assert!(!std::path::Path::new(out).exists(), "{args:?} wrote {out}");
    }
}

/// A HuggingFace checkpoint with a NaN weight is refused, naming the tensor and the file,
/// unless `--allow-nonfinite`.
#[cfg(feature = "ndarray")]
#[test]
fn nonfinite_weights_are_refused_unless_allowed() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let case = &cases()[0];
    std::fs::copy(case.join("config.json"), dir.join("config.json")).unwrap();
    let mut weights = std::fs::read(case.join("model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&weights[8..8 + header_len]).unwrap();
    let tensor = "model.layers.0.self_attn.q_a_layernorm.weight";
    assert_eq!(header[tensor]["dtype"], "BF16");
    let start = 8 + header_len + header[tensor]["data_offsets"][0].as_u64().unwrap() as usize;
    weights[start..start + 2].copy_from_slice(&[0xC0, 0x7F]); // BF16 NaN
    std::fs::write(dir.join("model.safetensors"), weights).unwrap();
    let text_file = dir.join("text.txt");
    std::fs::write(&text_file, "ABSURDITY, n.  A statement or belief manifestly inconsistent with one's own opinion.\n".repeat(40)).unwrap();
    let tokenizer = dir.join("tokenizer.json");
    let (out, text) = dsa_cli(&["tokenizer".as_ref(), "train".as_ref(), "--data".as_ref(), text_file.as_os_str(), "--vocab".as_ref(), "300".as_ref(), "--out".as_ref(), tokenizer.as_os_str()]);
    assert!(out.status.success(), "{text}");

    let generate = |extra: &[&str]| {
        let mut args: Vec<&std::ffi::OsStr> = vec!["generate".as_ref(), "--model".as_ref(), dir.as_os_str()];
        args.extend(["--max-tokens", "2", "--temperature", "0"].iter().chain(extra).map(std::ffi::OsStr::new));
        args.push("hello".as_ref());
        dsa_cli(&args)
    };
    let (out, text) = generate(&[]);
    assert!(!out.status.success(), "{text}");
    let file = dir.join("model.safetensors").display().to_string();
    assert!(text.contains(&format!("error: tensor `{tensor}` in {file} holds NaN at [0]: weights must be finite")), "{text}");
    assert!(text.contains("--allow-nonfinite") && !text.contains("panicked"), "{text}");
    let (out, text) = generate(&["--allow-nonfinite"]);
    assert!(out.status.success() && !text.contains("must be finite"), "{text}");
}
