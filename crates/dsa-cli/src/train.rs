//! Training with Burn's learner: the dense warm-up of the lightning indexers, sparse
//! training, and a dense baseline trained the same way.
//!
//! [`LanguageModel`] wraps a [`DeepSeekV32`] for the learner (its [`TrainStep`] and
//! [`InferenceStep`]); [`train`] sets up the data loaders, AdamW with gradient clipping,
//! LR warm-up + cosine, the metrics, crash-safe checkpoints every
//! [`TrainSettings::checkpoint_every`] steps and `--resume`, and runs the learner, on one
//! device or data-parallel on several.
//!
//! # Several devices
//!
//! Data-parallel training runs on Burn's multi-device strategy
//! ([`ExecutionStrategy::MultiDevice`] with [`MultiDeviceOptim::OptimMainDevice`]): the
//! learner keeps the model and the optimizer on the first device, each step sends the model
//! to every device, each device computes the gradient of its shard of the batch (the
//! [`StepLoader`] cuts every batch into equal shards, one per device), and the gradients
//! are moved to the first device and summed there before the one optimizer step. Each
//! device back-propagates its shard's mean loss divided by the number of devices, so that
//! the sum is the gradient of the whole batch's mean loss: N devices follow the loss of one
//! (up to float rounding), gradient clipping and AdamW included. The learner records one
//! loss per device and step (of its shard), their mean the step's loss.
//!
//! Burn's other data-parallel strategy, `DistributedDataParallel` (feature `ddp`, an
//! all-reduce of the gradients through `DistributedBackend`), cannot serve here: Burn's
//! `distributed` feature makes `Autodiff<B>` an `AutodiffBackend` only for backends that
//! implement `DistributedBackend`, which ndarray does not, so with it the CPU build (and
//! CI's test of several devices) would not compile.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataset::InMemDataset;
use burn::lr_scheduler::composed::ComposedLrSchedulerConfig;
use burn::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::lr_scheduler::linear::LinearLrSchedulerConfig;
use burn::module::{Content, Module, ModuleDisplay, ModuleMapper, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::Optimizer;
use burn::tensor::backend::{AutodiffBackend, Backend, Device as _};
use burn::tensor::{DType, Tensor};
use burn::train::checkpoint::KeepLastNCheckpoints;
use burn::train::metric::{LearningRateMetric, LossMetric, PerplexityMetric};
use burn::train::metric::store::EventStoreClient;
use burn::train::{
    EarlyStoppingStrategy, ExecutionStrategy, InferenceStep, Learner, MultiDeviceOptim, SupervisedTraining, TrainOutput, TrainStep,
};
use dsa_burn::{AttentionMode, DsaBackend, FusedAdamWConfig, MasterWeights};
use dsa_model::mtp::mtp_loss;
use dsa_model::DeepSeekV32;
use serde::{Deserialize, Serialize};

use crate::batcher::{TokenBatch, TokenBatcher};
use crate::checkpoint::{checkpoint_file, read_json, refuse_checkpoints, scan_checkpoints, write_json, RunError, RunRecorder};
use crate::weights::check_checkpoint;
use crate::interrupt::{self, Interrupted};
use crate::loader::{EpochPlan, SharedPlan, StepLoader, EPOCHS_FILE};
use crate::metrics::{LmOutput, Stat, StepMetric};
use crate::progress::ProgressLines;

/// What a training run optimises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Dense warm-up: dense attention; the loss is the indexers' KL against the dense
    /// attention, so only the indexers learn (everything else gets no gradient).
    Warmup,
    /// Sparse training: top-k attention; loss = LM cross-entropy + the indexers' KL over
    /// their selection, on detached inputs (the model learns from the LM loss only, the
    /// indexers from their KL only), + λ · the MTP loss for a model with MTP layers.
    Sparse,
    /// Dense baseline: dense attention, trained on the LM loss (and the MTP loss) like
    /// [`Stage::Sparse`]; the indexers take no part (the indexer KL reads 0) and are left
    /// to [`Stage::Warmup`].
    Dense,
}

impl Stage {
    /// The attention mode of the stage.
    pub fn mode(self) -> AttentionMode {
        match self {
            Stage::Sparse => AttentionMode::Sparse,
            Stage::Warmup | Stage::Dense => AttentionMode::Dense,
        }
    }
}

