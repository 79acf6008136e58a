//! Training end to end on ndarray with the micro preset (a few seconds each): the dense
//! warm-up lowers the indexer KL and trains the indexers alone, sparse training lowers the
//! LM loss, a run killed or interrupted at random points and resumed ends with exactly the
//! parameters of an uninterrupted run, and generation from a trained run is fixed by its
//! seed.

#![cfg(feature = "ndarray")]

use std::ffi::OsStr;
use std::fmt::Debug;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use burn::backend::{Autodiff, NdArray};
use burn::data::dataloader::batcher::Batcher;
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use dsa_cli::batcher::{TokenBatch, TokenBatcher};
use dsa_cli::checkpoint::{checkpoint_file, latest_checkpoint, load_model, PAUSE_IN_WRITE_ENV};
use dsa_cli::corpus::DataArgs;
use dsa_cli::data::Document;
use dsa_cli::presets::Preset;
use dsa_cli::tokenizer::TextTokenizer;
use dsa_cli::train::{train, LanguageModel, Stage, TrainData, TrainSettings};
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

/// With MTP layers the sparse and dense stages add λ · the MTP loss (computed here from the
/// model's MTP logits) to the loss, and its gradient reaches the MTP modules; λ = 0 leaves
/// the loss as without MTP layers.
#[test]
fn the_mtp_loss_joins_the_loss_with_its_weight() {
    let device = Default::default();
    let mut cfg = Preset::Micro.config(256);
    cfg.num_nextn_predict_layers = 1;
    let seq = Tensor::<B, 1, Int>::arange(0..SEQ_LEN as i64 + 1, &device).remainder_scalar(37).reshape([1, SEQ_LEN + 1]);
    let batch = TokenBatch { inputs: seq.clone().narrow(1, 0, SEQ_LEN), targets: seq.narrow(1, 1, SEQ_LEN) };
    for stage in [Stage::Sparse, Stage::Dense] {
        let lm = LanguageModel::new(cfg.init::<B>(&device), stage).with_mtp_weight(0.5);
        let out = lm.forward_step(batch.clone());
        let hidden = lm.model.forward_hidden(batch.inputs.clone());
        let mtp = dsa_model::mtp::mtp_loss(lm.model.mtp_logits(hidden, batch.inputs.clone()), batch.targets.clone()).expect("one depth");
        let scalar = |t: Tensor<B, 1>| t.into_scalar() as f64;
        let want = scalar(out.lm_loss.clone()) + scalar(out.indexer_kl.clone()) + 0.5 * scalar(mtp.clone());
        let got = scalar(out.loss.clone());
        assert!((got - want).abs() < 1e-4 * want && scalar(mtp) > 1.0, "{stage:?}: loss {got}, LM + KL + 0.5 · MTP = {want}");
        let with_grad = with_gradient(&lm.model, &out.loss.backward());
        assert!(with_grad.iter().any(|n| n == "mtp.0.eh_proj.weight") && with_grad.iter().any(|n| n.starts_with("mtp.0.block.mlp")), "{stage:?}: {with_grad:?}");

        let off = lm.with_mtp_weight(0.0).forward_step(batch.clone());
        let plain = scalar(off.lm_loss) + scalar(off.indexer_kl);
        assert!((scalar(off.loss) - plain).abs() < 1e-5 * plain, "{stage:?}");
    }
}

/// (LM loss, indexer KL) of `model` trained in `stage` on `batch`.
fn losses(model: &DeepSeekV32<NdArray>, stage: Stage, batch: &TokenBatch<NdArray>) -> (f32, f32) {
    let out = LanguageModel::new(model.clone(), stage).forward_step(batch.clone());
    (out.lm_loss.into_scalar(), out.indexer_kl.into_scalar())
}

