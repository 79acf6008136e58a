//! `dsa-cli`: conformance runs, model information, training (indexer warm-up, sparse and
//! dense training), generation and a CPU demo for DeepSeek-V3.2 in Burn.
//!
//! ```text
//! dsa-cli conformance ../shared/conformance/tiny-bf16 ../shared/conformance/tiny-fp8
//! dsa-cli info ../shared/conformance/tiny-fp8
//! dsa-cli --backend wgpu conformance CASE_DIR   # built with --features wgpu
//! dsa-cli --backend cuda --dtype bf16 conformance --pin CASE_DIR  # the case's choices, bf16 tolerances
//! dsa-cli demo                                  # train, generate, evaluate on a CPU
//! dsa-cli tokenizer train --vocab 1024 --out runs/tokenizer.json
//! dsa-cli train --dense --model micro --tokenizer runs/tokenizer.json --seq-len 64 --steps 300 --out runs/dense
//! dsa-cli warmup --init runs/dense --seq-len 64 --steps 60 --out runs/warmup
//! dsa-cli train --init runs/warmup --seq-len 64 --steps 150 --out runs/sparse
//! dsa-cli train --out runs/sparse --resume         # after an interruption
//! dsa-cli --backend cuda train --devices cuda:0,cuda:1 --batch-size 16 ...  # data-parallel
//! dsa-cli generate --model runs/sparse "DEVIL, n."
//! dsa-cli generate --model HF_DIR --chat            # the checkpoint's chat template
//! dsa-cli plot ours.jsonl peer.jsonl --out cost.png  # a benchmark run's cost curve
//! dsa-cli --backend cuda --dtype bf16 bench-train --seq-len 8192  # training steps, JSON lines
//! dsa-cli --backend cuda --dtype bf16 bench-matmul  # cubek matmul strategies on the projections
//! ```
//!
//! On GPU backends the compiled kernels are kept between runs (in `~/.cache/dsa-burn/kernels`,
//! or `$DSA_KERNEL_CACHE`; `DSA_KERNEL_CACHE=off` compiles afresh every run).

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use clap::{Parser, Subcommand, ValueEnum};
use dsa_burn::DsaBackend;
use dsa_cli::bench::{bench_train, BenchMatmulArgs, BenchTrainArgs};
use dsa_cli::commands::{
    run_generate, run_training, tokenizer_train, DeviceList, DeviceName, GenerateArgs, TokenizerTrainArgs, TrainArgs,
};
use dsa_cli::demo::{run_demo, DemoArgs};
use dsa_cli::train::Stage;
use dsa_model::cache::CacheMemory;
use dsa_model::conformance::{run_case_with, CaseOptions, Precision};
use dsa_cli::checkpoint::ModelFiles;
use dsa_cli::interrupt::{self, Interrupted};
use dsa_model::chat::PromptFormat;
use dsa_model::config::ScaleFmt;
use dsa_model::DeepSeekV32Config;