/// A [`DeepSeekV32`] as Burn's learner trains it in one [`Stage`].
#[derive(Module, Debug)]
#[module(custom_display)]
pub struct LanguageModel<B: Backend> {
    /// The model.
    pub model: DeepSeekV32<B>,
    #[module(skip)]
    stage: Stage,
    #[module(skip)]
    mtp_weight: f64,
    /// Devices the batch is split over: each back-propagates its shard's loss / `devices`.
    #[module(skip)]
    devices: usize,
}

/// The MTP loss weight λ of DeepSeek-V3 (§4.2: 0.3 for most of the training).
pub const DEFAULT_MTP_WEIGHT: f64 = 0.3;

impl<B: DsaBackend> LanguageModel<B> {
    /// Wraps `model` for training in `stage`.
    ///
    /// In [`Stage::Warmup`] only the indexers' parameters require gradients: the frozen rest
    /// of the model then records no autodiff graph (its LM loss is only reported; a graph
    /// that no backward pass consumes would stay in memory, about 5 GB per step for the
    /// `small` preset at 8K tokens). In the other stages every parameter does.
    pub fn new(model: DeepSeekV32<B>, stage: Stage) -> Self {
        let model = model.map(&mut RequireGrad { indexers_only: stage == Stage::Warmup, depth: 0 });
        Self { model: model.with_attention_mode(stage.mode()), stage, mtp_weight: DEFAULT_MTP_WEIGHT, devices: 1 }
    }

    /// The weight λ of the MTP loss (default [`DEFAULT_MTP_WEIGHT`]; 0: the MTP layers are
    /// not run). Without MTP layers there is no MTP loss.
    pub fn with_mtp_weight(self, mtp_weight: f64) -> Self {
        Self { mtp_weight, ..self }
    }

    /// For data-parallel training over `devices` devices, each with an equal shard of the
    /// batch: the gradient of a step is its loss's divided by `devices`, so that the sum of
    /// the devices' gradients is that of the whole batch's mean loss (see the
    /// [module](self) docs). The reported loss is the shard's.
    pub fn with_devices(self, devices: usize) -> Self {
        Self { devices: devices.max(1), ..self }
    }

    /// The stage's loss and metrics on `batch`. With MTP layers and a positive weight, the
    /// MTP modules run too: their blocks' indexer KL joins the indexers' (warm-up and
    /// sparse stages), and λ · [`mtp_loss`] joins the loss (sparse and dense stages).
    pub fn forward_step(&self, batch: TokenBatch<B>) -> LmOutput<B> {
        let mtp = !self.model.mtp_layers().is_empty() && self.mtp_weight > 0.0;
        let (logits, indexer_kl, mtp_logits) = match self.stage {
            Stage::Dense => {
                let device = batch.inputs.device();
                let hidden = self.model.forward_hidden(batch.inputs.clone());
                let mtp_logits = if mtp { self.model.mtp_logits(hidden.clone(), batch.inputs) } else { Vec::new() };
                (self.model.logits(hidden), Tensor::zeros([1], &device), mtp_logits)
            }
            Stage::Warmup | Stage::Sparse if mtp => self.model.forward_train_mtp(batch.inputs, self.stage.mode()),
            Stage::Warmup | Stage::Sparse => {
                let (logits, indexer_kl) = self.model.forward_train(batch.inputs, self.stage.mode());
                (logits, indexer_kl, Vec::new())
            }
        };
        let mtp_loss = mtp_loss(mtp_logits, batch.targets.clone());
        let [b, t, vocab] = logits.dims();
        let logits = logits.reshape([b * t, vocab]);
        let targets = batch.targets.reshape([b * t]);
        let lm_loss = CrossEntropyLossConfig::new().init(&logits.device()).forward(logits.clone(), targets.clone());
        // The layers' KL is summed over query tokens: report and train on its mean.
        let indexer_kl = indexer_kl.div_scalar(t as f32);
        let loss = match (self.stage, mtp_loss) {
            (Stage::Warmup, _) => indexer_kl.clone(),
            (Stage::Sparse | Stage::Dense, None) => lm_loss.clone() + indexer_kl.clone(),
            (Stage::Sparse | Stage::Dense, Some(mtp)) => lm_loss.clone() + indexer_kl.clone() + mtp.mul_scalar(self.mtp_weight),
        };
        LmOutput { loss, lm_loss: lm_loss.detach(), indexer_kl: indexer_kl.detach(), logits: logits.detach(), targets }
    }
}

/// Sets whether each float parameter requires gradients: all of them, or only those inside
/// an `indexer` module (`depth` counts the modules entered from one).
struct RequireGrad {
    indexers_only: bool,
    depth: usize,
}

