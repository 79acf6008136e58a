//! What a training or validation step reports ([`LmOutput`]) and the metrics Burn's learner
//! computes from it: Burn's loss and perplexity, and ours ([`StepMetric`]) for the LM
//! loss, the indexer KL and tokens per second.

use std::sync::Arc;
use std::time::Instant;

use burn::backend::Flex;
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Int, Tensor, Transaction};
use burn::train::metric::state::{FormatOptions, NumericMetricState};
use burn::train::metric::{
    Adaptor, ItemLazy, LossInput, Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes,
    NumericEntry, PerplexityInput, SerializedEntry,
};

/// One step's results.
pub struct LmOutput<B: Backend> {
    /// The loss the stage optimises.
    pub loss: Tensor<B, 1>,
    /// Next-token cross-entropy, mean over tokens.
    pub lm_loss: Tensor<B, 1>,
    /// Indexer KL, mean over query tokens, summed over layers.
    pub indexer_kl: Tensor<B, 1>,
    /// Logits `[tokens, vocab]`.
    pub logits: Tensor<B, 2>,
    /// Targets `[tokens]`.
    pub targets: Tensor<B, 1, Int>,
}

impl<B: Backend> ItemLazy for LmOutput<B> {
    type ItemSync = LmOutput<Flex>;

    fn sync(self) -> LmOutput<Flex> {
        let [loss, lm_loss, indexer_kl, logits, targets] = Transaction::default()
            .register(self.loss)
            .register(self.lm_loss)
            .register(self.indexer_kl)
            .register(self.logits)
            .register(self.targets)
            .execute()
            .try_into()
            .unwrap_or_else(|_| unreachable!("five tensors registered"));
        let device = Default::default();
        LmOutput {
            loss: Tensor::from_data(loss, &device),
            lm_loss: Tensor::from_data(lm_loss, &device),
            indexer_kl: Tensor::from_data(indexer_kl, &device),
            logits: Tensor::from_data(logits, &device),
            targets: Tensor::from_data(targets, &device),
        }
    }
}

impl Adaptor<LossInput<Flex>> for LmOutput<Flex> {
    fn adapt(&self) -> LossInput<Flex> {
        LossInput::new(self.loss.clone())
    }
}

impl Adaptor<PerplexityInput<Flex>> for LmOutput<Flex> {
    fn adapt(&self) -> PerplexityInput<Flex> {
        PerplexityInput::new(self.logits.clone(), self.targets.clone())
    }
}

/// The scalars of a step, for [`StepMetric`].
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    /// See [`LmOutput::lm_loss`].
    pub lm_loss: f64,
    /// See [`LmOutput::indexer_kl`].
    pub indexer_kl: f64,
    /// Tokens predicted in the step.
    pub tokens: usize,
}

impl Adaptor<StepStats> for LmOutput<Flex> {
    fn adapt(&self) -> StepStats {
        StepStats {
            lm_loss: self.lm_loss.clone().into_scalar().elem(),
            indexer_kl: self.indexer_kl.clone().into_scalar().elem(),
            tokens: self.targets.dims()[0],
        }
    }
}

/// What a [`StepMetric`] follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// [`StepStats::lm_loss`], token-weighted mean.
    LmLoss,
    /// [`StepStats::indexer_kl`], token-weighted mean.
    IndexerKl,
    /// Training throughput: the tokens of each step over the wall-clock time since the
    /// previous step's report (optimizer, validation and checkpoints included); the running
    /// value is total tokens over total time.
    Throughput,
}

/// A metric of Burn's learner computed from the [`StepStats`]; see [`Stat`].
#[derive(Clone)]
pub struct StepMetric {
    stat: Stat,
    name: MetricName,
    state: NumericMetricState,
    /// When the previous step was reported (for [`Stat::Throughput`]).
    last: Instant,
}

impl StepMetric {
    /// The metric of `stat`.
    pub fn new(stat: Stat) -> Self {
        let name = match stat {
            Stat::LmLoss => "LM Loss",
            Stat::IndexerKl => "Indexer KL",
            Stat::Throughput => "Throughput",
        };
        Self { stat, name: Arc::new(name.to_string()), state: NumericMetricState::new(), last: Instant::now() }
    }
}

impl Metric for StepMetric {
    type Input = StepStats;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        match self.stat {
            Stat::LmLoss | Stat::IndexerKl => NumericAttributes { unit: None, higher_is_better: false },
            Stat::Throughput => NumericAttributes { unit: Some("tok/s".into()), higher_is_better: true },
        }
        .into()
    }

    fn update(&mut self, stats: &StepStats, _metadata: &MetricMetadata) -> SerializedEntry {
        let format = FormatOptions::new(self.name());
        let (value, weight, format) = match self.stat {
            Stat::LmLoss => (stats.lm_loss, stats.tokens, format.precision(4)),
            Stat::IndexerKl => (stats.indexer_kl, stats.tokens, format.precision(4)),
            Stat::Throughput => {
                let now = Instant::now();
                let elapsed = now.duration_since(std::mem::replace(&mut self.last, now));
                // Weighted by microseconds, the running value is total tokens over total time
                // (also on several devices, whose reports of a step come moments apart).
                let rate = stats.tokens as f64 / elapsed.as_secs_f64().max(1e-6);
                (rate, elapsed.as_micros().max(1) as usize, format.unit("tok/s").precision(0))
            }
        };
        self.state.update(value, weight, format)
    }

    fn clear(&mut self) {
        self.state.reset()
    }
}

impl Numeric for StepMetric {
    fn value(&self) -> NumericEntry {
        self.state.current_value()
    }

    fn running_value(&self) -> NumericEntry {
        self.state.running_value()
    }
}
