//! The three DSA operations (and the other ops: grouped and linear products, row permutations)
//! against plain float64 computations written independently here (dense masked attention,
//! brute-force sorting), forward and gradients, on random shapes
//! (T < k, sizes that are no multiple of any block, B > 1). Runs on every enabled backend.

use burn::backend::Autodiff;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Bool, Tensor, TensorData};
use dsa_burn::loss::{dense_indexer_loss, sparse_indexer_loss};
use dsa_burn::ops::{dense_attention, indexer_scores, indexer_selected_scores, permute_rows, rms_norm, rope, sparse_mla, swiglu, topk_select};
use dsa_burn::{DsaBackend, IndexerQuant};

/// xorshift64*: fresh inputs every run; the seed is printed so a failure can be replayed
/// with `DSA_TEST_SEED`.
struct Rng(u64);
impl Rng {
    fn new(name: &str) -> Self {
        let seed = std::env::var("DSA_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
        });
        println!("{name}: DSA_TEST_SEED={seed}");
        Rng(seed)
    }
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545F4914F6CDD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| (-2.0 * self.next().max(1e-300).ln()).sqrt() * (std::f64::consts::TAU * self.next()).cos()).collect()
    }
}

fn tensor<B: AutodiffBackend, const D: usize>(v: &[f64], shape: [usize; D], dev: &B::Device) -> Tensor<B, D> {
    let v: Vec<f32> = v.iter().map(|x| *x as f32).collect();
    Tensor::from_data(TensorData::new(v, shape), dev).require_grad()
}

fn host<B: AutodiffBackend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap().into_iter().map(f64::from).collect()
}

fn host_bool<B: AutodiffBackend, const D: usize>(t: Tensor<B, D, Bool>) -> Vec<bool> {
    t.int().into_data().convert::<i64>().into_vec::<i64>().unwrap().into_iter().map(|v| v != 0).collect()
}

fn grad<B: AutodiffBackend, const D: usize>(t: &Tensor<B, D>, g: &B::Gradients) -> Vec<f64> {
    t.grad(g).map(|g| g.into_data().convert::<f32>().into_vec::<f32>().unwrap().into_iter().map(f64::from).collect()).expect("gradient")
}

/// Relative error ‖a − b‖ / ‖b‖ over finite entries; infinities must match exactly.
fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (mut num, mut den) = (0.0, 0.0);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if w.is_infinite() || g.is_infinite() {
            assert_eq!(g, w, "{what}[{i}]");
            continue;
        }
        assert!(g.is_finite(), "{what}[{i}] = {g}");
        num += (g - w) * (g - w);
        den += w * w;
    }
    let rel = (num / den.max(1e-300)).sqrt();
    assert!(rel <= tol, "{what}: relative error {rel:e} > {tol:e}");
}

/// Central finite differences of a scalar function of one input, in float64.
fn finite_diff(x: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut x = x.to_vec();
    (0..x.len())
        .map(|i| {
            let h = 1e-6 * x[i].abs().max(1.0);
            let x0 = x[i];
            x[i] = x0 + h;
            let up = f(&x);
            x[i] = x0 - h;
            let down = f(&x);
            x[i] = x0;
            (up - down) / (2.0 * h)
        })
        .collect()
}

/// Nearest float8_e4m3fn value by exhaustive search over the bit patterns (ties to even).
fn e4m3(x: f64) -> f64 {
    let a = x.abs();
    let mut best = (f64::INFINITY, 0.0, 1u8);
    for b in 0u8..=0x7e {
        let (e, m) = ((b >> 3) as i32, (b & 7) as f64);
        let v = if e == 0 { m / 8.0 * 2f64.powi(-6) } else { (1.0 + m / 8.0) * 2f64.powi(e - 7) };
        let d = (v - a).abs();
        if d < best.0 || (d == best.0 && b % 2 == 0) {
            best = (d, v, b);
        }
    }
    best.1.copysign(x)
}

/// FP8 block fake-quantisation of rows of length `d`, in f64 (scales as the f32 reference).
fn quant_rows(x: &[f64], d: usize, quant: IndexerQuant) -> Vec<f64> {
    if quant == IndexerQuant::None {
        return x.to_vec();
    }
    let mut out = x.to_vec();
    for row in out.chunks_mut(d) {
        for block in row.chunks_mut(128) {
            let amax = block.iter().fold(1e-4f32, |m, v| m.max((*v as f32).abs()));
            let mut s = amax / 448.0;
            if quant == IndexerQuant::E4m3Pow2 {
                s = 2f32.powi((s as f64).log2().ceil() as i32);
            }
            for v in block.iter_mut() {
                *v = e4m3(((*v as f32) / s).clamp(-448.0, 448.0) as f64) * s as f64;
            }
        }
    }
    out
}

/// Plain indexer scores in f64.
fn indexer_f64(q: &[f64], w: &[f64], k: &[f64], [b, t, h, d, s]: [usize; 5], causal: Option<usize>) -> Vec<f64> {
    let mut out = vec![0.0; b * t * s];
    for bi in 0..b {
        for ti in 0..t {
            for si in 0..s {
                if causal.is_some_and(|o| si > ti + o) {
                    out[(bi * t + ti) * s + si] = f64::NEG_INFINITY;
                    continue;
                }
                let mut acc = 0.0;
                for hi in 0..h {
                    let qv = &q[((bi * t + ti) * h + hi) * d..][..d];
                    let kv = &k[(bi * s + si) * d..][..d];
                    let dot: f64 = qv.iter().zip(kv).map(|(a, c)| a * c).sum();
                    acc += w[(bi * t + ti) * h + hi] * dot.max(0.0);
                }
                out[(bi * t + ti) * s + si] = acc;
            }
        }
    }
    out
}

