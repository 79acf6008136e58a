//! Cached attention: prefill, then decode one token at a time (and a chunk of several),
//! equals attention over the whole longer sequence.

use burn::backend::NdArray;
use burn::tensor::{Distribution, Tensor, Tolerance};
use dsa_burn::{AttentionMode, DsaAttentionConfig, DsaCache, IndexerQuant, YarnConfig};

type B = NdArray;

fn config(mode: AttentionMode, quant: IndexerQuant) -> DsaAttentionConfig {
    DsaAttentionConfig::new(48, 3, 64)
        .with_yarn(Some(YarnConfig::new(4.0, 16)))
        .with_q_lora_rank(24)
        .with_kv_lora_rank(20)
        .with_qk_nope_head_dim(12)
        .with_qk_rope_head_dim(8)
        .with_v_head_dim(10)
        .with_index_n_heads(2)
        .with_index_head_dim(128)
        .with_index_topk(5)
        .with_index_quant(quant)
        .with_mode(mode)
}

#[test]
fn prefill_then_decode_equals_full_sequence() {
    let dev = Default::default();
    let tol = Tolerance::<f32>::rel_abs(1e-4, 1e-5);
    for (mode, quant) in [
        (AttentionMode::Sparse, IndexerQuant::E4m3),
        (AttentionMode::Sparse, IndexerQuant::E4m3Pow2),
        (AttentionMode::Dense, IndexerQuant::None),
    ] {
        let attn = config(mode, quant).init::<B>(&dev);
        let (prompt, total) = (9, 16);
        let x = Tensor::<B, 3>::random([2, total, 48], Distribution::Normal(0.0, 1.0), &dev);
        let full = attn.forward(x.clone());

        let mut cache = DsaCache::new();
        let mut steps = vec![attn.forward_cached(x.clone().narrow(1, 0, prompt), &mut cache)];
        // Four single-token decode steps, then a chunk of three tokens at once.
        for pos in prompt..prompt + 4 {
            steps.push(attn.forward_cached(x.clone().narrow(1, pos, 1), &mut cache));
            assert_eq!(cache.len(), pos + 1);
        }
        steps.push(attn.forward_cached(x.narrow(1, prompt + 4, 3), &mut cache));
        assert_eq!(cache.len(), total);

        let cached = Tensor::cat(steps, 1);
        cached.into_data().assert_approx_eq::<f32>(&full.into_data(), tol);
    }
}

#[test]
fn decode_selection_covers_all_cached_tokens_when_k_exceeds_them() {
    let dev = Default::default();
    let attn = config(AttentionMode::Sparse, IndexerQuant::E4m3).init::<B>(&dev);
    let mut cache = DsaCache::new();
    let x = Tensor::<B, 3>::random([1, 3, 48], Distribution::Normal(0.0, 1.0), &dev);
    attn.forward_cached(x.clone().narrow(1, 0, 2), &mut cache);
    let (_, sel) = attn.forward_with_selection(x.narrow(1, 2, 1), Some(&mut cache));
    let sel = sel.expect("sparse mode reports its selection");
    // Position 2 scores the 3 cached keys; k = 5 > 3, so all of them are selected.
    assert_eq!(sel.scores.dims(), [1, 1, 3]);
    let mut idx = sel.indices.into_data().convert::<i64>().into_vec::<i64>().unwrap();
    idx.sort_unstable();
    assert_eq!(idx, [0, 1, 2]);
    assert!(sel.valid.into_data().into_vec::<bool>().unwrap().iter().all(|v| *v));
}

/// While every query's causal prefix fits in `index_topk`, sparse attention skips the
/// indexer's scores (its top-k would be every key): an indexer whose query projection is
/// broken (a wrong shape, which panics when scored) changes nothing there, the keys it caches
/// on the way serve the sparse steps that follow, and the first step past k scores.
#[test]
fn short_contexts_attend_every_key_without_the_indexer() {
    let dev = Default::default();
    let tol = Tolerance::<f32>::rel_abs(1e-4, 1e-5);
    let topk = 5;
    let attn = config(AttentionMode::Sparse, IndexerQuant::E4m3).init::<B>(&dev);
    let x = Tensor::<B, 3>::random([2, 12, 48], Distribution::Normal(0.0, 1.0), &dev);
    // Through the selection (12 > k); this also draws every lazily initialised parameter, so
    // the clones below share them.
    let (full, _) = attn.forward_with_selection(x.clone(), None);
    let dense = attn.clone().with_mode(AttentionMode::Dense);

    let mut broken = attn.clone();
    broken.indexer.as_mut().expect("an indexer").wq_b.weight = burn::module::Param::from_tensor(Tensor::zeros([24, 1], &dev));
    let short = x.clone().narrow(1, 0, topk);
    let out = broken.forward(short.clone());
    out.into_data().assert_approx_eq::<f32>(&dense.forward(short.clone()).into_data(), tol);
    let mut cache = DsaCache::new();
    let prefill = broken.forward_cached(short.clone().narrow(1, 0, 3), &mut cache);
    let decode = broken.forward_cached(short.clone().narrow(1, 3, 2), &mut cache);
    let want = dense.forward(short).into_data();
    Tensor::cat(vec![prefill, decode], 1).into_data().assert_approx_eq::<f32>(&want, tol);
    let past = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| broken.forward_cached(x.clone().narrow(1, topk, 1), &mut cache.clone())));
    assert!(past.is_err(), "the step past k must score its keys");

    // Prefill and decode across the boundary equal the whole sequence.
    let mut cache = DsaCache::new();
    let mut steps = vec![attn.forward_cached(x.clone().narrow(1, 0, 3), &mut cache)];
    for pos in 3..12 {
        steps.push(attn.forward_cached(x.clone().narrow(1, pos, 1), &mut cache));
    }
    Tensor::cat(steps, 1).into_data().assert_approx_eq::<f32>(&full.into_data(), tol);
}

/// Appending tokens and truncating them away leaves the cache as if they had never been
/// appended: decoding after the rollback equals attention over the sequence without them
/// (the rejected-draft path of speculative decoding), in both modes.
#[test]
fn truncate_rolls_back_appended_tokens() {
    let dev = Default::default();
    let tol = Tolerance::<f32>::rel_abs(1e-4, 1e-5);
    for mode in [AttentionMode::Sparse, AttentionMode::Dense] {
        let attn = config(mode, IndexerQuant::E4m3).init::<B>(&dev);
        let (prompt, total) = (7, 12);
        let x = Tensor::<B, 3>::random([2, total, 48], Distribution::Normal(0.0, 1.0), &dev);
        let junk = Tensor::<B, 3>::random([2, 9, 48], Distribution::Normal(0.0, 1.0), &dev);
        let full = attn.forward(x.clone());

        let mut cache = DsaCache::new();
        let mut steps = vec![attn.forward_cached(x.clone().narrow(1, 0, prompt), &mut cache)];
        // Two rejected tokens, then (growing the storage) nine.
        attn.forward_cached(junk.clone().narrow(1, 0, 2), &mut cache);
        cache.truncate(prompt);
        assert_eq!(cache.len(), prompt);
        for pos in prompt..total {
            steps.push(attn.forward_cached(x.clone().narrow(1, pos, 1), &mut cache));
            attn.forward_cached(junk.clone(), &mut cache);
            cache.truncate(pos + 1);
        }
        Tensor::cat(steps, 1).into_data().assert_approx_eq::<f32>(&full.into_data(), tol);
    }
}