/// Sequences of [`SEQ_LEN`] tokens of [`text`], with the tokenizer of 256 trained on it.
fn dictionary_data() -> (TextTokenizer, TrainData) {
    let docs = [Document { source: "devils-dictionary".into(), text: text() }];
    let data_args = DataArgs { data: vec![], seq_len: SEQ_LEN, retrieval: 0, pairs: 1 };
    let tokenizer = TextTokenizer::train(data_args.tokenizer_texts(&docs), 256).unwrap();
    let data = data_args.sequences(&docs, &tokenizer).unwrap();
    (tokenizer, data)
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
    let (tokenizer, data) = dictionary_data();
    let batch: TokenBatch<NdArray> = TokenBatcher.batch(data.train[..8].to_vec(), &device);
    B::seed(&device, 1);
    let cfg = Preset::Micro.config(tokenizer.vocab_size());
    let model = cfg.init::<B>(&device);
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();

    let before = model.valid();
    let warm = train::<B>(model, data.clone(), &settings(Stage::Warmup, 20), &dir.join("warmup"), false, &[device]).unwrap();
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

    let sparse = train::<B>(trainable(&warm, &cfg), data, &settings(Stage::Sparse, 20), &dir.join("sparse"), false, &[device]).unwrap();
    let (lm_before, lm_after) = (losses(&warm, Stage::Sparse, &batch).0, losses(&sparse, Stage::Sparse, &batch).0);
    println!("sparse training: LM loss {lm_before} -> {lm_after}");
    assert!(lm_after < lm_before - 0.5, "LM loss {lm_before} -> {lm_after}");
    println!("{:.1} s", start.elapsed().as_secs_f64());
}

/// The training loss of each step of the first epoch of the run in `run_dir` on `devices`
/// devices, from Burn's log (one entry per device and step, the loss of its shard: with equal
/// shards their mean is the loss of the step's batch).
fn step_losses(run_dir: &Path, devices: usize) -> Vec<f64> {
    let file = run_dir.join("train/epoch-1/Loss.log");
    let log = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let shards: Vec<f64> = log.lines().map(|l| l.split(',').next().unwrap().parse().unwrap()).collect();
    assert_eq!(shards.len() % devices, 0, "{}: {} entries for {devices} devices", file.display(), shards.len());
    shards.chunks(devices).map(|step| step.iter().sum::<f64>() / devices as f64).collect()
}

/// Data-parallel training (Burn's multi-device strategy) on 2 and 3 ndarray devices, each
/// given its shard of every batch, follows the losses of one device with the same global
/// batch, f32, to 1e-5 relative over 10 steps (dense training; the warm-up, which trains the
/// indexers alone, on 2); another global batch does not; a batch that does not split evenly
/// is refused naming the flags. (Sparse training agrees as closely until a near-tie of the
/// top-k selection falls differently under the other rounding of the summed gradients.)
#[test]
fn several_devices_follow_the_loss_of_one_device() {
    const STEPS: usize = 10;
    let start = Instant::now();
    let device = Default::default();
    let (tokenizer, data) = dictionary_data();
    let cfg = Preset::Micro.config(tokenizer.vocab_size());
    let temp = tempfile::tempdir().unwrap();
    let run = |stage: Stage, devices: usize, batch: usize| {
        // The same initial weights every run (Burn initialises parameters lazily, when first
        // used: clones of one new model would not share them).
        B::seed(&device, 1);
        let model = cfg.init::<B>(&device);
        let settings = TrainSettings { lr: 3e-3, checkpoint_every: STEPS, log_every: STEPS, ..TrainSettings::new(stage, STEPS, batch) };
        let dir = temp.path().join(format!("{stage:?}-{devices}x{batch}"));
        train::<B>(model, data.clone(), &settings, &dir, false, &vec![device; devices]).map(|_| step_losses(&dir, devices))
    };
    let max_rel = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(a, b)| (a - b).abs() / b.abs()).fold(0.0, f64::max);
    for (stage, several) in [(Stage::Dense, &[2, 3][..]), (Stage::Warmup, &[2])] {
        let one = run(stage, 1, 6).unwrap();
        assert_eq!(one.len(), STEPS);
        println!("{stage:?}, 1 device: {one:?}");
        for &devices in several {
            let losses = run(stage, devices, 6).unwrap();
            assert_eq!(losses.len(), STEPS);
            let rel = max_rel(&losses, &one);
            println!("{stage:?}, {devices} devices: {losses:?}, at most {rel:.1e} from one device");
            assert!(rel <= 1e-5, "{stage:?} on {devices} devices: the losses differ from one device's by {rel:e} (relative)");
        }
        if stage == Stage::Dense {
            let other = run(stage, 2, 4).unwrap();
            let rel = max_rel(&other, &one);
            assert!(rel > 1e-3, "a global batch of 4 on 2 devices gave the losses of 6 on one (relative difference {rel:e})");
        }
    }
    let err = run(Stage::Dense, 2, 5).unwrap_err().to_string();
    assert!(err.contains("--batch-size 5") && err.contains("2 --devices"), "{err}");
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

