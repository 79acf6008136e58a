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
    // A DeepSeek-V3.2 case (tests/cases also holds a GLM-5-style one).
    let case = cases().into_iter().find(|c| !c.ends_with("glm5-style")).expect("a DeepSeek case");
    let (out, text) = dsa_cli(&["info".as_ref(), case.as_os_str()]);
    assert!(out.status.success(), "{text}");
    for needle in ["parameters:", "decode cache per token", "DeepSeek-V3.2 at full size", "671.", "78324 B"] {
        assert!(text.contains(needle), "`{needle}` missing from:\n{text}");
    }
}

/// `info` names the family and the features a checkpoint uses: GLM-5's interleaved indexer
/// RoPE and plain RoPE on this repository's GLM-5-style case (compared with GLM-5 at full
/// size), DeepSeek-V3.2's rotate-half indexer RoPE and YaRN on a DeepSeek case.
#[cfg(feature = "ndarray")]
#[test]
fn info_prints_the_family_features() {
    let glm = dsa_tests::repo_cases().into_iter().find(|c| c.ends_with("glm5-style")).expect("tests/cases/glm5-style");
    let (out, text) = dsa_cli(&["info".as_ref(), glm.as_os_str()]);
    assert!(out.status.success(), "{text}");
    for needle in [
        "family: GLM-5 (model_type glm_moe_dsa)",
        "RoPE: base 1000000, no scaling; indexer RoPE interleaved; RMSNorm eps 1e-5",
        "MTP layers: 0 (num_nextn_predict_layers: drafts for generate --speculative, trained with --mtp-weight); weights: FP8 e4m3 with 128×128 blocks, float scales",
        "prompts: no chat template (generate --chat needs --chat-template); no BOS added; stops at the tokenizer's end-of-text token",
        "GLM-5 at full size:",
        "MTP layers: 1 (num_nextn_predict_layers: drafts for generate --speculative, trained with --mtp-weight); weights: bfloat16",
        "743.91B total",
    ] {
        assert!(text.contains(needle), "`{needle}` missing from:\n{text}");
    }
    let deepseek = cases().into_iter().find(|c| !c.ends_with("glm5-style")).expect("a DeepSeek case");
    let (out, text) = dsa_cli(&["info".as_ref(), deepseek.as_os_str()]);
    assert!(out.status.success(), "{text}");
    for needle in ["family: DeepSeek-V3.2 (model_type deepseek_v32)", "indexer RoPE non-interleaved (rotate-half)", "YaRN ×4 over 32 positions", "DeepSeek-V3.2 at full size:"] {
        assert!(text.contains(needle), "`{needle}` missing from:\n{text}");
    }
    // The prompt conventions of the checkpoint's tokenizer files.
    let temp = tempfile::tempdir().unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(deepseek.join(file), temp.path().join(file)).unwrap();
    }
    std::fs::write(temp.path().join("tokenizer_config.json"), r#"{"chat_template": "{{ messages }}", "bos_token": {"content": "<s>"}, "eos_token": "</s>", "add_bos_token": true}"#).unwrap();
    std::fs::write(temp.path().join("generation_config.json"), r#"{"eos_token_id": [1, 7]}"#).unwrap();
    let (out, text) = dsa_cli(&["info".as_ref(), temp.path().as_os_str()]);
    assert!(out.status.success(), "{text}");
    let config = temp.path().join("tokenizer_config.json");
    let want = format!("prompts: chat template from {}; BOS \"<s>\" put in front; stops at \"</s>\", id 1, id 7 and the tokenizer's end-of-text token", config.display());
    assert!(text.contains(&want), "`{want}` missing from:\n{text}");
}

/// `info` runs the checks of loading: on a run directory and a HuggingFace directory whose
/// `config.json` contradicts the weights' shapes it names the first mismatching tensor and
/// both shapes.
#[cfg(feature = "ndarray")]
#[test]
fn info_checks_shapes_against_the_config() {
    use dsa_cli::checkpoint::{save_model, write_json};
    let temp = tempfile::tempdir().unwrap();
    let run = temp.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let cfg = dsa_cli::presets::Preset::Micro.config(300);
    save_model(&run, &cfg.init::<burn::backend::NdArray>(&Default::default()), &cfg).unwrap();
    let hf = temp.path().join("hf");
    std::fs::create_dir(&hf).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(cases()[0].join(file), hf.join(file)).unwrap();
    }
    let edits = [(&run, "hidden_size", 64, format!("tensor `embed_tokens.weight` in {}: expected shape [300, 64], found [300, 128]", run.join("model.mpk").display())),
        (&hf, "intermediate_size", 384, format!("tensor `model.layers.0.mlp.gate_proj.weight` in {}: expected shape [384, 256], found [512, 256]", hf.join("model.safetensors").display()))];
    for (dir, field, value, message) in edits {
        let (out, text) = dsa_cli(&["info".as_ref(), dir.as_os_str()]);
        assert!(out.status.success() && text.contains("parameters:"), "{text}");
        let config = dir.join("config.json");
        let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
        json[field] = value.into();
        write_json(&config, &json).unwrap();
        let (out, text) = dsa_cli(&["info".as_ref(), dir.as_os_str()]);
        assert!(!out.status.success() && text.contains(&format!("error: {message}")) && !text.contains("panicked"), "{field}: {text}");
    }
}