fn check_indexer<B: AutodiffBackend + DsaBackend>(dev: &B::Device) {
    let mut rng = Rng::new("indexer");
    for (b, t, h, d, s, causal) in [(2, 5, 3, 16, 7, Some(2)), (1, 9, 2, 200, 9, Some(0)), (2, 3, 4, 8, 11, None)] {
        let (qv, wv, kv) = (rng.normal(b * t * h * d), rng.normal(b * t * h), rng.normal(b * s * d));
        let dims = [b, t, h, d, s];
        for quant in [IndexerQuant::None, IndexerQuant::E4m3, IndexerQuant::E4m3Pow2] {
            let (q, w, k) = (tensor::<B, 4>(&qv, [b, t, h, d], dev), tensor::<B, 3>(&wv, [b, t, h], dev), tensor::<B, 3>(&kv, [b, s, d], dev));
            let out = indexer_scores(q.clone(), w.clone(), k.clone(), quant, causal);
            let want = indexer_f64(&quant_rows(&qv, d, quant), &wv, &quant_rows(&kv, d, quant), dims, causal);
            assert_close(&format!("scores {dims:?} {quant:?}"), &host(out.clone()), &want, 2e-5);
            // The scores at a selection (kernel 6): rows with fewer candidates than slots
            // have invalid slots (-inf).
            let kk = 3.min(s);
            let (sel, valid) = topk_select(out.clone(), kk, causal);
            let (sel_h, valid_h) = (sel.clone().into_data().convert::<i64>().into_vec::<i64>().unwrap(), host_bool(valid.clone()));
            let at_sel = |scores: &[f64]| -> Vec<f64> {
                (0..b * t * kk).map(|i| if valid_h[i] { scores[(i / kk) * s + sel_h[i] as usize] } else { f64::NEG_INFINITY }).collect()
            };
            let picked = indexer_selected_scores(q.clone(), w.clone(), k.clone(), quant, sel, valid);
            assert_close(&format!("selected scores {dims:?} {quant:?}"), &host(picked.clone()), &at_sel(&want), 2e-5);
            if quant != IndexerQuant::None {
                continue;
            }
            // Gradients of Σ selected scores·G over the valid slots (the selection fixed).
            let g = rng.normal(b * t * kk);
            let g_t = Tensor::<B, 3>::from_data(TensorData::new(g.iter().map(|x| *x as f32).collect::<Vec<_>>(), [b, t, kk]), dev);
            let loss = (picked.clone().mask_fill(picked.is_inf(), 0.0) * g_t).sum();
            let grads = loss.backward();
            let f = |qq: &[f64], ww: &[f64], kv_: &[f64]| {
                at_sel(&indexer_f64(qq, ww, kv_, dims, causal)).iter().zip(&g).filter(|(v, _)| v.is_finite()).map(|(v, gg)| v * gg).sum::<f64>()
            };
            assert_close("selected dq", &grad(&q, &grads), &finite_diff(&qv, |x| f(x, &wv, &kv)), 1e-4);
            assert_close("selected dw", &grad(&w, &grads), &finite_diff(&wv, |x| f(&qv, x, &kv)), 1e-4);
            assert_close("selected dk", &grad(&k, &grads), &finite_diff(&kv, |x| f(&qv, &wv, x)), 1e-4);
            // Gradients of Σ scores·G over the finite entries.
            let g = rng.normal(b * t * s);
            let g_t = Tensor::<B, 3>::from_data(TensorData::new(g.iter().map(|x| *x as f32).collect::<Vec<_>>(), [b, t, s]), dev);
            let finite = out.clone().is_inf().bool_not().float();
            let loss = (out.mask_fill(finite.clone().equal_elem(0.0), 0.0) * g_t).sum();
            let grads = loss.backward();
            let f = |qq: &[f64], ww: &[f64], kk: &[f64]| {
                indexer_f64(qq, ww, kk, dims, causal).iter().zip(&g).filter(|(v, _)| v.is_finite()).map(|(v, gg)| v * gg).sum::<f64>()
            };
            assert_close("dq", &grad(&q, &grads), &finite_diff(&qv, |x| f(x, &wv, &kv)), 1e-4);
            assert_close("dw", &grad(&w, &grads), &finite_diff(&wv, |x| f(&qv, x, &kv)), 1e-4);
            assert_close("dk", &grad(&k, &grads), &finite_diff(&kv, |x| f(&qv, &wv, x)), 1e-4);
        }
    }
}

/// Brute force: sort every candidate of the row by (score desc, index asc).
fn topk_f64(scores: &[f64], [b, t, s]: [usize; 3], k: usize, causal: Option<usize>) -> (Vec<i64>, Vec<bool>) {
    let kk = k.min(s);
    let (mut idx, mut valid) = (vec![0i64; b * t * kk], vec![false; b * t * kk]);
    for row in 0..b * t {
        let mut cand: Vec<usize> = (0..s).filter(|si| causal.is_none_or(|o| *si <= row % t + o)).collect();
        cand.sort_by(|x, y| scores[row * s + y].partial_cmp(&scores[row * s + x]).unwrap().then(x.cmp(y)));
        for (j, c) in cand.into_iter().take(kk).enumerate() {
            idx[row * kk + j] = c as i64;
            valid[row * kk + j] = true;
        }
    }
    (idx, valid)
}

