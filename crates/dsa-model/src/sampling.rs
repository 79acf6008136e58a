//! Choosing the next token from logits: greedy, or temperature sampling restricted to the
//! top-k tokens and to the top-p probability mass, from a seeded generator. A [`Sampler`]
//! drives [`crate::generation::generate`].

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How tokens are chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingConfig {
    /// Softmax temperature; 0 chooses the most likely token (greedy).
    pub temperature: f32,
    /// Only the `top_k` most likely tokens are candidates (0: all).
    pub top_k: usize,
    /// Only the smallest set of most likely tokens whose probability reaches `top_p` is
    /// kept (1: all).
    pub top_p: f32,
    /// Seed of the random generator.
    pub seed: u64,
}

impl SamplingConfig {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0 }
    }
}

/// A [`SamplingConfig`] setting out of its range, with the value given. `Display` names the
/// field (`top_p 2 must be in (0, 1]`); a front end with its own names for the settings (a
/// CLI flag) uses [`SamplingError::field`] and [`SamplingError::requirement`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplingError {
    /// `temperature` negative or not finite.
    Temperature(f32),
    /// `top_p` outside `(0, 1]`.
    TopP(f32),
}

impl SamplingError {
    /// The [`SamplingConfig`] field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Temperature(_) => "temperature",
            Self::TopP(_) => "top_p",
        }
    }

    /// The value given and the range it must be in, e.g. `2 must be in (0, 1]`.
    pub fn requirement(&self) -> String {
        match self {
            Self::Temperature(v) => format!("{v} must be a finite number ≥ 0"),
            Self::TopP(v) => format!("{v} must be in (0, 1]"),
        }
    }
}

impl std::fmt::Display for SamplingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.field(), self.requirement())
    }
}

impl std::error::Error for SamplingError {}

impl From<SamplingError> for String {
    fn from(e: SamplingError) -> Self {
        e.to_string()
    }
}

/// A token chooser; the same configuration and logits give the same tokens.
///
/// ```
/// use dsa_model::sampling::{Sampler, SamplingConfig};
/// let mut greedy = Sampler::new(SamplingConfig::greedy()).unwrap();
/// assert_eq!(greedy.sample(&[0.1, 2.0, -1.0]), 1);
/// // top-k 1 is greedy whatever the temperature.
/// let mut top1 = Sampler::new(SamplingConfig { temperature: 5.0, top_k: 1, top_p: 1.0, seed: 3 }).unwrap();
/// assert_eq!(top1.sample(&[0.1, 2.0, -1.0]), 1);
/// ```
#[derive(Clone, Debug)]
pub struct Sampler {
    config: SamplingConfig,
    rng: StdRng,
}

impl Sampler {
    /// A sampler, or which setting is out of range.
    pub fn new(config: SamplingConfig) -> Result<Self, SamplingError> {
        if !(config.temperature >= 0.0 && config.temperature.is_finite()) {
            return Err(SamplingError::Temperature(config.temperature));
        }
        if !(config.top_p > 0.0 && config.top_p <= 1.0) {
            return Err(SamplingError::TopP(config.top_p));
        }
        Ok(Self { config, rng: StdRng::seed_from_u64(config.seed) })
    }

    /// A sampler with this configuration and its own random stream for sequence `i` of a
    /// batch, so a sequence's text depends on the seed and its own logits only (not on
    /// when the other sequences stop). Sequence 0's stream is this sampler's seed.
    ///
    /// ```
    /// use dsa_model::sampling::{Sampler, SamplingConfig};
    /// let s = Sampler::new(SamplingConfig { temperature: 1.0, top_k: 0, top_p: 1.0, seed: 7 }).unwrap();
    /// let logits = [0.0; 50];
    /// let draw = |mut s: Sampler| (0..8).map(|_| s.sample(&logits)).collect::<Vec<_>>();
    /// assert_eq!(draw(s.for_sequence(0)), draw(s.clone()));
    /// assert_ne!(draw(s.for_sequence(1)), draw(s.for_sequence(0)));
    /// ```
    pub fn for_sequence(&self, i: usize) -> Self {
        // Spread consecutive indices over the seed space (the 64-bit golden ratio).
        let seed = self.config.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Self { config: self.config, rng: StdRng::seed_from_u64(seed) }
    }

    /// The next token given the logits over the vocabulary (NaN counts as `-inf`).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let key = |i: usize| if logits[i].is_nan() { f32::NEG_INFINITY } else { logits[i] };
        let mut order: Vec<usize> = (0..logits.len()).collect();
        // Most likely first; ties: lower id first.
        order.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
        let c = self.config;
        if c.temperature == 0.0 || c.top_k == 1 || order.len() <= 1 {
            return order.first().map_or(0, |&i| i as u32);
        }
        if c.top_k > 0 {
            order.truncate(c.top_k);
        }
        let max = key(order[0]);
        let mut probs: Vec<f64> = order.iter().map(|&i| (((key(i) - max) / c.temperature) as f64).exp()).collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if c.top_p < 1.0 {
            let mut mass = 0.0;
            let keep = probs.iter().position(|p| {
                mass += p;
                mass >= c.top_p as f64
            });
            probs.truncate(keep.map_or(probs.len(), |k| k + 1));
        }
        let mut u = self.rng.random::<f64>() * probs.iter().sum::<f64>();
        for (&i, p) in order.iter().zip(&probs) {
            if u < *p {
                return i as u32;
            }
            u -= p;
        }
        order[probs.len() - 1] as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(config: SamplingConfig, logits: &[f32], n: usize) -> Vec<usize> {
        let mut s = Sampler::new(config).unwrap();
        let mut c = vec![0; logits.len()];
        for _ in 0..n {
            c[s.sample(logits) as usize] += 1;
        }
        c
    }

    #[test]
    fn sampling_follows_the_filters_and_the_seed() {
        let logits = [1.0, 3.0, f32::NAN, 2.9, -5.0];
        let cfg = SamplingConfig { temperature: 1.0, top_k: 0, top_p: 1.0, seed: 11 };
        assert_eq!(counts(cfg, &logits, 2000)[2], 0, "NaN is never chosen");
        // top-k 2: only tokens 1 and 3, about evenly.
        let c = counts(SamplingConfig { top_k: 2, ..cfg }, &logits, 2000);
        assert_eq!(c[0] + c[2] + c[4], 0);
        assert!(c[1] > 800 && c[3] > 800, "{c:?}");
        // top-p 0.5: token 1 (p ≈ 0.49) falls short of 0.5, token 3 (p ≈ 0.44) completes it.
        let c = counts(SamplingConfig { top_p: 0.5, ..cfg }, &logits, 500);
        assert_eq!(c[0] + c[4], 0, "{c:?}");
        // Same seed, same tokens; a low temperature is nearly greedy.
        assert_eq!(counts(cfg, &logits, 300), counts(cfg, &logits, 300));
        assert!(counts(SamplingConfig { temperature: 0.01, ..cfg }, &logits, 300)[1] > 295);
        assert_eq!(Sampler::new(SamplingConfig { top_p: 0.0, ..cfg }).unwrap_err(), SamplingError::TopP(0.0));
        assert_eq!(Sampler::new(SamplingConfig { temperature: -1.0, ..cfg }).unwrap_err().to_string(), "temperature -1 must be a finite number ≥ 0");
    }
}
