//! The training and generation commands of `dsa-cli`: `tokenizer train`, `warmup`,
//! `train [--dense]` and `generate` (their arguments and what they do).

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::backend::{AutodiffBackend, Backend};
use clap::builder::RangedU64ValueParser;
use clap::Args;
use dsa_burn::{AttentionMode, DsaBackend};
use dsa_model::chat::{ChatMessage, PromptFormat, SpecialTokens};
use dsa_model::generation::{check_positions, generate, Generated};
use dsa_model::sampling::{Sampler, SamplingConfig};
use dsa_model::speculative::generate_speculative;
use dsa_model::{DeepSeekV32, DeepSeekV32Config};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{load_model, refuse_checkpoints, read_json, save_model, write_json, RunError, CONFIG_FILE, TOKENIZER_FILE};
use crate::corpus::DataArgs;
use crate::data::{check_seq_len, Document};
use crate::lock::RunLock;
use crate::presets::Preset;
use crate::tokenizer::{TextTokenizer, MIN_VOCAB};
use crate::train::{check_devices, train, Stage, TrainSettings};

/// Settings file of a run directory.
const SETTINGS_FILE: &str = "train.json";

/// `dsa-cli tokenizer train`.
#[derive(Args, Clone, Debug)]
pub struct TokenizerTrainArgs {
    /// The text to learn from.
    #[command(flatten)]
    pub data: DataArgs,
    /// Vocabulary size (special tokens included).
    #[arg(long, default_value_t = 1024, value_parser = RangedU64ValueParser::<usize>::new().range(MIN_VOCAB..))]
    pub vocab: usize,
    /// Where to write the tokenizer.
    #[arg(long, default_value = "tokenizer.json")]
    pub out: PathBuf,
}

/// Where the model of a training run comes from.
#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// Start from this model: a dsa-cli run directory or a HuggingFace directory (weights,
    /// `config.json`, `tokenizer.json`).
    #[arg(long, conflicts_with_all = ["config", "tokenizer"])]
    pub init: Option<PathBuf>,
    /// Load --init's HuggingFace weights even if they hold NaN or ±inf, or FP8 block scales
    /// that are not finite and positive (rejected by default).
    #[arg(long, requires = "init")]
    pub allow_nonfinite: bool,
    /// Size of a new model.
    #[arg(long = "model", value_enum, default_value_t = Preset::Tiny)]
    pub preset: Preset,
    /// Configuration (`config.json`) of a new model, instead of a preset.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Tokenizer (`tokenizer.json`) of a new model; without it one is trained on the data.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Vocabulary of a tokenizer trained on the data.
    #[arg(long, default_value_t = 1024, value_parser = RangedU64ValueParser::<usize>::new().range(MIN_VOCAB..))]
    pub vocab: usize,
    /// Tokens each query attends to in sparse attention (new models; default: the
    /// preset's or config's).
    #[arg(long, conflicts_with = "init", value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub index_topk: Option<usize>,
}

