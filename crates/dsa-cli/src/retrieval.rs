//! A synthetic long-range retrieval task: key–value pairs early in a long context, one of
//! them queried at the end. Attention that drops the pair cannot answer, so the task
//! separates a sparse model whose indexer finds the pair from one that does not.
//!
//! Examples are plain text, so any tokenizer works:
//! `"key 4821 is 733. key 1290 is 512. <filler text> So key 4821 is"` → `" 733."`.

/// One example: the prompt, and the answer that should follow it.
#[derive(Clone, Debug, PartialEq)]
pub struct RetrievalExample {
    /// Pairs, filler, and the query.
    pub prompt: String,
    /// The queried value, with its leading space and final period.
    pub answer: String,
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
    ///
    /// ```
    /// use dsa_cli::retrieval::RetrievalTask;
    /// let mut task = RetrievalTask::new(7, 3, 40);
    /// let ex = task.example("Some filler text.\nMore of it here.");
    /// let key = ex.prompt.rsplit("So key ").next().unwrap().trim_end_matches(" is");
    /// assert!(ex.prompt.contains(&format!("key {key} is{}", ex.answer)));
    /// ```
    pub fn example(&mut self, filler: &str) -> RetrievalExample {
        let mut keys: Vec<u64> = Vec::with_capacity(self.pairs);
        while keys.len() < self.pairs {
            let k = 1000 + self.below(9000);
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        let values: Vec<u64> = (0..self.pairs).map(|_| 100 + self.below(900)).collect();
        let mut prompt: String = keys.iter().zip(&values).map(|(k, v)| format!("key {k} is {v}. ")).collect();
        let lines: Vec<&str> = filler.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        if !lines.is_empty() {
            let mut i = self.below(lines.len() as u64) as usize;
            let start = prompt.len();
            while prompt.len() - start < self.filler_chars {
                prompt.push_str(lines[i % lines.len()]);
                prompt.push(' ');
                i += 1;
            }
        }
        let q = self.below(self.pairs as u64) as usize;
        prompt.push_str(&format!("So key {} is", keys[q]));
        RetrievalExample { prompt, answer: format!(" {}.", values[q]) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_are_deterministic_and_answerable() {
        let filler = "alpha beta gamma.\ndelta epsilon.\n\nzeta eta theta iota.";
        let a: Vec<_> = { let mut t = RetrievalTask::new(3, 5, 100); (0..20).map(|_| t.example(filler)).collect() };
        let b: Vec<_> = { let mut t = RetrievalTask::new(3, 5, 100); (0..20).map(|_| t.example(filler)).collect() };
        assert_eq!(a, b);
        for ex in &a {
            let key = ex.prompt.rsplit("So key ").next().unwrap().trim_end_matches(" is");
            // The queried key appears exactly once among the pairs, with the answer's value.
            assert_eq!(ex.prompt.matches(&format!("key {key} is ")).count(), 1);
            assert!(ex.prompt.contains(&format!("key {key} is{} ", ex.answer)));
            assert!(ex.prompt.len() > 5 * 14 + 100);
        }
        // Different seeds, different examples.
        assert_ne!(RetrievalTask::new(4, 5, 100).example(filler), a[0]);
    }
}
