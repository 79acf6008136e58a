//! Rotary position embedding with YaRN frequency scaling, as DeepSeek-V3.2 uses it.
//!
//! MLA rotates its rope dims *interleaved* (pairs `(2i, 2i+1)`); the lightning indexer
//! rotates *non-interleaved* (rotate-half: dim `i` pairs with `i + d/2`). Both use the
//! same frequencies. The frequencies follow `precompute_freqs_cis` of DeepSeek's
//! reference (float32 arithmetic), with YaRN only when `max_position_embeddings`
//! exceeds the original context length.

use burn::config::Config;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};

use crate::DsaBackend;

/// YaRN context extension parameters: HuggingFace's `rope_scaling` object with
/// `type: "yarn"` (the keys are its field names), or the `rope_factor`, `original_seq_len`,
/// `beta_fast`, `beta_slow` and `mscale` of DeepSeek's reference `ModelArgs`.
///
/// YaRN is in effect only when the supported context exceeds
/// `original_max_position_embeddings` ([`RopeConfig::active_yarn`]). It then rescales the
/// rotary frequencies (see [`RopeConfig::init`]) and multiplies the attention softmax scale
/// by `m²` ([`YarnConfig::attention_factor`]).
///
/// ```
/// use dsa_burn::YarnConfig;
///
/// // DeepSeek-V3.2: ×40 over 4096 positions, `mscale = mscale_all_dim = 1`.
/// let y = YarnConfig::new(40.0, 4096).with_mscale_all_dim(Some(1.0));
/// assert_eq!(y.attention_mscale(), 1.0);
/// assert!((y.attention_factor() - (0.1 * 40f64.ln() + 1.0)).abs() < 1e-15);
/// ```
#[derive(Config, Debug, PartialEq)]
pub struct YarnConfig {
    /// `factor` (reference: `rope_factor`): the context extension factor `s`. Frequencies
    /// that turn fewer than `beta_slow` times over the original context are divided by it;
    /// it also sets the attention temperature ([`YarnConfig::attention_factor`]).
    pub factor: f64,
    /// `original_max_position_embeddings` (reference: `original_seq_len`): the context length
    /// `L` the model was pre-trained with. YaRN applies only to longer contexts, and the
    /// rotation counts `beta_fast`/`beta_slow` are counted over `L` positions.
    pub original_max_position_embeddings: usize,
    /// `beta_fast`: rotations over `L` positions above which a frequency is kept as is
    /// (extrapolated). The first dim of the interpolation ramp is where the frequency turns
    /// `beta_fast` times, rounded down.
    #[config(default = 32.0)]
    pub beta_fast: f64,
    /// `beta_slow`: rotations over `L` positions below which a frequency is divided by
    /// `factor` (interpolated). The last dim of the ramp is where the frequency turns
    /// `beta_slow` times, rounded up; frequencies between the two bounds are blended
    /// linearly.
    #[config(default = 1.0)]
    pub beta_slow: f64,
    /// `mscale`: YaRN's magnitude scale. HuggingFace multiplies cos/sin by
    /// `(0.1·mscale·ln s + 1) / (0.1·mscale_all_dim·ln s + 1)`, which is 1 in DeepSeek-V3.2
    /// (both are 1.0); DeepSeek's reference and this crate do not scale cos/sin. It sets the
    /// attention temperature only when `mscale_all_dim` is absent (DeepSeek's reference has
    /// only this key, and uses it there).
    #[config(default = 1.0)]
    pub mscale: f64,
    /// `mscale_all_dim`: the mscale of the attention temperature
    /// ([`YarnConfig::attention_mscale`]); `None` falls back to `mscale`.
    #[config(default = "None")]
    pub mscale_all_dim: Option<f64>,
}

impl YarnConfig {
    /// The mscale entering the softmax scale: `mscale_all_dim`, else `mscale`.
    pub fn attention_mscale(&self) -> f64 {
        self.mscale_all_dim.unwrap_or(self.mscale)
    }

    /// The attention temperature `m = 0.1 · attention_mscale · ln(factor) + 1` (1 when
    /// `factor <= 1`); the softmax scale is multiplied by `m²`.
    pub fn attention_factor(&self) -> f64 {
        if self.factor <= 1.0 {
            1.0
        } else {
            0.1 * self.attention_mscale() * self.factor.ln() + 1.0
        }
    }
}