/// `--backend cuda` without a CUDA driver (or GPU) is an error saying so, not a panic in the
/// runtime's thread; with both, `info` runs.
#[cfg(feature = "cuda")]
#[test]
fn cuda_without_a_driver_is_an_error_not_a_panic() {
    let (out, text) = dsa_cli(&["--backend".as_ref(), "cuda".as_ref(), "info".as_ref(), cases()[0].as_os_str()]);
    match dsa_cli::driver::check_cuda_driver() {
        Ok(()) => assert!(out.status.success(), "{text}"),
        Err(e) => assert!(!out.status.success() && text.contains(&format!("error: {e}")) && !text.contains("panicked"), "{text}"),
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
    let cases: [(&[&str], String); 10] = [
        (&["--dtype", "bf16", "train", "--data", &good], "--dtype bf16 needs --backend cuda (got Ndarray)".into()),
        (&["train", "--data", &empty], format!("{empty} has no text")),
        (&["warmup", "--data", &bad], format!("{bad}:2: not valid UTF-8")),
        (&["train", "--dense", "--data", &short, "--vocab", "260"], "too few for one sequence of 256 (+1) tokens".into()),
        (&["train", "--data", &good, "--vocab", "300", "--seq-len", "4096"], "--seq-len 4096 exceeds the model's maximum of 2048 positions".into()),
        (&["warmup", "--data", &good, "--vocab", "300", "--seq-len", "64", "--steps", "0"], "--steps must be at least 1".into()),
        (&["train", "--resume"], format!("cannot read {run}/train.json")),
        (&["train", "--data", &good, "--devices", "cpu,cuda:1"], "--devices: `cuda:1` is not a device of --backend ndarray".into()),
        (&["warmup", "--data", &good, "--batch-size", "5", "--devices", "cpu,cpu"], "--batch-size 5 does not split into equal shards over the 2 --devices: use a multiple of 2".into()),
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

/// Zero and other out-of-range values of numeric flags (`--seq-len`, `--vocab`, `--scale`,
/// `--pairs`, `--max-tokens`, …) are refused, naming the flag and the allowed range, before
/// anything is read or written: most when the arguments are parsed, the optimizer's when
/// the run's settings are checked.
#[test]
fn out_of_range_flags_name_the_flag_and_the_range() {
    let temp = tempfile::tempdir().unwrap();
    let out = temp.path().join("out");
    let out = out.to_str().unwrap();
    let seq_len = "invalid value '0' for '--seq-len <SEQ_LEN>': 0 is not in 1..";
    let vocab = "invalid value '0' for '--vocab <VOCAB>': 0 is not in 257..";
    let scale = "for '--scale <SCALE>': must be a finite number above 0";
    let at_least_1 = |flag: &str| format!("invalid value '0' for '--{flag} <{}>': 0 is not in 1..", flag.to_uppercase().replace('-', "_"));
    let (pairs, topk, max_tokens, eval, bench_seq) = (at_least_1("pairs"), at_least_1("index-topk"), at_least_1("max-tokens"), at_least_1("eval-examples"), at_least_1("seq-len"));
    let cases: [(&[&str], &str); 17] = [
        (&["train", "--out", out, "--pairs", "0"], &pairs),
        (&["train", "--out", out, "--index-topk", "0"], &topk),
        (&["generate", "--model", out, "--max-tokens", "0", "hello"], &max_tokens),
        (&["demo", "--out", out, "--eval-examples", "0"], &eval),
        (&["bench-train", "--seq-len", "1024,0"], &bench_seq),
        (&["train", "--out", out, "--log-every", "0"], "--log-every must be at least 1"),
        (&["warmup", "--out", out, "--weight-decay=-1"], "--weight-decay -1 must be a finite number ≥ 0"),
        (&["train", "--out", out, "--seq-len", "0"], seq_len),
        (&["warmup", "--out", out, "--seq-len", "0"], seq_len),
        (&["tokenizer", "train", "--out", out, "--vocab", "0"], vocab),
        (&["tokenizer", "train", "--out", out, "--vocab", "256"], "'256' for '--vocab <VOCAB>': 256 is not in 257.."),
        (&["train", "--out", out, "--vocab", "0"], vocab),
        (&["demo", "--out", out, "--scale", "0"], scale),
        (&["demo", "--out", out, "--scale=-1"], scale),
        (&["demo", "--out", out, "--scale", "nan"], scale),
        (&["train", "--out", out, "--devices", "0"], "invalid value '0' for '--devices <LIST>': a count of devices must be at least 1"),
        (&["warmup", "--out", out, "--devices", "cuda:0,gpu1"], "for '--devices <LIST>': `gpu1` is not a device: expected `cpu`, `cuda:N` or a count"),
    ];
    for (args, message) in cases {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        let (status, text) = dsa_cli(&args);
        assert!(!status.status.success(), "{args:?} succeeded:\n{text}");
        assert!(text.contains("error: ") && text.contains(message) && !text.contains("panicked"), "{args:?}: expected `{message}`:\n{text}");
        assert!(!std::path::Path::new(out).exists(), "{args:?} wrote {out}");
    }
}

/// Makes `dir` a model directory for `generate`: the first conformance case's config and
/// weights (the latter edited by `edit`) and a tokenizer trained here.
fn hf_model_dir(dir: &std::path::Path, edit: impl FnOnce(&mut Vec<u8>)) {
    let case = &cases()[0];
    std::fs::copy(case.join("config.json"), dir.join("config.json")).unwrap();
    let mut weights = std::fs::read(case.join("model.safetensors")).unwrap();
    edit(&mut weights);
    std::fs::write(dir.join("model.safetensors"), weights).unwrap();
    let text_file = dir.join("text.txt");
    std::fs::write(&text_file, "ABSURDITY, n.  A statement or belief manifestly inconsistent with one's own opinion.\n".repeat(40)).unwrap();
    let tokenizer = dir.join("tokenizer.json");
    let (out, text) = dsa_cli(&["tokenizer".as_ref(), "train".as_ref(), "--data".as_ref(), text_file.as_os_str(), "--vocab".as_ref(), "300".as_ref(), "--out".as_ref(), tokenizer.as_os_str()]);
    assert!(out.status.success(), "{text}");
}

/// A prompt longer than the model's positions is an error before anything is printed (the
/// prompt used to be echoed first).
#[cfg(feature = "ndarray")]
#[test]
fn a_prompt_beyond_the_positions_is_refused_before_any_output() {
    let temp = tempfile::tempdir().unwrap();
    hf_model_dir(temp.path(), |_| {});
    let prompt = "ABSURDITY, n. ".repeat(100);
    let out = Command::new(env!("CARGO_BIN_EXE_dsa-cli")).args(["generate", "--model"]).arg(temp.path()).args(["--max-tokens", "2", &prompt]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && out.stdout.is_empty(), "stdout: {}\nstderr: {stderr}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.contains("new tokens exceed the model's 256 positions") && stderr.contains("--max-tokens") && !stderr.contains("panicked"), "{stderr}");
    // Sampling settings the library refuses are reported by their flags.
    for (flag, value, message) in [("--top-p", "2", "--top-p 2 must be in (0, 1]"), ("--temperature", "-1", "--temperature -1 must be")] {
        let out = Command::new(env!("CARGO_BIN_EXE_dsa-cli")).args(["generate", "--model"]).arg(temp.path()).arg(format!("{flag}={value}")).arg("hello").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(message) && !stderr.contains("panicked"), "{stderr}");
    }
}

/// A HuggingFace checkpoint with a NaN weight is refused, naming the tensor and the file,
/// unless `--allow-nonfinite`.
#[cfg(feature = "ndarray")]
#[test]
fn nonfinite_weights_are_refused_unless_allowed() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let tensor = "model.layers.0.self_attn.q_a_layernorm.weight";
    hf_model_dir(dir, |weights| {
        let header_len = u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&weights[8..8 + header_len]).unwrap();
        assert_eq!(header[tensor]["dtype"], "BF16");
        let start = 8 + header_len + header[tensor]["data_offsets"][0].as_u64().unwrap() as usize;
        weights[start..start + 2].copy_from_slice(&[0xC0, 0x7F]); // BF16 NaN
    });

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

/// `generate --chat` with stdin not a terminal: one user turn through a real chat template
/// (the checkpoint's, or --chat-template's), BOS in front where `tokenizer_config.json` asks
/// for it but not doubled when the template writes it, and the reply ending at a stop id of
/// `generation_config.json`. The expected prompts are the tokens of the conversations as the
/// templates lay them out, written here.
#[cfg(feature = "ndarray")]
#[test]
fn chat_applies_the_template_bos_and_stop_tokens() {
    use std::io::Write;
    use std::process::Stdio;
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    hf_model_dir(dir, |_| {});
    let templates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dsa-model/testdata/chat_templates");
    let tokenizer = dsa_cli::tokenizer::TextTokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    // The trained tokenizer's only special token serves as BOS and EOS.
    let bos = tokenizer.eos();
    let config = |json: serde_json::Value| std::fs::write(dir.join("tokenizer_config.json"), json.to_string()).unwrap();
    // Runs a chat turn; the prompt and generated ids it prints, its stdout and stderr.
    let chat = |extra: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dsa-cli"))
            .args(["generate", "--chat", "--print-tokens", "--temperature", "0", "--max-tokens", "8", "--model"])
            .arg(dir)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"Hi there\n").unwrap();
        let out = child.wait_with_output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
        assert!(out.status.success(), "{extra:?}:\n{stdout}{stderr}");
        let ids = |label: &str| -> Vec<u32> {
            let line = stderr.lines().find_map(|l| l.strip_prefix(label)).unwrap_or_else(|| panic!("no `{label}` in:\n{stderr}"));
            serde_json::from_str(line).unwrap()
        };
        (ids("prompt tokens [1]: "), ids("generated tokens [1]: "), stdout, stderr)
    };

    // DeepSeek-V3.1's template writes `bos_token` itself: BOS once.
    config(serde_json::json!({
        "chat_template": std::fs::read_to_string(templates.join("deepseek-v3.1.jinja")).unwrap(),
        "bos_token": {"content": "<|endoftext|>", "normalized": false}, "eos_token": "<|endoftext|>", "add_bos_token": true,
    }));
    let (prompt, _, _, _) = chat(&["--system", "Be brief."]);
    let expected = tokenizer.encode("<|endoftext|>Be brief.<｜User｜>Hi there<｜Assistant｜></think>");
    assert_eq!(prompt, expected);
    assert!(prompt[0] == bos && prompt[1] != bos, "{prompt:?}");

    // GLM-4.6's does not: BOS is put in front. Its stop ids come from generation_config.json.
    config(serde_json::json!({"bos_token": "<|endoftext|>", "add_bos_token": true}));
    let glm = templates.join("glm-4.6.jinja");
    let glm_chat = ["--chat-template", glm.to_str().unwrap()];
    let (prompt, free, _, _) = chat(&glm_chat);
    let mut expected = vec![bos];
    expected.extend(tokenizer.encode("[gMASK]<sop><|user|>\nHi there<|assistant|>"));
    assert_eq!(prompt, expected);
    assert_eq!(free.len(), 8, "the reply met a stop token unasked: {free:?}");
    let stop = free[2];
    let end = free.iter().position(|&t| t == stop).unwrap() + 1;
    let unused = (0..).find(|t| !free.contains(t)).unwrap();
    std::fs::write(dir.join("generation_config.json"), format!(r#"{{"eos_token_id": [{unused}, {stop}]}}"#)).unwrap();
    let (_, stopped, stdout, stderr) = chat(&glm_chat);
    assert_eq!(stopped, free[..end], "did not stop at {stop}");
    assert_eq!(stdout, format!("{}\n", tokenizer.decode(&free[..end])));
    assert!(stderr.contains(&format!("{end} tokens generated for 1 prompt(s)")), "{stderr}");

    // Without a template: an error naming the file and the field.
    let (out, text) = dsa_cli(&["generate".as_ref(), "--chat".as_ref(), "--model".as_ref(), dir.as_os_str()]);
    let file = dir.join("tokenizer_config.json").display().to_string();
    assert!(!out.status.success() && text.contains(&format!("error: {file} has no `chat_template` (nor is there a chat_template.jinja beside it): --chat needs one (or --chat-template FILE)")), "{text}");
}

/// A batch is streamed as `[N]+TEXT` lines (line breaks and backslashes escaped) that add up
/// to each prompt's continuation, then printed whole as `[N] PROMPT+CONTINUATION`.
#[cfg(feature = "ndarray")]
#[test]
fn batches_are_streamed_per_sequence() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    hf_model_dir(dir, |_| {});
    let tokenizer = dsa_cli::tokenizer::TextTokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let prompts = ["ABSURDITY, n.", "A statement\nor belief"];
    let out = Command::new(env!("CARGO_BIN_EXE_dsa-cli")).args(["generate", "--print-tokens", "--temperature", "0", "--max-tokens", "6", "--model"]).arg(dir).args(prompts).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    let unescape = |text: &str| {
        let mut out = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            out.push(match c {
                '\\' => match chars.next() {
                    Some('n') => '\n',
                    Some('r') => '\r',
                    _ => '\\',
                },
                c => c,
            });
        }
        out
    };
    let lines: Vec<&str> = stdout.lines().collect();
    let first_whole = lines.iter().position(|l| l.starts_with("[1] ")).unwrap_or_else(|| panic!("{stdout}"));
    let mut total = 0;
    for (i, prompt) in prompts.iter().enumerate() {
        let label = format!("generated tokens [{}]: ", i + 1);
        let line = stderr.lines().find_map(|l| l.strip_prefix(label.as_str())).unwrap_or_else(|| panic!("{stderr}"));
        let new: Vec<u32> = serde_json::from_str(line).unwrap();
        let streamed: String = lines[..first_whole].iter().filter_map(|l| l.strip_prefix(&format!("[{}]+", i + 1))).map(&unescape).collect();
        assert_eq!(streamed, tokenizer.decode(&new), "sequence {}:\n{stdout}", i + 1);
        total += streamed.len();
        assert!(stdout.contains(&format!("[{}] {prompt}{}\n", i + 1, tokenizer.decode(&new))), "{stdout}");
    }
    // The random model also draws ids beyond the tokenizer's, which make a text decode to
    // nothing.
    assert!(total > 0, "nothing streamed:\n{stdout}");
}

