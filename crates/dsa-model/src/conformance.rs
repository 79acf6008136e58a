//! Conformance cases: a HuggingFace model directory with a `golden.safetensors` of outputs
//! recorded by DeepSeek's reference `inference/model.py`, and the comparison of our model
//! against it (shared by the `dsa-tests` conformance test and `dsa-cli conformance`).
//!
//! A case's `golden.safetensors` holds `tokens [B, N]` and `logits [B, T, vocab]` (the
//! prefill of `tokens[:, :T]`); optionally `decode_logits [B, N - T, vocab]` (the remaining
//! tokens fed one at a time), `layer<i>.hidden`, `layer<i>.index_scores`,
//! `layer<i>.selected` (per layer of the prefill) and `decode.layer0.selected_last` (layer
//! 0's selection at the last decode step), `layer<i>.experts` and `decode.layer<i>.experts`
//! (the routed experts of every token). Sizes are read from the file; every tensor present
//! is compared. A shared layer of `indexer_types` (no indexer) has no `index_scores`: its
//! `selected` is checked against our top-k of its source layer's scores, whose near-ties
//! the source's golden `index_scores` measure.
//!
//! At reduced precision (bf16, or f32 whose matmuls run on TF32) a few near-tied top-k
//! selections and expert choices flip and the flips spread through the layers, so the
//! reference's own bf16 run drifts from its float32 output by 0.2–0.5 in logits. Such runs are
//! compared with the discrete choices *pinned* ([`CaseOptions::pin`]): each layer attends to
//! the reference's selection and routes to its experts, and everything else is computed as
//! usual; the [`Precision`] sets the tolerances. Free-running at reduced precision, the
//! errors are reported and the flips are judged.
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
use burn::tensor::{Bool, Int, Tensor, TensorData};
use dsa_burn::{ops, DsaBackend, Selection};

use crate::cache::ModelCache;
use crate::config::DeepSeekV32Config;
use crate::hf::{self, ModelLoadError};
use crate::loading::{Checkpoint, LoadError};
use crate::model::{LayerPins, Trace};

/// The arithmetic a run computes in, which sets what it is held to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// f32 throughout (the CPU, wgpu): every choice and tensor as the reference's float32
    /// run, pinned or not.
    F32,
    /// f32 tensors whose matmuls take TF32 inputs (Burn's CUDA backend).
    Tf32,
    /// bf16 tensors.
    Bf16,
}

/// What a comparison accepts, at about twice the reference's own drift at each precision
/// (DeepSeek's reference with its choices pinned to its float32 run: bf16 logits and hidden
/// states 6e-3–1.0e-2, index scores 2.7e-2–3.6e-2; f32 on TF32 5.6e-4–8.2e-4 and
/// 7.7e-3–9.3e-3).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerances {
    /// Largest `‖ours − ref‖ / ‖ref‖` of logits, hidden states and decode logits.
    pub rel: f64,
    /// Largest `‖ours − ref‖ / ‖ref‖` of the indexer scores.
    pub index_scores: f64,
    /// A selection may differ from the reference only at near-ties: a token chosen instead of
    /// the reference's must score within this fraction of its row's score range of the token
    /// it replaced (FP8 rounding reorders nearly equal scores). `None`: flips are counted,
    /// not judged one by one.
    pub near_tie: Option<f32>,
    /// Free-running, the largest share of flipped choices, top-k selections and expert
    /// choices each, pooled over all layers (DeepSeek's reference run in bf16 itself flips
    /// 3.6–5.8 % of its selections and 5.5–6.8 % of its expert choices on the cases here).
    pub flips: f64,
}

impl Precision {
    /// The tolerances of runs at this precision.
    ///
    /// ```
    /// use dsa_model::conformance::Precision;
    /// assert_eq!(Precision::F32.tolerances().rel, 1e-3);
    /// assert_eq!(Precision::Bf16.tolerances().index_scores, 8e-2);
    /// ```
    pub fn tolerances(self) -> Tolerances {
        match self {
            Precision::F32 => Tolerances { rel: 1e-3, index_scores: 1e-3, near_tie: Some(2e-3), flips: 0.0 },
            Precision::Tf32 => Tolerances { rel: 2e-3, index_scores: 2e-2, near_tie: None, flips: 0.12 },
            Precision::Bf16 => Tolerances { rel: 2e-2, index_scores: 8e-2, near_tie: None, flips: 0.12 },
        }
    }
}