/// DeepSeek-V3.2 with DeepSeek Sparse Attention on Burn.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Burn backend to run on (wgpu and cuda need the crate's feature of that name).
    #[arg(long, value_enum, default_value_t = BackendKind::Ndarray, global = true)]
    backend: BackendKind,
    /// Float type of parameters and activations: `bf16` halves memory and uses bf16 math
    /// (CUDA only); training still updates f32 master weights with f32 optimizer state.
    #[arg(long, value_enum, default_value_t = FloatKind::F32, global = true)]
    dtype: FloatKind,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run conformance cases (a model directory with golden.safetensors from DeepSeek's
    /// reference): prefill and cached decode, printing ‖Δ‖/‖ref‖ of every compared tensor
    /// and the selection and routing mismatches. Exits with 1 if any case fails. The
    /// tolerances follow the arithmetic: f32 on ndarray and wgpu; TF32 matmuls for f32 on
    /// cuda; bf16 with `--dtype bf16`.
    Conformance {
        /// Case directories.
        #[arg(required = true)]
        case_dirs: Vec<PathBuf>,
        /// Take every layer's top-k selection and MoE experts from the case instead of
        /// choosing them (needed below f32: there a near-tie may flip, and the flip spreads).
        /// Without it, runs below f32 report their errors and judge the flips.
        #[arg(long)]
        pin: bool,
    },
    /// Check a model's weights against its config as loading does (names, shapes; a run's
    /// checksum), then print its family and the family features it uses (model_type,
    /// indexer RoPE, MTP layers, RoPE scaling, weight format, shared indexers), its size (layers,
    /// parameters) and its decode-cache memory per token, next to the full-size numbers of
    /// its family (DeepSeek-V3.2 or GLM-5).
    Info {
        /// HuggingFace model directory (config.json and safetensors weights) or a dsa-cli
        /// run directory (config.json and model.mpk).
        model_dir: PathBuf,
    },
    /// Tokenizers for training.
    Tokenizer {
        #[command(subcommand)]
        command: TokenizerCommand,
    },
    /// Dense warm-up of the lightning indexers: dense attention, every parameter frozen
    /// but the indexers, which learn the KL between the summed dense attention and their
    /// scores (start from a trained model with --init).
    Warmup(TrainArgs),
    /// Sparse training: each query attends to its indexer's top-k tokens; the model learns
    /// from the LM loss, the indexers from their KL over the selection (on detached
    /// inputs). With --dense, dense attention on the LM loss alone (a dense baseline, or
    /// the model that warm-up and sparse training start from).
    Train {
        /// Dense attention (the baseline) instead of sparse.
        #[arg(long)]
        dense: bool,
        #[command(flatten)]
        args: TrainArgs,
    },
    /// Draw the cost curve of one benchmark run (the JSON lines of `cargo bench --bench dsa`
    /// and of the PyTorch peer, from the same device call) as a PNG: forward time against
    /// context length, log–log, dense SDPA against our DSA attention layer; and print the
    /// peer's time over ours for every op both measured.
    Plot {
        /// Files of benchmark lines (other lines are skipped).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The PNG to write.
        #[arg(long, default_value = "cost.png")]
        out: PathBuf,
        /// Device named in the title (default: the `device` field of the lines).
        #[arg(long)]
        device: Option<String>,
    },
    /// Generate text with the KV + indexer caches (streamed; tokens/s on stderr), or chat
    /// through the checkpoint's chat template (--chat).
    Generate(GenerateArgs),
    /// Time whole training steps (forward, backward, AdamW) of a preset on random tokens per
    /// stage and length: JSON lines of step ms, tokens/s, model TFLOP/s and MFU as
    /// `../shared/bench/peer_train_torch.py` prints them (run both in one GPU call).
    BenchTrain(BenchTrainArgs),
    /// Time cubek's matmul strategies (CubeCL backends only) on a preset's projections in
    /// their three products (forward, input and weight gradients, laid out as Burn's
    /// autodiff lays them out): JSON lines of median ms, TFLOP/s and the error against Burn's
    /// matmul per (projection, product, strategy). The winners go into the table of
    /// `dsa_burn::cubecl::linear_strategy_name`.
    BenchMatmul(BenchMatmulArgs),
    /// The whole recipe on a CPU in a few minutes: dense training of a micro model on The
    /// Devil's Dictionary + a long-range retrieval task, indexer warm-up, sparse training,
    /// generation, and retrieval accuracy of the sparse model against its warm-up.
    Demo(DemoArgs),
}

