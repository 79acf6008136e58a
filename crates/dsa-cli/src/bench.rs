//! `dsa-cli bench-train`: the time of one whole training step (forward, backward, AdamW
//! with clipping) of a preset model on random tokens, per stage and sequence length, as
//! JSON lines comparable with `../shared/bench/peer_train_torch.py` (the same model in
//! PyTorch; run both in one GPU call and compare their `tokens_per_s`).
//!
//! The model FLOPs of a step follow the peer's formulas ([`step_flops`]), so the two sides'
//! `model_tflops_per_step` agree and `mfu_h100` is against the same 989 TFLOP/s bf16 peak.

use std::time::Instant;

use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, Int, Tensor};
use clap::builder::RangedU64ValueParser;
use clap::Args;
use dsa_burn::DsaBackend;
use dsa_model::DeepSeekV32Config;
use serde::Serialize;

use crate::batcher::TokenBatch;
use crate::checkpoint::RunError;
use crate::presets::Preset;
use crate::train::{optimizer, LanguageModel, Stage};

/// Dense bf16 tensor-core peak of an H100 SXM, the peer's MFU reference.
pub const H100_BF16_PEAK: f64 = 989e12;

/// Arguments of `dsa-cli bench-train`.
#[derive(Args, Clone, Debug)]
pub struct BenchTrainArgs {
    /// Model size.
    #[arg(long = "model", value_enum, default_value_t = Preset::Small)]
    pub preset: Preset,
    /// Vocabulary size.
    #[arg(long, default_value_t = 8192, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub vocab: usize,
    /// Stages to time, each with a fresh model and optimizer.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Stage::Dense, Stage::Warmup, Stage::Sparse])]
    pub modes: Vec<Stage>,
    /// Tokens per sequence (comma-separated for several lengths).
    #[arg(long, value_delimiter = ',', default_values_t = [8192], value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub seq_len: Vec<usize>,
    /// Sequences per step.
    #[arg(long, default_value_t = 1, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub batch_size: usize,
    /// Untimed steps first (kernel compilation, autotuning, memory pools).
    #[arg(long, default_value_t = 3)]
    pub warm: usize,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 5, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub steps: usize,
}

/// One measurement (a JSON line; field names as the peer's).
#[derive(Clone, Debug, Serialize)]
pub struct StepTiming {
    /// `train_step_<stage>`.
    pub op: String,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Sequences per step.
    pub batch: usize,
    /// Median step time in milliseconds (wall clock, device synchronised).
    pub ms: f64,
    /// Median time of the forward pass and loss, in milliseconds (the device is synchronised
    /// after each phase, so the three phases add up to the step).
    pub forward_ms: f64,
    /// Median time of the backward pass, in milliseconds.
    pub backward_ms: f64,
    /// Median time of the optimizer step (clipping and AdamW), in milliseconds.
    pub optimizer_ms: f64,
    /// Training tokens per second.
    pub tokens_per_s: f64,
    /// Model FLOPs of one step in TFLOP ([`step_flops`]).
    pub model_tflops_per_step: f64,
    /// Model FLOP/s over [`H100_BF16_PEAK`].
    pub mfu_h100: f64,
    /// Device memory held by the allocator after the timed steps, in GB (its pools keep
    /// their peak size), where the backend reports it.
    pub reserved_gb: Option<f64>,
    /// Every parameter.
    pub params_total: usize,
    /// Parameters one token uses.
    pub params_active: usize,
}

