//! `DsaAttention` against an independent MHA formulation, sparse-vs-dense exactness, and
//! the gradient isolation of the indexer.

use burn::backend::{Autodiff, NdArray};
use burn::tensor::activation::softmax;
use burn::tensor::{Distribution, Tensor};
use dsa_burn::{AttentionMode, DsaAttention, DsaAttentionConfig, IndexerQuant, YarnConfig};

type B = Autodiff<NdArray>;

fn config(topk: usize, mode: AttentionMode) -> DsaAttentionConfig {
    DsaAttentionConfig::new(48, 3, 64).with_yarn(Some(YarnConfig::new(4.0, 16)))
        .with_q_lora_rank(24)
        .with_kv_lora_rank(20)
        .with_qk_nope_head_dim(12)
        .with_qk_rope_head_dim(8)
        .with_v_head_dim(10)
        .with_index_n_heads(2)
        .with_index_head_dim(16)
        .with_index_topk(topk)
        .with_index_quant(IndexerQuant::None)
        .with_mode(mode)
}

/// MHA prefill as DeepSeek's reference writes it: wkv_b expands the latent into per-head
/// keys and values; scores = q_nope·k_nope + q_pe·k_pe; causal softmax.
fn mha_reference(attn: &DsaAttention<B>, x: Tensor<B, 3>, cfg: &DsaAttentionConfig) -> Tensor<B, 3> {
    let [b, t, _] = x.dims();
    let (h, nope, rd, r, v) = (cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.kv_lora_rank, cfg.v_head_dim);
    let q = attn.wq_b.forward(attn.q_norm.forward(attn.wq_a.forward(x.clone()))).reshape([b, t, h, nope + rd]);
    let q_pe = attn.rope().apply(q.clone().narrow(3, nope, rd), 0, true);
    let kv = attn.wkv_a.forward(x);
    let c = attn.kv_norm.forward(kv.clone().narrow(2, 0, r));
    let k_pe = attn.rope().apply(kv.narrow(2, r, rd).reshape([b, t, 1, rd]), 0, true);
    let kvh = attn.wkv_b.forward(c).reshape([b, t, h, nope + v]);
    let k = Tensor::cat(vec![kvh.clone().narrow(3, 0, nope), k_pe.expand([b, t, h, rd])], 3);
    let q = Tensor::cat(vec![q.narrow(3, 0, nope), q_pe], 3);
    let scores = q.swap_dims(1, 2).matmul(k.swap_dims(1, 2).swap_dims(2, 3)).mul_scalar(cfg.softmax_scale());
    let mask = Tensor::<B, 2>::ones([t, t], &Default::default()).triu(1).bool().reshape([1, 1, t, t]).expand([b, h, t, t]);
    let p = softmax(scores.mask_fill(mask, f32::NEG_INFINITY), 3);
    let o = p.matmul(kvh.narrow(3, nope, v).swap_dims(1, 2)).swap_dims(1, 2);
    attn.wo.forward(o.reshape([b, t, h * v]))
}

#[test]
fn dense_mode_equals_mha_and_full_topk_sparse_equals_dense() {
    let dev = Default::default();
    let tol = burn::tensor::Tolerance::<f32>::rel_abs(1e-4, 1e-5);
    let cfg = config(64, AttentionMode::Dense);
    let attn = cfg.init::<B>(&dev);
    let x = Tensor::<B, 3>::random([2, 11, 48], Distribution::Normal(0.0, 1.0), &dev);
    let want = mha_reference(&attn, x.clone(), &cfg).into_data();
    attn.forward(x.clone()).into_data().assert_approx_eq::<f32>(&want, tol);
    attn.forward_train(x.clone(), AttentionMode::Dense).output.into_data().assert_approx_eq::<f32>(&want, tol);
    // Sparse with k >= T selects every causal token: the same function.
    attn.forward_train(x, AttentionMode::Sparse).output.into_data().assert_approx_eq::<f32>(&want, tol);
}