impl<B: Backend> ModuleMapper<B> for RequireGrad {
    fn enter_module(&mut self, name: &str, _container: &str) {
        if self.depth > 0 || name == "indexer" {
            self.depth += 1;
        }
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.depth = self.depth.saturating_sub(1);
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.set_require_grad(!self.indexers_only || self.depth > 0)
    }
}

/// One line (the learner's summary prints the model): the stage and the parameter count,
/// not the whole module tree.
impl<B: Backend> ModuleDisplay for LanguageModel<B> {
    fn custom_content(&self, content: Content) -> Option<Content> {
        let layers = self.model.layers.len();
        content.add_formatted(&format!("DeepSeek-V3.2, {layers} layers, {} parameters, {:?} stage", self.num_params(), self.stage)).optional()
    }
}

impl<B: AutodiffBackend + DsaBackend> TrainStep for LanguageModel<B>
where
    B::InnerBackend: DsaBackend,
{
    type Input = TokenBatch<B>;
    type Output = LmOutput<B>;

    fn step(&self, batch: TokenBatch<B>) -> TrainOutput<LmOutput<B>> {
        let out = self.forward_step(batch);
        let grads = out.loss.clone().div_scalar(self.devices as f32).backward();
        TrainOutput::new(self, grads, LmOutput { loss: out.loss.detach(), ..out })
    }
}

impl<B: DsaBackend> InferenceStep for LanguageModel<B> {
    type Input = TokenBatch<B>;
    type Output = LmOutput<B>;

    fn step(&self, batch: TokenBatch<B>) -> LmOutput<B> {
        self.forward_step(batch)
    }
}

/// The settings of a training run (saved in the run directory for `--resume`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    /// What is trained.
    pub stage: Stage,
    /// Optimizer steps.
    pub steps: usize,
    /// Sequences per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Steps of linear LR warm-up before the cosine decay.
    pub lr_warmup_steps: usize,
    /// The cosine decays the LR to `lr · min_lr_ratio` at the last step.
    pub min_lr_ratio: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Each parameter's gradient is clipped to this L2 norm.
    pub grad_clip: f64,
    /// A checkpoint is written every this many steps (one learner epoch).
    pub checkpoint_every: usize,
    /// A progress line every this many steps (without a terminal).
    pub log_every: usize,
    /// Seed of the data order.
    pub seed: u64,
    /// Weight λ of the MTP loss for a model with MTP layers (0: not trained).
    #[serde(default = "default_mtp_weight")]
    pub mtp_weight: f64,
}

fn default_mtp_weight() -> f64 {
    DEFAULT_MTP_WEIGHT
}

impl TrainSettings {
    /// Defaults of `stage` for small models: the warm-up at the paper's 1e-3, training at
    /// 1e-3 (the paper's 7.3e-6 suits a 671B model after 2T tokens, not a small one).
    pub fn new(stage: Stage, steps: usize, batch_size: usize) -> Self {
        Self {
            stage,
            steps,
            batch_size,
            lr: 1e-3,
            lr_warmup_steps: (steps / 10).min(100),
            min_lr_ratio: 0.1,
            weight_decay: 0.01,
            grad_clip: 1.0,
            checkpoint_every: 100,
            log_every: 10,
            seed: 0,
            mtp_weight: DEFAULT_MTP_WEIGHT,
        }
    }