/// How [`run_case_with`] runs a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaseOptions {
    /// The arithmetic of the backend under test.
    pub precision: Precision,
    /// Take every layer's top-k selection and MoE experts from the case instead of choosing
    /// them (the case must record them: `layer<i>.selected`, `layer<i>.experts`,
    /// `decode.layer<i>.experts`).
    pub pin: bool,
}

impl Default for CaseOptions {
    fn default() -> Self {
        Self { precision: Precision::F32, pin: false }
    }
}

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

/// One comparison with a golden tensor. A limit of `None` marks a measurement that is
/// reported, not judged.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// `‖ours − ref‖ / ‖ref‖` of a tensor.
    RelError {
        /// The golden tensor.
        tensor: String,
        /// The measured error.
        value: f64,
        /// The largest accepted error.
        limit: Option<f64>,
    },
    /// A selection mask.
    Selection {
        /// The golden tensor.
        tensor: String,
        /// The differences.
        diff: SelectionDiff,
        /// The largest accepted near-tie gap.
        limit: Option<f32>,
    },
    /// Routed experts: how many of the reference's token-expert choices we did not make.
    Routing {
        /// The golden tensor.
        tensor: String,
        /// Choices of the reference's that are not ours.
        flipped: usize,
        /// The reference's choices (tokens × experts per token).
        total: usize,
        /// The largest accepted number of flips.
        limit: Option<usize>,
    },
    /// Free-running: the choices flipped, as a share of all layers' choices (prefill and
    /// decode pooled; the reference's own bf16 run: see [`Tolerances::flips`]).
    Flips {
        /// What was counted.
        what: String,
        /// The flipped choices over all choices.
        share: f64,
        /// The largest accepted share.
        limit: f64,
    },
}

impl Check {
    /// The golden tensor compared (for [`Check::Flips`], what was counted).
    pub fn tensor(&self) -> &str {
        match self {
            Check::RelError { tensor, .. } | Check::Selection { tensor, .. } | Check::Routing { tensor, .. } => tensor,
            Check::Flips { what, .. } => what,
        }
    }

    /// Whether the measurement is within its limit (always, for a reported one).
    pub fn passed(&self) -> bool {
        match self {
            Check::RelError { value, limit, .. } => limit.is_none_or(|l| *value <= l),
            Check::Selection { diff, limit, .. } => limit.is_none_or(|l| diff.worst_gap <= l),
            Check::Routing { flipped, limit, .. } => limit.is_none_or(|l| *flipped <= l),
            Check::Flips { share, limit, .. } => share <= limit,
        }
    }

