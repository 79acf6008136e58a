//! Times the DSA operations on CubeCL at DeepSeek-V3.2's per-layer shapes: the FP8 lightning
//! indexer (64 heads × 128) with top-2048, sparse MLA in MQA mode (128 heads, latent
//! 512 + 64) forward, backward and decode (batch 64), and the whole DSA attention core
//! (indexer → top-k → sparse MLA) for one sequence of `L` tokens, and the sparse stage's
//! indexer-loss kernels (the indexer's scores at the selected keys, forward and backward, and
//! sparse MLA's head-averaged probabilities there).
//!
//! ```text
//! cargo bench -p dsa-burn --features cuda --bench dsa -- --lens 4096,16384,65536,131072 --out bench.jsonl
//! cargo bench -p dsa-burn --features cuda --bench dsa -- --dtype bf16 --lens 4096 # bf16 tensors
//! cargo bench -p dsa-burn --features wgpu --bench dsa -- --lens 1024      # any CubeCL device
//! ```
//!
//! `--only fwd,decode` times only the ops whose name contains one of the given words (a word
//! ending in `$` must end the name: `fwd$` skips `fwd_reference_ops`).
//! `--dtype bf16` (CUDA) runs every op on bf16 tensors, as V3.2 and the PyTorch peer do
//! (the indexer still quantises to FP8): sparse MLA then takes the tensor-core kernel.
//! `--indexer simt-tiled` (or `simt`, `cmma`, `mma`, `wgmma`, `wgmma-fp8`; default `auto`) picks the indexer-scores
//! kernel (`dsa_burn::cubecl::IndexerKernel`). `dsa_indexer_scores` times the scores alone, so that `dsa_indexer_topk` minus it
//! is the top-k's share. Each line names the kernels that ran (`mla_kernel`, and
//! `tensor_cores` for the tensor-core indexer (`IndexerScoresMma` when on f16 `mma.sync`, `IndexerScoresWgmma` on `wgmma`) and kernel 6's probabilities).
//! `--mla simt-tiled` (or `simt`, `cmma`, `mma`, `wgmma`; default `auto`) picks the sparse MLA kernels (forward and
//! backward) as `dsa_burn::cubecl::KernelSettings::mla` does. `--mla-tile 32x8x32` (heads ×
//! planes × slots per chunk) picks the cmma forward's tile as `dsa_burn::cubecl::KernelSettings::mla_tile`
//! does; the lines of the ops it ran in then name it (`mla_tile`).
//! `--split-cubes N` sets how many cubes the tensor-core forwards aim for when they split
//! decode's slots (`dsa_burn::cubecl::KernelSettings::mla_split_cubes`; default: 1024 for cmma, one per SM for `mma.sync`); every line
//! then names it (`split_cubes`).
//! `--decode-span S` draws the decode selections from the first `S` positions of each
//! context instead of all `L` (the same work over a smaller footprint: a cost that grows
//! with it is the memory system's, not the arithmetic's).
//!
//! Each measurement is the median of `--reps` timed runs after one warm-up, with the device
//! synchronised around each run, printed (and appended to `--out`) as one JSON line. FLOP
//! counts are those of `shared/bench/peer_torch.py`, so the two can be compared op by op.
//! `--back-to-back` adds `b2b_ms`: `--reps` calls issued back to back, one sync, the time
//! divided by the calls. That leaves out the host's wait for the device after each call,
//! which the host-timed `ms` includes (tens of µs, visible on short ops such as decode) and
//! the peer's CUDA events around each call do not. CubeCL 0.10's CUDA runtime offers no
//! device timestamps (its profiler reads the host clock), so this is the closest measure.
//! Long sequences run in blocks of query tokens (the work per query is independent; only
//! the block's scores, queries and outputs are resident): `--block` tokens for sparse MLA,
//! and as many indexer rows as fit in 2 GiB of f32 scores.

use std::io::Write;
use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Element, Int, Tensor, TensorData};
use dsa_burn::cubecl::{IndexerKernel, MlaKernel, MlaTile, TensorCoreOp};
use dsa_burn::ops::{
    indexer_scores, indexer_selected_scores, indexer_topk, sparse_mla, sparse_mla_probs,
};
use dsa_burn::{DsaBackend, IndexerQuant};