    /// Checks the values, naming the first bad one as its command-line flag.
    pub fn validate(&self) -> Result<(), RunError> {
        let positive = [("--steps", self.steps), ("--batch-size", self.batch_size), ("--checkpoint-every", self.checkpoint_every), ("--log-every", self.log_every)];
        if let Some((flag, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{flag} must be at least 1").into());
        }
        if !(self.lr > 0.0 && self.lr <= 1.0) {
            return Err(format!("--lr {} must be in (0, 1]", self.lr).into());
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return Err(format!("the minimum LR ratio {} must be in [0, 1]", self.min_lr_ratio).into());
        }
        if self.grad_clip.is_nan() || self.grad_clip <= 0.0 {
            return Err(format!("--grad-clip {} must be positive", self.grad_clip).into());
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(format!("--weight-decay {} must be a finite number ≥ 0", self.weight_decay).into());
        }
        if !(self.mtp_weight.is_finite() && self.mtp_weight >= 0.0) {
            return Err(format!("--mtp-weight {} must be a finite number ≥ 0", self.mtp_weight).into());
        }
        Ok(())
    }
}

/// Training and validation sequences of `seq_len + 1` tokens.
#[derive(Clone, Debug)]
pub struct TrainData {
    /// Training sequences.
    pub train: Vec<Vec<u32>>,
    /// Validation sequences (run after each learner epoch).
    pub valid: Vec<Vec<u32>>,
}

/// AdamW with gradient-norm clipping (per parameter tensor, as Burn's), stepping f32 master
/// weights ([`MasterWeights`]): with a bf16 model, updates as small as the sparse stage's
/// learning rate still reach its weights (for an f32 model the masters are the weights
/// themselves). The update is [`FusedAdamW`](dsa_burn::FusedAdamW)'s: Burn's AdamW and
/// clipping, as one fused kernel per parameter tensor on CubeCL (after the gradient's norm)
/// instead of about twenty.
pub fn optimizer<B>(weight_decay: f64, grad_clip: f64) -> impl Optimizer<LanguageModel<B>, B>
where
    B: AutodiffBackend + DsaBackend,
    B::InnerBackend: DsaBackend,
{
    let adamw = FusedAdamWConfig::new()
        .with_weight_decay(weight_decay as f32)
        .with_grad_clip(Some(grad_clip as f32))
        .init::<B, LanguageModel<B>>();
    MasterWeights::new(adamw, DType::F32)
}

/// Trains `model` (on `devices[0]`) on `data` as `settings` say, with Burn's learner
/// writing to `run_dir`; data-parallel when `devices` names several (the batch size a
/// multiple of their number; see the [module](self) docs).
/// With `resume`, continues from the newest complete checkpoint in `run_dir` (the loss
/// trajectory is that of an uninterrupted run; damaged checkpoints are named and skipped);
/// without, `run_dir` must hold no checkpoints. Returns the trained model.
///
/// After SIGINT (with [`interrupt::install`]; under Burn's TUI also Ctrl-C or its "stop the
/// training", see [`interrupt::tui_renderer`]) the step in progress is finished, a
/// checkpoint of it written, and the run ends with [`Interrupted`].
pub fn train<B>(
    model: DeepSeekV32<B>,
    data: TrainData,
    settings: &TrainSettings,
    run_dir: &Path,
    resume: bool,
    devices: &[B::Device],
) -> Result<DeepSeekV32<B::InnerBackend>, RunError>
where
    B: AutodiffBackend + DsaBackend,
    B::InnerBackend: DsaBackend,
{
    settings.validate()?;
    check_devices::<B>(settings.batch_size, devices)?;
    let device = &devices[0];
    if data.train.is_empty() || data.valid.is_empty() {
        return Err("no training or validation sequences".into());
    }
    let checkpoint = match resume {
        true => {
            let scan = scan_checkpoints(run_dir);
            for skipped in &scan.skipped {
                eprintln!("warning: not resuming from {skipped}");
            }
            Some(scan.latest.ok_or_else(|| format!("--resume: {} holds no complete checkpoint", run_dir.display()))?)
        }
        false => {
            refuse_checkpoints(run_dir)?;
            None
        }
    };
    let layers = model.layers.len();
    let model = LanguageModel::new(model.fork(device), settings.stage).with_mtp_weight(settings.mtp_weight).with_devices(devices.len());
    if let Some(epoch) = checkpoint {
        // Burn's learner would load records of other shapes, or another run's optimizer
        // state, into a wrong model (or panic).
        check_checkpoint::<B, _>(&checkpoint_file(run_dir, "model", epoch), &checkpoint_file(run_dir, "optim", epoch), &model, layers)?;
    }
    let s = settings;
    let plan = epoch_plan(s, run_dir, resume)?;
    let loader_train = StepLoader::<B>::new(data.train, s.batch_size, devices.len(), s.seed, plan.clone(), checkpoint.map_or(1, |e| e + 1), device.clone());
    let steps_done = loader_train.steps_done();
    let num_epochs = plan.get().num_epochs();
    let loader_valid = DataLoaderBuilder::<B::InnerBackend, _, _>::new(TokenBatcher)
        .batch_size(s.batch_size)
        .build(InMemDataset::new(data.valid));

    let optim = optimizer::<B>(s.weight_decay, s.grad_clip);
    let mut schedule = ComposedLrSchedulerConfig::new();
    if s.lr_warmup_steps > 0 {
        schedule = schedule.linear(LinearLrSchedulerConfig::new(1.0 / s.lr_warmup_steps as f64, 1.0, s.lr_warmup_steps));
    }
    let schedule = schedule
        .cosine(CosineAnnealingLrSchedulerConfig::new(s.lr, s.steps).with_min_lr(s.lr * s.min_lr_ratio))
        .init()
        .map_err(|e| format!("learning-rate schedule: {e}"))?;

    let mut training = SupervisedTraining::new(run_dir, Arc::new(loader_train), loader_valid)
        .metric_train_numeric(LossMetric::new())
        .metric_valid_numeric(LossMetric::new())
        .metric_train_numeric(StepMetric::new(Stat::LmLoss))
        .metric_valid_numeric(StepMetric::new(Stat::LmLoss))
        .metric_train_numeric(PerplexityMetric::new())
        .metric_valid_numeric(PerplexityMetric::new())
        .metric_train_numeric(StepMetric::new(Stat::Throughput))
        .metric_train_numeric(LearningRateMetric::new())
        .with_file_checkpointer(RunRecorder::default())
        .with_checkpointing_strategy(KeepLastNCheckpoints::new(2))
        .early_stopping(StopOnInterrupt)
        .num_epochs(num_epochs)
        .with_training_strategy(match devices {
            [one] => ExecutionStrategy::SingleDevice(one.clone()),
            _ => ExecutionStrategy::MultiDevice(devices.to_vec(), MultiDeviceOptim::OptimMainDevice),
        }.into())
        .summary();
    if s.stage != Stage::Dense {
        training = training.metric_train_numeric(StepMetric::new(Stat::IndexerKl)).metric_valid_numeric(StepMetric::new(Stat::IndexerKl));
    }
    if let Some(epoch) = checkpoint {
        println!("resuming {} after step {}", run_dir.display(), plan.get().end(epoch));
        training = training.checkpoint(epoch);
    }
    let running = interrupt::Training::start();
    training = match std::io::stdout().is_terminal() {
        true => training.renderer(interrupt::tui_renderer(checkpoint)),
        false => training.renderer(ProgressLines::new(plan.clone(), s.log_every, devices.len())),
    };
    let result = training.launch(Learner::new(model, optim, schedule));
    drop(result.renderer);
    let done = steps_done.load(Ordering::SeqCst);
    if interrupt::requested() && done < s.steps {
        return Err(Box::new(Interrupted { step: done, steps: s.steps, run_dir: run_dir.to_path_buf() }));
    }
    drop(running);
    Ok(result.model.model)
}

/// Checks that `devices` (at least one) exist and can share batches of `batch_size`
/// equally.
pub fn check_devices<B: Backend>(batch_size: usize, devices: &[B::Device]) -> Result<(), RunError> {
    if let Some(device) = devices.iter().find(|d| d.to_id().index_id as usize >= B::device_count(d.to_id().type_id)) {
        return Err(format!("--devices: there is no {device:?} ({} devices of its kind)", B::device_count(device.to_id().type_id)).into());
    }
    match devices.len() {
        0 => Err("no device to train on".into()),
        n if !batch_size.is_multiple_of(n) => {
            Err(format!("--batch-size {batch_size} does not split into equal shards over the {n} --devices: use a multiple of {n}").into())
        }
        _ => Ok(()),
    }
}

/// The learner epochs of a run: on `--resume` those recorded in its [`EPOCHS_FILE`] (a
/// run interrupted by SIGINT has epochs that end early), else epochs of
/// [`TrainSettings::checkpoint_every`] steps, recorded there for a later `--resume`.
fn epoch_plan(s: &TrainSettings, run_dir: &Path, resume: bool) -> Result<SharedPlan, RunError> {
    let file = run_dir.join(EPOCHS_FILE);
    let fresh = EpochPlan::new(s.checkpoint_every, s.steps);
    let plan = match resume && file.is_file() {
        true => {
            let plan: EpochPlan = read_json(&file)?;
            if (plan.every, plan.steps) != (fresh.every, fresh.steps) {
                return Err(format!("{} has epochs of {} of {} steps, train.json {} of {}", file.display(), plan.every, plan.steps, fresh.every, fresh.steps).into());
            }
            plan
        }
        false => {
            std::fs::create_dir_all(run_dir).map_err(|e| format!("cannot create {}: {e}", run_dir.display()))?;
            write_json(&file, &fresh)?;
            fresh
        }
    };
    Ok(SharedPlan::new(plan, Some(file)))
}

/// Ends training after the checkpoint of the epoch in which SIGINT arrived (the epoch ends
/// after the step in progress, see [`StepLoader`]).
#[derive(Clone, Debug)]
struct StopOnInterrupt;

impl EarlyStoppingStrategy for StopOnInterrupt {
    fn should_stop(&mut self, _epoch: usize, _store: &EventStoreClient) -> bool {
        interrupt::requested()
    }
}