fn check_topk<B: AutodiffBackend + DsaBackend>(dev: &B::Device) {
    let mut rng = Rng::new("topk");
    // Scores: N(0, 1); rounded to halves (exact ties); ReLU'd, so most are exact zeros of
    // either sign straddling the cut, as the indexer's are; or all zeros (±0).
    #[derive(Debug, Clone, Copy)]
    enum Scores {
        Normal,
        Rounded,
        Relu,
        Zeros,
    }
    for (b, t, s, k, causal, kind) in [
        (2, 6, 6, 4, Some(0), Scores::Normal),
        (1, 5, 13, 3, Some(8), Scores::Rounded),
        (3, 4, 9, 1, None, Scores::Rounded),
        (2, 7, 7, 20, Some(0), Scores::Normal),
        (1, 2, 300, 37, None, Scores::Rounded),
        (2, 5, 40, 8, Some(20), Scores::Relu),
        (1, 3, 50, 30, None, Scores::Relu),
        (2, 4, 30, 6, Some(10), Scores::Zeros),
    ] {
        let scores: Vec<f64> = (rng.normal(b * t * s).into_iter().enumerate())
            .map(|(i, v)| match kind {
                Scores::Normal => v,
                Scores::Rounded => (v * 2.0).round(),
                Scores::Relu if v > 0.8 => v,
                Scores::Relu | Scores::Zeros => if i % 3 == 0 { -0.0 } else { 0.0 },
            })
            .collect();
        let (idx, valid) = topk_select(tensor::<B, 3>(&scores, [b, t, s], dev), k, causal);
        let (want_idx, want_valid) = topk_f64(&scores, [b, t, s], k, causal);
        assert_eq!(idx.dims(), [b, t, k.min(s)]);
        assert_eq!(host_bool(valid), want_valid, "valid {b} {t} {s} {k} {kind:?}");
        assert_eq!(idx.into_data().convert::<i64>().into_vec::<i64>().unwrap(), want_idx, "indices {b} {t} {s} {k} {kind:?}");
    }
}

/// Dense masked attention in f64: output [B,T,H,dv] and lse [B,T,H].
fn attention_f64(q: &[f64], kv: &[f64], sel: &[i64], valid: &[bool], [b, t, h, d, s, k]: [usize; 6], dv: usize, scale: f64) -> (Vec<f64>, Vec<f64>) {
    let (mut out, mut lse) = (vec![0.0; b * t * h * dv], vec![f64::NEG_INFINITY; b * t * h]);
    for bi in 0..b {
        for ti in 0..t {
            // The dense mask: key s is attended iff some valid slot selects it.
            let mut allowed = vec![false; s];
            for j in 0..k {
                if valid[(bi * t + ti) * k + j] {
                    allowed[sel[(bi * t + ti) * k + j] as usize] = true;
                }
            }
            for hi in 0..h {
                let qv = &q[((bi * t + ti) * h + hi) * d..][..d];
                let logits: Vec<f64> = (0..s)
                    .map(|si| if allowed[si] { scale * qv.iter().zip(&kv[(bi * s + si) * d..][..d]).map(|(a, c)| a * c).sum::<f64>() } else { f64::NEG_INFINITY })
                    .collect();
                let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                if m == f64::NEG_INFINITY {
                    continue;
                }
                let z: f64 = logits.iter().map(|l| (l - m).exp()).sum();
                lse[(bi * t + ti) * h + hi] = m + z.ln();
                for si in 0..s {
                    let p = (logits[si] - m).exp() / z;
                    for e in 0..dv {
                        out[((bi * t + ti) * h + hi) * dv + e] += p * kv[(bi * s + si) * d + e];
                    }
                }
            }
        }
    }
    (out, lse)
}

