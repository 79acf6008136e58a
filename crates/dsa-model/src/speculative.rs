//! Self-speculative greedy decoding with the model's first MTP module ([`crate::mtp`]) as
//! the draft model: exact, i.e. the tokens of plain greedy decoding
//! ([`generation::generate`](crate::generation::generate) with a greedy sampler), in fewer
//! main-model steps when drafts are accepted.
//!
//! Each step, with the main cache at position `p` and the last chosen token `x` not yet in
//! it, the MTP module has drafted `d` for position `p + 2` (from the main model's hidden
//! state at `p - 1` and the embedding of `x`). The main model runs `[x, d]` at positions
//! `p, p + 1` in one forward: its greedy choice `g1` after `x` is the next token; if
//! `g1 == d` the draft is accepted and the choice `g2` after `d` comes for free (two tokens
//! for one step), otherwise `d` is dropped from the main cache ([`ModelCache::truncate`]).
//! The MTP module then appends the new positions to its own cache and drafts again.
//!
//! ```
//! use burn::backend::NdArray;
//! use dsa_model::speculative::generate_speculative;
//! use dsa_model::DeepSeekV32Config;
//!
//! let mut cfg = DeepSeekV32Config::tiny(64);
//! cfg.num_nextn_predict_layers = 1;
//! let model = cfg.init::<NdArray>(&Default::default());
//! let out = generate_speculative(&model, &[1, 2, 3], 6, cfg.max_position_embeddings, &[], |_| {})?;
//! assert_eq!(out.tokens.len(), 6);
//! assert!(out.accepted <= out.drafted);
//! # Ok::<(), String>(())
//! ```

use std::time::{Duration, Instant};

use burn::module::Module;
use burn::tensor::Tensor;
use dsa_burn::{DsaBackend, DsaCache};

use crate::generation::{check_positions, last_logits, token_tensor};
use crate::sampling::{Sampler, SamplingConfig};
use crate::{DeepSeekV32, ModelCache};

/// What [`generate_speculative`] produced, how many drafts it accepted and how long it took.
#[derive(Clone, Debug, PartialEq)]
pub struct Speculative {
    /// The new tokens (up to and including the stop token, if met).
    pub tokens: Vec<u32>,
    /// Draft tokens the main model verified.
    pub drafted: usize,
    /// Draft tokens equal to the main model's greedy choice.
    pub accepted: usize,
    /// Main-model forwards after the prefill.
    pub steps: usize,
    /// Time of the prefill (main model and MTP module over the prompt).
    pub prefill: Duration,
    /// Time of the decode steps (drafting included).
    pub decode: Duration,
}

impl Speculative {
    /// Accepted drafts per verified draft (0 when none was drafted).
    pub fn acceptance_rate(&self) -> f64 {
        self.accepted as f64 / self.drafted.max(1) as f64
    }
}