#[cfg(feature = "cuda")]
type G = burn::backend::Cuda;
#[cfg(feature = "cuda")]
type GBf16 = burn::backend::Cuda<burn::tensor::bf16>;
#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
type G = burn::backend::Wgpu;

/// DeepSeek-V3.2: query heads, latent + rope dims, value dims, indexer heads and dims.
const H: usize = 128;
const D_QK: usize = 576;
const D_V: usize = 512;
const H_I: usize = 64;
const D_I: usize = 128;
/// The softmax scale of V3.2's MLA (qk head dim 192).
const SCALE: f32 = 0.072_168_78;

struct Args {
    lens: Vec<usize>,
    topk: usize,
    reps: usize,
    back_to_back: bool,
    block: usize,
    decode_batch: usize,
    decode_span: Option<usize>,
    split_cubes: Option<usize>,
    bf16: bool,
    indexer: IndexerKernel,
    mla: MlaKernel,
    mla_tile: Option<MlaTile>,
    only: Vec<String>,
    out: Option<std::path::PathBuf>,
}

fn args() -> Args {
    let mut a = Args {
        lens: vec![4096, 16384],
        topk: 2048,
        reps: 3,
        back_to_back: false,
        block: 8192,
        decode_batch: 64,
        decode_span: None,
        split_cubes: None,
        bf16: false,
        indexer: IndexerKernel::Auto,
        mla: MlaKernel::Auto,
        mla_tile: None,
        only: Vec::new(),
        out: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| panic!("{flag} needs a value"))
                .clone()
        };
        let num = |v: String| {
            v.parse::<usize>()
                .unwrap_or_else(|_| panic!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--lens" => {
                a.lens = value()
                    .split(',')
                    .map(|v| num(v.trim().to_string()))
                    .collect()
            }
            "--topk" => a.topk = num(value()),
            "--reps" => a.reps = num(value()).max(1),
            "--back-to-back" => a.back_to_back = true,
            "--block" => a.block = num(value()).max(1),
            "--decode-batch" => a.decode_batch = num(value()).max(1),
            "--decode-span" => a.decode_span = Some(num(value()).max(1)),
            "--split-cubes" => a.split_cubes = Some(num(value()).max(1)),
            "--out" => a.out = Some(value().into()),
            "--only" => a.only = value().split(',').map(|v| v.trim().to_string()).collect(),
            "--dtype" => {
                a.bf16 = match value().as_str() {
                    "f32" => false,
                    "bf16" => true,
                    other => panic!("--dtype {other}: f32 or bf16"),
                }
            }
            "--indexer" => {
                a.indexer = match value().as_str() {
                    "auto" => IndexerKernel::Auto,
                    "simt" => IndexerKernel::Simt,
                    "simt-tiled" => IndexerKernel::SimtTiled,
                    "cmma" => IndexerKernel::Cmma,
                    "mma" => IndexerKernel::Mma,
                    "wgmma" => IndexerKernel::Wgmma,
                    "wgmma-fp8" => IndexerKernel::WgmmaFp8,
                    other => panic!("--indexer {other}: auto, simt, simt-tiled, cmma, mma, wgmma or wgmma-fp8"),
                }
            }
            "--mla" => {
                a.mla = match value().as_str() {
                    "auto" => MlaKernel::Auto,
                    "simt" => MlaKernel::Simt,
                    "simt-tiled" => MlaKernel::SimtTiled,
                    "cmma" => MlaKernel::Cmma,
                    "mma" => MlaKernel::Mma,
                    "wgmma" => MlaKernel::Wgmma,
                    other => panic!("--mla {other}: auto, simt, simt-tiled, cmma, mma or wgmma"),
                }
            }
            "--mla-tile" => {
                let v = value();
                let n: Vec<usize> = v.split('x').map(|x| num(x.to_string())).collect();
                let [heads, planes, slots] = n[..] else {
                    panic!("--mla-tile {v}: heads x planes x slots, as 32x8x32")
                };
                a.mla_tile = Some(MlaTile { heads, planes, slots });
            }
            "--bench" => {} // passed by `cargo bench`
            other => panic!("unknown argument {other} (see the file's documentation)"),
        }
    }
    a
}

struct Bench<G: Backend> {
    dev: burn::tensor::Device<G>,
    reps: usize,
    back_to_back: bool,
    topk: usize,
    only: Vec<String>,
    rng: u64,
    out: Option<std::fs::File>,
    tile: Option<MlaTile>,
    split_cubes: Option<usize>,
}

