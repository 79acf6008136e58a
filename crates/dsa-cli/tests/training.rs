//! Training end to end on ndarray with the micro preset (a few seconds each): the dense
//! warm-up lowers the indexer KL and trains the indexers alone, sparse training lowers the
//! LM loss, a run killed after a checkpoint and resumed ends with exactly the parameters of
//! an uninterrupted run, and generation from a trained run is fixed by its seed.

#![cfg(feature = "ndarray")]

use std::ffi::OsStr;
use std::fmt::Debug;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use burn::backend::{Autodiff, NdArray};
use burn::data::dataloader::batcher::Batcher;
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use dsa_cli::batcher::{TokenBatch, TokenBatcher};
use dsa_cli::checkpoint::{checkpoint_file, latest_checkpoint, load_model};
use dsa_cli::corpus::DataArgs;
use dsa_cli::data::Document;
use dsa_cli::presets::Preset;
use dsa_cli::tokenizer::TextTokenizer;
use dsa_cli::train::{train, LanguageModel, Stage, TrainSettings};
use dsa_model::{DeepSeekV32, DeepSeekV32Config};

type B = Autodiff<NdArray>;

/// Tokens per training sequence: more than the micro model's top-k (16), so that sparse
/// attention selects.
const SEQ_LEN: usize = 48;

/// The beginning of The Devil's Dictionary (about 1500 tokens of 48).
fn text() -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/devils-dictionary.txt")).unwrap();
    text.chars().skip(2000).take(12_000).collect()
}

/// Every float parameter of a module with its path (`layers.0.self_attn.wq_a.weight`).
#[derive(Default)]
struct Parameters {
    path: Vec<String>,
    values: Vec<(String, Vec<f32>)>,
}

impl<Bk: Backend> ModuleVisitor<Bk> for Parameters {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Bk, D>>) {
        self.values.push((self.path.join("."), param.val().into_data().convert::<f32>().to_vec().unwrap()));
    }
}

fn parameters<Bk: Backend>(model: &DeepSeekV32<Bk>) -> Vec<(String, Vec<f32>)> {
    let mut visitor = Parameters::default();
    model.visit(&mut visitor);
    assert!(visitor.values.len() > 20, "{} parameters visited", visitor.values.len());
    assert!(visitor.values.iter().any(|(name, _)| name.contains(".indexer.")), "no indexer parameter among {:?}", visitor.values.iter().map(|v| &v.0).collect::<Vec<_>>());
    visitor.values
}

/// The paths of the parameters of a module that have a gradient in `grads`.
struct WithGradient<'a> {
    grads: &'a <B as AutodiffBackend>::Gradients,
    path: Vec<String>,
    names: Vec<String>,
}

impl ModuleVisitor<B> for WithGradient<'_> {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if param.val().grad(self.grads).is_some() {
            self.names.push(self.path.join("."));
        }
    }
}

fn with_gradient(model: &DeepSeekV32<B>, grads: &<B as AutodiffBackend>::Gradients) -> Vec<String> {
    let mut visitor = WithGradient { grads, path: Vec::new(), names: Vec::new() };
    model.visit(&mut visitor);
    visitor.names
}

/// In the warm-up only the indexers require gradients, so the frozen rest of the model
/// records no autodiff graph (the LM loss, never backpropagated, would keep its graph in
/// memory); in sparse training the logits reach every parameter but the indexers'. In both,
/// the indexer KL reaches the indexers alone.
#[test]
fn the_warmup_records_a_graph_for_the_indexers_only() {
    let device = Default::default();
    let cfg = Preset::Micro.config(256);
    let inputs = Tensor::<B, 1, Int>::arange(0..SEQ_LEN as i64, &device).reshape([1, SEQ_LEN]);
    for stage in [Stage::Warmup, Stage::Sparse] {
        let lm = LanguageModel::new(cfg.init::<B>(&device), stage);
        let (logits, indexer_kl) = lm.model.forward_train(inputs.clone(), stage.mode());
        let from_logits = with_gradient(&lm.model, &logits.sum().backward());
        let from_kl = with_gradient(&lm.model, &indexer_kl.backward());
        match stage {
            Stage::Warmup => assert!(from_logits.is_empty(), "warm-up: the logits reach {from_logits:?}"),
            _ => assert!(from_logits.len() > 20 && from_logits.iter().all(|n| !n.contains(".indexer.")), "{stage:?}: the logits reach {from_logits:?}"),
        }
        assert!(!from_kl.is_empty() && from_kl.iter().all(|n| n.contains(".indexer.")), "{stage:?}: the indexer KL reaches {from_kl:?}");
    }
}

/// (LM loss, indexer KL) of `model` trained in `stage` on `batch`.
fn losses(model: &DeepSeekV32<NdArray>, stage: Stage, batch: &TokenBatch<NdArray>) -> (f32, f32) {
    let out = LanguageModel::new(model.clone(), stage).forward_step(batch.clone());
    (out.lm_loss.into_scalar(), out.indexer_kl.into_scalar())
}