fn check_sparse_mla<B: AutodiffBackend + DsaBackend>(dev: &B::Device) {
    let mut rng = Rng::new("sparse_mla");
    for (b, t, h, d, dv, s, k, offset) in [(2, 5, 3, 12, 8, 5, 4, 0), (1, 3, 2, 9, 9, 10, 16, 7), (2, 6, 1, 5, 3, 6, 1, 0)] {
        let (qv, kvv) = (rng.normal(b * t * h * d), rng.normal(b * s * d));
        let scale = 1.0 / (d as f64).sqrt();
        // Selections from random scores; then invalidate one whole row to test empty rows.
        let scores = rng.normal(b * t * s);
        let (sel, sel_valid) = topk_select(tensor::<B, 3>(&scores, [b, t, s], dev), k, Some(offset));
        let kk = sel.dims()[2];
        let mut valid = host_bool(sel_valid);
        valid[..kk].iter_mut().for_each(|v| *v = false);
        let sel_host = sel.clone().into_data().convert::<i64>().into_vec::<i64>().unwrap();
        let dims = [b, t, h, d, s, kk];
        let valid_t = Tensor::<B, 3, Bool>::from_data(TensorData::new(valid.clone(), [b, t, kk]), dev);
        let (q, kv) = (tensor::<B, 4>(&qv, [b, t, h, d], dev), tensor::<B, 3>(&kvv, [b, s, d], dev));
        let (out, lse) = sparse_mla(q.clone(), kv.clone(), sel.clone(), valid_t, dv, scale as f32);
        let (want_out, want_lse) = attention_f64(&qv, &kvv, &sel_host, &valid, dims, dv, scale);
        assert_close("sparse_mla out", &host(out.clone()), &want_out, 1e-5);
        assert_close("sparse_mla lse", &host(lse.clone()), &want_lse, 1e-5);
        // Gradients of Σ out·G + Σ lse·G2 (finite lse only).
        let (g, g2) = (rng.normal(b * t * h * dv), rng.normal(b * t * h));
        let g2: Vec<f64> = g2.iter().zip(&want_lse).map(|(x, l)| if l.is_finite() { *x } else { 0.0 }).collect();
        let lse_finite = lse.clone().mask_fill(lse.clone().is_inf(), 0.0);
        let to = |v: &[f64], shape| Tensor::<B, 4>::from_data(TensorData::new(v.iter().map(|x| *x as f32).collect::<Vec<_>>(), shape), dev);
        let loss = (out * to(&g, [b, t, h, dv])).sum() + (lse_finite * to(&g2, [b, t, h, 1]).reshape([b, t, h])).sum();
        let grads = loss.backward();
        let f = |qq: &[f64], kk: &[f64]| {
            let (o, l) = attention_f64(qq, kk, &sel_host, &valid, dims, dv, scale);
            o.iter().zip(&g).map(|(a, c)| a * c).sum::<f64>() + l.iter().zip(&g2).filter(|(l, _)| l.is_finite()).map(|(a, c)| a * c).sum::<f64>()
        };
        assert_close("dq", &grad(&q, &grads), &finite_diff(&qv, |x| f(x, &kvv)), 1e-4);
        assert_close("dkv", &grad(&kv, &grads), &finite_diff(&kvv, |x| f(&qv, x)), 1e-4);
    }
}

/// Causal MHA attention in f64 (`q [B,H,T,D]`, `k [B,H,S,D]`, `v [B,H,S,dv]`, query `t`
/// at position `t + offset`): output `[B,H,T,dv]` and lse `[B,H,T]`.
fn mha_f64(q: &[f64], k: &[f64], v: &[f64], [b, h, t, d, s, dv]: [usize; 6], offset: usize, scale: f64) -> (Vec<f64>, Vec<f64>) {
    let (mut out, mut lse) = (vec![0.0; b * h * t * dv], vec![0.0; b * h * t]);
    for bh in 0..b * h {
        for ti in 0..t {
            let qv = &q[(bh * t + ti) * d..][..d];
            let seen = (ti + offset + 1).min(s);
            let logits: Vec<f64> = (0..seen).map(|si| scale * qv.iter().zip(&k[(bh * s + si) * d..][..d]).map(|(a, c)| a * c).sum::<f64>()).collect();
            let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = logits.iter().map(|l| (l - m).exp()).sum();
            lse[bh * t + ti] = m + z.ln();
            for (si, l) in logits.iter().enumerate() {
                for e in 0..dv {
                    out[(bh * t + ti) * dv + e] += (l - m).exp() / z * v[(bh * s + si) * dv + e];
                }
            }
        }
    }
    (out, lse)
}

fn check_dense_attention<B: AutodiffBackend + DsaBackend>(dev: &B::Device) {
    let mut rng = Rng::new("dense_attention");
    for (b, h, t, d, dv, offset) in [(2, 3, 5, 6, 4, 0), (1, 2, 4, 7, 7, 3), (1, 1, 1, 3, 2, 5)] {
        let s = t + offset;
        let dims = [b, h, t, d, s, dv];
        let (qv, kv, vv) = (rng.normal(b * h * t * d), rng.normal(b * h * s * d), rng.normal(b * h * s * dv));
        let scale = 1.0 / (d as f64).sqrt();
        let (q, k, v) = (tensor::<B, 4>(&qv, [b, h, t, d], dev), tensor::<B, 4>(&kv, [b, h, s, d], dev), tensor::<B, 4>(&vv, [b, h, s, dv], dev));
        let (out, lse) = dense_attention(q.clone(), k.clone(), v.clone(), offset, scale as f32);
        let (want_out, want_lse) = mha_f64(&qv, &kv, &vv, dims, offset, scale);
        assert_close("dense_attention out", &host(out.clone()), &want_out, 1e-5);
        assert_close("dense_attention lse", &host(lse), &want_lse, 1e-5);
        let g = rng.normal(b * h * t * dv);
        let loss = (out * Tensor::<B, 4>::from_data(TensorData::new(g.iter().map(|x| *x as f32).collect::<Vec<_>>(), [b, h, t, dv]), dev)).sum();
        let grads = loss.backward();
        let f = |qq: &[f64], kk: &[f64], vv: &[f64]| mha_f64(qq, kk, vv, dims, offset, scale).0.iter().zip(&g).map(|(a, c)| a * c).sum::<f64>();
        assert_close("dense dq", &grad(&q, &grads), &finite_diff(&qv, |x| f(x, &kv, &vv)), 1e-4);
        assert_close("dense dk", &grad(&k, &grads), &finite_diff(&kv, |x| f(&qv, x, &vv)), 1e-4);
        assert_close("dense dv", &grad(&v, &grads), &finite_diff(&vv, |x| f(&qv, &kv, x)), 1e-4);
    }
}