/// Optimisation settings of `warmup` and `train`.
#[derive(Args, Clone, Debug)]
pub struct OptimArgs {
    /// Optimizer steps.
    #[arg(long, default_value_t = 1000)]
    pub steps: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Linear LR warm-up steps before the cosine decay (default: a tenth of the steps, at
    /// most 100).
    #[arg(long)]
    pub lr_warmup_steps: Option<usize>,
    /// Each parameter's gradient is clipped to this L2 norm.
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Write a checkpoint every this many steps.
    #[arg(long, default_value_t = 100)]
    pub checkpoint_every: usize,
    /// Print a progress line every this many steps (when stdout is not a terminal).
    #[arg(long, default_value_t = 10)]
    pub log_every: usize,
    /// Weight λ of the multi-token-prediction loss added to the LM loss for a model with
    /// MTP layers (`num_nextn_predict_layers`; DeepSeek-V3's 0.3); 0 leaves them untrained.
    #[arg(long, default_value_t = crate::train::DEFAULT_MTP_WEIGHT)]
    pub mtp_weight: f64,
    /// Seed of a new model's initial weights and of the data order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl OptimArgs {
    /// The run's settings for `stage`.
    pub fn settings(&self, stage: Stage) -> TrainSettings {
        let defaults = TrainSettings::new(stage, self.steps, self.batch_size);
        TrainSettings {
            lr: self.lr,
            lr_warmup_steps: self.lr_warmup_steps.unwrap_or(defaults.lr_warmup_steps),
            grad_clip: self.grad_clip,
            weight_decay: self.weight_decay,
            checkpoint_every: self.checkpoint_every,
            log_every: self.log_every,
            seed: self.seed,
            mtp_weight: self.mtp_weight,
            ..defaults
        }
    }
}

/// `dsa-cli warmup` and `dsa-cli train`.
#[derive(Args, Clone, Debug)]
pub struct TrainArgs {
    /// Run directory: settings, tokenizer, checkpoints, logs and the final model.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run in --out from its newest checkpoint, with its saved settings (the
    /// other flags are ignored).
    #[arg(long)]
    pub resume: bool,
    /// The model.
    #[command(flatten)]
    pub model: ModelArgs,
    /// The data.
    #[command(flatten)]
    pub data: DataArgs,
    /// The optimisation.
    #[command(flatten)]
    pub optim: OptimArgs,
    /// Train data-parallel on several devices (also with --resume): `cuda:0,cuda:1,…`
    /// (--backend cuda), `cpu,cpu,…` (--backend ndarray: workers sharing the CPU), or a
    /// count N for the backend's first N devices. Every --batch-size batch is split into
    /// equal shards, one per device, so N devices follow the loss of one; the batch size
    /// must be a multiple of N. Default: the backend's default device.
    #[arg(long, value_name = "LIST", value_parser = DeviceList::parse)]
    pub devices: Option<DeviceList>,
}

/// A device named in `--devices`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceName {
    /// `cpu`: the ndarray backend's (one) device.
    Cpu,
    /// `cuda:N`: CUDA device N.
    Cuda(usize),
}

impl std::fmt::Display for DeviceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(index) => write!(f, "cuda:{index}"),
        }
    }
}

/// The value of `--devices`: named devices or a count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceList {
    /// The backend's first N devices (N workers on the CPU for ndarray).
    Count(usize),
    /// These devices, the first one keeping the model and the optimizer.
    Names(Vec<DeviceName>),
}

impl DeviceList {
    /// Parses `--devices`: a count ≥ 1, or names (`cpu`, `cuda:N`) separated by commas,
    /// no CUDA device twice.
    ///
    /// ```
    /// use dsa_cli::commands::{DeviceList, DeviceName};
    /// assert_eq!(DeviceList::parse("cuda:0,cuda:1"), Ok(DeviceList::Names(vec![DeviceName::Cuda(0), DeviceName::Cuda(1)])));
    /// assert_eq!(DeviceList::parse("2"), Ok(DeviceList::Count(2)));
    /// assert!(DeviceList::parse("cuda:0,cuda:0").is_err());
    /// ```
    pub fn parse(value: &str) -> Result<Self, String> {
        if let Ok(count) = value.trim().parse::<usize>() {
            return match count {
                0 => Err("a count of devices must be at least 1".into()),
                n => Ok(Self::Count(n)),
            };
        }
        let mut names = Vec::new();
        for name in value.split(',').map(str::trim) {
            let device = match name.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(index)) => DeviceName::Cuda(index),
                _ if name == "cpu" => DeviceName::Cpu,
                _ => return Err(format!("`{name}` is not a device: expected `cpu`, `cuda:N` or a count, e.g. `cuda:0,cuda:1`")),
            };
            if device != DeviceName::Cpu && names.contains(&device) {
                return Err(format!("`{name}` is named twice"));
            }
            names.push(device);
        }
        Ok(Self::Names(names))
    }

    /// The devices of a backend (`backend`, for errors) whose `i`-th device is `nth(i)` and
    /// whose device of a name is `named` (`None`: not one of this backend's).
    pub fn resolve<D>(&self, backend: &str, nth: impl Fn(usize) -> D, named: impl Fn(DeviceName) -> Option<D>) -> Result<Vec<D>, RunError> {
        match self {
            Self::Count(n) => Ok((0..*n).map(nth).collect()),
            Self::Names(names) => names
                .iter()
                .map(|&name| named(name).ok_or_else(|| format!("--devices: `{name}` is not a device of --backend {backend}").into()))
                .collect(),
        }
    }
}