#[derive(Subcommand, Debug)]
enum TokenizerCommand {
    /// Train a byte-level BPE tokenizer on text.
    Train(TokenizerTrainArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BackendKind {
    /// CPU (ndarray), f32.
    Ndarray,
    /// WebGPU / Vulkan through CubeCL.
    Wgpu,
    /// CUDA through CubeCL.
    Cuda,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum FloatKind {
    F32,
    Bf16,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = interrupt::install() {
        eprintln!("warning: {e}");
    }
    match dispatch(cli.backend, cli.dtype, &cli.command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) if e.is::<Interrupted>() => {
            eprintln!("{e}");
            ExitCode::from(interrupt::EXIT_CODE)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `command` on the chosen backend; `Ok(false)` when a conformance case failed.
fn dispatch(
    kind: BackendKind,
    dtype: FloatKind,
    command: &Command,
) -> Result<bool, Box<dyn Error>> {
    if dtype == FloatKind::Bf16 && kind != BackendKind::Cuda {
        return Err(format!("--dtype bf16 needs --backend cuda (got {kind:?})").into());
    }
    // Before the runtime starts: without a driver it panics on a thread of its own.
    #[cfg(feature = "cuda")]
    if kind == BackendKind::Cuda {
        dsa_cli::driver::check_cuda_driver()?;
    }
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    if kind != BackendKind::Ndarray {
        if let Some(root) = kernel_cache_root() {
            dsa_burn::kernel_cache::persist_compiled_kernels(&root);
        }
    }
    if let Command::BenchMatmul(args) = command {
        return bench_matmul(kind, dtype, args);
    }
    if let Command::BenchTrain(BenchTrainArgs { matmul_strategy: Some(name), .. }) = command {
        if kind == BackendKind::Ndarray {
            return Err(format!("--matmul-strategy {name} needs a CubeCL backend (--backend cuda or wgpu)").into());
        }
        #[cfg(any(feature = "wgpu", feature = "cuda"))]
        {
            let strategy = dsa_burn::matmul::strategy_by_name(name).ok_or_else(|| format!("--matmul-strategy: cubek has no strategy `{name}` (see `bench-matmul --list`)"))?;
            dsa_burn::cubecl::update_kernel_settings(|s| s.linear = Some(strategy));
        }
    }
    // Burn's CUDA matmuls of f32 tensors take TF32 inputs (cubek-matmul; no setting turns
    // that off in Burn 0.21, see the README's exactness section).
    let precision = match (kind, dtype) {
        (_, FloatKind::Bf16) => Precision::Bf16,
        (BackendKind::Cuda, FloatKind::F32) => Precision::Tf32,
        _ => Precision::F32,
    };
    // Device memory held by the allocator, where the backend tells.
    let unknown = || None::<u64>;
    #[cfg(feature = "cuda")]
    let cuda_reserved = || dsa_burn::cubecl::cuda_memory_reserved(&Default::default());
    // The devices: `train`/`warmup --devices`, else the backend's default device.
    #[cfg(feature = "cuda")]
    let cuda_devices = || {
        use burn::backend::cuda::CudaDevice;
        devices(command, "cuda", CudaDevice::new, |name| match name {
            DeviceName::Cuda(index) => Some(CudaDevice::new(index)),
            DeviceName::Cpu => None,
        })
    };
    match (kind, dtype) {
        #[cfg(feature = "ndarray")]
        (BackendKind::Ndarray, _) => {
            let devices = devices(command, "ndarray", |_| Default::default(), |name| (name == DeviceName::Cpu).then(Default::default))?;
            run::<burn::backend::NdArray>(command, precision, &unknown, &devices)
        }
        #[cfg(feature = "wgpu")]
        (BackendKind::Wgpu, _) => {
            if device_list(command).is_some() {
                return Err("--devices needs --backend cuda or ndarray".into());
            }
            run::<burn::backend::Wgpu>(command, precision, &unknown, &[Default::default()])
        }
        #[cfg(feature = "cuda")]
        (BackendKind::Cuda, FloatKind::F32) => {
            run::<burn::backend::Cuda>(command, precision, &cuda_reserved, &cuda_devices()?)
        }
        #[cfg(feature = "cuda")]
        (BackendKind::Cuda, FloatKind::Bf16) => {
            run::<burn::backend::Cuda<burn::tensor::bf16>>(command, precision, &cuda_reserved, &cuda_devices()?)
        }
        #[allow(unreachable_patterns)]
        (other, _) => Err(format!(
            "dsa-cli was built without the `{}` feature (rebuild with `--features {0}`)",
            format!("{other:?}").to_lowercase()
        )
        .into()),
    }
}

/// Where compiled GPU kernels are kept between runs (`dsa_burn::kernel_cache`):
/// `$DSA_KERNEL_CACHE` (`off`: not kept), else `$XDG_CACHE_HOME/dsa-burn/kernels`, else
/// `~/.cache/dsa-burn/kernels`.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn kernel_cache_root() -> Option<PathBuf> {
    match std::env::var_os("DSA_KERNEL_CACHE") {
        Some(v) if v == "off" => None,
        Some(v) => Some(PathBuf::from(v)),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|c| c.join("dsa-burn").join("kernels")),
    }
}

/// The `--devices` of `train` and `warmup`.
fn device_list(command: &Command) -> Option<&DeviceList> {
    match command {
        Command::Warmup(args) | Command::Train { args, .. } => args.devices.as_ref(),
        _ => None,
    }
}

/// The devices `command` runs on: its `--devices` on the backend named `backend`, whose
/// `i`-th device is `nth(i)` and device of a name `named(name)` (`None`: not this
/// backend's); else the default device.
fn devices<D: Default>(
    command: &Command,
    backend: &str,
    nth: impl Fn(usize) -> D,
    named: impl Fn(DeviceName) -> Option<D>,
) -> Result<Vec<D>, Box<dyn Error>> {
    match device_list(command) {
        Some(list) => list.resolve(backend, nth, named).map_err(|e| e as Box<dyn Error>),
        None => Ok(vec![D::default()]),
    }
}

/// Runs `command` on `devices` (all of them for data-parallel training, else the first).
fn run<B: DsaBackend>(
    command: &Command,
    precision: Precision,
    reserved: &dyn Fn() -> Option<u64>,
    devices: &[B::Device],
) -> Result<bool, Box<dyn Error>> {
    let device = devices.first().ok_or("no device")?;
    match command {
        Command::Conformance { case_dirs, pin } => {
            Ok(conformance::<B>(case_dirs, CaseOptions { precision, pin: *pin }, device))
        }
        Command::Info { model_dir } => info::<B>(model_dir, device).map(|()| true),
        Command::Plot { files, out, device } => {
            let plotted = dsa_cli::plot::plot_cost(files, out, device.clone())?;
            println!("{}: {} curves, {}", out.display(), plotted.series, plotted.device);
            if !plotted.ratios.is_empty() {
                println!("\n{:<36} {:>7} {:>11} {:>11} {:>7}", "ours against the PyTorch peer", "L", "ours ms", "peer ms", "ratio");
                for r in &plotted.ratios {
                    println!("{:<36} {:>7} {:>11.4} {:>11.4} {:>7.2}", r.what, r.l, r.ours_ms, r.peer_ms, r.ratio());
                }
                println!("(ratio = peer time / ours: above 1 where ours is faster)");
            }
            Ok(true)
        }
        Command::Tokenizer {
            command: TokenizerCommand::Train(args),
        } => done(tokenizer_train(args)),
        Command::Warmup(args) => done(run_training::<Autodiff<B>>(Stage::Warmup, args, devices)),
        Command::Train { dense, args } => {
            let stage = if *dense { Stage::Dense } else { Stage::Sparse };
            done(run_training::<Autodiff<B>>(stage, args, devices))
        }
        Command::Generate(args) => done(run_generate::<B>(args, device)),
        Command::BenchTrain(args) => done(bench_train::<Autodiff<B>>(args, device, reserved)),
        Command::BenchMatmul(_) => unreachable!("`dispatch` runs bench-matmul on its backend"),
        Command::Demo(args) => done(run_demo::<Autodiff<B>>(args, device)),
    }
}

/// `dsa-cli bench-matmul` on the chosen CubeCL backend; an error on the others (it times
/// cubek's kernels, which only the CubeCL backends run).
#[cfg_attr(not(any(feature = "wgpu", feature = "cuda")), allow(unused_variables))]
fn bench_matmul(kind: BackendKind, dtype: FloatKind, args: &BenchMatmulArgs) -> Result<bool, Box<dyn Error>> {
    match (kind, dtype) {
        #[cfg(feature = "wgpu")]
        (BackendKind::Wgpu, _) => done(dsa_cli::bench::bench_matmul::<burn::backend::Wgpu>(args, &Default::default())),
        #[cfg(feature = "cuda")]
        (BackendKind::Cuda, FloatKind::F32) => done(dsa_cli::bench::bench_matmul::<burn::backend::Cuda>(args, &Default::default())),
        #[cfg(feature = "cuda")]
        (BackendKind::Cuda, FloatKind::Bf16) => {
            done(dsa_cli::bench::bench_matmul::<burn::backend::Cuda<burn::tensor::bf16>>(args, &Default::default()))
        }
        #[allow(unreachable_patterns)]
        (other, _) => Err(format!(
            "bench-matmul times CubeCL's matmul kernels: it needs --backend cuda or --backend wgpu, built with that feature (got {})",
            format!("{other:?}").to_lowercase()
        )
        .into()),
    }
}

/// A finished command's result as [`run`]'s.
fn done<T>(result: Result<T, dsa_cli::checkpoint::RunError>) -> Result<bool, Box<dyn Error>> {
    result.map(|_| true).map_err(|e| e as Box<dyn Error>)
}

fn conformance<B: DsaBackend>(case_dirs: &[PathBuf], options: CaseOptions, device: &B::Device) -> bool {
    let mut failed = Vec::new();
    for dir in case_dirs {
        match run_case_with::<B>(dir, device, options) {
            Ok(report) => {
                print!("{report}");
                if !report.passed() {
                    failed.push(report.case);
                }
            }
            Err(e) => {
                println!("{}: ERROR: {e}", dir.display());
                failed.push(dir.display().to_string());
            }
        }
    }
    println!(
        "{} passed, {} failed",
        case_dirs.len() - failed.len(),
        failed.len()
    );
    failed.is_empty()
}

/// `dsa-cli info`: the checks of loading ([`ModelFiles::open`]: a run's checksum, every
/// tensor's name and shape against the config), then the sizes.
fn info<B: Backend>(model_dir: &Path, device: &B::Device) -> Result<(), Box<dyn Error>> {
    let files = ModelFiles::open::<B>(model_dir, device).map_err(|e| e as Box<dyn Error>)?;
    let stored: usize = files.tensors.iter().map(|(_, shape)| shape.iter().product::<usize>()).sum();
    let elem = std::mem::size_of::<B::FloatElem>();
    println!("{} (backend {})", model_dir.display(), B::name(device));
    describe(&files.cfg, elem);
    println!(
        "  checkpoint: {} tensors, {stored} parameters (FP8 scales not counted)",
        files.tensors.len()
    );
    println!("  prompts: {}", prompt_conventions(&PromptFormat::from_dir(model_dir)?));
    println!();
    let full = files.cfg.family_full_size();
    println!("{} at full size:", full.model_type.family());
    describe(&full, 2);
    Ok(())
}

/// What `generate` takes from a checkpoint's tokenizer files: the chat template (for
/// `--chat`), whether BOS is put in front of prompts, the stop tokens.
fn prompt_conventions(format: &PromptFormat) -> String {
    let template = match format.chat_template() {
        Ok(_) => format!("chat template from {}", format.template_file.display()),
        Err(_) => "no chat template (generate --chat needs --chat-template)".into(),
    };
    let tokenizer = &format.tokenizer;
    let bos = match (tokenizer.add_bos_token, &tokenizer.bos_token) {
        (Some(true), Some(token)) => format!("BOS {:?} put in front", token.content()),
        (Some(true), None) => "BOS put in front".into(),
        _ => "no BOS added".into(),
    };
    let mut stop: Vec<String> = tokenizer.eos_token.iter().map(|t| format!("{:?}", t.content())).collect();
    stop.extend(format.generation.eos_token_id.iter().flat_map(|ids| ids.ids()).map(|id| format!("id {id}")));
    let stop = match stop.is_empty() {
        true => "the tokenizer's end-of-text token".into(),
        false => format!("{} and the tokenizer's end-of-text token", stop.join(", ")),
    };
    format!("{template}; {bos}; stops at {stop}")
}

/// Which layers run their own indexer and which share (`indexer_types`): each run of shared
/// layers with the layer whose top-k it reuses, e.g. `3 full, 3 shared (indexer_types):
/// 1–2 reuse 0, 5 reuses 4`.
fn indexer_sharing(cfg: &DeepSeekV32Config) -> String {
    let layers = cfg.num_hidden_layers;
    let shared: Vec<usize> = (0..layers).filter(|&l| cfg.is_shared_indexer(l)).collect();
    if shared.is_empty() {
        return format!("every layer runs its own ({layers})");
    }
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for &l in &shared {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == l => *end = l,
            _ => runs.push((l, l)),
        }
    }
    let runs: Vec<String> = runs
        .iter()
        .map(|&(a, b)| match a == b {
            true => format!("{a} reuses {}", cfg.indexer_source(a)),
            false => format!("{a}–{b} reuse {}", cfg.indexer_source(a)),
        })
        .collect();
    format!("{} full, {} shared (indexer_types): {}", layers - shared.len(), shared.len(), runs.join(", "))
}

/// Prints the family features of `cfg`, its sizes and its decode-cache memory, our cache in
/// `elem`-byte floats.
fn describe(cfg: &DeepSeekV32Config, elem: usize) {
    println!("  family: {} (model_type {})", cfg.model_type.family(), cfg.model_type);
    let rope = match cfg.yarn() {
        Some(y) => format!("YaRN ×{} over {} positions", y.factor, y.original_max_position_embeddings),
        None => "no scaling".into(),
    };
    println!(
        "  RoPE: base {}, {rope}; indexer RoPE {}; RMSNorm eps {:e}",
        cfg.rope_theta,
        if cfg.indexer_rope_interleave { "interleaved" } else { "non-interleaved (rotate-half)" },
        cfg.rms_norm_eps
    );
    let weights = match &cfg.quantization_config {
        Some(q) => format!(
            "FP8 {} with {}×{} blocks, {} scales",
            q.fmt,
            q.weight_block_size[0],
            q.weight_block_size[1],
            if q.scale_fmt == Some(ScaleFmt::Ue8m0) { "ue8m0" } else { "float" }
        ),
        None => cfg.torch_dtype.clone().unwrap_or_else(|| "unquantised".into()),
    };
    println!(
        "  MTP layers: {} (num_nextn_predict_layers: drafts for generate --speculative, trained with --mtp-weight); weights: {weights}",
        cfg.num_nextn_predict_layers
    );
    println!("  indexers: {}", indexer_sharing(cfg));
    let moe_layers = (0..cfg.num_hidden_layers)
        .filter(|&l| cfg.is_moe_layer(l))
        .count();
    let params = cfg.parameter_count();
    println!(
        "  layers: {} ({} dense MLP, {moe_layers} MoE with {} routed experts, {} active, {} shared)",
        cfg.num_hidden_layers,
        cfg.num_hidden_layers - moe_layers,
        cfg.n_routed_experts,
        cfg.num_experts_per_tok,
        cfg.n_shared_experts
    );
    println!(
        "  width {}, {} heads, latent {} + rope {}, indexer {} heads × {}, top-k {}, vocab {}",
        cfg.hidden_size,
        cfg.num_attention_heads,
        cfg.kv_lora_rank,
        cfg.qk_rope_head_dim,
        cfg.index_n_heads,
        cfg.index_head_dim,
        cfg.index_topk,
        cfg.vocab_size
    );
    println!(
        "  parameters: {} total, {} active per token",
        human(params.total),
        human(params.active)
    );
    let mem = CacheMemory::of(cfg, 2);
    let ours = CacheMemory::of(cfg, elem);
    let context = cfg.max_position_embeddings;
    println!(
        "  decode cache per token and sequence ({} layers × latent {} + {} × indexer key {}):",
        mem.layers, mem.latent_dim, mem.index_layers, mem.index_dim
    );
    println!(
        "    DeepSeek layout (bf16 latent, FP8 key + f32 scale): {} B; {} at the full {context} positions",
        mem.fp8_keys_bytes_per_token,
        bytes(mem.fp8_keys_bytes_per_token as f64 * context as f64)
    );
    println!(
        "    dsa-burn DsaCache ({elem}-byte floats, key kept before FP8 quantisation): {} B; {} at {context} positions",
        ours.ours_bytes_per_token,
        bytes(ours.ours_bytes_per_token as f64 * context as f64)
    );
}

/// `1234567` → `1.23M`.
fn human(n: usize) -> String {
    let n = n as f64;
    match n {
        n if n >= 1e9 => format!("{:.2}B", n / 1e9),
        n if n >= 1e6 => format!("{:.2}M", n / 1e6),
        n if n >= 1e3 => format!("{:.2}K", n / 1e3),
        n => format!("{n}"),
    }
}

/// Bytes in binary units.
fn bytes(n: f64) -> String {
    match n {
        n if n >= (1u64 << 30) as f64 => format!("{:.2} GiB", n / (1u64 << 30) as f64),
        n if n >= (1u64 << 20) as f64 => format!("{:.2} MiB", n / (1u64 << 20) as f64),
        n => format!("{:.1} KiB", n / 1024.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsa_model::config::IndexerType::{Full, Shared};

    #[test]
    fn info_lists_the_shared_layers_and_their_sources() {
        let mut cfg = DeepSeekV32Config::tiny(64);
        assert_eq!(indexer_sharing(&cfg), "every layer runs its own (4)");
        cfg.num_hidden_layers = 6;
        cfg.indexer_types = vec![Full, Shared, Shared, Full, Full, Shared];
        assert_eq!(indexer_sharing(&cfg), "3 full, 3 shared (indexer_types): 1–2 reuse 0, 5 reuses 4");
    }
}
