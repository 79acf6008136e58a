//! The CubeCL kernels (on wgpu; lavapipe on a machine without GPU) against the reference
//! implementations on NdArray with the same data: fresh random inputs every run (the seed is
//! printed; replay with `DSA_TEST_SEED`), poisoned outputs (unwritten entries fail), odd
//! sizes (T < k, sizes no multiple of any tile, B > 1, k = 1, rows with nothing valid).
//!
//! `cargo test -p dsa-burn --features wgpu --test kernels`
#![cfg(all(feature = "wgpu", feature = "ndarray"))]

use burn::backend::{NdArray, Wgpu};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use dsa_burn::ops::{indexer_scores, sparse_mla, topk_select};
use dsa_burn::IndexerQuant;

type G = Wgpu;
type C = NdArray;

/// xorshift64*, as in `tests/ops.rs`.
struct Rng(u64);
impl Rng {
    fn new(name: &str) -> Self {
        let seed = std::env::var("DSA_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
        });
        println!("{name}: DSA_TEST_SEED={seed}");
        dsa_burn::cubecl::set_poison_outputs(true);
        Rng(seed)
    }
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545F4914F6CDD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        ((self.next() * n as f64) as usize).min(n - 1)
    }
    fn normal(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| ((-2.0 * self.next().max(1e-300).ln()).sqrt() * (6.283185307179586 * self.next()).cos()) as f32).collect()
    }
}

fn gdev() -> burn::backend::wgpu::WgpuDevice {
    Default::default()
}

fn ft<B: Backend, const D: usize>(v: &[f32], shape: [usize; D], dev: &B::Device) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), dev)
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

/// Relative error ‖a − b‖ / ‖b‖ over finite entries; infinities must match exactly, NaN fails.
fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(!g.is_nan(), "{what}[{i}] is NaN (unwritten?), want {w}");
        if w.is_infinite() || g.is_infinite() {
            assert_eq!(g, w, "{what}[{i}]");
            continue;
        }
        num += (*g as f64 - *w as f64).powi(2);
        den += (*w as f64).powi(2);
    }
    let rel = (num / den.max(1e-300)).sqrt();
    assert!(rel <= tol, "{what}: relative error {rel:e} > {tol:e}");
}

#[test]
fn fake_quant_is_bit_identical() {
    let mut rng = Rng::new("fake_quant");
    for (rows, d) in [(3usize, 200usize), (5, 128), (2, 64), (7, 300), (1, 1)] {
        // Rows of very different magnitudes: subnormal e4m3 codes, the 1e-4 floor, ties.
        let mut x = rng.normal(rows * d);
        for r in 0..rows {
            let mag = [1.0f32, 1e-3, 1e-6, 37.0, 2f32.powi(-9)][r % 5];
            x[r * d..(r + 1) * d].iter_mut().for_each(|v| *v *= mag);
        }
        // Exact e4m3 midpoints when the block scale is 1/448·448 = 1-ish: put 448 in a row.
        if rows > 3 {
            x[3 * d] = 448.0;
            for c in 1..d.min(128) {
                x[3 * d + c] = (1.0 + (c % 8) as f32 / 8.0 + 1.0 / 16.0) * 2f32.powi((c % 14) as i32 - 6);
            }
        }
        for quant in [IndexerQuant::E4m3, IndexerQuant::E4m3Pow2] {
            let want = host(dsa_burn::quant::fake_quant(ft::<C, 2>(&x, [rows, d], &Default::default()), quant));
            let got = host(dsa_burn::cubecl::fake_quant(ft::<G, 2>(&x, [rows, d], &gdev()), quant));
            for i in 0..x.len() {
                assert_eq!(got[i].to_bits(), want[i].to_bits(), "{quant:?} [{rows},{d}] at {i}: x = {:e}, got {:e}, want {:e}", x[i], got[i], want[i]);
            }
        }
    }
}

#[test]
fn indexer_scores_match_reference() {
    let mut rng = Rng::new("indexer");
    for (b, t, h, d, s, causal) in [
        (2, 5, 3, 16, 7, Some(2)),
        (1, 9, 2, 200, 9, Some(0)),
        (2, 3, 4, 8, 11, None),
        (1, 37, 5, 128, 53, Some(16)),
        (3, 1, 1, 1, 1, Some(0)),
    ] {
        let (qv, wv, kv) = (rng.normal(b * t * h * d), rng.normal(b * t * h), rng.normal(b * s * d));
        for quant in [IndexerQuant::None, IndexerQuant::E4m3, IndexerQuant::E4m3Pow2] {
            let want = dsa_burn::indexer::reference_scores::<C>(
                ft(&qv, [b, t, h, d], &Default::default()),
                ft(&wv, [b, t, h], &Default::default()),
                ft(&kv, [b, s, d], &Default::default()),
                quant,
                causal,
            );
            let got = indexer_scores::<G>(ft(&qv, [b, t, h, d], &gdev()), ft(&wv, [b, t, h], &gdev()), ft(&kv, [b, s, d], &gdev()), quant, causal);
            assert_eq!(got.dims(), [b, t, s]);
            assert_close(&format!("scores {:?} {quant:?}", (b, t, h, d, s, causal)), &host(got), &host(want), 1e-5);
        }
    }
}