/// `swiglu` and its gradients against f64 and finite differences.
fn check_swiglu<B: AutodiffBackend + DsaBackend>(dev: &B::Device) {
    let mut rng = Rng::new("swiglu");
    let (n, d) = (4, 7);
    let (gv, uv, dyv) = (rng.normal(n * d), rng.normal(n * d), rng.normal(n * d));
    let f64_swiglu = |g: &[f64], u: &[f64]| g.iter().zip(u).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect::<Vec<f64>>();
    let (gate, up) = (tensor::<B, 2>(&gv, [n, d], dev), tensor::<B, 2>(&uv, [n, d], dev));
    let y = swiglu(gate.clone(), up.clone());
    assert_close("swiglu", &host(y.clone()), &f64_swiglu(&gv, &uv), 1e-6);
    let dy = Tensor::<B, 2>::from_data(TensorData::new(dyv.iter().map(|v| *v as f32).collect::<Vec<_>>(), [n, d]), dev);
    let grads = (y * dy).sum().backward();
    let f = |g: &[f64], u: &[f64]| f64_swiglu(g, u).iter().zip(&dyv).map(|(a, c)| a * c).sum::<f64>();
    assert_close("swiglu dgate", &grad(&gate, &grads), &finite_diff(&gv, |g| f(g, &uv)), 1e-4);
    assert_close("swiglu dup", &grad(&up, &grads), &finite_diff(&uv, |u| f(&gv, u)), 1e-4);
}

/// RoPE in f64 on `x [b, t, h, d]` at positions `start..`: pairs rotated by `p · freqs[i]`.
fn rope_f64(x: &[f64], [t, h, d]: [usize; 3], freqs: &[f32], start: usize, interleaved: bool) -> Vec<f64> {
    let mut y = x.to_vec();
    let half = d / 2;
    for (row, chunk) in y.chunks_mut(d).enumerate() {
        let p = start + (row / h) % t;
        for (i, f) in freqs.iter().enumerate() {
            let angle = (p as f32 * f) as f64;
            let (i0, i1) = if interleaved { (2 * i, 2 * i + 1) } else { (i, i + half) };
            let (a, b) = (chunk[i0], chunk[i1]);
            chunk[i0] = a * angle.cos() - b * angle.sin();
            chunk[i1] = a * angle.sin() + b * angle.cos();
        }
    }
    y
}

/// `rope` and its gradient against f64 and finite differences, both pair layouts.
fn check_rope<B: AutodiffBackend + DsaBackend>(dev: &B::Device) {
    let mut rng = Rng::new("rope");
    let r = dsa_burn::rope::RopeConfig::new(6, 64).init();
    let freqs: Vec<f32> = r.freqs::<B>(dev).into_data().convert::<f32>().into_vec().unwrap();
    for (b, t, h, start, interleaved) in [(2, 3, 2, 0, true), (1, 4, 1, 9, false)] {
        let d = 6;
        let (xv, gv) = (rng.normal(b * t * h * d), rng.normal(b * t * h * d));
        let x = tensor::<B, 4>(&xv, [b, t, h, d], dev);
        let y = rope(x.clone(), r.freqs(dev), start, interleaved);
        let want = rope_f64(&xv, [t, h, d], &freqs, start, interleaved);
        assert_close("rope", &host(y.clone()), &want, 1e-6);
        let g = Tensor::<B, 4>::from_data(TensorData::new(gv.iter().map(|v| *v as f32).collect::<Vec<_>>(), [b, t, h, d]), dev);
        let grads = (y * g).sum().backward();
        let f = |xx: &[f64]| rope_f64(xx, [t, h, d], &freqs, start, interleaved).iter().zip(&gv).map(|(a, c)| a * c).sum::<f64>();
        assert_close("rope dx", &grad(&x, &grads), &finite_diff(&xv, f), 1e-4);
    }
}

/// RMSNorm in f64: `y = gamma · x / √(mean(x²) + ε)` per row of `x [n, d]`.
fn rms_norm_f64(x: &[f64], gamma: &[f64], d: usize, eps: f64) -> Vec<f64> {
    x.chunks(d)
        .flat_map(|row| {
            let inv = 1.0 / (row.iter().map(|v| v * v).sum::<f64>() / d as f64 + eps).sqrt();
            row.iter().zip(gamma).map(move |(v, g)| g * v * inv)
        })
        .collect()
}

/// `rms_norm` and its gradients in `x` and `gamma` against f64 and finite differences; rows
/// of more than one cube's width and of fewer, over three dims (flattened to rows).
fn check_rms_norm<B: AutodiffBackend + DsaBackend>(dev: &B::Device) {
    let mut rng = Rng::new("rms_norm");
    for (a, n, d, eps) in [(2, 3, 5, 1e-6), (1, 37, 300, 1e-3), (3, 1, 1, 0.5)] {
        let rows = a * n;
        let (xv, gv, dyv) = (rng.normal(rows * d), rng.normal(d), rng.normal(rows * d));
        let x = tensor::<B, 3>(&xv, [a, n, d], dev);
        let gamma = tensor::<B, 1>(&gv, [d], dev);
        let y = rms_norm(x.clone(), gamma.clone(), eps);
        assert_close("rms_norm", &host(y.clone()), &rms_norm_f64(&xv, &gv, d, eps), 1e-6);
        let dy = Tensor::<B, 3>::from_data(TensorData::new(dyv.iter().map(|v| *v as f32).collect::<Vec<_>>(), [a, n, d]), dev);
        let grads = (y * dy).sum().backward();
        let f = |xx: &[f64], gg: &[f64]| rms_norm_f64(xx, gg, d, eps).iter().zip(&dyv).map(|(y, g)| y * g).sum::<f64>();
        assert_close("rms_norm dx", &grad(&x, &grads), &finite_diff(&xv, |v| f(v, &gv)), 1e-4);
        assert_close("rms_norm dgamma", &grad(&gamma, &grads), &finite_diff(&gv, |v| f(&xv, v)), 1e-4);
    }
}