/// What a run directory's `train.json` records.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RunSettings {
    train: TrainSettings,
    data: DataArgs,
}

/// `dsa-cli tokenizer train`: trains a byte-level BPE on the data and writes it.
pub fn tokenizer_train(args: &TokenizerTrainArgs) -> Result<(), RunError> {
    let docs = args.data.documents()?;
    let tokenizer = TextTokenizer::train(args.data.tokenizer_texts(&docs), args.vocab)?;
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    tokenizer.save(&args.out)?;
    println!("{}: byte-level BPE of {} tokens from {} documents", args.out.display(), tokenizer.vocab_size(), docs.len());
    Ok(())
}

/// `dsa-cli warmup` (`stage` = warm-up) and `dsa-cli train` (sparse or dense): trains on
/// `devices` (data-parallel over several; the model starts on the first) and writes the run
/// directory; returns the trained model with its configuration.
pub fn run_training<B>(stage: Stage, args: &TrainArgs, devices: &[B::Device]) -> Result<(DeepSeekV32Config, DeepSeekV32<B::InnerBackend>), RunError>
where
    B: AutodiffBackend + DsaBackend,
    B::InnerBackend: DsaBackend,
{
    let device = devices.first().ok_or("no device to train on")?;
    let out = &args.out;
    let (lock, settings, data_args, cfg, model, tokenizer, docs) = if args.resume {
        let run: RunSettings = read_json(&out.join(SETTINGS_FILE))?;
        check_devices::<B>(run.train.batch_size, devices)?;
        let lock = RunLock::acquire(out)?;
        let cfg = DeepSeekV32Config::from_file(out.join(CONFIG_FILE))?;
        check_seq_len(run.data.seq_len, cfg.max_position_embeddings)?;
        let tokenizer = TextTokenizer::from_file(out.join(TOKENIZER_FILE))?;
        let docs = run.data.documents()?;
        let model = cfg.init::<B>(device);
        (Some(lock), run.train, run.data, cfg, model, tokenizer, docs)
    } else {
        refuse_checkpoints(out)?;
        let settings = args.optim.settings(stage);
        settings.validate()?;
        check_devices::<B>(settings.batch_size, devices)?;
        let docs = args.data.documents()?;
        // The seed fixes a new model's initial weights as well as the data order.
        B::seed(device, settings.seed);
        let (cfg, model, tokenizer) = new_model::<B>(&args.model, &args.data, &docs, device)?;
        (None, settings, args.data.clone(), cfg, model, tokenizer, docs)
    };
    let data = data_args.sequences(&docs, &tokenizer)?;
    // Held until the run ends: a second `train` on this directory fails at once.
    let _lock = match lock {
        Some(lock) => lock,
        None => {
            std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
            let lock = RunLock::acquire(out)?;
            // Again under the lock: another run may have written some meanwhile.
            refuse_checkpoints(out)?;
            tokenizer.save(out.join(TOKENIZER_FILE))?;
            write_json(&out.join(CONFIG_FILE), &cfg)?;
            write_json(&out.join(SETTINGS_FILE), &RunSettings { train: settings.clone(), data: data_args.clone() })?;
            lock
        }
    };
    println!(
        "{:?} on {} training + {} validation sequences of {} tokens; {} parameters; run directory {}",
        settings.stage,
        data.train.len(),
        data.valid.len(),
        data_args.seq_len,
        cfg.parameter_count().total,
        out.display()
    );
    let start = Instant::now();
    let model = train::<B>(model, data, &settings, out, args.resume, devices)?;
    save_model(out, &model, &cfg)?;
    println!("{:?}: {} steps done in {:.0} s; model saved in {}", settings.stage, settings.steps, start.elapsed().as_secs_f64(), out.display());
    Ok((cfg, model))
}