    /// The share of choices flipped, for selections and routing.
    pub fn flipped_share(&self) -> Option<f64> {
        match self {
            Check::Selection { diff, .. } => Some(diff.mismatched as f64 / diff.selected.max(1) as f64),
            Check::Routing { flipped, total, .. } => Some(*flipped as f64 / (*total).max(1) as f64),
            _ => None,
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match (self.passed(), self) {
            (false, _) => "FAILED",
            (true, Check::RelError { limit: None, .. } | Check::Selection { limit: None, .. } | Check::Routing { limit: None, .. }) => {
                "(reported)"
            }
            (true, _) => "ok",
        };
        let share = self.flipped_share().unwrap_or(0.0) * 100.0;
        match self {
            Check::RelError { tensor, value, limit } => {
                write!(f, "{tensor:<28} ‖Δ‖/‖ref‖ = {value:.2e}")?;
                if let Some(limit) = limit {
                    write!(f, " (≤ {limit:.0e})")?;
                }
            }
            Check::Selection { tensor, diff, limit } => {
                write!(
                    f,
                    "{tensor:<28} {} of {} selected tokens differ ({share:.2} %), worst near-tie gap {:.1e} of the row's range",
                    diff.mismatched, diff.selected, diff.worst_gap
                )?;
                if let Some(limit) = limit {
                    write!(f, " (≤ {limit:.0e})")?;
                }
            }
            Check::Routing { tensor, flipped, total, limit } => {
                write!(f, "{tensor:<28} {flipped} of {total} expert choices differ ({share:.2} %)")?;
                if let Some(limit) = limit {
                    write!(f, " (≤ {limit})")?;
                }
            }
            Check::Flips { what, share, limit } => {
                write!(f, "{what:<28} {:.2} % of all layers' choices (≤ {:.0} %)", share * 100.0, limit * 100.0)?;
            }
        }
        write!(f, "  {verdict}")
    }
}

/// The result of [`run_case_with`].
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The case (its directory name).
    pub case: String,
    /// How it was run.
    pub options: CaseOptions,
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
        let how = if self.options.pin { "choices pinned" } else { "free-running" };
        writeln!(
            f,
            "{}: {} sequences, prefill {} tokens, {} decode steps, {:?}, {how}: {}",
            self.case,
            self.batch,
            self.prefill,
            self.decode_steps,
            self.options.precision,
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

/// [`run_case_with`] in f32, choosing freely (the CPU's conformance run).
pub fn run_case<B: DsaBackend>(dir: &Path, device: &B::Device) -> Result<Report, CaseError> {
    run_case_with::<B>(dir, device, CaseOptions::default())
}

/// Loads the case in `dir`, prefills `tokens[:, :T]` and decodes the remaining tokens one
/// at a time with the cache, and compares every golden tensor present, at the tolerances of
/// `options.precision`, with the top-k selections and expert choices taken from the case
/// when `options.pin` (see the module documentation).
pub fn run_case_with<B: DsaBackend>(dir: &Path, device: &B::Device, options: CaseOptions) -> Result<Report, CaseError> {
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
    let tol = options.precision.tolerances();
    // Free-running at reduced precision the errors are reported, not judged: a flipped
    // near-tie legitimately moves them (the flips are judged instead).
    let judged = options.pin || options.precision == Precision::F32;
    let mut compare = Compare { golden: &golden, cfg: &cfg, tol, pin: options.pin, judged, checks: Vec::new() };

    let mut cache = ModelCache::new(cfg.num_hidden_layers);
    let pins = match options.pin {
        true => compare.prefill_pins::<B>(batch, prefill, device)?,
        false => Vec::new(),
    };
    let trace = model.forward_pinned(tokens.clone().narrow(1, 0, prefill), Some(&mut cache), pins);
    compare.prefill(trace, batch, prefill)?;

    if total > prefill {
        let mut logits = Vec::with_capacity(total - prefill);
        let (mut last, mut experts) = (None, vec![Vec::new(); cfg.num_hidden_layers]);
        for pos in prefill..total {
            let pins = match options.pin {
                true => compare.decode_pins::<B>(batch, prefill, total, pos, device)?,
                false => Vec::new(),
            };
            let step = model.forward_pinned(tokens.clone().narrow(1, pos, 1), Some(&mut cache), pins);
            logits.push(step.logits);
            for (layer, lt) in step.layers.into_iter().enumerate() {
                if let Some(chosen) = lt.experts {
                    experts[layer].push(host_experts(chosen));
                }
                if layer == 0 {
                    last = lt.selection;
                }
            }
        }
        if golden.has("decode_logits") {
            // Pinned below f32, a decode step's selections are pinned only where the case
            // records them (layer 0's last step); a near-tie flipping elsewhere moves the
            // decode logits, so they are reported, not judged.
            let limit = (judged && !(options.pin && options.precision != Precision::F32)).then_some(tol.rel);
            let check = compare.rel_error("decode_logits", Tensor::cat(logits, 1), |_| true, limit)?;
            compare.checks.push(check);
        }
        if let (true, Some(sel)) = (golden.has("decode.layer0.selected_last"), last) {
            let scores = host(sel.scores.clone());
            // Pinned, compare the selection our top-k would have made.
            let chosen = match options.pin {
                true => own_selection(&sel, cfg.index_topk, total - 1),
                false => sel,
            };
            let check = compare.selection("decode.layer0.selected_last", &[batch, total], &chosen, &scores, |_| total)?;
            compare.checks.push(check);
        }
        if !options.pin {
            for (layer, steps) in experts.into_iter().enumerate().filter(|(_, s)| !s.is_empty()) {
                // Step-major → token-major ([B, steps, k]).
                let (n, k) = (total - prefill, cfg.num_experts_per_tok);
                let ours: Vec<usize> = (0..batch)
                    .flat_map(|b| (0..n).flat_map(move |step| (0..k).map(move |j| (b, step, j))))
                    .map(|(b, step, j)| steps[step][b * k + j])
                    .collect();
                compare.routing(&format!("decode.layer{layer}.experts"), &[batch, n, k], &ours)?;
            }
        }
    } else if golden.has("decode_logits") {
        return Err(golden.malformed("decode_logits without tokens beyond the prefill".into()));
    }
    if !judged {
        compare.pooled_flips();
    }
    Ok(Report { case: case_name(dir), options, batch, prefill, decode_steps: total - prefill, checks: compare.checks })
}

fn case_name(dir: &Path) -> String {
    dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// Experts `[N, k]` read to the host, token-major.
fn host_experts<B: Backend>(experts: Tensor<B, 2, Int>) -> Vec<usize> {
    let values = experts.into_data().convert::<i64>().into_vec::<i64>().expect("expert indices convert to i64");
    values.into_iter().map(|e| e as usize).collect()
}

/// Token-major experts, `k` per token, as a `[N, k]` tensor.
fn experts_tensor<B: Backend>(experts: Vec<usize>, k: usize, device: &B::Device) -> Tensor<B, 2, Int> {
    let n = experts.len() / k;
    Tensor::from_data(TensorData::new(experts.into_iter().map(|e| e as i64).collect::<Vec<_>>(), [n, k]), device)
}

/// The selection `k` keys our top-k makes from `sel`'s scores, for queries from position
/// `start` on (the selection a pinned run replaced).
fn own_selection<B: DsaBackend>(sel: &Selection<B>, k: usize, start: usize) -> Selection<B> {
    let (indices, valid) = ops::topk_select(sel.scores.clone(), k, Some(start));
    Selection { scores: sel.scores.clone(), indices, valid }
}

/// The comparisons of one case run.
struct Compare<'a> {
    golden: &'a Golden,
    cfg: &'a DeepSeekV32Config,
    tol: Tolerances,
    /// Whether the choices are the case's (then our own top-k is compared with them).
    pin: bool,
    /// Whether the errors and each layer's flips are judged (else reported).
    judged: bool,
    checks: Vec<Check>,
}

impl Compare<'_> {
    /// Every layer's golden choices over the prefill.
    fn prefill_pins<B: Backend>(&self, batch: usize, prefill: usize, device: &B::Device) -> Result<Vec<LayerPins<B>>, CaseError> {
        (0..self.cfg.num_hidden_layers)
            .map(|layer| {
                let name = |what: &str| format!("layer{layer}.{what}");
                let mask = self.golden.mask(&name("selected"), &[batch, prefill, prefill])?;
                let selection = Some(selection_from_mask(&mask, [batch, prefill, prefill], self.cfg.index_topk.min(prefill), device));
                let experts = self.experts(&name("experts"), layer, &[batch, prefill], None)?;
                Ok(LayerPins { selection, experts: experts.map(|e| experts_tensor(e, self.cfg.num_experts_per_tok, device)) })
            })
            .collect()
    }

    /// The golden choices of the decode step at `pos`: every MoE layer's experts, and layer
    /// 0's selection at the last step (the only one a case records).
    fn decode_pins<B: Backend>(&self, batch: usize, prefill: usize, total: usize, pos: usize, device: &B::Device) -> Result<Vec<LayerPins<B>>, CaseError> {
        (0..self.cfg.num_hidden_layers)
            .map(|layer| {
                let name = format!("decode.layer{layer}.experts");
                let experts = self.experts(&name, layer, &[batch, total - prefill], Some(pos - prefill))?;
                let experts = experts.map(|e| experts_tensor(e, self.cfg.num_experts_per_tok, device));
                let last = format!("decode.layer{layer}.selected_last");
                let selection = match pos + 1 == total && self.golden.has(&last) {
                    true => Some(selection_from_mask(&self.golden.mask(&last, &[batch, total])?, [batch, 1, total], self.cfg.index_topk.min(total), device)),
                    false => None,
                };
                Ok(LayerPins { selection, experts })
            })
            .collect()
    }

    /// The golden experts `name` (`[B, T, k]`) of a MoE `layer` (`None` for a dense one),
    /// token-major, of all `T` positions or of position `only`.
    fn experts(&self, name: &str, layer: usize, tokens: &[usize; 2], only: Option<usize>) -> Result<Option<Vec<usize>>, CaseError> {
        if !self.cfg.is_moe_layer(layer) {
            return Ok(None);
        }
        let (k, e) = (self.cfg.num_experts_per_tok, self.cfg.n_routed_experts);
        let all = self.golden.experts(name, &[tokens[0], tokens[1], k], e)?;
        Ok(Some(match only {
            None => all,
            Some(pos) => (0..tokens[0]).flat_map(|b| all[(b * tokens[1] + pos) * k..][..k].to_vec()).collect(),
        }))
    }

    fn prefill<B: DsaBackend>(&mut self, trace: Trace<B>, batch: usize, prefill: usize) -> Result<(), CaseError> {
        let (golden, tol) = (self.golden, self.tol);
        let check = self.rel_error("logits", trace.logits, |_| true, self.judged.then_some(tol.rel))?;
        self.checks.push(check);
        for (layer, lt) in trace.layers.into_iter().enumerate() {
            let name = |what: &str| format!("layer{layer}.{what}");
            if golden.has(&name("hidden")) {
                let check = self.rel_error(&name("hidden"), lt.hidden, |_| true, self.judged.then_some(tol.rel))?;
                self.checks.push(check);
            }
            if let (Some(experts), false) = (&lt.experts, self.pin || !golden.has(&name("experts"))) {
                let experts = host_experts(experts.clone());
                self.routing(&name("experts"), &[batch, prefill, self.cfg.num_experts_per_tok], &experts)?;
            }
            let Some(sel) = lt.selection else { continue };
            if golden.has(&name("index_scores")) {
                // Raw scores: only the causal entries (key s <= query t) are meaningful.
                let keep = |i: usize| i % prefill <= (i / prefill) % prefill;
                let check = self.rel_error(&name("index_scores"), sel.scores.clone(), keep, self.judged.then_some(tol.index_scores))?;
                self.checks.push(check);
            }
            if golden.has(&name("selected")) {
                // A shared layer's selection (and its trace's scores) are its source layer's.
                let scored = format!("layer{}.index_scores", self.cfg.indexer_source(layer));
                let scores = match golden.has(&scored) {
                    true => golden.f32(&scored, &[batch, prefill, prefill])?,
                    false => host(sel.scores.clone()),
                };
                // Pinned, compare the selection our top-k would have made.
                let sel = match self.pin {
                    true => own_selection(&sel, self.cfg.index_topk, 0),
                    false => sel,
                };
                let candidates = |row: usize| row % prefill + 1;
                let check = self.selection(&name("selected"), &[batch, prefill, prefill], &sel, &scores, candidates)?;
                self.checks.push(check);
            }
        }
        Ok(())
    }

    /// Relative error of `ours` against golden `name` over the flat entries `keep` accepts
    /// (judged against `limit` where given).
    fn rel_error<B: Backend, const D: usize>(&self, name: &str, ours: Tensor<B, D>, keep: impl Fn(usize) -> bool, limit: Option<f64>) -> Result<Check, CaseError> {
        let reference = self.golden.f32(name, &ours.dims())?;
        let ours = host(ours);
        let (a, b): (Vec<f32>, Vec<f32>) = ours.into_iter().zip(reference).enumerate().filter(|(i, _)| keep(*i)).map(|(_, p)| p).unzip();
        Ok(Check::RelError { tensor: name.into(), value: rel_error(&a, &b), limit })
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
        let mask = self.golden.mask(name, shape)?;
        let k = selection.indices.dims()[2];
        let indices = selection.indices.to_data().convert::<i64>().into_vec::<i64>().expect("int data converts to i64");
        let valid: Vec<bool> = selection.valid.clone().int().into_data().convert::<i64>().into_vec::<i64>().expect("int data converts to i64").iter().map(|v| *v != 0).collect();
        let keys = shape[shape.len() - 1];
        if scores.len() != mask.len() || indices.len() * keys != mask.len() * k {
            return Err(self.golden.malformed(format!("`{name}` has shape {shape:?}, our selection {:?}", selection.indices.dims())));
        }
        let diff = compare_selection(&indices, &valid, k, &mask, scores, keys, candidates);
        Ok(Check::Selection { tensor: name.into(), diff, limit: self.tol.near_tie.filter(|_| self.judged) })
    }

    /// Our experts (`ours`, token-major) against the golden experts `name` of `shape`
    /// (`[B, T, k]`), as sets per token.
    fn routing(&mut self, name: &str, shape: &[usize; 3], ours: &[usize]) -> Result<(), CaseError> {
        let theirs = self.golden.experts(name, shape, self.cfg.n_routed_experts)?;
        let k = shape[2];
        if ours.len() != theirs.len() {
            return Err(self.golden.malformed(format!("`{name}` has shape {shape:?}, we routed {} choices", ours.len())));
        }
        let flipped = theirs.chunks(k).zip(ours.chunks(k)).map(|(t, o)| t.iter().filter(|e| !o.contains(e)).count()).sum();
        let limit = (self.judged && self.tol.near_tie.is_some()).then_some(0);
        self.checks.push(Check::Routing { tensor: name.into(), flipped, total: theirs.len(), limit });
        Ok(())
    }

    /// Free-running: the shares of the selections and of the expert choices flipped, each
    /// over all layers' choices (prefill and decode).
    fn pooled_flips(&mut self) {
        let share = |routing: bool| {
            let (flipped, total) = self.checks.iter().filter(|c| matches!(c, Check::Routing { .. }) == routing).fold((0, 0), |(f, t), check| match check {
                Check::Selection { diff, .. } => (f + diff.mismatched, t + diff.selected),
                Check::Routing { flipped, total, .. } => (f + flipped, t + total),
                _ => (f, t),
            });
            flipped as f64 / total.max(1) as f64
        };
        let (selections, experts) = (share(false), share(true));
        self.checks.push(Check::Flips { what: "top-k selections flipped".into(), share: selections, limit: self.tol.flips });
        self.checks.push(Check::Flips { what: "expert choices flipped".into(), share: experts, limit: self.tol.flips });
    }
}

/// The selection `[B, T, k]` (indices in key order, then invalid padding) of a golden mask
/// `[B, T, keys]` (1 = selected).
fn selection_from_mask<B: Backend>(mask: &[u8], [b, t, keys]: [usize; 3], k: usize, device: &B::Device) -> (Tensor<B, 3, Int>, Tensor<B, 3, Bool>) {
    let (mut indices, mut valid) = (vec![0i64; b * t * k], vec![false; b * t * k]);
    for (row, m) in mask.chunks(keys).enumerate() {
        for (j, key) in m.iter().enumerate().filter(|(_, v)| **v != 0).map(|(key, _)| key).take(k).enumerate() {
            indices[row * k + j] = key as i64;
            valid[row * k + j] = true;
        }
    }
    (
        Tensor::from_data(TensorData::new(indices, [b, t, k]), device),
        Tensor::from_data(TensorData::new(valid, [b, t, k]), device),
    )
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

    /// A golden selection mask of `shape` (1 = selected).
    fn mask(&self, name: &str, shape: &[usize]) -> Result<Vec<u8>, CaseError> {
        self.expect_shape(name, shape)?;
        self.ckpt.read_data(name)?.convert::<u8>().into_vec::<u8>().map_err(|e| self.malformed(format!("`{name}`: {e:?}")))
    }

    /// Golden experts of `shape` (`[B, T, k]`), flat, each below `experts`.
    fn experts(&self, name: &str, shape: &[usize], experts: usize) -> Result<Vec<usize>, CaseError> {
        self.expect_shape(name, shape)?;
        let data = self.ckpt.read_data(name)?.convert::<i64>().into_vec::<i64>().map_err(|e| self.malformed(format!("`{name}`: {e:?}")))?;
        data.into_iter()
            .map(|e| usize::try_from(e).ok().filter(|&e| e < experts).ok_or_else(|| self.malformed(format!("`{name}` names expert {e} of {experts}"))))
            .collect()
    }
}
