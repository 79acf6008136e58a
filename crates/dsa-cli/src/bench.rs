//! `dsa-cli bench-train`: the time of one whole training step (forward, backward, AdamW
//! with clipping) of a preset model on random tokens, per stage and sequence length, as
//! JSON lines comparable with `../shared/bench/peer_train_torch.py` (the same model in
//! PyTorch; run both in one GPU call and compare their `tokens_per_s`).
//!
//! The model FLOPs of a step follow the peer's formulas ([`step_flops`]), so the two sides'
//! `model_tflops_per_step` agree and `mfu_h100` is against the same 989 TFLOP/s bf16 peak.
//!
//! `dsa-cli bench-matmul`: cubek's matmul strategies on the projections of a preset
//! ([`projection_shapes`]) in their three products (forward, input and weight gradients),
//! one JSON line per (projection, product, strategy); see [`dsa_burn::matmul`].

use std::time::Instant;

use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, Int, Tensor};
use clap::builder::RangedU64ValueParser;
use clap::Args;
use dsa_burn::matmul::{Layout, MatmulShape};
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
    /// The cubek matmul strategy of every projection, by its name in `bench-matmul`'s lines
    /// (CubeCL backends; default: the dispatcher's table).
    #[arg(long)]
    pub matmul_strategy: Option<String>,
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

/// Arguments of `dsa-cli bench-matmul`.
#[derive(Args, Clone, Debug)]
pub struct BenchMatmulArgs {
    /// Model size whose projections are timed.
    #[arg(long = "model", value_enum, default_value_t = Preset::Small)]
    pub preset: Preset,
    /// Vocabulary size (the LM head's outputs).
    #[arg(long, default_value_t = 8192)]
    pub vocab: usize,
    /// Tokens of a step (`M` of every product: sequences × tokens per sequence).
    #[arg(long, default_value_t = 8192)]
    pub tokens: usize,
    /// Projections to time, by name or by any of the names joined with `+` (comma-separated;
    /// `--list` prints them). Default: all.
    #[arg(long, value_delimiter = ',')]
    pub shapes: Vec<String>,
    /// Products of each projection `y = x·W`: NN (forward), NT (`dX = dY·Wᵀ`), TN
    /// (`dW = Xᵀ·dY`), operands laid out as Burn's autodiff produces them.
    #[arg(long, value_delimiter = ',', default_values_t = [Layout::NN, Layout::NT, Layout::TN])]
    pub layouts: Vec<Layout>,
    /// Kernels to time (comma-separated): `burn` (Burn's own matmul), cubek strategies by
    /// name (`--list` prints them), `all` (every one, with the unit and naive kernels).
    /// Default: `burn` and every tensor-core strategy.
    #[arg(long, value_delimiter = ',')]
    pub strategies: Vec<String>,
    /// Untimed launches first (kernel compilation; at least one, which also checks the result
    /// against Burn's matmul).
    #[arg(long, default_value_t = 3)]
    pub warm: usize,
    /// Launches per timed round (the device is synchronised around each round).
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// Timed rounds (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Print the projections and the strategies and time nothing.
    #[arg(long)]
    pub list: bool,
}