/// Rotary embedding configuration.
#[derive(Config, Debug, PartialEq)]
pub struct RopeConfig {
    /// Number of rotated dims (even).
    pub dim: usize,
    /// Longest supported position.
    pub max_position_embeddings: usize,
    /// Frequency base.
    #[config(default = 10000.0)]
    pub theta: f64,
    /// YaRN scaling, applied when `max_position_embeddings` exceeds its original length.
    #[config(default = "None")]
    pub yarn: Option<YarnConfig>,
}

impl RopeConfig {
    /// The YaRN parameters if YaRN is in effect for this context length.
    pub fn active_yarn(&self) -> Option<&YarnConfig> {
        self.yarn
            .as_ref()
            .filter(|y| self.max_position_embeddings > y.original_max_position_embeddings)
    }

    /// Builds the rotary embedding (its `dim / 2` frequencies).
    pub fn init(&self) -> Rope {
        let dim = self.dim;
        assert!(dim.is_multiple_of(2) && dim > 0, "RoPE dim must be even and positive, got {dim}");
        let half = dim / 2;
        // `1 / base ** (arange(0, dim, 2) / dim)` in float32 as torch rounds it: the float32
        // exponent, the power rounded to float32 (torch's pow is correctly rounded on these),
        // then a float32 reciprocal. A frequency one ulp off moves the angle of position t
        // by t ulps, which at long positions flips FP8 roundings in the indexer.
        let base = self.theta as f32 as f64;
        let mut freqs: Vec<f32> = (0..half)
            .map(|i| {
                let e = (2 * i) as f32 / dim as f32;
                1.0f32 / base.powf(e as f64) as f32
            })
            .collect();
        if let Some(y) = self.active_yarn() {
            let corr = |rot: f64| {
                dim as f64 * (y.original_max_position_embeddings as f64 / (rot * 2.0 * std::f64::consts::PI)).ln()
                    / (2.0 * self.theta.ln())
            };
            let low = corr(y.beta_fast).floor().max(0.0);
            let mut high = corr(y.beta_slow).ceil().min((dim - 1) as f64);
            if low == high {
                high += 0.001;
            }
            // As the reference: `(arange(half) - low) / (high - low)` with the Python-float
            // bounds and their difference each rounded to float32.
            let (low, span) = (low as f32, (high - low) as f32);
            let factor = y.factor as f32;
            for (i, f) in freqs.iter_mut().enumerate() {
                let ramp = ((i as f32 - low) / span).clamp(0.0, 1.0);
                let smooth = 1.0 - ramp;
                *f = *f / factor * (1.0 - smooth) + *f * smooth;
            }
        }
        Rope { freqs, max_positions: self.max_position_embeddings }
    }
}

/// Rotary embedding frequencies; see [`RopeConfig`].
#[derive(Clone, Debug)]
pub struct Rope {
    freqs: Vec<f32>,
    max_positions: usize,
}

impl Rope {
    /// Number of rotated dims.
    pub fn dim(&self) -> usize {
        self.freqs.len() * 2
    }

    /// The frequencies `[dim/2]` (f32) on `device`: [`crate::ops::rope`]'s input.
    pub fn freqs<B: Backend>(&self, device: &B::Device) -> Tensor<B, 1> {
        Tensor::from_data(TensorData::new(self.freqs.clone(), [self.freqs.len()]), (device, DType::F32))
    }