/// `generate --chat` on a terminal (a pseudo-terminal from util-linux's `script`; skipped
/// without it): turn after turn, the second prompt is the whole conversation so far, the
/// first reply included, laid out by the template.
#[cfg(feature = "ndarray")]
#[test]
fn interactive_chat_keeps_the_conversation() {
    use std::io::Write;
    use std::process::Stdio;
    if Command::new("script").arg("--version").output().is_err() {
        println!("skipped: no `script` command for a pseudo-terminal");
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    hf_model_dir(dir, |_| {});
    let template = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dsa-model/testdata/chat_templates/deepseek-v3.1.jinja")).unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), serde_json::json!({"chat_template": template, "bos_token": "<|endoftext|>"}).to_string()).unwrap();
    let command = format!("{} generate --chat --print-tokens --temperature 0 --max-tokens 4 --model {}", env!("CARGO_BIN_EXE_dsa-cli"), dir.display());
    let mut child = Command::new("script").args(["-qec", &command, "/dev/null"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"Hi\nagain\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert!(out.status.success() && text.contains("(Ctrl-D ends)"), "{text}");
    let ids = |label: &str| -> Vec<Vec<u32>> { text.lines().filter_map(|l| l.split_once(label)).map(|(_, ids)| serde_json::from_str(ids).unwrap()).collect() };
    let (prompts, replies) = (ids("prompt tokens [1]: "), ids("generated tokens [1]: "));
    assert_eq!((prompts.len(), replies.len()), (2, 2), "{text}");
    let tokenizer = dsa_cli::tokenizer::TextTokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let first = "<|endoftext|><｜User｜>Hi<｜Assistant｜></think>";
    assert_eq!(prompts[0], tokenizer.encode(first));
    let reply = tokenizer.decode(&replies[0]);
    assert_eq!(prompts[1], tokenizer.encode(&format!("{first}{reply}<｜end▁of▁sentence｜><｜User｜>again<｜Assistant｜></think>")));
}

/// `generate --speculative` drafts with the MTP layer and prints plain greedy decoding's
/// text with the acceptance rate and the speed-up; a model without an MTP layer is refused.
#[cfg(feature = "ndarray")]
#[test]
fn speculative_generation_prints_the_greedy_text_and_its_acceptance() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    hf_model_dir(dir, |_| {});
    let run = |extra: &[&str]| {
        let mut args: Vec<&std::ffi::OsStr> = vec!["generate".as_ref(), "--model".as_ref(), dir.as_os_str()];
        args.extend(["--max-tokens", "12", "--temperature", "0"].iter().chain(extra).map(std::ffi::OsStr::new));
        args.push("ABSURDITY".as_ref());
        let out = Command::new(env!("CARGO_BIN_EXE_dsa-cli")).args(&args).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, _, stderr) = run(&["--speculative"]);
    assert!(!ok && stderr.contains("--speculative") && stderr.contains("num_nextn_predict_layers = 0") && !stderr.contains("panicked"), "{stderr}");

    // The case's last block (layer 2) becomes the MTP layer of a 2-block model.
    let config = dir.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let d = cfg["hidden_size"].as_u64().unwrap() as usize;
    cfg["num_hidden_layers"] = 2.into();
    cfg["num_nextn_predict_layers"] = 1.into();
    std::fs::write(&config, cfg.to_string()).unwrap();
    let weights = dir.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    // F32 values `offset + scale · (a spread in [-0.5, 0.5))`.
    let f32_bytes = |n: usize, offset: f32, scale: f32| -> Vec<u8> { (0..n).flat_map(|i| (offset + scale * (((i * 37) % 101) as f32 / 101.0 - 0.5)).to_le_bytes()).collect() };
    let extras: Vec<(String, Vec<usize>, Vec<u8>)> = vec![
        ("model.layers.2.enorm.weight".into(), vec![d], f32_bytes(d, 1.0, 0.2)),
        ("model.layers.2.hnorm.weight".into(), vec![d], f32_bytes(d, 1.0, 0.2)),
        ("model.layers.2.shared_head.norm.weight".into(), vec![d], f32_bytes(d, 1.0, 0.2)),
        ("model.layers.2.eh_proj.weight".into(), vec![d, 2 * d], f32_bytes(2 * d * d, 0.0, 0.1)),
    ];
    let mut views: Vec<(String, safetensors::tensor::TensorView<'_>)> = st.tensors();
    for (name, shape, data) in &extras {
        views.push((name.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data).unwrap()));
    }
    let file = safetensors::serialize(views, None).unwrap();
    std::fs::write(&weights, file).unwrap();

    let (ok, plain, stderr) = run(&[]);
    assert!(ok, "{stderr}");
    let (ok, spec, stderr) = run(&["--speculative"]);
    assert!(ok, "{stderr}");
    assert_eq!(spec, format!("[1] {plain}"), "{stderr}");
    assert!(stderr.contains("drafts accepted") && stderr.contains("plain greedy:") && stderr.contains("speed-up") && !stderr.contains("differ"), "{stderr}");
}