/// A new trainable model of `cfg` with the weights of `model`, as `--init` makes one.
fn trainable(model: &DeepSeekV32<NdArray>, cfg: &DeepSeekV32Config) -> DeepSeekV32<B> {
    let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
    let bytes = recorder.record(model.clone().into_record(), ()).unwrap();
    let device = Default::default();
    cfg.init::<B>(&device).load_record(recorder.load(bytes, &device).unwrap())
}

fn settings(stage: Stage, steps: usize) -> TrainSettings {
    TrainSettings { lr: 3e-3, checkpoint_every: steps, log_every: steps, ..TrainSettings::new(stage, steps, 4) }
}

/// The warm-up lowers the dense indexer KL on a fixed batch and changes the indexers only;
/// sparse training then lowers the LM loss on that batch.
#[test]
fn warmup_lowers_the_indexer_kl_and_sparse_training_the_lm_loss() {
    let start = Instant::now();
    let device = Default::default();
    let docs = [Document { source: "devils-dictionary".into(), text: text() }];
    let data_args = DataArgs { data: vec![], seq_len: SEQ_LEN, retrieval: 0, pairs: 1 };
    let tokenizer = TextTokenizer::train(data_args.tokenizer_texts(&docs), 256).unwrap();
    let data = data_args.sequences(&docs, &tokenizer).unwrap();
    let batch: TokenBatch<NdArray> = TokenBatcher.batch(data.train[..8].to_vec(), &device);
    B::seed(&device, 1);
    let cfg = Preset::Micro.config(tokenizer.vocab_size());
    let model = cfg.init::<B>(&device);
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();

    let before = model.valid();
    let warm = train::<B>(model, data.clone(), &settings(Stage::Warmup, 20), &dir.join("warmup"), false).unwrap();
    let (kl_before, kl_after) = (losses(&before, Stage::Warmup, &batch).1, losses(&warm, Stage::Warmup, &batch).1);
    println!("warm-up: indexer KL {kl_before} -> {kl_after}");
    assert!(kl_after < 0.8 * kl_before, "indexer KL {kl_before} -> {kl_after}");
    let mut indexer_changed = false;
    for ((name, old), (_, new)) in parameters(&before).iter().zip(parameters(&warm)) {
        match name.contains(".indexer.") {
            true => indexer_changed |= *old != new,
            false => assert!(*old == new, "the warm-up changed {name}"),
        }
    }
    assert!(indexer_changed, "the warm-up changed no indexer parameter");

    let sparse = train::<B>(trainable(&warm, &cfg), data, &settings(Stage::Sparse, 20), &dir.join("sparse"), false).unwrap();
    let (lm_before, lm_after) = (losses(&warm, Stage::Sparse, &batch).0, losses(&sparse, Stage::Sparse, &batch).0);
    println!("sparse training: LM loss {lm_before} -> {lm_after}");
    assert!(lm_after < lm_before - 0.5, "LM loss {lm_before} -> {lm_after}");
    println!("{:.1} s", start.elapsed().as_secs_f64());
}

fn dsa_cli<S: AsRef<OsStr>>(args: &[S]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dsa-cli"));
    command.args(args);
    command
}

/// Runs `dsa-cli`, asserting success; stdout.
fn run_ok<S: AsRef<OsStr> + Debug>(args: &[S]) -> String {
    let Output { status, stdout, stderr } = dsa_cli(args).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&stdout), String::from_utf8_lossy(&stderr));
    assert!(status.success(), "dsa-cli {args:?} failed:\n{stdout}\n{stderr}");
    stdout.into_owned()
}

