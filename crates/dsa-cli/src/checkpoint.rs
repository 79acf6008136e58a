//! Run directories and crash-safe checkpoints.
//!
//! A run directory written by `dsa-cli warmup` / `train` holds `config.json` (the model),
//! `tokenizer.json`, `train.json` (the run's settings, for `--resume`), the final weights
//! `model.mpk`, and Burn's learner files, with its checkpoints under `checkpoint/`
//! (`model-N.mpk`, `optim-N.mpk`, `scheduler-N.mpk` after learner epoch `N`).
//!
//! Every file is written through [`AtomicRecorder`]: to a temporary file, flushed to disk,
//! then renamed into place, so a kill at any moment leaves either the previous file or the
//! complete new one. [`latest_checkpoint`] picks the newest epoch whose three files all
//! exist.

use std::fs::File;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::record::{FileRecorder, FullPrecisionSettings, NamedMpkFileRecorder, Recorder, RecorderError};
use burn::tensor::backend::Backend;
use dsa_model::{hf, DeepSeekV32, DeepSeekV32Config};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::tokenizer::TextTokenizer;

/// Model configuration file of a run directory.
pub const CONFIG_FILE: &str = "config.json";
/// Tokenizer file of a run directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// Final weights of a run directory (without extension: the recorder adds `.mpk`).
const MODEL_FILE: &str = "model";
/// Directory of the learner's checkpoints inside a run directory.
const CHECKPOINT_DIR: &str = "checkpoint";

/// The recorder of runs: full-precision named MessagePack, written atomically.
pub type RunRecorder = AtomicRecorder<NamedMpkFileRecorder<FullPrecisionSettings>>;

/// A [`FileRecorder`] that writes through `R` to a temporary file and renames it into
/// place once it is complete and flushed to disk.
#[derive(Debug, Default, Clone)]
pub struct AtomicRecorder<R> {
    inner: R,
}

impl<B: Backend, R: FileRecorder<B>> Recorder<B> for AtomicRecorder<R> {
    type Settings = R::Settings;
    type RecordArgs = PathBuf;
    type RecordOutput = ();
    type LoadArgs = PathBuf;

    fn save_item<I: Serialize>(&self, item: I, path: PathBuf) -> Result<(), RecorderError> {
        let io = |e: std::io::Error| RecorderError::Unknown(format!("{}: {e}", path.display()));
        let target = path.with_extension(<R as FileRecorder<B>>::file_extension());
        let name = target.file_name().ok_or_else(|| RecorderError::Unknown(format!("{} is not a file path", path.display())))?;
        let partial_dir = target.parent().unwrap_or(Path::new(".")).join(".partial");
        std::fs::create_dir_all(&partial_dir).map_err(io)?;
        let partial = partial_dir.join(name);
        self.inner.save_item(item, partial.clone())?;
        File::open(&partial).and_then(|f| f.sync_all()).map_err(io)?;
        std::fs::rename(&partial, &target).map_err(io)
    }

    fn load_item<I: DeserializeOwned>(&self, path: &mut PathBuf) -> Result<I, RecorderError> {
        self.inner.load_item(path)
    }
}

impl<B: Backend, R: FileRecorder<B>> FileRecorder<B> for AtomicRecorder<R> {
    fn file_extension() -> &'static str {
        R::file_extension()
    }
}

/// The newest learner epoch of `run_dir` whose model, optimizer and scheduler checkpoints
/// are all complete.
pub fn latest_checkpoint(run_dir: &Path) -> Option<usize> {
    let dir = run_dir.join(CHECKPOINT_DIR);
    let ext = <RunRecorder as FileRecorder<burn::backend::Flex>>::file_extension();
    let has = |kind: &str, epoch: usize| dir.join(format!("{kind}-{epoch}.{ext}")).is_file();
    std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_prefix("model-")?.strip_suffix(&format!(".{ext}"))?.parse::<usize>().ok()
        })
        .filter(|&epoch| has("optim", epoch) && has("scheduler", epoch))
        .max()
}

/// Whether `run_dir` holds learner checkpoints (complete or not).
pub fn has_checkpoints(run_dir: &Path) -> bool {
    std::fs::read_dir(run_dir.join(CHECKPOINT_DIR)).is_ok_and(|mut d| d.next().is_some())
}

/// Errors of run directories.
pub type RunError = Box<dyn std::error::Error + Send + Sync>;

/// Writes `value` as pretty JSON to `path`, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RunError> {
    let text = serde_json::to_string_pretty(value)?;
    let partial = path.with_extension("json.partial");
    std::fs::write(&partial, text).map_err(|e| format!("cannot write {}: {e}", partial.display()))?;
    std::fs::rename(&partial, path).map_err(|e| format!("cannot write {}: {e}", path.display()).into())
}

/// Reads a JSON file, naming it in errors.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, RunError> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()).into())
}

/// Writes the final weights and the model configuration of a run.
pub fn save_model<B: Backend>(run_dir: &Path, model: &DeepSeekV32<B>, cfg: &DeepSeekV32Config) -> Result<(), RunError> {
    write_json(&run_dir.join(CONFIG_FILE), cfg)?;
    RunRecorder::default()
        .record(model.clone().into_record(), run_dir.join(MODEL_FILE))
        .map_err(|e| format!("cannot save the model in {}: {e}", run_dir.display()).into())
}

/// A model, its configuration and its tokenizer, from a run directory of ours (`model.mpk`)
/// or a HuggingFace directory (safetensors), each with `config.json` and `tokenizer.json`.
/// HuggingFace weights with NaN or ±inf (or FP8 scales that are not finite and positive)
/// are an error unless `allow_nonfinite`.
pub fn load_model<B: Backend>(dir: &Path, allow_nonfinite: bool, device: &B::Device) -> Result<(DeepSeekV32Config, DeepSeekV32<B>, TextTokenizer), RunError> {
    let tokenizer = TextTokenizer::from_file(dir.join(TOKENIZER_FILE))?;
    let weights = dir.join(MODEL_FILE).with_extension(<RunRecorder as FileRecorder<B>>::file_extension());
    let (cfg, model) = if weights.is_file() {
        let cfg = DeepSeekV32Config::from_file(dir.join(CONFIG_FILE))?;
        let record = RunRecorder::default()
            .load(weights.clone(), device)
            .map_err(|e| format!("cannot load {}: {e}", weights.display()))?;
        let model = cfg.init::<B>(device).load_record(record);
        (cfg, model)
    } else if dir.join(CONFIG_FILE).is_file() {
        let (cfg, ckpt) = hf::open(dir)?;
        let model = hf::model::<B>(&ckpt.allow_nonfinite(allow_nonfinite), &cfg, device)?;
        (cfg, model)
    } else {
        return Err(format!("{} holds neither model.mpk (a dsa-cli run) nor a HuggingFace config.json", dir.display()).into());
    };
    if tokenizer.vocab_size() > cfg.vocab_size {
        return Err(format!("{}: the tokenizer has {} tokens, the model only {}", dir.display(), tokenizer.vocab_size(), cfg.vocab_size).into());
    }
    Ok((cfg, model, tokenizer))
}