/// Continues `prompt` greedily by up to `max_new` tokens, stopping at any of `stop`, drafting each
/// step's second token with the model's first MTP module; the tokens are those of plain
/// greedy decoding. `on_token` sees every new token as soon as it is chosen. One sequence
/// at a time: drafts are accepted or rejected per sequence, and a [`ModelCache`] keeps its
/// sequences at one position.
///
/// # Errors
/// If the model has no MTP module, or the prompt is empty or too long for `max_new` more
/// tokens within `max_positions` (see [`check_positions`]).
pub fn generate_speculative<B: DsaBackend>(
    model: &DeepSeekV32<B>,
    prompt: &[u32],
    max_new: usize,
    max_positions: usize,
    stop: &[u32],
    mut on_token: impl FnMut(u32),
) -> Result<Speculative, String> {
    let mtp = model.mtp_layers().first().ok_or("the model has no MTP module (num_nextn_predict_layers = 0): speculative decoding drafts with one")?;
    check_positions(&[prompt.to_vec()], max_new, max_positions)?;
    let device = model.devices().into_iter().next().ok_or("the model has no parameters")?;
    let ids = |tokens: &[u32]| token_tensor::<B>(&[tokens.to_vec()], &device);
    let mut greedy = Sampler::new(SamplingConfig::greedy())?;
    // The greedy choice after each position of `logits [1, T, vocab]`.
    let mut choose = |logits: Tensor<B, 3>| -> Vec<u32> {
        let [_, t, _] = logits.dims();
        (0..t).map(|i| greedy.sample(&last_logits(logits.clone().narrow(1, i, 1))[0])).collect()
    };
    let mut out = Speculative { tokens: Vec::new(), drafted: 0, accepted: 0, steps: 0, prefill: Duration::ZERO, decode: Duration::ZERO };
    // Records a new token; true when the sequence is complete.
    let mut emit = |out: &mut Speculative, token: u32| {
        out.tokens.push(token);
        on_token(token);
        stop.contains(&token) || out.tokens.len() == max_new
    };
    if max_new == 0 {
        return Ok(out);
    }

    let start = Instant::now();
    let mut cache = ModelCache::new(model.layers.len());
    let mut mtp_cache = DsaCache::new();
    let n = prompt.len();
    let hidden = model.forward_cached_hidden(ids(prompt), &mut cache);
    let mut pending = choose(model.logits(hidden.clone().narrow(1, n - 1, 1)))[0];
    let done = emit(&mut out, pending);
    // The MTP module over the prompt: position i pairs the hidden state at i with token i + 1.
    let mut next: Vec<u32> = prompt[1..].to_vec();
    next.push(pending);
    let (mut mtp_hidden, mut mtp_tokens) = (hidden, next);
    out.prefill = start.elapsed();

    let start = Instant::now();
    if !done {
        loop {
            out.steps += 1;
            if out.tokens.len() + 1 == max_new {
                // One token left: a draft could not pay off.
                let hidden = model.forward_cached_hidden(ids(&[pending]), &mut cache);
                emit(&mut out, choose(model.logits(hidden))[0]);
                break;
            }
            let drafted = mtp.forward(mtp_hidden, mtp.embed(ids(&mtp_tokens), &model.embed_tokens), Some(&mut mtp_cache));
            let [_, t, _] = drafted.dims();
            let draft = choose(mtp.logits(drafted.narrow(1, t - 1, 1), &model.lm_head))[0];
            out.drafted += 1;
            let hidden = model.forward_cached_hidden(ids(&[pending, draft]), &mut cache);
            let chosen = choose(model.logits(hidden.clone()));
            if chosen[0] == draft {
                out.accepted += 1;
                if emit(&mut out, chosen[0]) || emit(&mut out, chosen[1]) {
                    break;
                }
                (mtp_hidden, mtp_tokens) = (hidden, chosen.clone());
                pending = chosen[1];
            } else {
                cache.truncate(cache.position() - 1);
                if emit(&mut out, chosen[0]) {
                    break;
                }
                (mtp_hidden, mtp_tokens) = (hidden.narrow(1, 0, 1), vec![chosen[0]]);
                pending = chosen[0];
            }
        }
    }
    out.decode = start.elapsed();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generation::generate;
    use crate::DeepSeekV32Config;
    use burn::backend::NdArray;
    use burn::module::Param;
    use burn::tensor::{Distribution, Int, Tensor};

    type B = NdArray<f32>;

    /// Plain greedy decoding of `prompt`.
    fn plain(model: &DeepSeekV32<B>, prompt: &[u32], max_new: usize, stop: &[u32]) -> Vec<u32> {
        let greedy = Sampler::new(SamplingConfig::greedy()).unwrap();
        generate(model, &[prompt.to_vec()], max_new, 256, &greedy, stop, |_, _| {}).unwrap().tokens.remove(0)
    }

    /// Speculative decoding equals plain greedy decoding for `prompts` and lengths 1..=9
    /// (stopping at a token of the plain output too); returns the summed drafted and
    /// accepted counts.
    fn check_exact(model: &DeepSeekV32<B>, prompts: &[Vec<u32>]) -> (usize, usize) {
        let (mut drafted, mut accepted) = (0, 0);
        for prompt in prompts {
            for max_new in [1, 2, 3, 9] {
                let want = plain(model, prompt, max_new, &[]);
                let mut streamed = Vec::new();
                let got = generate_speculative(model, prompt, max_new, 256, &[], |t| streamed.push(t)).unwrap();
                assert_eq!(got.tokens, want, "prompt {prompt:?}, {max_new} tokens");
                assert_eq!(streamed, want);
                assert!(got.accepted <= got.drafted && got.drafted < max_new.max(1));
                drafted += got.drafted;
                accepted += got.accepted;
            }
            let full = plain(model, prompt, 9, &[]);
            let stop = full[4];
            let got = generate_speculative(model, prompt, 9, 256, &[stop], |_| {}).unwrap();
            assert_eq!(got.tokens, plain(model, prompt, 9, &[stop]), "prompt {prompt:?}, stop {stop}");
        }
        (drafted, accepted)
    }

    fn prompts() -> Vec<Vec<u32>> {
        vec![vec![5], vec![3, 1, 4, 1, 5, 9, 2, 6], vec![7, 7, 30, 2]]
    }

    fn config(layers: usize) -> DeepSeekV32Config {
        let mut cfg = DeepSeekV32Config::tiny(40);
        cfg.num_hidden_layers = layers;
        cfg.num_nextn_predict_layers = 1;
        cfg.index_topk = 3;
        cfg
    }

    /// With random weights the MTP module's drafts are mostly wrong: the rejection path
    /// (cache rollback) runs, and the output is still plain greedy decoding's.
    #[test]
    fn random_drafts_leave_the_greedy_output_unchanged() {
        let model = config(2).init::<B>(&Default::default());
        let (drafted, accepted) = check_exact(&model, &prompts());
        assert!(accepted < drafted, "{accepted} of {drafted} drafts accepted");
    }

    /// A model whose MTP module knows what the main model will say: attention's output
    /// projection scaled by `attn_scale` in the main block and in the MTP module's copy of
    /// it; embeddings of RMS 1 (so `enorm` keeps them) and `eh_proj = [I; 0]`, so the MTP
    /// block sees the next token's embedding as the main block does. With `attn_scale` 0
    /// the model is a bigram model and every draft is right; otherwise attention (and thus
    /// the caches) matters and most are.
    fn oracle_model(attn_scale: f32) -> DeepSeekV32<B> {
        let dev = Default::default();
        let cfg = config(1);
        let mut model = cfg.init::<B>(&dev);
        let d = cfg.hidden_size;
        let signs = Tensor::<B, 2>::random([cfg.vocab_size, d], Distribution::Uniform(-1.0, 1.0), &dev).sign();
        model.embed_tokens.weight = Param::from_tensor(signs);
        let wo = model.layers[0].self_attn.wo.weight.val().mul_scalar(attn_scale);
        model.layers[0].self_attn.wo.weight = Param::from_tensor(wo);
        // A forward initialises the lazy parameters: a clone of an uninitialised one would
        // draw its own random values.
        model.forward(Tensor::<B, 2, Int>::from_ints([[1]], &dev));
        let mtp = &mut model.mtp.as_mut().expect("one MTP layer")[0];
        mtp.block = model.layers[0].clone();
        let eye = Tensor::<B, 2>::eye(d, &dev);
        mtp.eh_proj.weight = Param::from_tensor(Tensor::cat(vec![eye, Tensor::zeros([d, d], &dev)], 0));
        model
    }

    #[test]
    fn an_oracle_draft_is_always_accepted() {
        let model = oracle_model(0.0);
        let (drafted, accepted) = check_exact(&model, &prompts());
        assert!(drafted > 0);
        assert_eq!(accepted, drafted);
    }

    /// With attention on, the oracle's drafts (its MTP block attends to its own cache,
    /// which lacks the first token) are still mostly right: accepted drafts, whose second
    /// token comes from the two-token verification over the cache, keep the output exact.
    #[test]
    fn accepted_drafts_with_attention_keep_the_output_exact() {
        let model = oracle_model(1.0);
        let (drafted, accepted) = check_exact(&model, &prompts());
        assert!(accepted > 0, "{accepted} of {drafted} drafts accepted");
    }

    #[test]
    fn a_model_without_mtp_is_an_error() {
        let model = DeepSeekV32Config::tiny(40).init::<B>(&Default::default());
        let err = generate_speculative(&model, &[1, 2], 4, 64, &[], |_| {}).unwrap_err();
        assert!(err.contains("num_nextn_predict_layers"), "{err}");
    }
}
