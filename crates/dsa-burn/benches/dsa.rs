//! Times the DSA operations on CubeCL at DeepSeek-V3.2's per-layer shapes: the FP8 lightning
//! indexer (64 heads × 128) with top-2048, sparse MLA in MQA mode (128 heads, latent
//! 512 + 64) forward, backward and decode (batch 64), and the whole DSA attention core
//! (indexer → top-k → sparse MLA) for one sequence of `L` tokens.
//!
//! ```text
//! cargo bench -p dsa-burn --features cuda --bench dsa -- --lens 4096,16384,65536,131072 --out bench.jsonl
//! cargo bench -p dsa-burn --features wgpu --bench dsa -- --lens 1024      # any CubeCL device
//! ```
//!
//! Each measurement is the median of `--reps` timed runs after one warm-up, with the device
//! synchronised around each run, printed (and appended to `--out`) as one JSON line. FLOP
//! counts are those of `shared/bench/peer_torch.py`, so the two can be compared op by op.
//! Long sequences run in blocks of query tokens (the work per query is independent; only
//! the block's scores, queries and outputs are resident): `--block` tokens for sparse MLA,
//! and as many indexer rows as fit in 2 GiB of f32 scores.

use std::io::Write;
use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor};
use dsa_burn::ops::{indexer_topk, sparse_mla};
use dsa_burn::{DsaBackend, IndexerQuant};

#[cfg(feature = "cuda")]
type G = burn::backend::Cuda;
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
    block: usize,
    decode_batch: usize,
    out: Option<std::path::PathBuf>,
}

fn args() -> Args {
    let mut a = Args { lens: vec![4096, 16384], topk: 2048, reps: 3, block: 8192, decode_batch: 64, out: None };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value")).clone();
        let num = |v: String| v.parse::<usize>().unwrap_or_else(|_| panic!("{flag}: not a number: {v}"));
        match flag.as_str() {
            "--lens" => a.lens = value().split(',').map(|v| num(v.trim().to_string())).collect(),
            "--topk" => a.topk = num(value()),
            "--reps" => a.reps = num(value()).max(1),
            "--block" => a.block = num(value()).max(1),
            "--decode-batch" => a.decode_batch = num(value()).max(1),
            "--out" => a.out = Some(value().into()),
            "--bench" => {} // passed by `cargo bench`
            other => panic!("unknown argument {other} (see the file's documentation)"),
        }
    }
    a
}

struct Bench {
    dev: burn::tensor::Device<G>,
    reps: usize,
    topk: usize,
    out: Option<std::fs::File>,
}

impl Bench {
    fn sync(&self) {
        G::sync(&self.dev).expect("device synchronisation");
    }

    /// Median ms of `f` and one JSON line for it (`flops` 0: none reported).
    fn time(&mut self, op: &str, l: usize, flops: f64, bytes: f64, mut f: impl FnMut()) {
        eprintln!("{op} L={l} ...");
        f();
        self.sync();
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
        let mut line = format!("{{\"op\": \"{op}\", \"L\": {l}, \"topk\": {}, \"ms\": {m:.4}", self.topk);
        if flops > 0.0 {
            line += &format!(", \"tflops\": {:.2}", flops / m / 1e9);
        }
        if bytes > 0.0 {
            line += &format!(", \"gbps\": {:.1}", bytes / m / 1e6);
        }
        line += &format!(", \"runs_ms\": {ms:.3?}, \"backend\": \"{}\"}}", G::name(&self.dev));
        println!("{line}");
        if let Some(file) = self.out.as_mut() {
            writeln!(file, "{line}").expect("writing --out");
        }
    }

    fn normal<const D: usize>(&self, shape: [usize; D]) -> Tensor<G, D> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), &self.dev)
    }

    /// Causal random selections of `rows` queries at positions `start..` (topk slots each).
    fn selections(&self, rows: usize, start: usize) -> (Tensor<G, 3, Int>, Tensor<G, 3, burn::tensor::Bool>) {
        let pos = Tensor::<G, 1, Int>::arange(start as i64..(start + rows) as i64, &self.dev).reshape([1, rows, 1]).float();
        let u = Tensor::<G, 3>::random([1, rows, self.topk], Distribution::Uniform(0.0, 1.0), &self.dev);
        let shape = [1, rows, self.topk];
        let idx = (u * (pos.clone() + 1.0).expand(shape)).int().clamp(0, (start + rows - 1) as i64);
        let slot = Tensor::<G, 1, Int>::arange(0..self.topk as i64, &self.dev).reshape([1, 1, self.topk]).float();
        (idx, slot.expand(shape).lower_equal(pos.expand(shape)))
    }
}