    /// Rotates `x [B, T, H, dim]` whose tokens sit at positions `start..start + T`
    /// ([`crate::ops::rope`]). `interleaved` pairs dims `(2i, 2i+1)`; otherwise `(i, i + dim/2)`.
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use burn::tensor::Tensor;
    /// use dsa_burn::rope::RopeConfig;
    ///
    /// let rope = RopeConfig::new(4, 16).init();
    /// let x = Tensor::<NdArray, 4>::ones([1, 3, 2, 4], &Default::default());
    /// let y = rope.apply(x.clone(), 0, true);
    /// // Position 0 is not rotated.
    /// y.narrow(1, 0, 1).into_data().assert_approx_eq::<f32>(&x.narrow(1, 0, 1).into_data(), Default::default());
    /// ```
    pub fn apply<B: DsaBackend>(&self, x: Tensor<B, 4>, start: usize, interleaved: bool) -> Tensor<B, 4> {
        let [_, t, _, d] = x.dims();
        assert_eq!(d, self.dim(), "RoPE expects {} dims, got {d}", self.dim());
        assert!(
            start + t <= self.max_positions,
            "position {} is beyond the model's maximum of {} positions",
            start + t,
            self.max_positions
        );
        let freqs = self.freqs(&x.device());
        crate::ops::rope(x, freqs, start, interleaved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    /// Rotation checked against a direct complex-number computation in f64.
    #[test]
    fn matches_complex_rotation_both_layouts() {
        let cfg = RopeConfig::new(8, 64).with_yarn(Some(YarnConfig::new(4.0, 16)));
        let rope = cfg.init();
        let data: Vec<f32> = (0..2 * 5 * 3 * 8).map(|i| ((i * 7919 % 113) as f32 - 56.0) / 30.0).collect();
        let x = Tensor::<NdArray, 4>::from_data(TensorData::new(data.clone(), [2, 5, 3, 8]), &Default::default());
        for interleaved in [true, false] {
            let y = rope.apply(x.clone(), 7, interleaved).to_data().to_vec::<f32>().unwrap();
            for row in 0..2 * 5 * 3 {
                let pos = 7 + (row / 3) % 5;
                for i in 0..4 {
                    let (a, b) = if interleaved { (2 * i, 2 * i + 1) } else { (i, i + 4) };
                    let (re, im) = (data[row * 8 + a] as f64, data[row * 8 + b] as f64);
                    let ang = pos as f64 * rope.freqs[i] as f64;
                    let (yr, yi) = (re * ang.cos() - im * ang.sin(), re * ang.sin() + im * ang.cos());
                    assert!((y[row * 8 + a] as f64 - yr).abs() < 1e-5);
                    assert!((y[row * 8 + b] as f64 - yi).abs() < 1e-5);
                }
            }
        }
    }

    /// The frequencies bit for bit as DeepSeek's `precompute_freqs_cis` computes them in
    /// float32 (torch 2.x on the CPU; the `torch.outer(t, freqs)` row of t = 1), for a
    /// 64-dim rope with YaRN active: theta 10000, factor 4, original length 32, beta 32/1.
    /// Ten of these 32 were an ulp off when the frequency was rounded from f64 in one step,
    /// which moved the angles of long positions by as many ulps as the position.
    #[test]
    fn frequencies_match_the_float32_reference() {
        const TORCH: [u32; 32] = [
            0x3f800000, 0x3f27f9ef, 0x3ed7f066, 0x3e86f161, 0x3e21e89b, 0x3db61f1a, 0x3d361887, 0x3d088d77,
            0x3ccccccd, 0x3c99940d, 0x3c6655c2, 0x3c2cba15, 0x3c0186e3, 0x3bc2434f, 0x3b91ad39, 0x3b5a7bf2,
            0x3b23d70a, 0x3af5b9b0, 0x3ab8449c, 0x3a8a2e77, 0x3a4f3e38, 0x3a1b690d, 0x39e91528, 0x39aec98e,
            0x3983126f, 0x3944948c, 0x39136a16, 0x38dd1725, 0x38a5cb60, 0x3878a815, 0x383a7753, 0x380bd472,
        ];
        let rope = RopeConfig::new(64, 256).with_yarn(Some(YarnConfig::new(4.0, 32))).init();
        let got: Vec<u32> = rope.freqs.iter().map(|f| f.to_bits()).collect();
        assert_eq!(got, TORCH);
    }

    /// YaRN keeps high frequencies, divides low ones by the factor, and ramps between.
    #[test]
    fn yarn_frequencies() {
        let plain = RopeConfig::new(64, 4096).init();
        let yarn = RopeConfig::new(64, 163840)
            .with_yarn(Some(YarnConfig::new(40.0, 4096)))
            .init();
        assert_eq!(plain.freqs[0], yarn.freqs[0]);
        let last = plain.freqs.len() - 1;
        assert!((yarn.freqs[last] - plain.freqs[last] / 40.0).abs() < 1e-12);
        // YaRN inactive when the context is not extended.
        let off = RopeConfig::new(64, 4096).with_yarn(Some(YarnConfig::new(40.0, 4096))).init();
        assert_eq!(off.freqs, plain.freqs);
    }
}