/// A random permutation of the rows: the forward gathers them, the gradient of `Σ y·g`
/// reaches each row of `x` from the output row it went to.
fn check_permute_rows<B: AutodiffBackend + DsaBackend>(dev: &B::Device) {
    let mut rng = Rng::new("permute_rows");
    let (n, d) = (13, 5);
    let mut perm: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        perm.swap(i, (rng.next() * (i + 1) as f64) as usize % (i + 1));
    }
    let mut inverse = vec![0; n];
    perm.iter().enumerate().for_each(|(i, &p)| inverse[p] = i);
    let ints = |v: &[usize]| Tensor::<B, 1, burn::tensor::Int>::from_data(TensorData::new(v.iter().map(|&i| i as i64).collect::<Vec<_>>(), [n]), dev);
    let (xv, g) = (rng.normal(n * d), rng.normal(n * d));
    let x = tensor::<B, 2>(&xv, [n, d], dev);
    let y = permute_rows(x.clone(), ints(&perm), ints(&inverse));
    let want: Vec<f64> = perm.iter().flat_map(|&p| xv[p * d..][..d].to_vec()).collect();
    assert_close("permute_rows", &host(y.clone()), &want, 1e-7);
    let grads = (y * Tensor::<B, 2>::from_data(TensorData::new(g.iter().map(|v| *v as f32).collect::<Vec<_>>(), [n, d]), dev)).sum().backward();
    let want: Vec<f64> = (0..n).flat_map(|r| g[inverse[r] * d..][..d].to_vec()).collect();
    assert_close("permute_rows dx", &grad(&x, &grads), &want, 1e-7);
}

/// KL(p ‖ softmax(i)) in f64 over the entries where `allowed`.
fn kl_f64(p: &[f64], i: &[f64], allowed: &[bool]) -> f64 {
    let m = i.iter().zip(allowed).filter(|(_, a)| **a).map(|(v, _)| *v).fold(f64::NEG_INFINITY, f64::max);
    let z: f64 = i.iter().zip(allowed).filter(|(_, a)| **a).map(|(v, _)| (v - m).exp()).sum();
    let sum_p: f64 = p.iter().zip(allowed).filter(|(_, a)| **a).map(|(v, _)| *v).sum();
    p.iter().zip(i).zip(allowed).filter(|(_, a)| **a).map(|((pv, iv), _)| {
        let pv = pv / sum_p;
        if pv > 0.0 { pv * (pv.ln() - (iv - m - z.ln())) } else { 0.0 }
    }).sum()
}

fn check_losses<B: AutodiffBackend + DsaBackend>(dev: &B::Device) {
    let mut rng = Rng::new("losses");
    let (b, t, h, d, s, k) = (2, 6, 3, 10, 6, 3);
    let (qv, kvv, iv) = (rng.normal(b * t * h * d), rng.normal(b * s * d), rng.normal(b * t * s));
    let scale = 0.4;
    let (q, kv) = (tensor::<B, 4>(&qv, [b, t, h, d], dev), tensor::<B, 3>(&kvv, [b, s, d], dev));
    let scores = tensor::<B, 3>(&iv, [b, t, s], dev);
    // Attention probabilities of all heads at (b, t) over `allowed`, summed over heads.
    let probs = |allowed: &[bool], bi: usize, ti: usize| -> Vec<f64> {
        let mut p = vec![0.0; s];
        for hi in 0..h {
            let qh = &qv[((bi * t + ti) * h + hi) * d..][..d];
            let l: Vec<f64> = (0..s).map(|si| scale * qh.iter().zip(&kvv[(bi * s + si) * d..][..d]).map(|(a, c)| a * c).sum::<f64>()).collect();
            let z: f64 = (0..s).filter(|si| allowed[*si]).map(|si| l[si].exp()).sum();
            (0..s).filter(|si| allowed[*si]).for_each(|si| p[si] += l[si].exp() / z);
        }
        p
    };
    // Dense: causal keys.
    let dense_f = |ii: &[f64]| -> f64 {
        (0..b * t).map(|row| {
            let allowed: Vec<bool> = (0..s).map(|si| si <= row % t).collect();
            kl_f64(&probs(&allowed, row / t, row % t), &ii[row * s..][..s], &allowed)
        }).sum::<f64>() / b as f64
    };
    // In MHA form: every head's keys are the latent.
    let (q_heads, k_heads) = (q.clone().swap_dims(1, 2), kv.clone().unsqueeze_dim::<4>(1).expand([b, h, s, d]));
    let (_, lse) = dense_attention(q_heads.clone(), k_heads.clone(), k_heads.clone(), 0, scale as f32);
    let masked_scores = scores.clone().mask_fill(dsa_burn::reference::causal_mask::<B>(t, s, 0, dev).unsqueeze(), f32::NEG_INFINITY);
    let dense = dense_indexer_loss(q_heads, k_heads, lse, scale as f32, masked_scores, 0);
    assert_close("dense loss", &host(dense.clone()), &[dense_f(&iv)], 1e-5);
    let grads = dense.backward();
    assert_close("dense dI", &grad(&scores, &grads), &finite_diff(&iv, dense_f), 1e-4);
    assert!(q.grad(&grads).is_none() && kv.grad(&grads).is_none(), "the target must be detached");

    // Sparse: the selected set.
    let (sel, valid) = topk_select(scores.clone(), k, Some(0));
    let (sel_h, valid_h) = (sel.clone().into_data().convert::<i64>().into_vec::<i64>().unwrap(), host_bool(valid.clone()));
    let (_, lse) = sparse_mla(q.clone(), kv.clone(), sel.clone(), valid.clone(), d, scale as f32);
    let sparse_f = |ii: &[f64]| -> f64 {
        (0..b * t).map(|row| {
            let mut allowed = vec![false; s];
            (0..k).filter(|j| valid_h[row * k + j]).for_each(|j| allowed[sel_h[row * k + j] as usize] = true);
            kl_f64(&probs(&allowed, row / t, row % t), &ii[row * s..][..s], &allowed)
        }).sum::<f64>() / b as f64
    };
    let picked = scores.clone().gather(2, sel.clone()).mask_fill(valid.clone().bool_not(), f32::NEG_INFINITY);
    let sparse = sparse_indexer_loss(q.clone(), kv.clone(), scale as f32, lse, picked, sel, valid);
    assert_close("sparse loss", &host(sparse.clone()), &[sparse_f(&iv)], 1e-5);
    let grads = sparse.backward();
    assert_close("sparse dI", &grad(&scores, &grads), &finite_diff(&iv, sparse_f), 1e-4);
    assert!(q.grad(&grads).is_none() && kv.grad(&grads).is_none(), "the target must be detached");
}