/// Model FLOPs of one training step of `stage` over `batch` sequences of `t` tokens, as
/// `peer_train_torch.py` counts them: `N = B·T` tokens; `P` the active parameters without
/// the embedding and the indexers (with the LM head); `P_I` the indexers'; `pd` the causal
/// (query, key) pairs, `ps` the selected ones; attention `A(x) = 2·H·x·(d_qk + d_v)`, indexer
/// `I(x) = 2·H_I·D_I·x`. Dense: `6PN + 3A(pd)`; warm-up: `2PN + A(pd) + 2·H·pd·d_qk + 4·P_I·N
/// + 3I(pd)`; sparse: `6PN + 3A(ps) + 4·P_I·N + I(pd) + 3I(ps)`.
///
/// ```
/// use dsa_cli::bench::step_flops;
/// use dsa_cli::presets::Preset;
/// use dsa_cli::train::Stage;
/// let small = Preset::Small.config(8192);
/// // The peer's `step_flops` with its model's parameter counts (111,195,960 in all,
/// // 61,650,744 active, 3,983,360 in the indexers), in TFLOP, at 8K and 16K tokens.
/// for (stage, peer) in [(Stage::Dense, [2.9118, 6.5967]), (Stage::Warmup, [1.3846, 3.5939]), (Stage::Sparse, [2.7963, 5.7323])] {
///     for (t, peer) in [8192, 16384].into_iter().zip(peer) {
///         let ours = step_flops(&small, stage, 1, t) / 1e12;
///         assert!((ours / peer - 1.0).abs() < 2e-3, "{stage:?} at {t}: {ours} against {peer}");
///     }
/// }
/// ```
pub fn step_flops(cfg: &DeepSeekV32Config, stage: Stage, batch: usize, t: usize) -> f64 {
    let (b, t) = (batch as f64, t as f64);
    let n = b * t;
    let p_idx = indexer_params(cfg) as f64;
    let p = (cfg.parameter_count().active - cfg.vocab_size * cfg.hidden_size) as f64 - p_idx;
    let k = cfg.index_topk.min(t as usize) as f64;
    let pd = b * t * (t + 1.0) / 2.0;
    // Σ_t min(k, t + 1) = k(k+1)/2 + (T − k)·k.
    let ps = b * (k * (k + 1.0) / 2.0 + (t - k) * k);
    let (h, d_qk, d_v) = (cfg.num_attention_heads as f64, cfg.qk_head_dim() as f64, cfg.v_head_dim as f64);
    let attn = |pairs: f64| 2.0 * h * pairs * (d_qk + d_v);
    let idx = |pairs: f64| 2.0 * (cfg.index_n_heads * cfg.index_head_dim) as f64 * pairs;
    match stage {
        Stage::Dense => 6.0 * p * n + 3.0 * attn(pd),
        Stage::Warmup => 2.0 * p * n + attn(pd) + 2.0 * h * pd * d_qk + 4.0 * p_idx * n + 3.0 * idx(pd),
        Stage::Sparse => 6.0 * p * n + 3.0 * attn(ps) + 4.0 * p_idx * n + idx(pd) + 3.0 * idx(ps),
    }
}

/// The indexers' parameters: `wq_b`, `wk`, the key LayerNorm and `weights_proj` per layer.
fn indexer_params(cfg: &DeepSeekV32Config) -> usize {
    let (d, id) = (cfg.hidden_size, cfg.index_head_dim);
    cfg.num_hidden_layers * (cfg.q_lora_rank * cfg.index_n_heads * id + d * id + 2 * id + d * cfg.index_n_heads)
}

/// Times `args`' stages and lengths on `device`, printing a JSON line per measurement;
/// `reserved` reads the device memory the allocator holds (`None` where unknown).
pub fn bench_train<B>(args: &BenchTrainArgs, device: &B::Device, reserved: impl Fn() -> Option<u64>) -> Result<Vec<StepTiming>, RunError>
where
    B: AutodiffBackend + DsaBackend,
    B::InnerBackend: DsaBackend,
{
    if args.steps == 0 || args.batch_size == 0 || args.seq_len.contains(&0) {
        return Err("--steps, --batch-size and --seq-len must be at least 1".into());
    }
    let cfg = args.preset.config(args.vocab);
    let mut timings = Vec::new();
    for &t in &args.seq_len {
        if t > cfg.max_position_embeddings {
            return Err(format!("--seq-len {t} exceeds the preset's {} positions", cfg.max_position_embeddings).into());
        }
        for &stage in &args.modes {
            let timing = time_stage::<B>(&cfg, stage, args, t, device, &reserved);
            println!("{}", serde_json::to_string(&timing).expect("a timing serialises"));
            timings.push(timing);
        }
    }
    Ok(timings)
}

