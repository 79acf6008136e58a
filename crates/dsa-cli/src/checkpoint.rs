//! Run directories and crash-safe, verified checkpoints.
//!
//! A run directory written by `dsa-cli warmup` / `train` holds `config.json` (the model),
//! `tokenizer.json`, `train.json` (the run's settings, for `--resume`), the final weights
//! `model.mpk`, and Burn's learner files, with its checkpoints under `checkpoint/`
//! (`model-N.mpk`, `optim-N.mpk`, `scheduler-N.mpk` after learner epoch `N`).
//!
//! Every file is written through [`AtomicRecorder`]: to a temporary file, flushed to disk,
//! then renamed into place, so a kill at any moment leaves either the previous file or the
//! complete new one. Beside each file a checksum sidecar (`model-N.mpk.sum`: its length and
//! CRC-32) is written the same way once the file is in place, and every file is checked
//! against it before it is read ([`verify_file`]): a file without its sidecar, truncated,
//! emptied or overwritten is reported by name instead of reaching Burn's decoder.
//! [`scan_checkpoints`] picks the newest epoch whose three files all verify.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::record::{FileRecorder, FullPrecisionSettings, NamedMpkFileRecorder, Recorder, RecorderError};
use burn::tensor::backend::Backend;
use dsa_model::{hf, Checkpoint, DeepSeekV32, DeepSeekV32Config};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::tokenizer::TextTokenizer;
use crate::weights::{check_finite, check_shapes, parameter_shapes, record_shapes, TensorShapes};

/// Model configuration file of a run directory.
pub const CONFIG_FILE: &str = "config.json";
/// Tokenizer file of a run directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// Final weights of a run directory (without extension: the recorder adds `.mpk`).
const MODEL_FILE: &str = "model";
/// Directory of the learner's checkpoints inside a run directory.
const CHECKPOINT_DIR: &str = "checkpoint";
/// The files of one learner checkpoint: `<kind>-<epoch>.mpk`.
const CHECKPOINT_KINDS: [&str; 3] = ["model", "optim", "scheduler"];
/// Added to a file's name for its checksum sidecar (`model-3.mpk.sum`).
const SUM_SUFFIX: &str = ".sum";

/// Test hook of the kill test (`tests/training.rs`): when this environment variable names a
/// file, [`AtomicRecorder`] writes the path of the file it is saving there and waits a
/// minute after renaming the file into place and before its checksum sidecar, so that the
/// test can kill a run in the middle of writing a checkpoint.
#[doc(hidden)]
pub const PAUSE_IN_WRITE_ENV: &str = "DSA_TEST_PAUSE_IN_CHECKPOINT_WRITE";

/// The file format of runs: full-precision named MessagePack.
pub type RunFormat = NamedMpkFileRecorder<FullPrecisionSettings>;

/// The recorder of runs: [`RunFormat`], written atomically and verified.
pub type RunRecorder = AtomicRecorder<RunFormat>;

/// A [`FileRecorder`] that writes through `R` to a temporary file, renames it into place
/// once it is complete and flushed to disk, and records its length and checksum in a
/// sidecar file; it loads a file only after checking it against that sidecar
/// ([`verify_file`]).
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
        let target = path.with_extension(<R as FileRecorder<B>>::file_extension());
        let io = |e: std::io::Error| RecorderError::Unknown(format!("cannot write {}: {e}", target.display()));
        let name = target.file_name().ok_or_else(|| RecorderError::Unknown(format!("{} is not a file path", path.display())))?;
        let dir = target.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let partial_dir = dir.join(".partial");
        std::fs::create_dir_all(&partial_dir).map_err(io)?;
        let partial = partial_dir.join(name);
        self.inner.save_item(item, partial.clone())?;
        File::open(&partial).and_then(|f| f.sync_all()).map_err(io)?;
        let sum = FileSum::of(&partial).map_err(io)?;
        let (sum_partial, sum_target) = (sum_path(&partial), sum_path(&target));
        let text = serde_json::to_vec(&sum).map_err(|e| RecorderError::Unknown(e.to_string()))?;
        File::create(&sum_partial).and_then(|mut f| f.write_all(&text).and_then(|()| f.sync_all())).map_err(io)?;
        // The sidecar of an earlier file of this name must not vouch for the new one.
        match std::fs::remove_file(&sum_target) {
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
        std::fs::rename(&partial, &target).map_err(io)?;
        pause_for_kill_test(&target);
        std::fs::rename(&sum_partial, &sum_target).map_err(io)?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        remove_orphan_sums(dir);
        Ok(())
    }

    fn load_item<I: DeserializeOwned>(&self, path: &mut PathBuf) -> Result<I, RecorderError> {
        let file = path.with_extension(<R as FileRecorder<B>>::file_extension());
        verify_file(&file).map_err(|e| RecorderError::Unknown(e.to_string()))?;
        self.inner.load_item(path)
    }
}