/// The model of a new run on `docs` (the documents of `data`): from `--init`, or a preset /
/// config file with a given or newly trained tokenizer. Checks `data`'s sequence length
/// against the model's positions before initialising a new model.
fn new_model<B: Backend>(
    args: &ModelArgs,
    data: &DataArgs,
    docs: &[Document],
    device: &B::Device,
) -> Result<(DeepSeekV32Config, DeepSeekV32<B>, TextTokenizer), RunError> {
    if let Some(dir) = &args.init {
        let loaded = load_model::<B>(dir, args.allow_nonfinite, device)?;
        check_seq_len(data.seq_len, loaded.0.max_position_embeddings)?;
        return Ok(loaded);
    }
    let tokenizer = match &args.tokenizer {
        Some(path) => TextTokenizer::from_file(path)?,
        None => {
            println!("training a byte-level BPE tokenizer of {} tokens on {} documents", args.vocab, docs.len());
            TextTokenizer::train(data.tokenizer_texts(docs), args.vocab)?
        }
    };
    let mut cfg = match &args.config {
        Some(path) => DeepSeekV32Config::from_file(path)?,
        None => args.preset.config(tokenizer.vocab_size()),
    };
    if let Some(k) = args.index_topk {
        cfg.index_topk = k;
        cfg.validate()?;
    }
    if tokenizer.vocab_size() > cfg.vocab_size {
        return Err(format!("the tokenizer has {} tokens, the model's vocabulary only {}", tokenizer.vocab_size(), cfg.vocab_size).into());
    }
    check_seq_len(data.seq_len, cfg.max_position_embeddings)?;
    let model = cfg.init::<B>(device);
    Ok((cfg, model, tokenizer))
}

/// `dsa-cli generate`.
#[derive(Args, Clone, Debug)]
pub struct GenerateArgs {
    /// The model: a dsa-cli run directory or a HuggingFace directory with `tokenizer.json`
    /// (the chat template, BOS and stop tokens come from `tokenizer_config.json` and
    /// `generation_config.json` beside it).
    #[arg(long)]
    pub model: PathBuf,
    /// Load HuggingFace weights even if they hold NaN or ±inf, or FP8 block scales that
    /// are not finite and positive (rejected by default).
    #[arg(long)]
    pub allow_nonfinite: bool,
    /// Prompts; without any, the prompt is read from --file or stdin. One prompt is echoed
    /// and its continuation streamed. Several make a batch, streamed as lines `[N]+TEXT`
    /// (prompt N, from 1, gained TEXT; in TEXT a newline is written `\n`, a carriage
    /// return `\r`, a backslash `\\`), then printed whole as lines
    /// `[N] PROMPT+CONTINUATION`.
    pub prompts: Vec<String>,
    /// Read the prompt from this file.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Every non-empty line of --file or stdin is a prompt (a batch).
    #[arg(long)]
    pub lines: bool,
    /// Chat through the checkpoint's chat template (`chat_template.jinja`, or the
    /// `chat_template` of `tokenizer_config.json`). On a terminal: turn after turn, each
    /// reply streamed, the whole conversation re-rendered and prefilled every turn, Ctrl-D
    /// ends. Otherwise stdin is one user turn and the reply is printed.
    #[arg(long, conflicts_with_all = ["prompts", "file", "lines"])]
    pub chat: bool,
    /// A system message opening the --chat conversation.
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// A Jinja chat template file used instead of the checkpoint's (e.g. for
    /// DeepSeek-V3.2, which ships none).
    #[arg(long, requires = "chat")]
    pub chat_template: Option<PathBuf>,
    /// Print each prompt's token ids as fed to the model (chat template and BOS applied)
    /// and the generated ids to stderr.
    #[arg(long)]
    pub print_tokens: bool,
    /// Tokens to generate per prompt.
    #[arg(long, default_value_t = 200, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_tokens: usize,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f32,
    /// Sample among the k most likely tokens only (0: all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Sample among the most likely tokens that make up this probability (1: all).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Seed of the sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Attend densely instead of to the indexer's top-k.
    #[arg(long)]
    pub dense: bool,
    /// Greedy self-speculative decoding with the model's MTP module as the draft (the
    /// sampling flags are ignored): the same tokens as plain greedy decoding, which then
    /// runs too, one prompt at a time; prints the drafts' acceptance rate, both speeds and
    /// the speed-up.
    #[arg(long)]
    pub speculative: bool,
}