/// `y [M, N]` of the grouped product in f64: `y[r] = x[r] · w[g]` for the rows of group `g`.
fn grouped_f64(x: &[f64], w: &[f64], sizes: &[usize], [k, n]: [usize; 2]) -> Vec<f64> {
    let m: usize = sizes.iter().sum();
    let mut y = vec![0.0; m * n];
    let mut r = 0;
    for (g, &rows) in sizes.iter().enumerate() {
        for r in r..r + rows {
            for e in 0..k {
                for c in 0..n {
                    y[r * n + c] += x[r * k + e] * w[(g * k + e) * n + c];
                }
            }
        }
        r += rows;
    }
    y
}

/// The grouped product and the gradients of `Σ y·G` against f64: `dx[r] = G[r] · w[g]ᵀ`,
/// `dw[g] = Σ_r x[r]ᵀ · G[r]` over the group's rows (zero for an empty group). Empty groups
/// first, in the middle and last, a group of one row, a single group, `M = 0`.
fn check_grouped_matmul<B: AutodiffBackend + DsaBackend>(dev: &B::Device) {
    use burn::tensor::Int;
    use dsa_burn::ops::grouped_matmul;
    let mut rng = Rng::new("grouped_matmul");
    for (k, n, sizes) in [(7, 5, vec![0, 3, 1, 0, 6, 0]), (12, 9, vec![17]), (4, 3, vec![2, 0, 5]), (3, 2, vec![0, 0])] {
        let (m, g) = (sizes.iter().sum::<usize>(), sizes.len());
        let (xv, wv, gv) = (rng.normal(m * k), rng.normal(g * k * n), rng.normal(m * n));
        let offsets: Vec<i64> = std::iter::once(0).chain(sizes.iter().scan(0i64, |end, &s| { *end += s as i64; Some(*end) })).collect();
        let offsets = Tensor::<B, 1, Int>::from_data(TensorData::new(offsets, [g + 1]), dev);
        let (x, w) = (tensor::<B, 2>(&xv, [m, k], dev), tensor::<B, 3>(&wv, [g, k, n], dev));
        let y = grouped_matmul(x.clone(), w.clone(), offsets);
        assert_eq!(y.dims(), [m, n]);
        assert_close(&format!("grouped y {sizes:?}"), &host(y.clone()), &grouped_f64(&xv, &wv, &sizes, [k, n]), 1e-6);
        if m == 0 {
            continue; // Burn's CubeCL element-wise ops fail on empty tensors (burn-cubecl 0.21).
        }
        let g_t = Tensor::<B, 2>::from_data(TensorData::new(gv.iter().map(|v| *v as f32).collect::<Vec<_>>(), [m, n]), dev);
        let grads = (y * g_t).sum().backward();
        let (mut dx, mut dw) = (vec![0.0; m * k], vec![0.0; g * k * n]);
        let mut r0 = 0;
        for (gi, &rows) in sizes.iter().enumerate() {
            for r in r0..r0 + rows {
                for e in 0..k {
                    for c in 0..n {
                        dx[r * k + e] += gv[r * n + c] * wv[(gi * k + e) * n + c];
                        dw[(gi * k + e) * n + c] += xv[r * k + e] * gv[r * n + c];
                    }
                }
            }
            r0 += rows;
        }
        assert_close(&format!("grouped dx {sizes:?}"), &grad(&x, &grads), &dx, 1e-6);
        assert_close(&format!("grouped dw {sizes:?}"), &grad(&w, &grads), &dw, 1e-6);
    }
}