fn time_stage<B>(cfg: &DeepSeekV32Config, stage: Stage, args: &BenchTrainArgs, t: usize, device: &B::Device, reserved: &impl Fn() -> Option<u64>) -> StepTiming
where
    B: AutodiffBackend + DsaBackend,
    B::InnerBackend: DsaBackend,
{
    let mut model = LanguageModel::new(cfg.init::<B>(device), stage);
    let mut optim = optimizer::<B>(0.01, 1.0);
    let tokens = Tensor::<B, 2, Int>::random([args.batch_size, t + 1], Distribution::Uniform(0.0, cfg.vocab_size as f64), device);
    let batch = TokenBatch { inputs: tokens.clone().narrow(1, 0, t), targets: tokens.narrow(1, 1, t) };
    let name = format!("{stage:?}").to_lowercase();
    let mut phases: [Vec<f64>; 4] = Default::default();
    for step in 0..args.warm + args.steps {
        let sync = || B::sync(device).expect("the device runs the step");
        let start = Instant::now();
        let loss = model.forward_step(batch.clone()).loss;
        sync();
        let forward = start.elapsed();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        sync();
        let backward = start.elapsed();
        model = optim.step(3e-4, model, grads);
        sync();
        let end = start.elapsed();
        let ms = [end, forward, backward - forward, end - backward].map(|d| d.as_secs_f64() * 1e3);
        let kind = if step < args.warm { "warm-up" } else { "timed" };
        eprintln!(
            "{name} {t}: {kind} step {}/{}: {:.1} ms (forward {:.1}, backward {:.1}, optimizer {:.1})",
            step + 1,
            args.warm + args.steps,
            ms[0],
            ms[1],
            ms[2],
            ms[3]
        );
        if step >= args.warm {
            phases.iter_mut().zip(ms).for_each(|(p, ms)| p.push(ms));
        }
    }
    let [ms, forward_ms, backward_ms, optimizer_ms] = phases.map(|mut times| {
        times.sort_by(f64::total_cmp);
        (times[times.len() / 2] * 1e3).round() / 1e3
    });
    let flops = step_flops(cfg, stage, args.batch_size, t);
    let params = cfg.parameter_count();
    StepTiming {
        op: format!("train_step_{name}"),
        seq_len: t,
        batch: args.batch_size,
        ms,
        forward_ms,
        backward_ms,
        optimizer_ms,
        tokens_per_s: ((args.batch_size * t) as f64 / ms * 1e3).round(),
        model_tflops_per_step: flops / 1e12,
        mfu_h100: flops / (ms * 1e-3) / H100_BF16_PEAK,
        reserved_gb: reserved().map(|b| b as f64 / 1e9),
        params_total: params.total,
        params_active: params.active,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};

    /// Every stage runs its steps and reports the step's FLOPs over its measured time.
    #[test]
    fn bench_train_times_every_stage() {
        let args = BenchTrainArgs {
            preset: Preset::Micro,
            vocab: 64,
            modes: vec![Stage::Dense, Stage::Warmup, Stage::Sparse],
            seq_len: vec![24],
            batch_size: 2,
            warm: 0,
            steps: 1,
        };
        let timings = bench_train::<Autodiff<NdArray>>(&args, &Default::default(), || None).unwrap();
        let ops: Vec<&str> = timings.iter().map(|t| t.op.as_str()).collect();
        assert_eq!(ops, ["train_step_dense", "train_step_warmup", "train_step_sparse"]);
        let cfg = Preset::Micro.config(64);
        for (t, &stage) in timings.iter().zip(&args.modes) {
            assert!(t.ms > 0.0 && t.reserved_gb.is_none());
            assert!((t.tokens_per_s - 48e3 / t.ms).abs() <= 0.5, "{t:?}");
            let flops = step_flops(&cfg, stage, 2, 24);
            assert!((t.mfu_h100 - flops / (t.ms * 1e-3) / H100_BF16_PEAK).abs() <= 1e-3 * t.mfu_h100, "{t:?}");
        }
        let bad = BenchTrainArgs { seq_len: vec![100_000], ..args };
        let err = bench_train::<Autodiff<NdArray>>(&bad, &Default::default(), || None).unwrap_err();
        assert!(err.to_string().contains("--seq-len 100000"), "{err}");
    }
}