/// `dsa-cli generate`: streams the continuation of the prompts, or the replies of a chat,
/// to stdout and the speed to stderr. Generation stops at the tokenizer's end-of-text token
/// and the checkpoint's stop tokens; BOS is put in front of each prompt where
/// `tokenizer_config.json` asks for it.
pub fn run_generate<B: DsaBackend>(args: &GenerateArgs, device: &B::Device) -> Result<(), RunError> {
    let prompts = if args.chat { Vec::new() } else { read_prompts(args)? };
    // Before the model loads: the chat template.
    let mut format = PromptFormat::from_dir(&args.model)?;
    if args.chat {
        if let Some(path) = &args.chat_template {
            format.set_chat_template(read_text(path)?, path.clone());
        }
        format.chat_template().map_err(|e| format!("{e}: --chat needs one (or --chat-template FILE)"))?;
    }
    let (cfg, model, tokenizer) = load_model::<B>(&args.model, args.allow_nonfinite, device)?;
    let special = format.special_tokens(|token| tokenizer.token_id(token))?;
    let mut stop = special.stop.clone();
    if !stop.contains(&tokenizer.eos()) {
        stop.push(tokenizer.eos());
    }
    if args.speculative {
        let mode = if args.dense { AttentionMode::Dense } else { AttentionMode::Sparse };
        let tokens: Vec<Vec<u32>> = prompts.iter().map(|p| special.prompt(tokenizer.encode(p))).collect();
        check_positions(&tokens, args.max_tokens, cfg.max_position_embeddings)
            .map_err(|e| format!("{e} (shorten the prompt or lower --max-tokens)"))?;
        return run_speculative(args, &cfg, &model.with_attention_mode(mode), &tokenizer, &prompts, &tokens, &stop);
    }
    let sampling = SamplingConfig { temperature: args.temperature, top_k: args.top_k, top_p: args.top_p, seed: args.seed };
    // The library names its fields; the user typed the flags.
    let sampler = Sampler::new(sampling).map_err(|e| format!("--{} {}", e.field().replace('_', "-"), e.requirement()))?;
    let mode = if args.dense { AttentionMode::Dense } else { AttentionMode::Sparse };
    let session = Session { model: model.with_attention_mode(mode), mode, max_positions: cfg.max_position_embeddings, tokenizer, special, stop, sampler, args };
    if !args.chat {
        return session.complete(&prompts);
    }
    let mut messages: Vec<ChatMessage> = args.system.iter().map(|s| ChatMessage::new("system", s.as_str())).collect();
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut bytes = Vec::new();
        stdin.lock().read_to_end(&mut bytes)?;
        let turn = String::from_utf8(bytes).map_err(|_| "stdin is not valid UTF-8")?;
        if turn.trim().is_empty() {
            return Err("no user turn on stdin for --chat".into());
        }
        messages.push(ChatMessage::new("user", turn.trim_end_matches('\n')));
        session.reply(&format, &messages)?;
        return Ok(());
    }
    eprintln!("chat with {} (Ctrl-D ends)", args.model.display());
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            eprintln!();
            return Ok(());
        }
        if line.trim().is_empty() {
            continue;
        }
        messages.push(ChatMessage::new("user", line.trim_end_matches('\n')));
        let reply = session.reply(&format, &messages)?;
        messages.push(ChatMessage::new("assistant", reply));
    }
}

/// A loaded model with what `generate` needs around it.
struct Session<'a, B: DsaBackend> {
    model: DeepSeekV32<B>,
    mode: AttentionMode,
    max_positions: usize,
    tokenizer: TextTokenizer,
    special: SpecialTokens,
    /// The checkpoint's stop tokens and the tokenizer's end-of-text token.
    stop: Vec<u32>,
    sampler: Sampler,
    args: &'a GenerateArgs,
}