#[test]
fn sparse_mode_attends_to_selected_tokens_only() {
    let dev = Default::default();
    let attn = config(3, AttentionMode::Sparse).init::<B>(&dev);
    let x = Tensor::<B, 3>::random([1, 9, 48], Distribution::Normal(0.0, 1.0), &dev);
    let out = attn.forward_train(x.clone(), AttentionMode::Sparse);
    let (idx, valid) = out.selection.expect("sparse mode returns its selection");
    assert_eq!(idx.dims(), [1, 9, 3]);
    // Query t has min(t + 1, 3) causal candidates, all selected when fewer than k.
    let valid = valid.into_data().into_vec::<bool>().unwrap();
    for t in 0..9 {
        assert_eq!(valid[t * 3..t * 3 + 3].iter().filter(|v| **v).count(), (t + 1).min(3));
    }
    // Same output as forward() in sparse mode.
    attn.forward(x).into_data().assert_approx_eq::<f32>(&out.output.into_data(), burn::tensor::Tolerance::<f32>::rel_abs(1e-5, 1e-6));
}

#[test]
fn indexer_learns_only_from_its_loss() {
    let dev = Default::default();
    for mode in [AttentionMode::Dense, AttentionMode::Sparse] {
        let attn = config(4, mode).init::<B>(&dev);
        let x = Tensor::<B, 3>::random([2, 7, 48], Distribution::Normal(0.0, 1.0), &dev).require_grad();
        let out = attn.forward_train(x.clone(), mode);
        let loss = out.indexer_loss.clone();
        assert!(loss.clone().into_scalar() >= -1e-6, "KL is non-negative");
        let grads = loss.backward();
        assert!(attn.indexer.as_ref().expect("an indexer").wk.weight.grad(&grads).is_some(), "{mode:?}: indexer gets its loss");
        assert!(attn.indexer.as_ref().expect("an indexer").wq_b.weight.grad(&grads).is_some());
        assert!(attn.wq_a.weight.grad(&grads).is_none(), "{mode:?}: the model gets no indexer loss");
        assert!(attn.wkv_a.weight.grad(&grads).is_none());
        assert!(x.grad(&grads).is_none());
        let out = attn.forward_train(x.clone(), mode);
        let grads = out.output.sum().backward();
        assert!(attn.indexer.as_ref().expect("an indexer").wk.weight.grad(&grads).is_none(), "{mode:?}: the LM loss never reaches the indexer");
        assert!(attn.wq_a.weight.grad(&grads).is_some());
        assert!(x.grad(&grads).is_some());
    }
}

/// A layer without an indexer (`shared_indexer`) attends to the selection it is given, as
/// the same layer with an indexer pinned to it does, in a prefill and a decode step; without
/// one it attends densely; it caches no indexer keys and trains no indexer.
#[test]
fn a_shared_layer_attends_to_the_selection_it_is_given() {
    let dev = Default::default();
    let tol = burn::tensor::Tolerance::<f32>::rel_abs(1e-4, 1e-5);
    let attn = config(3, AttentionMode::Sparse).init::<B>(&dev);
    assert!(config(3, AttentionMode::Sparse).with_shared_indexer(true).init::<B>(&dev).indexer.is_none());
    let x = Tensor::<B, 3>::random([2, 9, 48], Distribution::Normal(0.0, 1.0), &dev);
    // Initialises the lazy parameters, which clones then share.
    let (_, own) = attn.forward_with_selection(x.clone(), None);
    let mut shared = attn.clone();
    shared.indexer = None;
    let (mut full_cache, mut shared_cache) = (dsa_burn::DsaCache::new(), dsa_burn::DsaCache::new());
    for (start, len) in [(0, 8), (8, 1)] {
        let step = x.clone().narrow(1, start, len);
        let sel = own.as_ref().expect("sparse").indices.clone().narrow(1, start, len);
        let valid = own.as_ref().expect("sparse").valid.clone().narrow(1, start, len);
        // A selection other than the layer's own: key 0 alone.
        let given = (sel.mul_scalar(0), valid);
        let (want, _) = attn.forward_pinned(step.clone(), Some(&mut full_cache), Some(given.clone()));
        let (got, none) = shared.forward_pinned(step, Some(&mut shared_cache), Some(given));
        assert!(none.is_none(), "a shared layer returns no selection");
        got.into_data().assert_approx_eq::<f32>(&want.into_data(), tol);
    }
    assert_eq!(shared_cache.len(), 9);
    let dense = attn.clone().with_mode(AttentionMode::Dense).forward(x.clone());
    shared.forward(x.clone()).into_data().assert_approx_eq::<f32>(&dense.into_data(), tol);
    let out = shared.forward_train_reusing(x, AttentionMode::Dense, None);
    assert_eq!(out.indexer_loss.into_scalar(), 0.0);
}