fn main() {
    let a = args();
    let out = a.out.as_ref().map(|p| std::fs::OpenOptions::new().create(true).append(true).open(p).expect("opening --out"));
    let mut b = Bench { dev: Default::default(), reps: a.reps, topk: a.topk, out };
    for &l in &a.lens {
        let kk = a.topk.min(l) as f64;
        // Indexer: FP8 e4m3 scores of every causal pair, then top-k, in blocks of query rows.
        let (qi, wi, ki) = (b.normal([1, l, H_I, D_I]), b.normal([1, l, H_I]), b.normal([1, l, D_I]));
        let idx_rows = ((1usize << 29) / l).clamp(1, l);
        let idx_flops = 2.0 * (H_I * D_I) as f64 * (l as f64 * l as f64) / 2.0;
        b.time("dsa_indexer_topk", l, idx_flops, 0.0, || {
            let _ = indexer_topk(qi.clone(), wi.clone(), ki.clone(), IndexerQuant::E4m3, a.topk, Some(0), idx_rows);
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
                let _ = sparse_mla(q.clone().narrow(1, 0, n), kv.clone(), idx.clone(), valid.clone(), D_V, SCALE);
            }
        });
        // The same by Burn tensor ops (the reference: gather the rows, then batched matmuls,
        // like the PyTorch peer), 256 query tokens at a time.
        if l <= 16384 {
            b.time("dsa_sparse_mla_fwd_reference_ops", l, fwd_flops, 0.0, || {
                for (&(_, n), (idx, valid)) in blocks.iter().zip(&sels) {
                    for c in (0..n).step_by(256) {
                        let m = 256.min(n - c);
                        let _ = dsa_burn::sparse_mla::reference_sparse_mla(
                            q.clone().narrow(1, c, m),
                            kv.clone(),
                            idx.clone().narrow(1, c, m),
                            valid.clone().narrow(1, c, m),
                            D_V,
                            SCALE,
                        );
                    }
                }
            });
        }
        let d_out = b.normal([1, rows, H, D_V]);
        let saved: Vec<_> = blocks
            .iter()
            .zip(&sels)
            .map(|(&(_, n), (idx, valid))| sparse_mla(q.clone().narrow(1, 0, n), kv.clone(), idx.clone(), valid.clone(), D_V, SCALE))
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
                let _ = sparse_mla(q.clone().narrow(1, 0, n), kv.clone().narrow(1, 0, s + n), idx, valid, D_V, SCALE);
            }
        });
        drop((q, kv, sels, qi, wi, ki));

        // Decode: a batch of single queries, each over the top-k of its own context of L.
        let batch = a.decode_batch;
        let cache = b.normal([batch, l, D_QK]);
        let qd = b.normal([batch, 1, H, D_QK]);
        let idx = Tensor::<G, 3>::random([batch, 1, a.topk], Distribution::Uniform(0.0, l as f64), &b.dev).int().clamp(0, l as i64 - 1);
        let valid = Tensor::<G, 3>::ones([batch, 1, a.topk], &b.dev).bool();
        let dec_flops = 2.0 * (batch * H) as f64 * a.topk as f64 * (D_QK + D_V) as f64;
        let dec_bytes = (batch * a.topk * D_QK * 4) as f64;
        b.time(&format!("dsa_sparse_mla_decode_b{batch}"), l, dec_flops, dec_bytes, || {
            let _ = sparse_mla(qd.clone(), cache.clone(), idx.clone(), valid.clone(), D_V, SCALE);
        });
        b.time(&format!("dsa_sparse_mla_decode_b{batch}_reference_ops"), l, dec_flops, dec_bytes, || {
            let _ = dsa_burn::sparse_mla::reference_sparse_mla(qd.clone(), cache.clone(), idx.clone(), valid.clone(), D_V, SCALE);
        });
    }
}
