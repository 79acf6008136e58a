//! Conformance cases: a HuggingFace model directory with a `golden.safetensors` of outputs
//! recorded by DeepSeek's reference `inference/model.py`, and the comparison of our model
//! against it (shared by the `dsa-tests` conformance test and `dsa-cli conformance`).
//!
//! A case's `golden.safetensors` holds `tokens [B, N]` and `logits [B, T, vocab]` (the
//! prefill of `tokens[:, :T]`); optionally `decode_logits [B, N - T, vocab]` (the remaining
//! tokens fed one at a time), `layer<i>.hidden`, `layer<i>.index_scores`,
//! `layer<i>.selected` (per layer of the prefill) and `decode.layer0.selected_last` (layer
//! 0's selection at the last decode step). Sizes are read from the file; every tensor
//! present is compared.
//!
//! ```no_run
//! use burn::backend::NdArray;
//! use dsa_model::conformance::run_case;
//!
//! let report = run_case::<NdArray>("shared/conformance/tiny-bf16".as_ref(), &Default::default())?;
//! println!("{report}");
//! assert!(report.passed());
//! # Ok::<(), dsa_model::conformance::CaseError>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use dsa_burn::{DsaBackend, Selection};

use crate::cache::ModelCache;
use crate::hf::{self, ModelLoadError};
use crate::loading::{Checkpoint, LoadError};

/// Largest accepted `‖ours − ref‖ / ‖ref‖` of logits, hidden states and indexer scores.
pub const REL_TOLERANCE: f64 = 1e-3;

/// A selection may differ from the reference only at near-ties: a token we chose instead of
/// the reference's must score within this fraction of the row's score range of the token it
/// replaced (FP8 rounding in the indexer reorders nearly equal scores).
pub const NEAR_TIE: f32 = 2e-3;

/// The golden file of a case.
pub const GOLDEN_FILE: &str = "golden.safetensors";

/// The case directories under `dir`: subdirectories holding `config.json`,
/// `model.safetensors` and [`GOLDEN_FILE`], sorted.
pub fn case_dirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| ["config.json", "model.safetensors", GOLDEN_FILE].iter().all(|f| p.join(f).is_file()))
        .collect();
    cases.sort();
    Ok(cases)
}

/// `‖a − b‖ / ‖b‖` over the entries where `b` is finite (infinite if `a` is not finite
/// there), accumulated in f64.
///
/// ```
/// use dsa_model::conformance::rel_error;
/// assert!((rel_error(&[3.0, 4.5], &[3.0, 4.0]) - 0.1).abs() < 1e-12);
/// ```
pub fn rel_error(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "compared tensors differ in size");
    let (mut num, mut den) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b).filter(|(_, y)| y.is_finite()) {
        if !x.is_finite() {
            return f64::INFINITY;
        }
        num += (f64::from(*x) - f64::from(*y)).powi(2);
        den += f64::from(*y).powi(2);
    }
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

/// How a selection differs from the reference's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SelectionDiff {
    /// Tokens selected by us and not by the reference (as many the other way round).
    pub mismatched: usize,
    /// Tokens selected in all.
    pub selected: usize,
    /// Largest score gap of a swap, as a fraction of its row's score range (infinite when
    /// a row selects a different number of tokens).
    pub worst_gap: f32,
}