impl<B: Backend, R: FileRecorder<B>> FileRecorder<B> for AtomicRecorder<R> {
    fn file_extension() -> &'static str {
        R::file_extension()
    }
}

/// Length and CRC-32 of a file, as its checksum sidecar records them (JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct FileSum {
    len: u64,
    crc32: u32,
}

impl FileSum {
    fn of(path: &Path) -> std::io::Result<Self> {
        let mut file = File::open(path)?;
        let mut hasher = crc32fast::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut len = 0u64;
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..n]);
            len += n as u64;
        }
        Ok(Self { len, crc32: hasher.finalize() })
    }
}

/// The checksum sidecar of `file`: its name with [`SUM_SUFFIX`] appended.
fn sum_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(SUM_SUFFIX);
    PathBuf::from(name)
}

/// Removes the checksum sidecars in `dir` whose file is gone (Burn's learner deletes old
/// checkpoints, not their sidecars).
fn remove_orphan_sums(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let Some(file) = path.to_str().and_then(|p| p.strip_suffix(SUM_SUFFIX)) else { continue };
        if !Path::new(file).exists() {
            std::fs::remove_file(&path).ok();
        }
    }
}

/// See [`PAUSE_IN_WRITE_ENV`].
fn pause_for_kill_test(file: &Path) {
    if let Some(marker) = std::env::var_os(PAUSE_IN_WRITE_ENV) {
        if std::fs::write(marker, file.display().to_string()).is_ok() {
            std::thread::sleep(std::time::Duration::from_secs(60));
        }
    }
}

/// Checks `file` against its checksum sidecar (`<file>.sum`, written by [`AtomicRecorder`]):
/// an error names the file and what is wrong with it (no sidecar: its writing was
/// interrupted; another length: truncated or extended; another checksum: overwritten).
pub fn verify_file(file: &Path) -> Result<(), RunError> {
    let sum_file = sum_path(file);
    let damaged = |why: String| -> RunError { format!("{} is damaged: {why}", file.display()).into() };
    let len = std::fs::metadata(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?.len();
    let expected: FileSum = match std::fs::read(&sum_file) {
        Ok(text) => serde_json::from_slice(&text).map_err(|e| damaged(format!("its checksum file {} is unreadable ({e})", sum_file.display())))?,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(damaged(format!("it has no checksum file {} (its writing was interrupted)", sum_file.display())))
        }
        Err(e) => return Err(format!("cannot read {}: {e}", sum_file.display()).into()),
    };
    if len != expected.len {
        return Err(damaged(format!("it has {len} bytes, {} records {}", sum_file.display(), expected.len)));
    }
    let found = FileSum::of(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    if found.crc32 != expected.crc32 {
        return Err(damaged(format!("its CRC-32 is {:08x}, {} records {:08x}", found.crc32, sum_file.display(), expected.crc32)));
    }
    Ok(())
}

/// What [`scan_checkpoints`] found in a run directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointScan {
    /// The newest learner epoch whose model, optimizer and scheduler files all verify.
    pub latest: Option<usize>,
    /// Why each newer epoch cannot be resumed from, naming the damaged or missing files.
    pub skipped: Vec<String>,
}

/// The checkpoints of `run_dir`, newest first, until one whose three files are all
/// complete and verified ([`verify_file`]).
pub fn scan_checkpoints(run_dir: &Path) -> CheckpointScan {
    let dir = run_dir.join(CHECKPOINT_DIR);
    let ext = <RunRecorder as FileRecorder<burn::backend::Flex>>::file_extension();
    let mut epochs: Vec<usize> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let stem = name.strip_suffix(&format!(".{ext}"))?;
            CHECKPOINT_KINDS.iter().find_map(|kind| stem.strip_prefix(kind)?.strip_prefix('-')?.parse::<usize>().ok())
        })
        .collect();
    epochs.sort_unstable_by(|a, b| b.cmp(a));
    epochs.dedup();
    let mut scan = CheckpointScan::default();
    for epoch in epochs {
        let problems: Vec<String> = CHECKPOINT_KINDS
            .iter()
            .filter_map(|kind| {
                let path = checkpoint_file(run_dir, kind, epoch);
                match path.is_file() {
                    false => Some(format!("{} is missing", path.display())),
                    true => verify_file(&path).err().map(|e| e.to_string()),
                }
            })
            .collect();
        if problems.is_empty() {
            scan.latest = Some(epoch);
            break;
        }
        scan.skipped.push(format!("checkpoint {epoch}: {}", problems.join("; ")));
    }
    scan
}

