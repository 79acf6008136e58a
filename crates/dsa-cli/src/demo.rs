//! `dsa-cli demo`: the whole DSA recipe on a CPU in a few minutes, on data shipped in the
//! repository.
//!
//! 1. Dense training of a micro model ([`Preset::Micro`]) on The Devil's Dictionary mixed
//!    with the synthetic long-range retrieval task (a key–value pair at the start of a
//!    sequence, the query at its end). This is the "pretrained dense model" DSA starts
//!    from.
//! 2. Dense warm-up of the lightning indexers (everything else frozen).
//! 3. Sparse training: every query attends to the indexer's top-k tokens only.
//! 4. Generation from the sparse model, and retrieval accuracy on held-out examples of the
//!    warm-up model (dense and sparse attention) against the sparse model.
//!
//! Each stage is a run directory under `--out`; running the demo again reuses finished
//! stages and resumes interrupted ones.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use clap::builder::RangedU64ValueParser;
use clap::Args;
use dsa_burn::{AttentionMode, DsaBackend};
use dsa_model::DeepSeekV32;

use crate::checkpoint::{has_checkpoints, load_model, RunError};
use crate::commands::{run_generate, run_training, GenerateArgs, ModelArgs, OptimArgs, TrainArgs};
use crate::corpus::DataArgs;
use crate::presets::Preset;
use crate::retrieval::accuracy;
use crate::tokenizer::TextTokenizer;
use crate::train::{Stage, DEFAULT_MTP_WEIGHT};

/// Seed of the held-out retrieval examples.
const EVAL_SEED: u64 = 1_000_003;

/// `dsa-cli demo`.
#[derive(Args, Clone, Debug)]
pub struct DemoArgs {
    /// Directory of the demo's three runs (`dense`, `warmup`, `sparse`).
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// The text to train on.
    #[arg(long, default_value = "data/devils-dictionary.txt")]
    pub data: PathBuf,
    /// Multiplies every stage's steps (1: the README's run; smaller for a quick try).
    #[arg(long, default_value_t = 1.0, value_parser = positive_scale)]
    pub scale: f64,
    /// Held-out retrieval examples to evaluate.
    #[arg(long, default_value_t = 100, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub eval_examples: usize,
}

/// Parses `--scale`: a finite number above 0.
fn positive_scale(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(scale) if scale.is_finite() && scale > 0.0 => Ok(scale),
        Ok(_) => Err("must be a finite number above 0 (1: the README's run)".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// One stage of the demo.
struct StageRun {
    name: &'static str,
    stage: Stage,
    steps: usize,
    lr: f64,
}

/// The demo's stages.
const STAGES: [StageRun; 3] = [
    StageRun { name: "dense", stage: Stage::Dense, steps: 900, lr: 3e-3 },
    StageRun { name: "warmup", stage: Stage::Warmup, steps: 60, lr: 1e-3 },
    StageRun { name: "sparse", stage: Stage::Sparse, steps: 150, lr: 1e-3 },
];
/// Tokens per training sequence.
const SEQ_LEN: usize = 64;
/// Sequences per step.
const BATCH_SIZE: usize = 16;
/// Tokens each query attends to in sparse mode.
const TOP_K: usize = 8;
/// Vocabulary of the demo's tokenizer.
const VOCAB: usize = 512;
/// Retrieval examples among the training sequences (about 6500 of text).
const RETRIEVAL_EXAMPLES: usize = 10_000;

/// Runs the demo on the inference backend `B::InnerBackend` and trains on `B`.
pub fn run_demo<B>(args: &DemoArgs, device: &B::Device) -> Result<(), RunError>
where
    B: AutodiffBackend + DsaBackend,
    B::InnerBackend: DsaBackend,
{
    let start = Instant::now();
    let data = DataArgs { data: vec![args.data.clone()], seq_len: SEQ_LEN, retrieval: RETRIEVAL_EXAMPLES, pairs: 1 };
    let mut previous: Option<PathBuf> = None;
    for run in &STAGES {
        let out = args.out.join(run.name);
        let steps = ((run.steps as f64 * args.scale).round() as usize).max(1);
        if is_finished(&out) {
            println!("== {}: already trained in {}", run.name, out.display());
        } else {
            println!("== {}: {:?} for {steps} steps", run.name, run.stage);
            let model = ModelArgs {
                init: previous.clone(),
                preset: Preset::Micro,
                config: None,
                tokenizer: None,
                vocab: VOCAB,
                allow_nonfinite: false,
                index_topk: previous.is_none().then_some(TOP_K),
            };
            let optim = OptimArgs {
                steps,
                batch_size: BATCH_SIZE,
                lr: run.lr,
                lr_warmup_steps: Some(steps / 10),
                grad_clip: 1.0,
                weight_decay: 0.01,
                checkpoint_every: (steps / 2).max(1),
                log_every: 10,
                seed: 0,
                mtp_weight: DEFAULT_MTP_WEIGHT,
            };
            let resume = has_checkpoints(&out);
            run_training::<B>(run.stage, &TrainArgs { out: out.clone(), resume, model, data: data.clone(), optim, devices: None }, std::slice::from_ref(device))?;
        }
        previous = Some(out);
    }
    let trained = start.elapsed();

    println!("\n== generation from the sparse model");
    let sparse_dir = args.out.join("sparse");
    run_generate::<B::InnerBackend>(
        &GenerateArgs {
            model: sparse_dir.clone(),
            allow_nonfinite: false,
            prompts: vec!["DEVIL, n.".into()],
            file: None,
            lines: false,
            chat: false,
            system: None,
            chat_template: None,
            print_tokens: false,
            max_tokens: 80,
            temperature: 0.7,
            top_k: 0,
            top_p: 0.9,
            seed: 0,
            dense: false,
            speculative: false,
        },
        device,
    )?;

    println!("\n== retrieval accuracy on {} held-out examples ({SEQ_LEN} tokens, the value at the start, the query at the end; sparse = top-{TOP_K})", args.eval_examples);
    let docs = data.documents()?;
    let examples = data.retrieval_examples(&docs, EVAL_SEED, args.eval_examples);
    let (_, warm, tokenizer) = load_model::<B::InnerBackend>(&args.out.join("warmup"), false, device)?;
    let (_, sparse, _) = load_model::<B::InnerBackend>(&sparse_dir, false, device)?;
    let score = |model: &DeepSeekV32<B::InnerBackend>, mode, tok: &TextTokenizer| {
        accuracy(&model.clone().with_attention_mode(mode), tok, &examples, SEQ_LEN + 1).map(|a| 100.0 * a)
    };
    println!("  dense warm-up model, dense attention:   {:5.1}%", score(&warm, AttentionMode::Dense, &tokenizer)?);
    println!("  dense warm-up model, sparse attention:  {:5.1}%", score(&warm, AttentionMode::Sparse, &tokenizer)?);
    println!("  sparse-trained model, sparse attention: {:5.1}%", score(&sparse, AttentionMode::Sparse, &tokenizer)?);
    println!("\ndemo done in {:.0} s ({:.0} s of training)", start.elapsed().as_secs_f64(), trained.as_secs_f64());
    Ok(())
}

/// Whether a stage's run directory holds its final model.
fn is_finished(run_dir: &Path) -> bool {
    run_dir.join("model.mpk").is_file()
}

