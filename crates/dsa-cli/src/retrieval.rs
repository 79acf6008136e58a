//! A synthetic long-range retrieval task: key–value pairs early in a long context, one of
//! them queried at the end. Attention that drops the pair cannot answer, so the task
//! separates a sparse model whose indexer finds the pair from one that does not.
//!
//! Examples are plain text, so any tokenizer works:
//! `"key 4821 is 733. key 1290 is 512. <filler text> So key 4821 is"` → `" 733."`.

use dsa_burn::DsaBackend;
use dsa_model::generation::generate;
use dsa_model::sampling::{Sampler, SamplingConfig};
use dsa_model::DeepSeekV32;

use crate::tokenizer::TextTokenizer;

/// One example: pairs, filler and query make the prompt; the answer should follow it.
#[derive(Clone, Debug, PartialEq)]
pub struct RetrievalExample {
    /// The key–value pairs, `"key 4821 is 733. key 1290 is 512. "`.
    pub pairs: String,
    /// Filler text between the pairs and the query.
    pub filler: String,
    /// The query, `"So key 4821 is"`.
    pub query: String,
    /// The queried value, with its leading space and final period.
    pub answer: String,
}

impl RetrievalExample {
    /// Pairs, filler and query.
    pub fn prompt(&self) -> String {
        format!("{}{}{}", self.pairs, self.filler, self.query)
    }

    /// The example as exactly `len` tokens, the prompt's then the answer's: the pairs, as
    /// much of the filler as fits, the query, the answer (each part tokenised on its own).
    /// Fails when even the whole filler is too short.
    pub fn tokens(&self, tokenizer: &TextTokenizer, len: usize) -> Result<(Vec<u32>, Vec<u32>), String> {
        let pairs = tokenizer.encode(&self.pairs);
        let filler = tokenizer.encode(&self.filler);
        let query = tokenizer.encode(&self.query);
        let answer = tokenizer.encode(&self.answer);
        let fixed = pairs.len() + query.len() + answer.len();
        let keep = len.checked_sub(fixed).filter(|&k| k <= filler.len()).ok_or_else(|| {
            format!("a retrieval example of {} tokens ({fixed} without filler, {} of filler) cannot fill {len} tokens", fixed + filler.len(), filler.len())
        })?;
        Ok(([pairs, filler[..keep].to_vec(), query].concat(), answer))
    }
}

/// Deterministic example generator.
#[derive(Clone, Debug)]
pub struct RetrievalTask {
    state: u64,
    /// Key–value pairs at the start of each example.
    pub pairs: usize,
    /// Approximate characters of filler text between the pairs and the query.
    pub filler_chars: usize,
}