impl<B: DsaBackend> Session<'_, B> {
    /// Continues `prompts` (text): one streamed after its echo, several streamed as
    /// `[N]+TEXT` lines and then printed whole.
    fn complete(&self, prompts: &[String]) -> Result<(), RunError> {
        let tokens: Vec<Vec<u32>> = prompts.iter().map(|p| self.special.prompt(self.tokenizer.encode(p))).collect();
        let mut out = std::io::stdout().lock();
        let generated = if let [prompt] = prompts {
            self.check(&tokens)?;
            write!(out, "{prompt}")?;
            out.flush()?;
            let generated = self.generate(&tokens, |_, text| write!(out, "{text}").and_then(|()| out.flush()))?;
            writeln!(out)?;
            generated
        } else {
            let generated = self.generate(&tokens, |i, text| writeln!(out, "[{}]+{}", i + 1, text.replace('\\', "\\\\").replace('\n', "\\n").replace('\r', "\\r")))?;
            for (i, (prompt, new)) in prompts.iter().zip(&generated.tokens).enumerate() {
                writeln!(out, "[{}] {prompt}{}", i + 1, self.tokenizer.decode(new))?;
            }
            generated
        };
        self.report(&tokens, &generated);
        Ok(())
    }

    /// Renders `messages` with the chat template, streams the assistant's reply and returns
    /// it (without its stop token).
    fn reply(&self, format: &PromptFormat, messages: &[ChatMessage]) -> Result<String, RunError> {
        let tokens = vec![self.special.prompt(self.tokenizer.encode(&format.render(messages, true)?))];
        let mut out = std::io::stdout().lock();
        let generated = self.generate(&tokens, |_, text| write!(out, "{text}").and_then(|()| out.flush()))?;
        writeln!(out)?;
        self.report(&tokens, &generated);
        Ok(self.tokenizer.decode(&generated.tokens[0]))
    }

    /// Refuses prompts that do not fit the model's positions with --max-tokens.
    fn check(&self, tokens: &[Vec<u32>]) -> Result<(), RunError> {
        check_positions(tokens, self.args.max_tokens, self.max_positions).map_err(|e| format!("{e} (shorten the prompt or lower --max-tokens)").into())
    }

    /// Generates from `tokens` (checked first), handing `show(sequence, text)` each piece
    /// of text as soon as it decodes completely (a multi-byte character may span tokens)
    /// and the rest at the end.
    fn generate(&self, tokens: &[Vec<u32>], mut show: impl FnMut(usize, &str) -> std::io::Result<()>) -> Result<Generated, RunError> {
        self.check(tokens)?;
        if self.args.print_tokens {
            for (i, prompt) in tokens.iter().enumerate() {
                eprintln!("prompt tokens [{}]: {prompt:?}", i + 1);
            }
        }
        let mut shown = vec![String::new(); tokens.len()];
        let mut failed = None;
        let mut new: Vec<Vec<u32>> = vec![Vec::new(); tokens.len()];
        let generated = generate(&self.model, tokens, self.args.max_tokens, self.max_positions, &self.sampler, &self.stop, |i, token| {
            new[i].push(token);
            let text = self.tokenizer.decode(&new[i]);
            if !text.ends_with('\u{FFFD}') && text.len() > shown[i].len() && text.starts_with(shown[i].as_str()) {
                if let Err(e) = show(i, &text[shown[i].len()..]) {
                    failed.get_or_insert(e);
                }
                shown[i] = text;
            }
        })?;
        for (i, (new, shown)) in generated.tokens.iter().zip(&shown).enumerate() {
            let rest = self.tokenizer.decode(new);
            match rest.strip_prefix(shown.as_str()) {
                Some("") | None => {}
                Some(rest) => show(i, rest)?,
            }
        }
        if let Some(e) = failed {
            return Err(e.into());
        }
        if self.args.print_tokens {
            for (i, new) in generated.tokens.iter().enumerate() {
                eprintln!("generated tokens [{}]: {new:?}", i + 1);
            }
        }
        Ok(generated)
    }

    /// The speed line on stderr.
    fn report(&self, tokens: &[Vec<u32>], generated: &Generated) {
        let new_tokens: usize = generated.tokens.iter().map(Vec::len).sum();
        let prompt_tokens: usize = tokens.iter().map(Vec::len).sum();
        eprintln!(
            "{new_tokens} tokens generated for {} prompt(s) ({prompt_tokens} prompt tokens, {:?} attention): prefill {:.2} s, decode {:.2} s, {:.1} tokens/s",
            tokens.len(),
            self.mode,
            generated.prefill.as_secs_f64(),
            generated.decode.as_secs_f64(),
            generated.decode_tokens as f64 / generated.decode.as_secs_f64().max(1e-9)
        );
    }
}

