//! Generation with the KV + indexer caches ([`ModelCache`]): prefill the prompts, then
//! decode one token per sequence and step with [`DeepSeekV32::forward_cached`], choosing
//! each token with a [`Sampler`]. Tokens are ids; turning text into ids and back is the
//! caller's.
//!
//! ```
//! use burn::backend::NdArray;
//! use dsa_model::generation::generate;
//! use dsa_model::sampling::{Sampler, SamplingConfig};
//! use dsa_model::DeepSeekV32Config;
//!
//! // A tiny model with random weights: 64 tokens, 2048 positions.
//! let cfg = DeepSeekV32Config::tiny(64);
//! let model = cfg.init::<NdArray>(&Default::default());
//! let sampler = Sampler::new(SamplingConfig { temperature: 0.8, top_k: 10, top_p: 0.95, seed: 1 })?;
//! let prompts = vec![vec![1, 2, 3], vec![4, 5]];
//! let out = generate(&model, &prompts, 4, cfg.max_position_embeddings, &sampler, &[], |sequence, token| {
//!     println!("sequence {sequence}: token {token}");
//! })?;
//! assert!(out.tokens.iter().all(|t| t.len() == 4 && t.iter().all(|&id| id < 64)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::{Duration, Instant};

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use dsa_burn::DsaBackend;

use crate::sampling::Sampler;
use crate::{DeepSeekV32, ModelCache};

/// What [`generate`] produced and how long it took.
#[derive(Clone, Debug, PartialEq)]
pub struct Generated {
    /// The new tokens of each prompt (up to and including the stop token, if met).
    pub tokens: Vec<Vec<u32>>,
    /// Time of the prefill (the shortest prompt's length for every sequence at once).
    pub prefill: Duration,
    /// Time of the decode steps.
    pub decode: Duration,
    /// Tokens run through the model during decode steps (all sequences).
    pub decode_tokens: usize,
}

/// Checks that there are prompts, that none is empty, and that the longest plus `max_new`
/// tokens fits the model's `max_positions`; [`generate`] calls it (a caller may call it
/// first, to refuse before it prints anything).
pub fn check_positions(prompts: &[Vec<u32>], max_new: usize, max_positions: usize) -> Result<(), String> {
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        return Err(format!("prompt {} has no tokens", i + 1));
    }
    let longest = prompts.iter().map(Vec::len).max().ok_or("no prompt")?;
    if longest.saturating_add(max_new) > max_positions {
        return Err(format!(
            "prompt ({longest} tokens) + {max_new} new tokens exceed the model's {max_positions} positions"
        ));
    }
    Ok(())
}

/// Continues each prompt by up to `max_new` tokens chosen by `sampler`, stopping a sequence
/// at any token of `stop` (e.g. [`crate::chat::SpecialTokens::stop`]). Sequence `i` samples
/// from its own stream ([`Sampler::for_sequence`]), so a seed gives the same text for a
/// prompt whichever sequences stop early.
/// Prompts of different lengths share the cache: all are prefilled to the shortest
/// length, and the longer ones are then fed their own prompt tokens while the others
/// decode. `on_token(sequence, token)` sees every new token as soon as it is chosen.
pub fn generate<B: DsaBackend>(
    model: &DeepSeekV32<B>,
    prompts: &[Vec<u32>],
    max_new: usize,
    max_positions: usize,
    sampler: &Sampler,
    stop: &[u32],
    mut on_token: impl FnMut(usize, u32),
) -> Result<Generated, String> {
    check_positions(prompts, max_new, max_positions)?;
    let shortest = prompts.iter().map(Vec::len).min().ok_or("no prompt")?;
    let device = model.devices().into_iter().next().ok_or("the model has no parameters")?;
    let n = prompts.len();
    let mut cache = ModelCache::new(model.layers.len());
    let mut tokens: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut done = vec![max_new == 0; n];
    let mut samplers: Vec<Sampler> = (0..n).map(|i| sampler.for_sequence(i)).collect();

    let start = Instant::now();
    let prefix: Vec<Vec<u32>> = prompts.iter().map(|p| p[..shortest].to_vec()).collect();
    let mut logits = last_logits(model.forward_cached(token_tensor::<B>(&prefix, &device), &mut cache));
    let prefill = start.elapsed();

    let start = Instant::now();
    let mut decode_tokens = 0;
    for pos in shortest.. {
        let mut next = Vec::with_capacity(n);
        for (i, prompt) in prompts.iter().enumerate() {
            let token = match prompt.get(pos) {
                Some(&forced) => forced,
                None if done[i] => stop.first().copied().unwrap_or(0),
                None => {
                    let token = samplers[i].sample(&logits[i]);
                    tokens[i].push(token);
                    on_token(i, token);
                    done[i] = stop.contains(&token) || tokens[i].len() == max_new;
                    token
                }
            };
            next.push(vec![token]);
        }
        if done.iter().all(|&d| d) {
            break;
        }
        logits = last_logits(model.forward_cached(token_tensor::<B>(&next, &device), &mut cache));
        decode_tokens += n;
    }
    Ok(Generated { tokens, prefill, decode: start.elapsed(), decode_tokens })
}