/// Compares our selection (`indices`/`valid`, `k` per row) with the reference's `mask`
/// (`rows × s`, 1 = selected). Row `r` has `candidates(r)` causal keys (a prefix of the
/// row); `scores` (`rows × s`, the reference's where known) measure the near-ties.
///
/// ```
/// use dsa_model::conformance::compare_selection;
/// // One row of 4 keys, k = 2: we pick {1, 2}, the reference {1, 3}; keys 2 and 3 nearly tie.
/// let d = compare_selection(&[1, 2], &[true, true], 2, &[0, 1, 0, 1], &[0.0, 9.0, 5.0, 5.001], 4, |_| 4);
/// assert_eq!((d.mismatched, d.selected), (1, 2));
/// assert!(d.worst_gap < 2e-4);
/// ```
pub fn compare_selection(
    indices: &[i64],
    valid: &[bool],
    k: usize,
    mask: &[u8],
    scores: &[f32],
    s: usize,
    candidates: impl Fn(usize) -> usize,
) -> SelectionDiff {
    let rows = mask.len() / s.max(1);
    let mut diff = SelectionDiff { mismatched: 0, selected: 0, worst_gap: 0.0 };
    for row in 0..rows {
        let mut ours = vec![false; s];
        for j in (0..k).filter(|&j| valid[row * k + j]) {
            ours[indices[row * k + j] as usize] = true;
        }
        let theirs = &mask[row * s..(row + 1) * s];
        let sc = &scores[row * s..(row + 1) * s];
        let causal = &sc[..candidates(row).min(s)];
        let range = causal.iter().copied().fold(f32::MIN, f32::max) - causal.iter().copied().fold(f32::MAX, f32::min);
        let only_ours: Vec<f32> = (0..s).filter(|&c| ours[c] && theirs[c] == 0).map(|c| sc[c]).collect();
        let only_theirs: Vec<f32> = (0..s).filter(|&c| !ours[c] && theirs[c] != 0).map(|c| sc[c]).collect();
        diff.selected += ours.iter().filter(|o| **o).count();
        diff.mismatched += only_ours.len().max(only_theirs.len());
        if only_ours.len() != only_theirs.len() {
            diff.worst_gap = f32::INFINITY;
        } else if let (Some(lo), Some(hi)) = (only_ours.iter().copied().reduce(f32::min), only_theirs.iter().copied().reduce(f32::max)) {
            diff.worst_gap = diff.worst_gap.max((hi - lo) / range.max(f32::MIN_POSITIVE));
        }
    }
    diff
}

/// One compared tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// `‖ours − ref‖ / ‖ref‖` of a tensor.
    RelError {
        /// The golden tensor.
        tensor: String,
        /// The measured error.
        value: f64,
        /// The largest accepted error.
        limit: f64,
    },
    /// A selection mask.
    Selection {
        /// The golden tensor.
        tensor: String,
        /// The differences.
        diff: SelectionDiff,
        /// The largest accepted near-tie gap.
        limit: f32,
    },
}

impl Check {
    /// The golden tensor compared.
    pub fn tensor(&self) -> &str {
        match self {
            Check::RelError { tensor, .. } | Check::Selection { tensor, .. } => tensor,
        }
    }

    /// Whether the measurement is within its limit.
    pub fn passed(&self) -> bool {
        match self {
            Check::RelError { value, limit, .. } => value <= limit,
            Check::Selection { diff, limit, .. } => diff.worst_gap <= *limit,
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed() { "ok" } else { "FAILED" };
        match self {
            Check::RelError { tensor, value, limit } => {
                write!(f, "{tensor:<28} ‖Δ‖/‖ref‖ = {value:.2e} (≤ {limit:.0e})  {verdict}")
            }
            Check::Selection { tensor, diff, limit } => write!(
                f,
                "{tensor:<28} {} of {} selected tokens differ, worst near-tie gap {:.1e} of the row's range (≤ {limit:.0e})  {verdict}",
                diff.mismatched, diff.selected, diff.worst_gap
            ),
        }
    }
}

/// The result of [`run_case`].
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The case (its directory name).
    pub case: String,
    /// Sequences in the batch.
    pub batch: usize,
    /// Prefill length.
    pub prefill: usize,
    /// Single-token decode steps after the prefill.
    pub decode_steps: usize,
    /// Every comparison made.
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(Check::passed)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} sequences, prefill {} tokens, {} decode steps: {}",
            self.case,
            self.batch,
            self.prefill,
            self.decode_steps,
            if self.passed() { "PASSED" } else { "FAILED" }
        )?;
        for check in &self.checks {
            writeln!(f, "  {check}")?;
        }
        Ok(())
    }
}