impl RetrievalTask {
    /// A task with `pairs` pairs and about `filler_chars` of filler, from `seed`.
    pub fn new(seed: u64, pairs: usize, filler_chars: usize) -> Self {
        Self { state: seed.wrapping_mul(0x9E3779B97F4A7C15) | 1, pairs: pairs.max(1), filler_chars }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545F4914F6CDD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// The next example, its filler drawn from consecutive lines of `filler`.
    pub fn example(&mut self, filler: &str) -> RetrievalExample {
        let mut keys: Vec<u64> = Vec::with_capacity(self.pairs);
        while keys.len() < self.pairs {
            let k = 1000 + self.below(9000);
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        let values: Vec<u64> = (0..self.pairs).map(|_| 100 + self.below(900)).collect();
        let pairs: String = keys.iter().zip(&values).map(|(k, v)| format!("key {k} is {v}. ")).collect();
        let lines: Vec<&str> = filler.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        let mut text = String::new();
        if !lines.is_empty() {
            let mut i = self.below(lines.len() as u64) as usize;
            while text.len() < self.filler_chars {
                text.push_str(lines[i % lines.len()]);
                text.push(' ');
                i += 1;
            }
        }
        let q = self.below(self.pairs as u64) as usize;
        RetrievalExample {
            pairs,
            filler: text,
            query: format!("So key {} is", keys[q]),
            answer: format!(" {}.", values[q]),
        }
    }
}

/// The fraction of `examples` (each `len` tokens with its answer, see
/// [`RetrievalExample::tokens`]) that `model` answers right with greedy decoding: the
/// decoded continuation starts with the queried value (and no further digit).
pub fn accuracy<B: DsaBackend>(
    model: &DeepSeekV32<B>,
    tokenizer: &TextTokenizer,
    examples: &[RetrievalExample],
    len: usize,
) -> Result<f64, String> {
    /// Examples decoded together.
    const BATCH: usize = 16;
    let mut right = 0;
    for chunk in examples.chunks(BATCH) {
        let (prompts, answers): (Vec<_>, Vec<_>) = chunk.iter().map(|ex| ex.tokens(tokenizer, len)).collect::<Result<Vec<_>, _>>()?.into_iter().unzip();
        let max_new = answers.iter().map(Vec::len).max().unwrap_or(0);
        let greedy = Sampler::new(SamplingConfig::greedy())?;
        let out = generate(model, &prompts, max_new, len, &greedy, &[], |_, _| {})?;
        right += chunk.iter().zip(&out.tokens).filter(|(ex, new)| answers_right(&tokenizer.decode(new), &ex.answer)).count();
    }
    Ok(right as f64 / examples.len().max(1) as f64)
}

/// Whether `generated` starts with the value of `answer` (`" 733."`).
fn answers_right(generated: &str, answer: &str) -> bool {
    let value = answer.trim().trim_end_matches('.');
    generated.trim_start().strip_prefix(value).is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tokens of an example are exactly `len`, the answer's last.
    #[test]
    fn example_tokens_fill_the_length() {
        let tok = TextTokenizer::train(["key 12 is 34. So key 12 is the filler text"], 300).unwrap();
        let ex = RetrievalTask::new(1, 2, 400).example("the filler text goes on.");
        let (prompt, answer) = ex.tokens(&tok, 64).unwrap();
        assert_eq!(prompt.len() + answer.len(), 64);
        assert_eq!(tok.decode(&answer), ex.answer);
        assert!(tok.decode(&prompt).ends_with(&ex.query));
    }

    /// An example's query asks for one of its pairs.
    #[test]
    fn the_query_names_a_pair() {
        let mut task = RetrievalTask::new(7, 3, 40);
        let ex = task.example("Some filler text.\nMore of it here.");
        let key = ex.query.trim_start_matches("So key ").trim_end_matches(" is");
        assert!(ex.pairs.contains(&format!("key {key} is{}", ex.answer)));
    }

    #[test]
    fn examples_are_deterministic_and_answerable() {
        let filler = "alpha beta gamma.\ndelta epsilon.\n\nzeta eta theta iota.";
        let a: Vec<_> = { let mut t = RetrievalTask::new(3, 5, 100); (0..20).map(|_| t.example(filler)).collect() };
        let b: Vec<_> = { let mut t = RetrievalTask::new(3, 5, 100); (0..20).map(|_| t.example(filler)).collect() };
        assert_eq!(a, b);
        for ex in &a {
            let prompt = ex.prompt();
            let key = prompt.rsplit("So key ").next().unwrap().trim_end_matches(" is");
            // The queried key appears exactly once among the pairs, with the answer's value.
            assert_eq!(prompt.matches(&format!("key {key} is ")).count(), 1);
            assert!(ex.pairs.contains(&format!("key {key} is{} ", ex.answer)));
            assert!(ex.filler.len() >= 100 && prompt.len() > 5 * 14 + 100);
        }
        assert!(answers_right(" 733. And", " 733.") && answers_right("733", " 733."));
        assert!(!answers_right(" 7331", " 733.") && !answers_right(" 73", " 733."));
        // Different seeds, different examples.
        assert_ne!(RetrievalTask::new(4, 5, 100).example(filler), a[0]);
    }
}