pub(crate) fn token_tensor<B: Backend>(rows: &[Vec<u32>], device: &B::Device) -> Tensor<B, 2, Int> {
    let len = rows[0].len();
    let flat: Vec<i64> = rows.iter().flatten().map(|&t| t as i64).collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), len]), device)
}

/// The logits of each sequence's last position, on the host.
pub(crate) fn last_logits<B: Backend>(logits: Tensor<B, 3>) -> Vec<Vec<f32>> {
    let [b, t, v] = logits.dims();
    let data = logits.narrow(1, t - 1, 1).into_data().convert::<f32>();
    let flat = data.to_vec::<f32>().unwrap_or_default();
    (0..b).map(|i| flat[i * v..(i + 1) * v].to_vec()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::SamplingConfig;
    use burn::backend::NdArray;
    use crate::DeepSeekV32Config;

    /// Cached decoding gives the tokens that recomputing the whole sequence at every step
    /// gives, for prompts of different lengths, and a seed fixes sampled text.
    #[test]
    fn cached_generation_equals_recomputation_and_is_deterministic() {
        let mut cfg = DeepSeekV32Config::tiny(40);
        cfg.index_topk = 3;
        let model = cfg.init::<NdArray>(&Default::default());
        let prompts = vec![vec![1, 2, 3, 4, 5], vec![7, 8, 9]];
        let mut greedy = Sampler::new(SamplingConfig::greedy()).unwrap();
        let got = generate(&model, &prompts, 6, 64, &greedy, &[], |_, _| {}).unwrap();
        for (prompt, new) in prompts.iter().zip(&got.tokens) {
            let mut seq = prompt.clone();
            for _ in 0..6 {
                let logits = last_logits(model.forward(token_tensor::<NdArray>(&[seq.clone()], &Default::default())));
                seq.push(greedy.sample(&logits[0]));
            }
            assert_eq!(&seq[prompt.len()..], new.as_slice());
        }

        let run = |seed, stop: &[u32]| {
            let config = SamplingConfig { temperature: 1.0, top_k: 20, top_p: 0.9, seed };
            let mut streamed = vec![Vec::new(); 2];
            let out = generate(&model, &prompts, 8, 64, &Sampler::new(config).unwrap(), stop, |i, t| streamed[i].push(t)).unwrap();
            assert_eq!(streamed, out.tokens);
            out.tokens
        };
        let first = run(5, &[]);
        assert_eq!(first, run(5, &[]));
        assert_ne!(first, run(6, &[]), "the seed has no effect");
        // Stopping at a token ends each sequence at its first occurrence and changes
        // nothing before it (also when the other sequence stops first); with several stop
        // tokens, at the first of any of them.
        for stop in [vec![first[0][2]], vec![first[1][1]], vec![first[0][3], first[1][1]]] {
            let stopped = run(5, &stop);
            for (s, f) in stopped.iter().zip(&first) {
                let end = f.iter().position(|t| stop.contains(t)).map_or(f.len(), |at| at + 1);
                assert_eq!(s, &f[..end], "stop tokens {stop:?}");
            }
        }
        assert!(generate(&model, &prompts, 60, 64, &greedy, &[], |_, _| {}).unwrap_err().contains("exceed"));
    }
}