/// Why a case could not be run (as opposed to run and failed).
#[derive(Debug)]
pub enum CaseError {
    /// The model directory could not be loaded.
    Model(ModelLoadError),
    /// The golden file is unreadable or lacks a tensor.
    Golden(LoadError),
    /// The golden tensors are inconsistent with each other or with the model.
    Malformed {
        /// The golden file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl fmt::Display for CaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaseError::Model(e) => e.fmt(f),
            CaseError::Golden(e) => e.fmt(f),
            CaseError::Malformed { file, reason } => write!(f, "{}: {reason}", file.display()),
        }
    }
}

impl std::error::Error for CaseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CaseError::Model(e) => Some(e),
            CaseError::Golden(e) => Some(e),
            CaseError::Malformed { .. } => None,
        }
    }
}

impl From<ModelLoadError> for CaseError {
    fn from(e: ModelLoadError) -> Self {
        CaseError::Model(e)
    }
}

impl From<LoadError> for CaseError {
    fn from(e: LoadError) -> Self {
        CaseError::Golden(e)
    }
}

/// Loads the case in `dir`, prefills `tokens[:, :T]` and decodes the remaining tokens one
/// at a time with the cache, and compares every golden tensor present.
pub fn run_case<B: DsaBackend>(dir: &Path, device: &B::Device) -> Result<Report, CaseError> {
    let (cfg, model) = hf::load::<B>(dir, device)?;
    let golden = Golden { ckpt: Checkpoint::open(dir.join(GOLDEN_FILE))?, file: dir.join(GOLDEN_FILE) };
    let [batch, total] = golden.dims::<2>("tokens")?;
    let [_, prefill, _] = golden.dims::<3>("logits")?;
    golden.expect_shape("logits", &[batch, prefill, cfg.vocab_size])?;
    if prefill == 0 || prefill > total {
        return Err(golden.malformed(format!("logits cover {prefill} positions of {total} tokens")));
    }
    let tokens = golden.ckpt.read_data("tokens")?.convert::<i64>();
    let tokens = Tensor::<B, 2, Int>::from_data(tokens, device);
    let mut report = Report {
        case: dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned()),
        batch,
        prefill,
        decode_steps: total - prefill,
        checks: Vec::new(),
    };

    let mut cache = ModelCache::new(cfg.num_hidden_layers);
    let trace = model.forward_traced(tokens.clone().narrow(1, 0, prefill), Some(&mut cache));
    report.checks.push(golden.rel_error("logits", trace.logits, |_| true)?);
    for (layer, lt) in trace.layers.into_iter().enumerate() {
        let name = |what: &str| format!("layer{layer}.{what}");
        if golden.has(&name("hidden")) {
            report.checks.push(golden.rel_error(&name("hidden"), lt.hidden, |_| true)?);
        }
        let Some(sel) = lt.selection else { continue };
        if golden.has(&name("index_scores")) {
            // Raw scores: only the causal entries (key s <= query t) are meaningful.
            let keep = |i: usize| i % prefill <= (i / prefill) % prefill;
            report.checks.push(golden.rel_error(&name("index_scores"), sel.scores.clone(), keep)?);
        }
        if golden.has(&name("selected")) {
            let scores = match golden.has(&name("index_scores")) {
                true => golden.f32(&name("index_scores"), &[batch, prefill, prefill])?,
                false => host(sel.scores.clone()),
            };
            let candidates = |row: usize| row % prefill + 1;
            report.checks.push(golden.selection(&name("selected"), &[batch, prefill, prefill], &sel, &scores, candidates)?);
        }
    }

    if total > prefill {
        let mut logits = Vec::with_capacity(total - prefill);
        let mut last = None;
        for pos in prefill..total {
            let step = model.forward_traced(tokens.clone().narrow(1, pos, 1), Some(&mut cache));
            logits.push(step.logits);
            last = step.layers.into_iter().next().and_then(|l| l.selection);
        }
        if golden.has("decode_logits") {
            report.checks.push(golden.rel_error("decode_logits", Tensor::cat(logits, 1), |_| true)?);
        }
        if let (true, Some(sel)) = (golden.has("decode.layer0.selected_last"), last) {
            let scores = host(sel.scores.clone());
            report.checks.push(golden.selection("decode.layer0.selected_last", &[batch, total], &sel, &scores, |_| total)?);
        }
    } else if golden.has("decode_logits") {
        return Err(golden.malformed("decode_logits without tokens beyond the prefill".into()));
    }
    Ok(report)
}

