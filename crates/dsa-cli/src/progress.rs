//! Plain progress lines for Burn's learner when stdout is not a terminal (logs, CI,
//! pipes), in place of its terminal UI.
//!
//! Burn 0.21 picks its TUI when stdout is a terminal and otherwise a renderer that prints
//! the debug form of every item without the metrics; [`ProgressLines`] prints one line
//! every few steps with every metric as Burn formats it (`epoch` = running mean over the
//! epoch, `batch` = the last step), and one line per validation.

use std::collections::HashMap;
use std::io::Write;
use std::time::Instant;

use burn::train::metric::{MetricDefinition, MetricEntry, MetricId};
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};

use crate::loader::SharedPlan;

/// A [`MetricsRenderer`] writing progress lines to stdout; see the [module](self) docs.
pub struct ProgressLines {
    names: HashMap<MetricId, String>,
    order: Vec<MetricId>,
    train: HashMap<MetricId, String>,
    valid: HashMap<MetricId, String>,
    plan: SharedPlan,
    every: usize,
    /// Items per step: Burn's multi-device strategy reports one per device.
    devices: usize,
    start: Instant,
}

impl ProgressLines {
    /// Prints a training line every `every` steps (and at each epoch's end) of a run whose
    /// learner epochs `plan` describes, training on `devices` devices.
    pub fn new(plan: SharedPlan, every: usize, devices: usize) -> Self {
        Self {
            names: HashMap::new(),
            order: Vec::new(),
            train: HashMap::new(),
            valid: HashMap::new(),
            plan,
            every: every.max(1),
            devices: devices.max(1),
            start: Instant::now(),
        }
    }

    fn line(&self, values: &HashMap<MetricId, String>) -> String {
        self.order
            .iter()
            .filter_map(|id| Some(format!("{}: {}", self.names.get(id)?, values.get(id)?)))
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

fn record(values: &mut HashMap<MetricId, String>, state: MetricState) {
    let entry: MetricEntry = match state {
        MetricState::Generic(entry) | MetricState::Numeric(entry, _) => entry,
    };
    values.insert(entry.metric_id, entry.serialized_entry.formatted);
}

impl MetricsRendererTraining for ProgressLines {
    fn update_train(&mut self, state: MetricState) {
        record(&mut self.train, state);
    }

    fn update_valid(&mut self, state: MetricState) {
        record(&mut self.valid, state);
    }

    fn render_train(&mut self, item: TrainingProgress, _indicators: Vec<ProgressType>) {
        let epoch = item.global_progress.items_processed;
        let iteration = item.iteration.unwrap_or(0);
        if !iteration.is_multiple_of(self.devices) {
            // Not the step's last device.
            return;
        }
        let plan = self.plan.get();
        let step = plan.end(epoch.saturating_sub(1)) + iteration / self.devices;
        let epoch_done = item.progress.as_ref().is_some_and(|p| p.items_processed >= p.items_total);
        if step.is_multiple_of(self.every) || epoch_done {
            let secs = self.start.elapsed().as_secs_f64();
            println!("[train] step {step}/{} ({secs:.0}s) | {}", plan.steps, self.line(&self.train));
            std::io::stdout().flush().ok();
        }
    }

    fn render_valid(&mut self, item: TrainingProgress, _indicators: Vec<ProgressType>) {
        if item.progress.as_ref().is_some_and(|p| p.items_processed >= p.items_total) {
            let step = self.plan.get().end(item.global_progress.items_processed);
            println!("[valid] step {step} | {}", self.line(&self.valid));
            std::io::stdout().flush().ok();
        }
    }
}

impl MetricsRendererEvaluation for ProgressLines {
    fn update_test(&mut self, _name: EvaluationName, state: MetricState) {
        record(&mut self.valid, state);
    }

    fn render_test(&mut self, _item: EvaluationProgress, _indicators: Vec<ProgressType>) {}
}

impl MetricsRenderer for ProgressLines {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        if !self.order.contains(&definition.metric_id) {
            self.order.push(definition.metric_id.clone());
        }
        self.names.insert(definition.metric_id, definition.name);
    }
}