/// The newest learner epoch of `run_dir` whose model, optimizer and scheduler checkpoints
/// are all complete and verified (see [`scan_checkpoints`]).
pub fn latest_checkpoint(run_dir: &Path) -> Option<usize> {
    scan_checkpoints(run_dir).latest
}

/// Whether `run_dir` holds learner checkpoints (complete or not).
pub fn has_checkpoints(run_dir: &Path) -> bool {
    std::fs::read_dir(run_dir.join(CHECKPOINT_DIR)).is_ok_and(|mut d| d.next().is_some())
}

/// A new run must not start in a directory holding another run's checkpoints: an error
/// saying so unless `run_dir` holds none.
pub fn refuse_checkpoints(run_dir: &Path) -> Result<(), RunError> {
    match has_checkpoints(run_dir) {
        true => Err(format!("{} already holds checkpoints: pass --resume to continue that run, or choose another --out", run_dir.display()).into()),
        false => Ok(()),
    }
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

/// A model directory's configuration and weights, checked against each other but not
/// loaded ([`ModelFiles::open`]).
pub struct ModelFiles {
    /// The configuration (`config.json`).
    pub cfg: DeepSeekV32Config,
    /// Every weight tensor with its shape as stored (FP8 block scales not included).
    pub tensors: TensorShapes,
    weights: Weights,
}

/// Where the weights of a [`ModelFiles`] are.
enum Weights {
    /// A run's `model.mpk`.
    Run(PathBuf),
    /// A HuggingFace safetensors checkpoint.
    Hf(Checkpoint),
}

impl ModelFiles {
    /// Opens a run directory of ours (`model.mpk`) or a HuggingFace directory (safetensors),
    /// each with `config.json`, and checks the weights against the config without reading
    /// them: a run's `model.mpk` against its checksum ([`verify_file`]), then its tensors'
    /// names and shapes (`check_shapes`); a HuggingFace checkpoint with
    /// [`hf::check_tensors`]. The first mismatching tensor is named with both shapes.
    pub fn open<B: Backend>(dir: &Path, device: &B::Device) -> Result<Self, RunError> {
        let record = dir.join(MODEL_FILE).with_extension(<RunRecorder as FileRecorder<B>>::file_extension());
        if record.is_file() {
            let cfg = DeepSeekV32Config::from_file(dir.join(CONFIG_FILE))?;
            let tensors = record_shapes::<B>(&record)?;
            check_shapes(&record, &tensors, &parameter_shapes(&cfg.init::<B>(device)), cfg.num_hidden_layers)?;
            Ok(Self { cfg, tensors, weights: Weights::Run(record) })
        } else if dir.join(CONFIG_FILE).is_file() {
            let (cfg, ckpt) = hf::open(dir)?;
            hf::check_tensors(&ckpt, &cfg)?;
            Ok(Self { tensors: hf::expected_tensors(&cfg), cfg, weights: Weights::Hf(ckpt) })
        } else {
            Err(format!("neither {} (a dsa-cli run) nor {} (a HuggingFace model) exists", record.display(), dir.join(CONFIG_FILE).display()).into())
        }
    }

    /// Loads the model. Weights with NaN or ±inf (or FP8 scales that are not finite and
    /// positive) are an error naming the tensor unless `allow_nonfinite`.
    pub fn load<B: Backend>(self, allow_nonfinite: bool, device: &B::Device) -> Result<DeepSeekV32<B>, RunError> {
        match self.weights {
            Weights::Run(file) => {
                let record = RunRecorder::default().load(file.clone(), device).map_err(|e| format!("cannot load {}: {e}", file.display()))?;
                let model = self.cfg.init::<B>(device).load_record(record);
                if !allow_nonfinite {
                    check_finite(&model, &file)?;
                }
                Ok(model)
            }
            Weights::Hf(ckpt) => Ok(hf::model::<B>(&ckpt.allow_nonfinite(allow_nonfinite), &self.cfg, device)?),
        }
    }
}

/// A model, its configuration and its tokenizer, from a run directory of ours (`model.mpk`)
/// or a HuggingFace directory (safetensors), each with `config.json` and `tokenizer.json`:
/// [`ModelFiles::open`] (the weights checked against the config), then
/// [`ModelFiles::load`] (NaN or ±inf weights refused unless `allow_nonfinite`).
pub fn load_model<B: Backend>(dir: &Path, allow_nonfinite: bool, device: &B::Device) -> Result<(DeepSeekV32Config, DeepSeekV32<B>, TextTokenizer), RunError> {
    let tokenizer = TextTokenizer::from_file(dir.join(TOKENIZER_FILE))?;
    let files = ModelFiles::open::<B>(dir, device)?;
    if tokenizer.vocab_size() > files.cfg.vocab_size {
        return Err(format!("{}: the tokenizer has {} tokens, the model only {}", dir.display(), tokenizer.vocab_size(), files.cfg.vocab_size).into());
    }
    let cfg = files.cfg.clone();
    Ok((cfg, files.load(allow_nonfinite, device)?, tokenizer))
}

/// The file of checkpoint `kind` (`model`, `optim` or `scheduler`) of learner epoch
/// `epoch` in `run_dir`.
pub fn checkpoint_file(run_dir: &Path, kind: &str, epoch: usize) -> PathBuf {
    let ext = <RunRecorder as FileRecorder<burn::backend::Flex>>::file_extension();
    run_dir.join(CHECKPOINT_DIR).join(format!("{kind}-{epoch}.{ext}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Flex, NdArray};

    /// Writes the three files of checkpoint `epoch` in `run_dir` as the learner does.
    fn write_checkpoint(run_dir: &Path, epoch: usize) {
        for kind in CHECKPOINT_KINDS {
            let path = run_dir.join(CHECKPOINT_DIR).join(format!("{kind}-{epoch}"));
            Recorder::<Flex>::save_item(&RunRecorder::default(), vec![epoch as u32; 1000], path).unwrap();
        }
    }

    /// A truncated, emptied, overwritten or unvouched newest checkpoint file is reported by
    /// name and the previous checkpoint is chosen; loading the file is an error naming it.
    #[test]
    fn damaged_checkpoints_are_named_and_skipped() {
        let temp = tempfile::tempdir().unwrap();
        let run = temp.path();
        write_checkpoint(run, 1);
        write_checkpoint(run, 2);
        assert_eq!(scan_checkpoints(run), CheckpointScan { latest: Some(2), skipped: vec![] });
        let newest = run.join(CHECKPOINT_DIR).join("optim-2.mpk");
        let good = std::fs::read(&newest).unwrap();
        let sum = sum_path(&newest);
        let good_sum = std::fs::read(&sum).unwrap();
        let mut random = good.clone();
        for (i, b) in random.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(151).wrapping_add(7);
        }
        let damages: [(&str, &dyn Fn(), String); 4] = [
            ("truncated", &|| std::fs::write(&newest, &good[..good.len() / 2]).unwrap(), format!("it has {} bytes, {} records {}", good.len() / 2, sum.display(), good.len())),
            ("empty", &|| std::fs::write(&newest, b"").unwrap(), "it has 0 bytes".into()),
            ("random", &|| std::fs::write(&newest, &random).unwrap(), "its CRC-32 is".into()),
            ("unvouched", &|| std::fs::remove_file(&sum).unwrap(), format!("it has no checksum file {}", sum.display())),
        ];
        for (what, damage, why) in damages {
            damage();
            let scan = scan_checkpoints(run);
            assert_eq!(scan.latest, Some(1), "{what}");
            assert_eq!(scan.skipped.len(), 1, "{what}: {:?}", scan.skipped);
            let expected = format!("checkpoint 2: {} is damaged: {why}", newest.display());
            assert!(scan.skipped[0].starts_with(&expected), "{what}: {}", scan.skipped[0]);
            let err = Recorder::<Flex>::load_item::<Vec<u32>>(&RunRecorder::default(), &mut newest.with_extension("")).unwrap_err();
            assert!(err.to_string().contains(&expected["checkpoint 2: ".len()..]), "{what}: {err}");
            std::fs::write(&newest, &good).unwrap();
            std::fs::write(&sum, &good_sum).unwrap();
        }
        let loaded: Vec<u32> = Recorder::<Flex>::load_item(&RunRecorder::default(), &mut newest.with_extension("")).unwrap();
        assert_eq!(loaded, vec![2; 1000]);
        // A missing file makes its epoch incomplete; sidecars of deleted files go at the
        // next save.
        std::fs::remove_file(run.join(CHECKPOINT_DIR).join("model-2.mpk")).unwrap();
        assert_eq!(scan_checkpoints(run).latest, Some(1));
        write_checkpoint(run, 3);
        assert!(!run.join(CHECKPOINT_DIR).join("model-2.mpk.sum").exists());
        assert_eq!(scan_checkpoints(run).latest, Some(3));
    }

    /// A run directory (tokenizer, config, `model.mpk`) of a micro model with random
    /// weights, `edit` applied to the model before it is saved.
    fn run_dir(edit: impl FnOnce(&mut DeepSeekV32<NdArray>)) -> tempfile::TempDir {
        let temp = tempfile::tempdir().unwrap();
        let tokenizer = TextTokenizer::train(["the cat sat on the mat; the dog sat on the log"], 300).unwrap();
        tokenizer.save(temp.path().join(TOKENIZER_FILE)).unwrap();
        let cfg = crate::presets::Preset::Micro.config(300);
        let mut model = cfg.init::<NdArray>(&Default::default());
        edit(&mut model);
        save_model(temp.path(), &model, &cfg).unwrap();
        temp
    }

    /// Rewrites one field of the `config.json` in `dir`.
    fn edit_config(dir: &Path, field: &str, value: serde_json::Value) {
        let path = dir.join(CONFIG_FILE);
        let mut cfg: serde_json::Value = read_json(&path).unwrap();
        cfg[field] = value;
        write_json(&path, &cfg).unwrap();
    }

    /// A run directory whose `config.json` contradicts its weights is refused before the
    /// record is loaded: the first mismatching tensor with both shapes, layers beyond the
    /// config's, missing layers; before, the first two loaded a wrong model and the third
    /// panicked in Burn.
    #[test]
    fn a_run_whose_config_contradicts_its_weights_is_refused() {
        let run = run_dir(|_| {});
        let dir = run.path();
        let model_file = dir.join("model.mpk").display().to_string();
        let load = |dir: &Path| load_model::<NdArray>(dir, false, &Default::default()).map(|_| ()).unwrap_err().to_string();
        load_model::<NdArray>(dir, false, &Default::default()).expect("the run loads");
        let original: serde_json::Value = read_json(&dir.join(CONFIG_FILE)).unwrap();
        let cases: [(&str, serde_json::Value, String); 4] = [
            ("hidden_size", 64.into(), format!("tensor `embed_tokens.weight` in {model_file}: expected shape [300, 64], found [300, 128]")),
            ("q_lora_rank", 32.into(), format!("tensor `layers.0.self_attn.wq_a.weight` in {model_file}: expected shape [128, 32], found [128, 64]")),
            ("num_hidden_layers", 1.into(), format!("{model_file} holds layers up to index 1 (`layers.1.")),
            ("num_hidden_layers", 3.into(), format!("checkpoint {model_file} does not match the model:")),
        ];
        for (field, value, message) in cases {
            edit_config(dir, field, value.clone());
            let err = load(dir);
            assert!(err.starts_with(&message), "{field} = {value}: {err}");
            write_json(&dir.join(CONFIG_FILE), &original).unwrap();
        }
        load_model::<NdArray>(dir, false, &Default::default()).expect("the restored run loads");
    }

    /// NaN or ±inf weights in a run's `model.mpk` are refused naming the tensor, unless
    /// allowed.
    #[test]
    fn nonfinite_weights_of_a_run_are_refused_unless_allowed() {
        let run = run_dir(|model| {
            let w = model.lm_head.weight.val();
            let [rows, cols] = w.dims();
            let bad = w.slice_assign([1..2, 2..3], burn::tensor::Tensor::full([1, 1], f32::INFINITY, &Default::default()));
            assert_eq!(bad.dims(), [rows, cols]);
            model.lm_head.weight = burn::module::Param::from_tensor(bad);
        });
        let err = load_model::<NdArray>(run.path(), false, &Default::default()).map(|_| ()).unwrap_err().to_string();
        let file = run.path().join("model.mpk").display().to_string();
        assert_eq!(err, format!("tensor `lm_head.weight` in {file} holds inf at [1, 2]: weights must be finite (loading it anyway needs Checkpoint::allow_nonfinite, dsa-cli --allow-nonfinite)"));
        load_model::<NdArray>(run.path(), true, &Default::default()).expect("allowed");
    }
}