#[test]
fn topk_matches_reference() {
    let mut rng = Rng::new("topk");
    for (b, t, s, k, causal, ties) in [
        (2, 6, 6, 4, Some(0), false),
        (1, 5, 13, 3, Some(8), true),
        (3, 4, 9, 1, None, true),
        (2, 7, 7, 20, Some(0), false),
        (1, 2, 300, 37, None, true),
        (2, 3, 1000, 100, None, false),
        (1, 70, 70, 64, Some(0), true),
        (1, 3, 700, 600, Some(400), true),
        (1, 4, 5000, 1, None, true),
    ] {
        let mut scores: Vec<f32> = rng.normal(b * t * s).into_iter().map(|v| if ties { (v * 2.0).round() } else { v }).collect();
        // A few -inf (masked by an earlier step) and NaN scores: both rank last.
        for _ in 0..(b * t * s) / 10 {
            let i = rng.below(b * t * s);
            scores[i] = if rng.next() < 0.5 { f32::NEG_INFINITY } else { f32::NAN };
        }
        let (want_i, want_v) = dsa_burn::topk::reference_topk::<C>(ft(&scores, [b, t, s], &Default::default()), k, causal);
        let (got_i, got_v) = topk_select::<G>(ft(&scores, [b, t, s], &gdev()), k, causal);
        let case = format!("{:?}", (b, t, s, k, causal, ties));
        assert_eq!(got_i.dims(), [b, t, k.min(s)], "{case}");
        assert_eq!(got_v.into_data().convert::<bool>().into_vec::<bool>().unwrap(), want_v.into_data().into_vec::<bool>().unwrap(), "valid {case}");
        let (got_i, want_i) = (
            got_i.into_data().convert::<i64>().into_vec::<i64>().unwrap(),
            want_i.into_data().convert::<i64>().into_vec::<i64>().unwrap(),
        );
        let kk = k.min(s);
        if let Some(row) = (0..b * t).find(|r| got_i[r * kk..(r + 1) * kk] != want_i[r * kk..(r + 1) * kk]) {
            let show = |v: &[i64]| v.iter().map(|i| format!("{i}:{}", scores[row * s + *i as usize])).collect::<Vec<_>>().join(" ");
            panic!(
                "indices {case}, row {row}:\n got  {}\n want {}",
                show(&got_i[row * kk..(row + 1) * kk]),
                show(&want_i[row * kk..(row + 1) * kk])
            );
        }
    }
}

#[test]
fn sparse_mla_matches_reference() {
    let mut rng = Rng::new("sparse_mla");
    for (b, t, h, d, dv, s, k, empty_rows) in [
        (2, 5, 3, 12, 8, 5, 4, 1),
        (1, 3, 2, 9, 9, 10, 16, 0),
        (2, 6, 1, 5, 3, 6, 1, 2),
        (1, 4, 11, 72, 64, 40, 37, 1),
        (2, 2, 16, 40, 32, 100, 20, 0),
    ] {
        let (qv, kvv) = (rng.normal(b * t * h * d), rng.normal(b * s * d));
        // Random selections (duplicates allowed: the semantics is per slot) and validity,
        // with some rows entirely invalid.
        let sel: Vec<i64> = (0..b * t * k).map(|_| rng.below(s) as i64).collect();
        let mut valid: Vec<bool> = (0..b * t * k).map(|_| rng.next() < 0.8).collect();
        for r in 0..empty_rows {
            let row = rng.below(b * t);
            valid[row * k..(row + 1) * k].iter_mut().for_each(|v| *v = false);
            let _ = r;
        }
        let scale = 1.0 / (d as f32).sqrt();
        let idx = |dev: &burn::backend::ndarray::NdArrayDevice| Tensor::<C, 3, Int>::from_data(TensorData::new(sel.clone(), [b, t, k]), dev);
        let (want_o, want_l) = dsa_burn::sparse_mla::reference_sparse_mla::<C>(
            ft(&qv, [b, t, h, d], &Default::default()),
            ft(&kvv, [b, s, d], &Default::default()),
            idx(&Default::default()),
            Tensor::<C, 3, Bool>::from_data(TensorData::new(valid.clone(), [b, t, k]), &Default::default()),
            dv,
            scale,
        );
        let (got_o, got_l) = sparse_mla::<G>(
            ft(&qv, [b, t, h, d], &gdev()),
            ft(&kvv, [b, s, d], &gdev()),
            Tensor::<G, 3, Int>::from_data(TensorData::new(sel.iter().map(|v| *v as i32).collect::<Vec<_>>(), [b, t, k]), &gdev()),
            Tensor::<G, 3, Bool>::from_data(TensorData::new(valid.clone(), [b, t, k]), &gdev()),
            dv,
            scale,
        );
        let case = format!("{:?}", (b, t, h, d, dv, s, k));
        assert_eq!(got_o.dims(), [b, t, h, dv]);
        // The reference writes NaN-free zeros for empty rows only through its clamp; compare.
        assert_close(&format!("out {case}"), &host(got_o), &host(want_o), 1e-5);
        assert_close(&format!("lse {case}"), &host(got_l), &host(want_l), 1e-5);
    }
}