/// `train --resume` on a run whose optimizer state is not its own (with a valid checksum)
/// fails naming the file and the first tensor that differs, before training: the state of
/// a run with a larger vocabulary (its master weights replaced the model's silently), with
/// fewer layers (Burn panicked), of another run of the same config (replaced the weights
/// silently), and a model or scheduler file in its place (Burn panicked). With its own
/// state back, the run resumes.
#[test]
fn a_foreign_optimizer_state_is_refused_naming_the_file_and_the_tensor() {
    let start = Instant::now();
    let setup = Setup::new();
    let train = |out: &str| assert!(setup.train(out, 2, 1, &[]).stdout(Stdio::null()).status().unwrap().success(), "training {out}");
    let config_file = setup.path("config.json");
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config_file).unwrap()).unwrap();
    train("run");
    train("same");
    for (out, field, value) in [("vocab", "vocab_size", config["vocab_size"].as_u64().unwrap() + 20), ("layers", "num_hidden_layers", 1)] {
        let mut other = config.clone();
        other[field] = value.into();
        std::fs::write(&config_file, other.to_string()).unwrap();
        train(out);
    }
    let run = setup.temp.path().join("run");
    for kind in ["model", "optim", "scheduler"] {
        let file = checkpoint_file(&run, kind, 2);
        std::fs::remove_file(&file).unwrap();
        std::fs::remove_file(format!("{}.sum", file.display())).unwrap();
    }
    let (optim, model) = (checkpoint_file(&run, "optim", 1), checkpoint_file(&run, "model", 1));
    let sum = |file: &std::path::Path| format!("{}.sum", file.display());
    let own = (std::fs::read(&optim).unwrap(), std::fs::read(sum(&optim)).unwrap());
    let foreign = format!("{} is not the optimizer state of {}: ", optim.display(), model.display());
    let cases = [
        (checkpoint_file(&setup.temp.path().join("vocab"), "optim", 1), format!("tensor `model.embed_tokens.weight` in {}: expected shape [{}, 128], found [{}, 128]", optim.display(), config["vocab_size"], config["vocab_size"].as_u64().unwrap() + 20)),
        (checkpoint_file(&setup.temp.path().join("layers"), "optim", 1), format!("checkpoint {} does not match the model: ", optim.display())),
        (checkpoint_file(&setup.temp.path().join("same"), "optim", 1), format!("{foreign}its master copy of `model.embed_tokens.weight` is parameter ")),
        (model.clone(), format!("{foreign}it holds tensor `model.embed_tokens.weight`, neither a moment nor a master weight")),
        (checkpoint_file(&run, "scheduler", 1), format!("{foreign}it holds no master weights")),
    ];
    for (source, message) in cases {
        std::fs::copy(&source, &optim).unwrap();
        std::fs::copy(sum(&source), sum(&optim)).unwrap();
        let Output { status, stdout, stderr } = dsa_cli(&["train", "--out", &setup.path("run"), "--resume"]).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&stdout), String::from_utf8_lossy(&stderr));
        assert!(!status.success() && text.contains(&format!("error: {message}")) && !text.contains("panicked"), "{}:\n{text}", source.display());
    }
    std::fs::write(&optim, &own.0).unwrap();
    std::fs::write(sum(&optim), &own.1).unwrap();
    let resumed = setup.resume("run");
    assert!(resumed.contains("after step 1"), "{resumed}");
    println!("{:.1} s", start.elapsed().as_secs_f64());
}