impl<G: DsaBackend> Bench<G> {
    fn sync(&self) {
        G::sync(&self.dev).expect("device synchronisation");
    }

    /// Whether `--only` lets `op` run.
    fn wants(&self, op: &str) -> bool {
        self.only.is_empty()
            || self.only.iter().any(|o| match o.strip_suffix('$') {
                Some(end) => op.ends_with(end),
                None => op.contains(o.as_str()),
            })
    }

    /// Median ms of `f` and one JSON line for it (`flops` 0: none reported).
    fn time(&mut self, op: &str, l: usize, flops: f64, bytes: f64, mut f: impl FnMut()) {
        if !self.wants(op) {
            return;
        }
        eprintln!("{op} L={l} ...");
        let launches = |k| dsa_burn::cubecl::mla_forward_launches(k);
        let versions = [MlaKernel::Simt, MlaKernel::SimtTiled, MlaKernel::Cmma, MlaKernel::Mma, MlaKernel::Wgmma];
        let before = versions.map(launches);
        let tc_ops: [TensorCoreOp; 8] = [
            TensorCoreOp::IndexerScores,
            TensorCoreOp::IndexerScoresMma,
            TensorCoreOp::IndexerScoresWgmma,
            TensorCoreOp::IndexerScoresWgmmaFp8,
            TensorCoreOp::SparseMlaProbs,
            TensorCoreOp::SelectedScores,
            TensorCoreOp::SparseMlaBackward,
            TensorCoreOp::SparseMlaBackwardWgmma,
        ];
        let tc_before = tc_ops.map(dsa_burn::cubecl::tensor_core_launches);
        f();
        self.sync();
        let ran: Vec<_> = versions
            .iter()
            .zip(before)
            .filter(|&(&k, n)| launches(k) > n)
            .map(|(k, _)| format!("{k:?}"))
            .collect();
        let tc_ran: Vec<_> = tc_ops
            .iter()
            .zip(tc_before)
            .filter(|&(&op, n)| dsa_burn::cubecl::tensor_core_launches(op) > n)
            .map(|(op, _)| format!("{op:?}"))
            .collect();
        let mut ms: Vec<f64> = (0..self.reps)
            .map(|_| {
                let t0 = Instant::now();
                f();
                self.sync();
                t0.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        let m = ms[ms.len() / 2];
        let mut line = format!(
            "{{\"op\": \"{op}\", \"L\": {l}, \"topk\": {}, \"ms\": {m:.4}",
            self.topk
        );
        if flops > 0.0 {
            line += &format!(", \"tflops\": {:.2}", flops / m / 1e9);
        }
        if bytes > 0.0 {
            line += &format!(", \"gbps\": {:.1}", bytes / m / 1e6);
        }
        if self.back_to_back {
            let t0 = Instant::now();
            for _ in 0..self.reps {
                f();
            }
            self.sync();
            let b2b = t0.elapsed().as_secs_f64() * 1e3 / self.reps as f64;
            line += &format!(", \"b2b_ms\": {b2b:.4}");
        }
        let dtype = format!("{:?}", G::FloatElem::dtype()).to_lowercase();
        line += &format!(
            ", \"runs_ms\": {ms:.3?}, \"backend\": \"{}\", \"dtype\": \"{dtype}\"",
            G::name(&self.dev)
        );
        if !ran.is_empty() {
            line += &format!(", \"mla_kernel\": \"{}\"", ran.join("+"));
            if let (Some(t), true) = (self.tile, ran.iter().any(|k| k == "V3")) {
                line += &format!(", \"mla_tile\": \"{}x{}x{}\"", t.heads, t.planes, t.slots);
            }
        }
        if let Some(n) = self.split_cubes {
            line += &format!(", \"split_cubes\": {n}");
        }
        if !tc_ran.is_empty() {
            line += &format!(", \"tensor_cores\": \"{}\"", tc_ran.join("+"));
        }
        line += "}";
        println!("{line}");
        if let Some(file) = self.out.as_mut() {
            writeln!(file, "{line}").expect("writing --out");
        }
    }

    /// A tensor of standard normal draws.
    ///
    /// Burn's CubeCL kernels cannot address more than 2³² values: its generator panicked on
    /// decode's cache at batch 64 and 128K, 4.8 G values, and on slices of 4.2 G;
    /// `Tensor::cat` of smaller slices panicked in `slice_assign`. So a
    /// tensor of more than 2³¹ values is drawn on the device in slices along its first dim,
    /// joined on the host and uploaded whole, with no kernel over all of it.
    fn normal<const D: usize>(&self, shape: [usize; D]) -> Tensor<G, D> {
        let draw = |s: [usize; D]| Tensor::random(s, Distribution::Normal(0.0, 1.0), &self.dev);
        let row: usize = shape[1..].iter().product();
        let per = (i32::MAX as usize / row.max(1)).max(1);
        if shape[0] <= per {
            return draw(shape);
        }
        let mut bytes = Vec::new();
        let mut dtype = None;
        for r0 in (0..shape[0]).step_by(per) {
            let mut s = shape;
            s[0] = per.min(shape[0] - r0);
            let slice = draw(s).into_data();
            dtype = Some(slice.dtype);
            bytes.reserve_exact(shape[0] * row * slice.dtype.size() - bytes.len());
            bytes.extend_from_slice(slice.as_bytes());
        }
        let data = TensorData::from_bytes_vec(bytes, shape.to_vec(), dtype.expect("one slice"));
        Tensor::from_data(data, &self.dev)
    }

    /// A uniform draw from `0..bound` (xorshift64).
    fn draw(&mut self, bound: usize) -> i32 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % bound as u64) as i32
    }