/// A temporary directory with the training text, a tokenizer and a micro config, for runs
/// of `dsa-cli train`.
struct Setup {
    temp: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let setup = Self { temp: tempfile::tempdir().unwrap() };
        std::fs::write(setup.path("text.txt"), text()).unwrap();
        let tokenizer = TextTokenizer::train([text()], 256).unwrap();
        tokenizer.save(setup.path("tokenizer.json")).unwrap();
        std::fs::write(setup.path("config.json"), serde_json::to_string(&Preset::Micro.config(tokenizer.vocab_size())).unwrap()).unwrap();
        setup
    }

    /// `name` in the directory.
    fn path(&self, name: &str) -> String {
        self.temp.path().join(name).display().to_string()
    }

    /// `dsa-cli train` (sparse) into `out`: `steps` steps of 4 sequences, a checkpoint every
    /// `every`, stdout piped, with `extra` flags.
    fn train(&self, out: &str, steps: usize, every: usize, extra: &[&str]) -> Command {
        let (out, config, tokenizer, data) = (self.path(out), self.path("config.json"), self.path("tokenizer.json"), self.path("text.txt"));
        let (steps, every) = (steps.to_string(), every.to_string());
        let args = ["train", "--out", &out, "--config", &config, "--tokenizer", &tokenizer, "--data", &data];
        let settings = ["--seq-len", "48", "--batch-size", "4", "--steps", &steps, "--checkpoint-every", &every, "--log-every", "1", "--seed", "7"];
        let mut command = dsa_cli(&[&args[..], &settings, extra].concat());
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        command
    }

    /// `dsa-cli train --out <out> --resume`, asserting success; stdout and stderr.
    fn resume(&self, out: &str) -> String {
        let Output { status, stdout, stderr } = dsa_cli(&["train", "--out", &self.path(out), "--resume"]).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&stdout), String::from_utf8_lossy(&stderr));
        assert!(status.success(), "resuming {out} failed:\n{text}");
        text
    }

    /// The parameters of the finished run `out`.
    fn parameters(&self, out: &str) -> Vec<(String, Vec<f32>)> {
        parameters(&load_model::<NdArray>(&self.temp.path().join(out), false, &Default::default()).unwrap().1)
    }
}

/// Asserts that two runs ended with exactly the same parameters.
fn assert_same_parameters(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)], what: &str) {
    assert_eq!(a.len(), b.len());
    for ((name, a), (_, b)) in a.iter().zip(b) {
        assert!(a == b, "{name} differs between the uninterrupted run and {what}");
    }
}

/// `train --resume` on a run whose newest checkpoint has a truncated, an empty or an
/// overwritten file names the file, resumes from the checkpoint before it, and ends with
/// the parameters of the uninterrupted run (before checksums, Burn's decoder panicked).
#[test]
fn a_damaged_newest_checkpoint_is_named_and_the_one_before_resumed() {
    let start = Instant::now();
    let setup = Setup::new();
    let status = setup.train("run", 6, 2, &[]).stdout(Stdio::null()).status().unwrap();
    assert!(status.success());
    let expected = setup.parameters("run");
    let run = setup.temp.path().join("run");
    type Damage = fn(&[u8]) -> Vec<u8>;
    let damages: [(&str, Damage); 3] = [
        ("model", |b| b[..b.len() / 2].to_vec()),
        ("optim", |_| Vec::new()),
        ("scheduler", |b| (0..b.len()).map(|i| (i * 151 + 7) as u8).collect()),
    ];
    for (kind, damage) in damages {
        let file = checkpoint_file(&run, kind, 3);
        std::fs::write(&file, damage(&std::fs::read(&file).unwrap())).unwrap();
        let text = setup.resume("run");
        assert!(text.contains(&format!("warning: not resuming from checkpoint 3: {} is damaged: ", file.display())), "{kind}: {text}");
        assert!(text.contains("resuming") && text.contains("after step 4") && !text.contains("panicked"), "{kind}: {text}");
        assert_same_parameters(&expected, &setup.parameters("run"), &format!("the run resumed past a damaged {kind} file"));
    }
    println!("{:.1} s", start.elapsed().as_secs_f64());
}

/// A run killed after its first checkpoint and resumed with `--resume` ends with exactly
/// the parameters of the uninterrupted run; generation from it is fixed by the seed.
#[test]
fn a_killed_and_resumed_run_equals_an_uninterrupted_one() {
    let start = Instant::now();
    let setup = Setup::new();
    let path = |name: &str| setup.path(name);

    let status = setup.train("full", 15, 3, &[]).stdout(Stdio::null()).status().unwrap();
    assert!(status.success());
    let mut child = setup.train("killed", 15, 3, &[]).stdout(Stdio::null()).spawn().unwrap();
    let run = setup.temp.path().join("killed");
    let deadline = Instant::now() + Duration::from_secs(300);
    while latest_checkpoint(&run).is_none() {
        assert!(Instant::now() < deadline && child.try_wait().unwrap().is_none(), "no checkpoint before the run ended");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!run.join("model.mpk").exists(), "the run finished before it was killed");
    let resumed = setup.resume("killed");
    assert!(resumed.contains("resuming") && resumed.contains("after step"), "{resumed}");
    println!("{}", resumed.lines().find(|l| l.contains("resuming")).unwrap_or_default());
    assert_same_parameters(&setup.parameters("full"), &setup.parameters("killed"), "the resumed run");

    let model = path("full");
    let generate = |seed: &str| run_ok(&["generate", "--model", &model, "--max-tokens", "24", "--temperature", "1", "--seed", seed, "The"]);
    let first = generate("3");
    assert!(first.starts_with("The") && first.len() > 10, "{first}");
    assert_eq!(first, generate("3"), "the same seed gave different text");
    assert_ne!(first, generate("4"), "another seed gave the same text");
    println!("{:.1} s", start.elapsed().as_secs_f64());
}