/// A pseudo-terminal whose master side is drained by a thread (Burn's TUI writes to it).
struct Pty {
    master: std::fs::File,
    slave: std::fs::File,
    output: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Pty {
    fn open() -> Self {
        use std::os::fd::FromRawFd;
        let (mut master, mut slave) = (0, 0);
        let size = libc::winsize { ws_row: 40, ws_col: 120, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: openpty writes two new descriptors, owned by the files below.
        assert_eq!(unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) }, 0, "openpty: {}", std::io::Error::last_os_error());
        let (master, slave) = unsafe { (std::fs::File::from_raw_fd(master), std::fs::File::from_raw_fd(slave)) };
        let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (mut reader, sink) = (master.try_clone().unwrap(), output.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = std::io::Read::read(&mut reader, &mut buf) {
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Self { master, slave, output }
    }

    /// Runs `command` with the terminal as its controlling terminal, stdin and stdout.
    fn spawn(&self, mut command: Command) -> std::process::Child {
        use std::os::unix::process::CommandExt;
        command.stdin(self.slave.try_clone().unwrap()).stdout(self.slave.try_clone().unwrap());
        // SAFETY: setsid and ioctl are async-signal-safe; stdin is the terminal by now.
        unsafe {
            command.pre_exec(|| match libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                true => Err(std::io::Error::last_os_error()),
                false => Ok(()),
            });
        }
        command.spawn().unwrap()
    }

    /// The terminal's settings.
    fn settings(&self) -> libc::termios {
        use std::os::fd::AsRawFd;
        let mut t = std::mem::MaybeUninit::<libc::termios>::uninit();
        // SAFETY: tcgetattr fills `t` when it returns 0.
        assert_eq!(unsafe { libc::tcgetattr(self.slave.as_raw_fd(), t.as_mut_ptr()) }, 0);
        unsafe { t.assume_init() }
    }

    /// What the terminal showed, its escape sequences dropped (roughly).
    fn screen(&self) -> String {
        let bytes = self.output.lock().unwrap().clone();
        String::from_utf8_lossy(&bytes).chars().filter(|c| !c.is_control() || *c == '\n').collect()
    }
}

/// Under Burn's TUI (stdout a terminal, which puts it in raw mode), keyboard Ctrl-C and the
/// TUI's own "stop the training" (`q`, then `s`) end `train` as SIGINT does: the step in
/// progress finishes, a checkpoint of it is written, the exit status is 130 (before,
/// Ctrl-C was an ignored key press and `q`, `s` ended the run without a checkpoint of the
/// steps since the last one, as if complete). A second Ctrl-C exits at once, leaving the
/// terminal as it was before the TUI.
#[test]
fn ctrl_c_or_stop_under_the_tui_finish_the_step_and_write_a_checkpoint() {
    let start = Instant::now();
    let setup = Setup::new();
    for (out, keys) in [("ctrl-c", &["\x03"][..]), ("stop", &["qs"]), ("twice", &["\x03", "\x03"])] {
        let pty = Pty::open();
        let cooked = pty.settings();
        let mut child = pty.spawn(setup.train(out, 1000, 3, &[]));
        let run = setup.temp.path().join(out);
        let deadline = Instant::now() + Duration::from_secs(300);
        while latest_checkpoint(&run).is_none() {
            assert!(Instant::now() < deadline && child.try_wait().unwrap().is_none(), "{out}: no checkpoint:\n{}", pty.screen());
            std::thread::sleep(Duration::from_millis(20));
        }
        for key in keys {
            std::io::Write::write_all(&mut &pty.master, key.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(300));
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("{out}: {keys:?} did not end the run:\n{}", pty.screen());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert_eq!(status.code(), Some(130), "{out}: {stderr}\n{}", pty.screen());
        let after = pty.settings();
        assert_eq!((after.c_lflag, after.c_iflag, after.c_oflag), (cooked.c_lflag, cooked.c_iflag, cooked.c_oflag), "{out}: the terminal was left in other modes");
        if keys.len() == 2 {
            assert!(!stderr.contains("interrupted after step") && !stderr.contains("panicked"), "{out}: {stderr}");
            continue;
        }
        let line = stderr.lines().find(|l| l.starts_with("interrupted after step")).unwrap_or_else(|| panic!("{out}: no interruption message:\n{stderr}"));
        let step: usize = line["interrupted after step ".len()..].split(' ').next().unwrap().parse().unwrap();
        assert!(step >= 3 && step < 1000 && line.contains("of 1000: checkpoint written in"), "{out}: {line}");
        let epoch = latest_checkpoint(&run).unwrap();
        let epochs = std::fs::read_to_string(run.join("epochs.json")).unwrap();
        println!("{out}: interrupted after step {step}, checkpoint {epoch}, epochs {}", epochs.split_whitespace().collect::<String>());
    }
    println!("{:.1} s", start.elapsed().as_secs_f64());
}

/// How a phase of [`a_run_killed_at_random_points_resumes_to_the_uninterrupted_weights`]
/// ends its run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// SIGKILL after a random step.
    Kill,
    /// SIGKILL while a checkpoint file is in place but its checksum not yet written.
    KillInWrite,
    /// SIGINT in the middle of an epoch: the step finishes, a checkpoint of it is written,
    /// the exit status is 130.
    Interrupt,
    /// Two SIGINTs while a checkpoint is being written: exits at once with 130.
    InterruptTwiceInWrite,
}

/// A `dsa-cli train` child whose stdout lines arrive on a channel and whose stderr is
/// collected.
struct Child {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl Child {
    fn spawn(mut command: Command) -> Self {
        let mut child = command.spawn().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut stderr, &mut text).ok();
            text
        });
        Self { child, lines, stderr }
    }

    /// Waits for a stdout line that `wanted` accepts (five minutes at most); the lines
    /// before it are returned too.
    fn wait_for(&self, mut wanted: impl FnMut(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut seen = Vec::new();
        loop {
            let line = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())).unwrap_or_else(|e| panic!("no awaited line ({e}) after {seen:?}"));
            seen.push(line);
            if wanted(seen.last().unwrap()) {
                return seen;
            }
        }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    /// Waits for the exit; the status and stderr.
    fn finish(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().unwrap();
        (status, self.stderr.join().unwrap())
    }
}