    /// Causal random selections of `rows` queries at positions `start..` (topk slots each),
    /// drawn on the host (a draw in bf16 tensors would round positions past 256).
    fn selections(
        &mut self,
        rows: usize,
        start: usize,
    ) -> (Tensor<G, 3, Int>, Tensor<G, 3, burn::tensor::Bool>) {
        let (mut idx, mut valid) = (
            Vec::with_capacity(rows * self.topk),
            Vec::with_capacity(rows * self.topk),
        );
        for pos in start..start + rows {
            for slot in 0..self.topk {
                idx.push(self.draw(pos + 1));
                valid.push(slot <= pos);
            }
        }
        let shape = [1, rows, self.topk];
        (
            Tensor::from_data(TensorData::new(idx, shape), &self.dev),
            Tensor::from_data(TensorData::new(valid, shape), &self.dev),
        )
    }
}

fn main() {
    let a = args();
    #[cfg(feature = "cuda")]
    if a.bf16 {
        return run::<GBf16>(&a);
    }
    assert!(!a.bf16, "--dtype bf16 needs the cuda feature");
    run::<G>(&a)
}

fn run<G: DsaBackend>(a: &Args) {
    let out = a.out.as_ref().map(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .expect("opening --out")
    });
    dsa_burn::cubecl::update_kernel_settings(|s| {
        s.indexer = a.indexer;
        s.mla = a.mla;
        s.mla_tile = a.mla_tile;
        s.mla_split_cubes = a.split_cubes;
    });
    let mut b = Bench::<G> {
        dev: Default::default(),
        reps: a.reps,
        back_to_back: a.back_to_back,
        topk: a.topk,
        only: a.only.clone(),
        rng: 0x9E37_79B9_7F4A_7C15,
        out,
        tile: a.mla_tile,
        split_cubes: a.split_cubes,
    };
    for &l in &a.lens {
        let kk = a.topk.min(l) as f64;
        // Indexer: FP8 e4m3 scores of every causal pair, then top-k, in blocks of query rows.
        let (qi, wi, ki) = (
            b.normal([1, l, H_I, D_I]),
            b.normal([1, l, H_I]),
            b.normal([1, l, D_I]),
        );
        let idx_rows = ((1usize << 29) / l).clamp(1, l);
        let idx_flops = 2.0 * (H_I * D_I) as f64 * (l as f64 * l as f64) / 2.0;
        b.time("dsa_indexer_scores", l, idx_flops, 0.0, || {
            for t0 in (0..l).step_by(idx_rows) {
                let n = idx_rows.min(l - t0);
                let _ = indexer_scores(
                    qi.clone().narrow(1, t0, n),
                    wi.clone().narrow(1, t0, n),
                    ki.clone(),
                    IndexerQuant::E4m3,
                    Some(t0),
                );
            }
        });
        b.time("dsa_indexer_topk", l, idx_flops, 0.0, || {
            let _ = indexer_topk(
                qi.clone(),
                wi.clone(),
                ki.clone(),
                IndexerQuant::E4m3,
                a.topk,
                Some(0),
                idx_rows,
            );
        });

        // Sparse MLA over random causal selections, in blocks of query tokens.
        let kv = b.normal([1, l, D_QK]);
        let rows = a.block.min(l);
        let q = b.normal([1, rows, H, D_QK]);
        let blocks: Vec<_> = (0..l).step_by(rows).map(|s| (s, rows.min(l - s))).collect();
        let sels: Vec<_> = blocks.iter().map(|&(s, n)| b.selections(n, s)).collect();
        let fwd_flops = 2.0 * (l * H) as f64 * kk * (D_QK + D_V) as f64;
        b.time("dsa_sparse_mla_fwd", l, fwd_flops, 0.0, || {
            for (&(_, n), (idx, valid)) in blocks.iter().zip(&sels) {
                let _ = sparse_mla(
                    q.clone().narrow(1, 0, n),
                    kv.clone(),
                    idx.clone(),
                    valid.clone(),
                    D_V,
                    SCALE,
                );
            }
        });
        // The same by Burn tensor ops (the reference: gather the rows, then batched matmuls,
        // like the PyTorch peer), 256 query tokens at a time.
        if l <= 16384 {
            b.time(
                "dsa_sparse_mla_fwd_reference_ops",
                l,
                fwd_flops,
                0.0,
                || {
                    for (&(_, n), (idx, valid)) in blocks.iter().zip(&sels) {
                        for c in (0..n).step_by(256) {
                            let m = 256.min(n - c);
                            let _ = dsa_burn::reference::sparse_mla::reference_sparse_mla(
                                q.clone().narrow(1, c, m),
                                kv.clone(),
                                idx.clone().narrow(1, c, m),
                                valid.clone().narrow(1, c, m),
                                D_V,
                                SCALE,
                            );
                        }
                    }
                },
            );
        }
        // The backward's inputs (a forward per block) only when it is timed.
        if b.wants("dsa_sparse_mla_bwd") {
            let d_out = b.normal([1, rows, H, D_V]);
            let saved: Vec<_> = blocks
                .iter()
                .zip(&sels)
                .map(|(&(_, n), (idx, valid))| {
                    sparse_mla(
                        q.clone().narrow(1, 0, n),
                        kv.clone(),
                        idx.clone(),
                        valid.clone(),
                        D_V,
                        SCALE,
                    )
                })
                .collect();
            let bwd_flops = 2.0 * (l * H) as f64 * kk * (3 * D_QK + 2 * D_V) as f64;
            b.time("dsa_sparse_mla_bwd", l, bwd_flops, 0.0, || {
                for ((&(_, n), (idx, valid)), (o, lse)) in blocks.iter().zip(&sels).zip(&saved) {
                    let _ = G::sparse_mla_backward(
                        q.clone().narrow(1, 0, n).into_primitive().tensor(),
                        kv.clone().into_primitive().tensor(),
                        idx.clone().into_primitive(),
                        valid.clone().into_primitive(),
                        o.clone().into_primitive().tensor(),
                        lse.clone().into_primitive().tensor(),
                        Some(d_out.clone().narrow(1, 0, n).into_primitive().tensor()),
                        None,
                        D_V,
                        SCALE,
                    );
                }
            });
            drop((saved, d_out));
        }

        // Kernel 6, the sparse stage's indexer loss: the indexer's scores at the selected keys
        // (forward, backward) and sparse MLA's head-averaged probabilities there.
        let sel_flops = 2.0 * (H_I * D_I) as f64 * l as f64 * kk;
        b.time("dsa_indexer_selected_scores_fwd", l, sel_flops, 0.0, || {
            for (&(s, n), (idx, valid)) in blocks.iter().zip(&sels) {
                let _ = indexer_selected_scores(
                    qi.clone().narrow(1, s, n),
                    wi.clone().narrow(1, s, n),
                    ki.clone(),
                    IndexerQuant::E4m3,
                    idx.clone(),
                    valid.clone(),
                );
            }
        });
        if b.wants("dsa_indexer_selected_scores_bwd") {
            let grad = b.normal([1, rows, a.topk]);
            b.time(
                "dsa_indexer_selected_scores_bwd",
                l,
                3.0 * sel_flops,
                0.0,
                || {
                    for (&(s, n), (idx, valid)) in blocks.iter().zip(&sels) {
                        let _ = G::indexer_selected_scores_backward(
                            qi.clone().narrow(1, s, n).into_primitive().tensor(),
                            wi.clone().narrow(1, s, n).into_primitive().tensor(),
                            ki.clone().into_primitive().tensor(),
                            IndexerQuant::E4m3,
                            idx.clone().into_primitive(),
                            valid.clone().into_primitive(),
                            grad.clone().narrow(1, 0, n).into_primitive().tensor(),
                        );
                    }
                },
            );
        }
        if b.wants("dsa_sparse_mla_probs") {
            let lses: Vec<_> = blocks
                .iter()
                .zip(&sels)
                .map(|(&(_, n), (idx, valid))| {
                    let q = q.clone().narrow(1, 0, n);
                    sparse_mla(q, kv.clone(), idx.clone(), valid.clone(), D_V, SCALE).1
                })
                .collect();
            let probs_flops = 2.0 * (l * H) as f64 * kk * D_QK as f64;
            b.time("dsa_sparse_mla_probs", l, probs_flops, 0.0, || {
                for ((&(_, n), (idx, valid)), lse) in blocks.iter().zip(&sels).zip(&lses) {
                    let _ = sparse_mla_probs(
                        q.clone().narrow(1, 0, n),
                        kv.clone(),
                        idx.clone(),
                        valid.clone(),
                        lse.clone(),
                        SCALE,
                    );
                }
            });
        }

        // The DSA attention core of one layer: indexer → top-k → sparse MLA, block by block.
        b.time("dsa_attention_fwd", l, idx_flops + fwd_flops, 0.0, || {
            for &(s, n) in &blocks {
                let (idx, valid) = indexer_topk(
                    qi.clone().narrow(1, s, n),
                    wi.clone().narrow(1, s, n),
                    ki.clone().narrow(1, 0, s + n),
                    IndexerQuant::E4m3,
                    a.topk,
                    Some(s),
                    idx_rows,
                );
                let _ = sparse_mla(
                    q.clone().narrow(1, 0, n),
                    kv.clone().narrow(1, 0, s + n),
                    idx,
                    valid,
                    D_V,
                    SCALE,
                );
            }
        });
        drop((q, kv, sels, qi, wi, ki));

        // Decode: a batch of single queries, each over the top-k of its own context of L
        // (its inputs only when it is timed: the cache is `batch × L × 576`).
        let batch = a.decode_batch;
        let span = a.decode_span.map_or(l, |v| v.min(l));
        let tag = if span < l { format!("_span{span}") } else { String::new() };
        let (dec, dec_ref) = (
            format!("dsa_sparse_mla_decode_b{batch}{tag}"),
            format!("dsa_sparse_mla_decode_b{batch}{tag}_reference_ops"),
        );
        if !b.wants(&dec) && !b.wants(&dec_ref) {
            continue;
        }
        let cache = b.normal([batch, l, D_QK]);
        let qd = b.normal([batch, 1, H, D_QK]);
        let draws: Vec<i32> = (0..batch * a.topk).map(|_| b.draw(span)).collect();
        let idx =
            Tensor::<G, 3, Int>::from_data(TensorData::new(draws, [batch, 1, a.topk]), &b.dev);
        let valid = Tensor::<G, 3>::ones([batch, 1, a.topk], &b.dev).bool();
        let dec_flops = 2.0 * (batch * H) as f64 * a.topk as f64 * (D_QK + D_V) as f64;
        let dec_bytes = (batch * a.topk * D_QK * std::mem::size_of::<G::FloatElem>()) as f64;
        b.time(&dec, l, dec_flops, dec_bytes, || {
            let _ = sparse_mla(
                qd.clone(),
                cache.clone(),
                idx.clone(),
                valid.clone(),
                D_V,
                SCALE,
            );
        });
        b.time(&dec_ref, l, dec_flops, dec_bytes, || {
            let _ = dsa_burn::reference::sparse_mla::reference_sparse_mla(
                qd.clone(),
                cache.clone(),
                idx.clone(),
                valid.clone(),
                D_V,
                SCALE,
            );
        });
    }
}