/// A tensor's values as f32 on the host.
fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().expect("float data converts to f32")
}

/// The golden file of a case.
struct Golden {
    ckpt: Checkpoint,
    file: PathBuf,
}

impl Golden {
    fn has(&self, name: &str) -> bool {
        self.ckpt.contains(name)
    }

    fn malformed(&self, reason: String) -> CaseError {
        CaseError::Malformed { file: self.file.clone(), reason }
    }

    fn dims<const D: usize>(&self, name: &str) -> Result<[usize; D], CaseError> {
        let shape = self.ckpt.shape(name)?;
        shape.try_into().map_err(|_| self.malformed(format!("`{name}` has shape {shape:?}, expected {D} dims")))
    }

    fn expect_shape(&self, name: &str, shape: &[usize]) -> Result<(), CaseError> {
        Ok(self.ckpt.check_shape(name, shape)?)
    }

    fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, CaseError> {
        self.expect_shape(name, shape)?;
        Ok(self.ckpt.read_f32(name)?.into_vec::<f32>().expect("read_f32 gives f32"))
    }

    /// Relative error of `ours` against golden `name` over the flat entries `keep` accepts.
    fn rel_error<B: Backend, const D: usize>(&self, name: &str, ours: Tensor<B, D>, keep: impl Fn(usize) -> bool) -> Result<Check, CaseError> {
        let reference = self.f32(name, &ours.dims())?;
        let ours = host(ours);
        let (a, b): (Vec<f32>, Vec<f32>) = ours.into_iter().zip(reference).enumerate().filter(|(i, _)| keep(*i)).map(|(_, p)| p).unzip();
        Ok(Check::RelError { tensor: name.into(), value: rel_error(&a, &b), limit: REL_TOLERANCE })
    }

    /// Our `selection` against golden mask `name` of `shape` (rows × keys).
    fn selection<B: Backend>(
        &self,
        name: &str,
        shape: &[usize],
        selection: &Selection<B>,
        scores: &[f32],
        candidates: impl Fn(usize) -> usize,
    ) -> Result<Check, CaseError> {
        self.expect_shape(name, shape)?;
        let mask = self.ckpt.read_data(name)?.convert::<u8>().into_vec::<u8>().map_err(|e| self.malformed(format!("`{name}`: {e:?}")))?;
        let k = selection.indices.dims()[2];
        let indices = selection.indices.to_data().convert::<i64>().into_vec::<i64>().expect("int data converts to i64");
        let valid: Vec<bool> = selection.valid.clone().int().into_data().convert::<i64>().into_vec::<i64>().expect("int data converts to i64").iter().map(|v| *v != 0).collect();
        let keys = shape[shape.len() - 1];
        if scores.len() != mask.len() || indices.len() * keys != mask.len() * k {
            return Err(self.malformed(format!("`{name}` has shape {shape:?}, our selection {:?}", selection.indices.dims())));
        }
        let diff = compare_selection(&indices, &valid, k, &mask, scores, keys, candidates);
        Ok(Check::Selection { tensor: name.into(), diff, limit: NEAR_TIE })
    }
}