/// The step of a progress line `[train] step N/…`.
fn step_of(line: &str) -> Option<usize> {
    line.strip_prefix("[train] step ")?.split('/').next()?.parse().ok()
}

/// A run stopped at random points ends with exactly the parameters of the uninterrupted
/// run: SIGKILL after five random steps, one of them while a checkpoint file is in place
/// without its checksum (the next resume names it and uses the checkpoint before), SIGINT
/// in the middle of an epoch (the step in progress finishes, is checkpointed and resumed
/// from, exit status 130) and two SIGINTs while a checkpoint is being written (exit 130 at
/// once). While a run holds the directory, a second `train --resume` fails naming the lock
/// and the holder. Generation from the result is fixed by the seed.
#[test]
fn a_run_killed_at_random_points_resumes_to_the_uninterrupted_weights() {
    use rand::{Rng, SeedableRng};
    const STEPS: usize = 30;
    const EVERY: usize = 3;
    let start = Instant::now();
    let setup = Setup::new();
    let status = setup.train("full", STEPS, EVERY, &[]).stdout(Stdio::null()).status().unwrap();
    assert!(status.success());
    let mut rng = rand::rngs::StdRng::seed_from_u64(27);
    let marker = setup.temp.path().join("paused");
    let run = setup.path("killed");
    // Where the next resume must continue from, when known, and a checkpoint file it must
    // reject.
    let (mut resume_at, mut rejected): (Option<usize>, Option<String>) = (Some(0), None);
    let stops = [Stop::Kill, Stop::KillInWrite, Stop::Kill, Stop::Interrupt, Stop::Kill, Stop::InterruptTwiceInWrite, Stop::Kill];
    for (i, stop) in stops.into_iter().enumerate() {
        let expect_rejected = rejected.take();
        let mut command = match i {
            0 => setup.train("killed", STEPS, EVERY, &[]),
            _ => {
                let mut command = dsa_cli(&["train", "--out", &run, "--resume"]);
                command.stdout(Stdio::piped()).stderr(Stdio::piped());
                command
            }
        };
        std::fs::remove_file(&marker).ok();
        if matches!(stop, Stop::KillInWrite | Stop::InterruptTwiceInWrite) {
            command.env(PAUSE_IN_WRITE_ENV, &marker);
        }
        let child = Child::spawn(command);
        // The step the run starts after.
        let first = match i {
            0 => 0,
            _ => {
                let lines = child.wait_for(|l| l.starts_with("resuming "));
                let line = lines.last().unwrap();
                let at: usize = line.rsplit(' ').next().unwrap().parse().unwrap();
                if let Some(expected) = resume_at {
                    assert_eq!(at, expected, "{stop:?}: {line}");
                }
                at
            }
        };
        let target = first + rng.random_range(1..=2 * EVERY);
        // The checkpoint file the process is paused in the middle of writing.
        let paused_file = || {
            let deadline = Instant::now() + Duration::from_secs(300);
            while !marker.exists() {
                assert!(Instant::now() < deadline, "{stop:?}: no checkpoint write");
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(20));
            Some(std::fs::read_to_string(&marker).unwrap()).filter(|f| f.contains("/checkpoint/"))
        };
        let (status, stderr) = match stop {
            Stop::Kill => {
                child.wait_for(|l| step_of(l).is_some_and(|s| s >= target));
                if i == 0 {
                    // The directory is locked by this run.
                    let Output { status, stderr, .. } = dsa_cli(&["train", "--out", &run, "--resume"]).output().unwrap();
                    let stderr = String::from_utf8_lossy(&stderr);
                    let lock = format!("error: {run}/train.lock is held by process {}: another `dsa-cli train` is running on {run}", child.child.id());
                    assert!(!status.success() && stderr.contains(&lock), "{stderr}");
                }
                child.signal(libc::SIGKILL);
                child.finish()
            }
            Stop::KillInWrite => {
                rejected = paused_file();
                child.signal(libc::SIGKILL);
                child.finish()
            }
            Stop::InterruptTwiceInWrite => {
                rejected = paused_file();
                child.signal(libc::SIGINT);
                std::thread::sleep(Duration::from_millis(300));
                let second = Instant::now();
                child.signal(libc::SIGINT);
                let (status, stderr) = child.finish();
                assert_eq!(status.code(), Some(130), "{stderr}");
                assert!(second.elapsed() < Duration::from_secs(20), "the second SIGINT took {:?} to end the run", second.elapsed());
                (status, stderr)
            }
            Stop::Interrupt => {
                // After a step in the middle of an epoch.
                let target = (target..).find(|s| s % EVERY == 1).unwrap();
                let lines = child.wait_for(|l| step_of(l).is_some_and(|s| s >= target));
                let seen = step_of(lines.last().unwrap()).unwrap();
                child.signal(libc::SIGINT);
                let (status, stderr) = child.finish();
                assert_eq!(status.code(), Some(130), "{stderr}");
                let line = stderr.lines().find(|l| l.starts_with("interrupted after step")).unwrap_or_else(|| panic!("no interruption message:\n{stderr}"));
                let step: usize = line["interrupted after step ".len()..].split(' ').next().unwrap().parse().unwrap();
                assert!((seen..=seen + 2).contains(&step), "SIGINT after step {seen} checkpointed step {step}");
                assert!(line.ends_with(&format!("of {STEPS}: checkpoint written in {run}/checkpoint; continue with `dsa-cli train --out {run} --resume`")), "{line}");
                println!("SIGINT after step {seen}: checkpoint of step {step}");
                resume_at = Some(step);
                (status, stderr)
            }
        };
        assert!(!status.success() && !stderr.contains("panicked"), "{stop:?}: the run ended by itself:\n{stderr}");
        if stop != Stop::Interrupt {
            resume_at = None;
        }
        if let Some(file) = expect_rejected {
            assert!(stderr.contains(&format!("{file} is damaged: it has no checksum file")), "{file} not rejected:\n{stderr}");
            println!("  the resume rejected {file}");
        }
        println!("{stop:?}, resumed after step {first}");
    }
    let resumed = setup.resume("killed");
    assert!(rejected.is_none() && !resumed.contains("panicked"), "{resumed}");
    assert_same_parameters(&setup.parameters("full"), &setup.parameters("killed"), "the run stopped at random points");

    let model = setup.path("full");
    let generate = |seed: &str| run_ok(&["generate", "--model", &model, "--max-tokens", "24", "--temperature", "1", "--seed", seed, "The"]);
    let first = generate("3");
    assert!(first.starts_with("The") && first.len() > 10, "{first}");
    assert_eq!(first, generate("3"), "the same seed gave different text");
    assert_ne!(first, generate("4"), "another seed gave the same text");
    println!("{:.1} s", start.elapsed().as_secs_f64());
}