/// The linear layers of `cfg`'s model over `tokens` tokens, as [`MatmulShape`]s named after
/// their parameters; layers of one size are one shape with their names joined by `+`: the
/// attention's `wq_a`, `wq_b`, `wkv_a`, `wkv_b` (dense and warm-up stages only; the sparse
/// stage multiplies its weight per head) and `wo`, the indexer's `wq_b`, `wk` and
/// `weights_proj`, the dense MLP's and the shared experts' `gate_proj`, `up_proj` and
/// `down_proj`, and the LM head. Not the MoE router (an f32 product) nor the routed experts
/// (grouped products).
///
/// ```
/// use dsa_cli::bench::projection_shapes;
/// use dsa_cli::presets::Preset;
/// let shapes = projection_shapes(&Preset::Small.config(8192), 8192);
/// let sizes: Vec<(&str, usize, usize)> = shapes.iter().map(|s| (s.name.as_str(), s.k, s.n)).collect();
/// assert_eq!(sizes, [
///     ("attn.wq_a", 768, 384),
///     ("attn.wq_b", 384, 1152),
///     ("attn.wkv_a", 768, 288),
///     ("attn.wkv_b", 256, 1536),
///     ("attn.wo", 768, 768),
///     ("indexer.wq_b", 384, 1024),
///     ("indexer.wk", 768, 128),
///     ("indexer.weights_proj", 768, 8),
///     ("mlp.gate_proj+mlp.up_proj", 768, 2048),
///     ("mlp.down_proj", 2048, 768),
///     ("shared_experts.gate_proj+shared_experts.up_proj", 768, 512),
///     ("shared_experts.down_proj", 512, 768),
///     ("lm_head", 768, 8192),
/// ]);
/// assert!(shapes.iter().all(|s| s.m == 8192));
/// ```
pub fn projection_shapes(cfg: &DeepSeekV32Config, tokens: usize) -> Vec<MatmulShape> {
    let (d, h) = (cfg.hidden_size, cfg.num_attention_heads);
    let mut layers = vec![
        ("attn.wq_a", d, cfg.q_lora_rank),
        ("attn.wq_b", cfg.q_lora_rank, h * cfg.qk_head_dim()),
        ("attn.wkv_a", d, cfg.kv_lora_rank + cfg.qk_rope_head_dim),
        ("attn.wkv_b", cfg.kv_lora_rank, h * (cfg.qk_nope_head_dim + cfg.v_head_dim)),
        ("attn.wo", h * cfg.v_head_dim, d),
        ("indexer.wq_b", cfg.q_lora_rank, cfg.index_n_heads * cfg.index_head_dim),
        ("indexer.wk", d, cfg.index_head_dim),
        ("indexer.weights_proj", d, cfg.index_n_heads),
    ];
    let moe_layers = (0..cfg.num_hidden_layers).filter(|&l| cfg.is_moe_layer(l)).count();
    if moe_layers < cfg.num_hidden_layers {
        let hidden = cfg.intermediate_size;
        layers.extend([("mlp.gate_proj", d, hidden), ("mlp.up_proj", d, hidden), ("mlp.down_proj", hidden, d)]);
    }
    if moe_layers > 0 && cfg.n_shared_experts > 0 {
        let hidden = cfg.n_shared_experts * cfg.moe_intermediate_size;
        layers.extend([("shared_experts.gate_proj", d, hidden), ("shared_experts.up_proj", d, hidden), ("shared_experts.down_proj", hidden, d)]);
    }
    layers.push(("lm_head", d, cfg.vocab_size));
    let mut shapes: Vec<MatmulShape> = Vec::new();
    for (name, k, n) in layers {
        match shapes.iter_mut().find(|s| (s.k, s.n) == (k, n)) {
            Some(shape) => shape.name = format!("{}+{name}", shape.name),
            None => shapes.push(MatmulShape { name: name.into(), m: tokens, k, n }),
        }
    }
    shapes
}

/// The projections of `args` (all, or those `--shapes` names).
pub fn selected_shapes(args: &BenchMatmulArgs) -> Result<Vec<MatmulShape>, RunError> {
    if args.tokens == 0 || args.iters == 0 || args.rounds == 0 {
        return Err("--tokens, --iters and --rounds must be at least 1".into());
    }
    let all = projection_shapes(&args.preset.config(args.vocab), args.tokens);
    if args.shapes.is_empty() {
        return Ok(all);
    }
    let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
    let mut chosen: Vec<MatmulShape> = Vec::new();
    for wanted in &args.shapes {
        let shape = all
            .iter()
            .find(|s| s.name == *wanted || s.name.split('+').any(|n| n == wanted))
            .ok_or_else(|| format!("--shapes: no projection `{wanted}` (there are {})", names.join(", ")))?;
        if !chosen.contains(shape) {
            chosen.push(shape.clone());
        }
    }
    Ok(chosen)
}