/// `[y, dx, dw, db]` of `Σ linear(x, w, b) · G` by `ops::linear` (`ours`) or by Burn's own
/// `module::linear` (what `nn::Linear::forward` runs), for `x` of `x_dims` (`[.., K]`) and
/// `w [K, N]`; `db` empty without a bias.
fn linear_grads<B: AutodiffBackend + DsaBackend, const D: usize>(ours: bool, x_dims: [usize; D], (xv, wv, bv, gv): (&[f64], &[f64], &[f64], &[f64]), bias: bool, dev: &B::Device) -> [Vec<f64>; 4] {
    let (k, n) = (x_dims[D - 1], bv.len());
    let (x, w, b) = (tensor::<B, D>(xv, x_dims, dev), tensor::<B, 2>(wv, [k, n], dev), tensor::<B, 1>(bv, [n], dev));
    let mut g_dims = x_dims;
    g_dims[D - 1] = n;
    let g = Tensor::<B, D>::from_data(TensorData::new(gv.iter().map(|v| *v as f32).collect::<Vec<_>>(), g_dims), dev);
    let bias = bias.then(|| b.clone());
    let y = match ours {
        true => dsa_burn::ops::linear(x.clone(), w.clone(), bias.clone()),
        false => burn::tensor::module::linear(x.clone(), w.clone(), bias.clone()),
    };
    assert_eq!(y.dims(), g_dims);
    let grads = (y.clone() * g).sum().backward();
    let db = if bias.is_some() { grad(&b, &grads) } else { Vec::new() };
    [host(y), grad(&x, &grads), grad(&w, &grads), db]
}

/// `ops::linear` and its gradients against float64 (`y = x·W + b`, `dX = G·Wᵀ`,
/// `dW = Σ_rows xᵀ·G`, `db = Σ_rows G`) and against Burn's own linear under autodiff:
/// a 3-d input with two sequences and a bias, a 2-d one without, a 4-d one, a single row.
fn check_linear<B: AutodiffBackend + DsaBackend>(dev: &B::Device) {
    let mut rng = Rng::new("linear");
    for (x_dims, n, bias) in [(vec![2, 5, 7], 3, true), (vec![9, 4], 6, false), (vec![2, 1, 3, 5], 4, true), (vec![1, 1, 8], 2, true)] {
        let k = *x_dims.last().unwrap();
        let m: usize = x_dims[..x_dims.len() - 1].iter().product();
        let (xv, wv, bv, gv) = (rng.normal(m * k), rng.normal(k * n), rng.normal(n), rng.normal(m * n));
        let (mut y, mut dx, mut dw, mut db) = (vec![0.0; m * n], vec![0.0; m * k], vec![0.0; k * n], vec![0.0; n]);
        for r in 0..m {
            for c in 0..n {
                y[r * n + c] = (0..k).map(|e| xv[r * k + e] * wv[e * n + c]).sum::<f64>() + if bias { bv[c] } else { 0.0 };
                db[c] += gv[r * n + c];
                for e in 0..k {
                    dx[r * k + e] += gv[r * n + c] * wv[e * n + c];
                    dw[e * n + c] += xv[r * k + e] * gv[r * n + c];
                }
            }
        }
        let want = [y, dx, dw, if bias { db } else { Vec::new() }];
        let inputs = (&xv[..], &wv[..], &bv[..], &gv[..]);
        let run = |ours: bool| match x_dims.len() {
            2 => linear_grads::<B, 2>(ours, [x_dims[0], x_dims[1]], inputs, bias, dev),
            3 => linear_grads::<B, 3>(ours, [x_dims[0], x_dims[1], x_dims[2]], inputs, bias, dev),
            _ => linear_grads::<B, 4>(ours, [x_dims[0], x_dims[1], x_dims[2], x_dims[3]], inputs, bias, dev),
        };
        let (ours, burn) = (run(true), run(false));
        for (i, what) in ["y", "dx", "dw", "db"].into_iter().enumerate() {
            assert_close(&format!("linear {what} x {x_dims:?} N={n}"), &ours[i], &want[i], 1e-5);
            assert_close(&format!("linear {what} x {x_dims:?} N={n} against Burn's linear"), &ours[i], &burn[i], 1e-6);
        }
    }
}

/// Instantiates every check for one backend.
macro_rules! backend_tests {
    ($name:ident, $backend:ty, $device:expr) => {
        mod $name {
            use super::*;
            type B = Autodiff<$backend>;
            #[test]
            fn indexer_scores_forward_and_gradients() {
                check_indexer::<B>(&$device);
            }
            #[test]
            fn topk_select_matches_brute_force() {
                check_topk::<B>(&$device);
            }
            #[test]
            fn sparse_mla_forward_and_gradients() {
                check_sparse_mla::<B>(&$device);
            }
            #[test]
            fn swiglu_forward_and_gradients() {
                check_swiglu::<B>(&$device);
            }
            #[test]
            fn rope_forward_and_gradient() {
                check_rope::<B>(&$device);
            }
            #[test]
            fn rms_norm_forward_and_gradients() {
                check_rms_norm::<B>(&$device);
            }
            #[test]
            fn permute_rows_forward_and_gradient() {
                check_permute_rows::<B>(&$device);
            }
            #[test]
            fn dense_attention_forward_and_gradients() {
                check_dense_attention::<B>(&$device);
            }
            #[test]
            fn indexer_losses_forward_and_gradients() {
                check_losses::<B>(&$device);
            }
            #[test]
            fn grouped_matmul_forward_and_gradients() {
                check_grouped_matmul::<B>(&$device);
            }
            #[test]
            fn linear_forward_and_gradients() {
                check_linear::<B>(&$device);
            }
        }
    };
}

#[cfg(feature = "ndarray")]
backend_tests!(ndarray, burn::backend::NdArray, Default::default());
#[cfg(feature = "wgpu")]
backend_tests!(wgpu, burn::backend::Wgpu, burn::backend::wgpu::WgpuDevice::default());