/// `dsa-cli generate --speculative`: for each prompt, speculative decoding, then plain
/// greedy decoding in the same process for the speed-up (the speculative run goes first,
/// so it also pays any first-use kernel compilation of the prefill); prints the text,
/// the acceptance rate and both speeds (new tokens over prefill + decode time) to stderr,
/// and says so if the two outputs differ (only a near-tie of two logits can make them).
fn run_speculative<B: DsaBackend>(
    args: &GenerateArgs,
    cfg: &DeepSeekV32Config,
    model: &DeepSeekV32<B>,
    tokenizer: &TextTokenizer,
    prompts: &[String],
    tokens: &[Vec<u32>],
    stop: &[u32],
) -> Result<(), RunError> {
    if model.mtp_layers().is_empty() {
        return Err(format!("--speculative drafts with the model's MTP module, and {} has none (num_nextn_predict_layers = 0)", args.model.display()).into());
    }
    let greedy = Sampler::new(SamplingConfig::greedy())?;
    let mut out = std::io::stdout().lock();
    for (i, (prompt, ids)) in prompts.iter().zip(tokens).enumerate() {
        let spec = generate_speculative(model, ids, args.max_tokens, cfg.max_position_embeddings, stop, |_| {})?;
        let plain = generate(model, std::slice::from_ref(ids), args.max_tokens, cfg.max_position_embeddings, &greedy, stop, |_, _| {})?;
        writeln!(out, "[{}] {prompt}{}", i + 1, tokenizer.decode(&spec.tokens))?;
        let rate = |n: usize, time: f64| n as f64 / time.max(1e-9);
        let spec_time = (spec.prefill + spec.decode).as_secs_f64();
        let plain_time = (plain.prefill + plain.decode).as_secs_f64();
        eprintln!(
            "[{}] speculative: {} tokens in {} steps, {} of {} drafts accepted ({:.1}%), {:.1} tokens/s; plain greedy: {:.1} tokens/s; speed-up {:.2}x",
            i + 1,
            spec.tokens.len(),
            spec.steps,
            spec.accepted,
            spec.drafted,
            100.0 * spec.acceptance_rate(),
            rate(spec.tokens.len(), spec_time),
            rate(plain.tokens[0].len(), plain_time),
            plain_time / spec_time.max(1e-9)
        );
        if spec.tokens != plain.tokens[0] {
            let at = spec.tokens.iter().zip(&plain.tokens[0]).take_while(|(a, b)| a == b).count();
            eprintln!("[{}] warning: speculative and plain greedy decoding differ from new token {at} on (a near-tie of two logits)", i + 1);
        }
    }
    Ok(())
}

/// The prompts of `generate`: the arguments, else --file or stdin (one, or one per line
/// with --lines).
fn read_prompts(args: &GenerateArgs) -> Result<Vec<String>, RunError> {
    if !args.prompts.is_empty() {
        return Ok(args.prompts.clone());
    }
    let text = match &args.file {
        Some(path) => read_text(path)?,
        None => {
            let mut bytes = Vec::new();
            std::io::stdin().read_to_end(&mut bytes)?;
            String::from_utf8(bytes).map_err(|_| "stdin is not valid UTF-8")?
        }
    };
    let prompts: Vec<String> = match args.lines {
        true => text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect(),
        false => vec![text.trim_end_matches('\n').to_string()],
    };
    if prompts.iter().all(|p| p.trim().is_empty()) {
        return Err("no prompt given (an argument, --file, or stdin)".into());
    }
    Ok(prompts)
}

fn read_text(path: &Path) -> Result<String, RunError> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    String::from_utf8(bytes).map_err(|_| format!("{} is not valid UTF-8", path.display()).into())
}