/// `dsa-cli bench-matmul` on a CubeCL backend `B`: times `args`' strategies on its
/// projections, printing a JSON line per measurement ([`dsa_burn::matmul::MatmulTiming`])
/// and a progress line on stderr; with `--list`, prints the projections and strategies.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub fn bench_matmul<B: dsa_burn::matmul::CubeMatmul>(args: &BenchMatmulArgs, device: &B::Device) -> Result<Vec<dsa_burn::matmul::MatmulTiming>, RunError> {
    use dsa_burn::matmul::{bench, extra_strategies, strategies, strategy_by_name, strategy_name, BenchSettings, Candidate};
    use std::io::Write;
    let shapes = selected_shapes(args)?;
    let candidates: Vec<Candidate> = if args.strategies.is_empty() {
        std::iter::once(Candidate::Burn).chain(strategies().into_iter().map(Candidate::Cubek)).collect()
    } else {
        let mut chosen = Vec::new();
        for name in &args.strategies {
            match name.as_str() {
                "burn" => chosen.push(Candidate::Burn),
                "all" => chosen.extend(std::iter::once(Candidate::Burn).chain(strategies().into_iter().chain(extra_strategies()).map(Candidate::Cubek))),
                _ => chosen.push(Candidate::Cubek(
                    strategy_by_name(name).ok_or_else(|| format!("--strategies: no strategy `{name}` (`--list` prints them)"))?,
                )),
            }
        }
        chosen
    };
    if args.list {
        for s in &shapes {
            println!("shape {}: [{}, {}] · [{}, {}]", s.name, s.m, s.k, s.k, s.n);
        }
        println!("strategy burn (Burn's matmul)");
        for s in strategies() {
            println!("strategy {}", strategy_name(&s));
        }
        for s in extra_strategies() {
            println!("strategy {} (only when named)", strategy_name(&s));
        }
        return Ok(Vec::new());
    }
    let settings = BenchSettings { warm: args.warm, iters: args.iters, rounds: args.rounds };
    Ok(bench::<B>(&shapes, &args.layouts, &candidates, settings, device, |t| {
        println!("{}", serde_json::to_string(t).expect("a timing serialises"));
        std::io::stdout().flush().ok();
        match (t.ms, t.tflops) {
            (Some(ms), Some(tflops)) => eprintln!("{} {} {}: {ms:.4} ms, {tflops:.2} TFLOP/s", t.shape, t.layout, t.strategy),
            _ => eprintln!("{} {} {}: {}", t.shape, t.layout, t.strategy, t.status),
        }
    }))
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
            matmul_strategy: None,
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

    /// `--shapes` picks projections by their joined name or any one of their names, each
    /// once, in the given order; an unknown name is an error that lists the known ones.
    #[test]
    fn bench_matmul_selects_shapes_by_name() {
        let args = BenchMatmulArgs {
            preset: Preset::Small,
            vocab: 8192,
            tokens: 64,
            shapes: vec!["mlp.up_proj".into(), "lm_head".into(), "mlp.gate_proj+mlp.up_proj".into()],
            layouts: vec![Layout::NN],
            strategies: Vec::new(),
            warm: 1,
            iters: 1,
            rounds: 1,
            list: false,
        };
        let shapes = selected_shapes(&args).unwrap();
        let names: Vec<&str> = shapes.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["mlp.gate_proj+mlp.up_proj", "lm_head"]);
        assert!(shapes.iter().all(|s| s.m == 64));
        let err = selected_shapes(&BenchMatmulArgs { shapes: vec!["wq".into()], ..args.clone() }).unwrap_err().to_string();
        assert!(err.contains("no projection `wq`") && err.contains("attn.wq_a"), "{err}");
        assert!(selected_shapes(&BenchMatmulArgs { rounds: 0, ..args }).is_err());
    }
}
