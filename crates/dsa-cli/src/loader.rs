//! The training data loader: a fixed number of steps, cut into learner epochs (an
//! [`EpochPlan`]) so that Burn's learner checkpoints after each.
//!
//! The batch of step `s` depends only on `s` and the seed: the sequences are visited in
//! passes, each pass a seeded permutation of all of them, and step `s` takes the next
//! `batch_size` of that endless order. Resuming from the checkpoint of any epoch therefore
//! sees exactly the batches the uninterrupted run would have seen.
//!
//! For data-parallel training over `N` devices the loader cuts every batch into `N`
//! equal shards, and these shards are its items as Burn's `split_dataloader` sees them
//! ([`DataLoader::num_items`] is `N`, [`DataLoader::slice`] keeps some of them): the
//! learner's multi-device strategy gives shard `i` of every step to device `i`, so that
//! the devices together see exactly the batches of one device.
//!
//! An epoch normally ends at a multiple of the checkpoint interval; when SIGINT arrives
//! ([`interrupt::requested`]) the current epoch ends after the step in progress, so that
//! the learner checkpoints there, and the plan records that early end (in the run's
//! [`EPOCHS_FILE`]) for `--resume`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::tensor::backend::Backend;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::batcher::{TokenBatch, TokenBatcher};
use crate::checkpoint::{write_json, RunError};
use crate::interrupt;

/// The file of a run directory recording its [`EpochPlan`].
pub const EPOCHS_FILE: &str = "epochs.json";

/// Which steps each learner epoch covers: epochs end at multiples of `every` (and at the
/// last step), except those that ended early because training was interrupted; the epoch
/// after such an epoch runs to the next multiple.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochPlan {
    /// Steps per learner epoch (a checkpoint after each).
    pub every: usize,
    /// Steps of the run.
    pub steps: usize,
    /// Epochs (from 1) that ended early, with the steps done at their end.
    pub early_ends: BTreeMap<usize, usize>,
}

impl EpochPlan {
    /// Epochs of `every` steps (at least 1) for a run of `steps`.
    pub fn new(every: usize, steps: usize) -> Self {
        Self { every: every.max(1), steps, early_ends: BTreeMap::new() }
    }

    /// The steps done at the end of learner epoch `epoch` (from 1; 0 for epoch 0).
    pub fn end(&self, epoch: usize) -> usize {
        (1..=epoch).fold(0, |end, e| self.next_end(e, end))
    }

    /// The end of epoch `epoch` after the previous one ended at `end`.
    fn next_end(&self, epoch: usize, end: usize) -> usize {
        let next = match self.early_ends.get(&epoch) {
            Some(&early) => early.max(end),
            None => (end / self.every + 1) * self.every,
        };
        next.min(self.steps)
    }

    /// Learner epochs for all the steps.
    pub fn num_epochs(&self) -> usize {
        let (mut epoch, mut end) = (0, 0);
        while end < self.steps {
            epoch += 1;
            end = self.next_end(epoch, end);
        }
        epoch
    }
}

/// An [`EpochPlan`] shared by the loader, the progress lines and the run, written to its
/// file when an epoch ends early.
#[derive(Clone, Debug)]
pub struct SharedPlan {
    plan: Arc<Mutex<EpochPlan>>,
    file: Option<PathBuf>,
}

impl SharedPlan {
    /// Shares `plan`, recorded in `file` (if any) whenever it changes.
    pub fn new(plan: EpochPlan, file: Option<PathBuf>) -> Self {
        Self { plan: Arc::new(Mutex::new(plan)), file }
    }

    /// The plan as it is now.
    pub fn get(&self) -> EpochPlan {
        self.plan.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Records that `epoch` ended after `step` steps, in the file before anything else
    /// (the learner's checkpoint of that epoch follows).
    fn end_early(&self, epoch: usize, step: usize) -> Result<(), RunError> {
        let mut plan = self.plan.lock().unwrap_or_else(PoisonError::into_inner);
        let mut changed = plan.clone();
        changed.early_ends.insert(epoch, step);
        if let Some(file) = &self.file {
            write_json(file, &changed)?;
        }
        *plan = changed;
        Ok(())
    }
}

/// Training batches for Burn's learner; see the [module](self) documentation.
pub struct StepLoader<B: Backend> {
    sequences: Arc<Vec<Vec<u32>>>,
    batch_size: usize,
    /// Equal shards each batch is cut into (one per device).
    shards: usize,
    /// The shards this loader serves (all of them before Burn splits it).
    parts: Range<usize>,
    seed: u64,
    plan: SharedPlan,
    /// Index (from 1) of the epoch the next [`DataLoader::iter`] call serves.
    next_epoch: Arc<AtomicUsize>,
    /// Steps served (all done once an epoch's iterator ends).
    steps_done: Arc<AtomicUsize>,
    device: B::Device,
}

impl<B: Backend> StepLoader<B> {
    /// Batches of `batch_size` of `sequences` for the epochs of `plan`, the first served
    /// epoch being `first_epoch` (from 1, as the learner counts), each batch cut into
    /// `shards` equal shards for as many devices (`batch_size` a multiple of `shards`).
    pub fn new(sequences: Vec<Vec<u32>>, batch_size: usize, shards: usize, seed: u64, plan: SharedPlan, first_epoch: usize, device: B::Device) -> Self {
        let done = plan.get().end(first_epoch.saturating_sub(1));
        let shards = shards.max(1);
        assert!(batch_size.is_multiple_of(shards), "a batch of {batch_size} does not split into {shards} equal shards");
        Self {
            sequences: Arc::new(sequences),
            batch_size: batch_size.max(1),
            shards,
            parts: 0..shards,
            seed,
            plan,
            next_epoch: Arc::new(AtomicUsize::new(first_epoch.max(1))),
            steps_done: Arc::new(AtomicUsize::new(done)),
            device,
        }
    }

    /// The steps served so far, counted from the start of the run (shared by the loader's
    /// copies).
    pub fn steps_done(&self) -> Arc<AtomicUsize> {
        self.steps_done.clone()
    }

    fn with(&self, parts: Range<usize>, next_epoch: Arc<AtomicUsize>, device: B::Device) -> Self {
        Self {
            sequences: self.sequences.clone(),
            batch_size: self.batch_size,
            shards: self.shards,
            parts,
            seed: self.seed,
            plan: self.plan.clone(),
            next_epoch,
            steps_done: self.steps_done.clone(),
            device,
        }
    }

    /// The positions of step `step`'s sequences this loader serves, in the endless
    /// visiting order.
    fn positions(&self, step: usize) -> Range<usize> {
        let shard = self.batch_size / self.shards;
        step * self.batch_size + self.parts.start * shard..step * self.batch_size + self.parts.end * shard
    }
}

impl<B: Backend> DataLoader<B, TokenBatch<B>> for StepLoader<B> {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<TokenBatch<B>> + 'a> {
        let epoch = self.next_epoch.fetch_add(1, Ordering::SeqCst);
        let plan = self.plan.get();
        let (first, last) = (plan.end(epoch - 1), plan.end(epoch));
        Box::new(StepIter { loader: self, epoch, first, step: first, last, pass: None, interrupt_seen: false })
    }

    /// The shards of each batch this loader serves (see the [module](self) docs).
    fn num_items(&self) -> usize {
        self.parts.len()
    }

    fn to_device(&self, device: &B::Device) -> Arc<dyn DataLoader<B, TokenBatch<B>>> {
        Arc::new(self.with(self.parts.clone(), self.next_epoch.clone(), device.clone()))
    }

    /// A loader of the shards `start..end` of those this one serves, counting its epochs
    /// on its own.
    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<B, TokenBatch<B>>> {
        assert!(start <= end && end <= self.parts.len(), "shards {start}..{end} of {}", self.parts.len());
        let parts = self.parts.start + start..self.parts.start + end;
        let next_epoch = Arc::new(AtomicUsize::new(self.next_epoch.load(Ordering::SeqCst)));
        Arc::new(self.with(parts, next_epoch, self.device.clone()))
    }
}

struct StepIter<'a, B: Backend> {
    loader: &'a StepLoader<B>,
    epoch: usize,
    first: usize,
    step: usize,
    last: usize,
    /// The current pass and its order of the sequences.
    pass: Option<(usize, Vec<usize>)>,
    /// Whether SIGINT has been acted on in this epoch.
    interrupt_seen: bool,
}

impl<B: Backend> StepIter<'_, B> {
    /// Index of the sequence at `position` of the endless visiting order.
    fn sequence_at(&mut self, position: usize) -> usize {
        let n = self.loader.sequences.len();
        let pass = position / n;
        if self.pass.as_ref().is_none_or(|(p, _)| *p != pass) {
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(&mut StdRng::seed_from_u64(self.loader.seed.wrapping_add(pass as u64)));
            self.pass = Some((pass, order));
        }
        self.pass.as_ref().map_or(0, |(_, order)| order[position % n])
    }

    /// On SIGINT after a step of this epoch: ends the epoch here (recording it in the
    /// plan) so that the learner checkpoints this step. Whether it did.
    ///
    /// Only the loader of the first shard decides; the others end where the plan says it
    /// ended (Burn's multi-device step draws the first device's batch first), so that all
    /// devices stop after the same step.
    fn end_on_interrupt(&mut self) -> bool {
        if self.loader.parts.start > 0 {
            let ended = self.loader.plan.get().early_ends.get(&self.epoch) == Some(&self.step);
            if ended {
                self.last = self.step;
            }
            return ended;
        }
        if self.interrupt_seen || self.step == self.first || !interrupt::requested() {
            return false;
        }
        self.interrupt_seen = true;
        match self.loader.plan.end_early(self.epoch, self.step) {
            Ok(()) => {
                eprintln!("interrupted: writing a checkpoint after step {} (interrupt again to exit at once)", self.step);
                self.last = self.step;
                true
            }
            Err(e) => {
                eprintln!("interrupted, but cannot end the epoch early ({e}): writing a checkpoint after step {}", self.last);
                false
            }
        }
    }
}

impl<B: Backend> Iterator for StepIter<'_, B> {
    type Item = TokenBatch<B>;

    fn next(&mut self) -> Option<TokenBatch<B>> {
        if self.step >= self.last || self.loader.sequences.is_empty() || self.end_on_interrupt() {
            return None;
        }
        let items = self
            .loader
            .positions(self.step)
            .map(|position| self.loader.sequences[self.sequence_at(position)].clone())
            .collect();
        self.step += 1;
        self.loader.steps_done.store(self.step, Ordering::SeqCst);
        Some(TokenBatcher.batch(items, &self.loader.device))
    }
}

impl<B: Backend> DataLoaderIterator<TokenBatch<B>> for StepIter<'_, B> {
    fn progress(&self) -> Progress {
        let bs = self.loader.positions(0).len();
        Progress::new((self.step - self.first) * bs, (self.last - self.first) * bs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    /// Epochs end at the multiples of `every`, at the last step and where training was
    /// interrupted.
    #[test]
    fn epochs_end_at_multiples_and_early_ends() {
        let mut plan = EpochPlan::new(3, 10);
        assert_eq!((1..=4).map(|e| plan.end(e)).collect::<Vec<_>>(), [3, 6, 9, 10]);
        plan.early_ends.insert(2, 4);
        assert_eq!((1..=5).map(|e| plan.end(e)).collect::<Vec<_>>(), [3, 4, 6, 9, 10]);
        assert_eq!(plan.num_epochs(), 5);
    }

    fn epochs(loader: &StepLoader<NdArray>, n: usize) -> Vec<Vec<Vec<i64>>> {
        (0..n)
            .map(|_| loader.iter().map(|b| b.inputs.to_data().to_vec::<i64>().unwrap()).collect())
            .collect()
    }

    #[test]
    fn batches_depend_only_on_the_step() {
        let seqs: Vec<Vec<u32>> = (0..5).map(|i| vec![i, 100 + i]).collect();
        let plan = SharedPlan::new(EpochPlan::new(3, 8), None);
        let loader = StepLoader::<NdArray>::new(seqs.clone(), 2, 1, 7, plan.clone(), 1, Default::default());
        assert_eq!(plan.get().num_epochs(), 3);
        let all = epochs(&loader, 4);
        assert_eq!(all.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 2, 0]);
        // Every pass visits every sequence once: steps 0..2 and half of step 2 are pass 0.
        let flat: Vec<i64> = all.concat().concat();
        let mut pass0 = flat[..5].to_vec();
        pass0.sort();
        assert_eq!(pass0, [0, 1, 2, 3, 4]);
        // A loader resumed at epoch 2 serves epochs 2 and 3 identically.
        let resumed = StepLoader::<NdArray>::new(seqs.clone(), 2, 1, 7, plan, 2, Default::default());
        assert_eq!(epochs(&resumed, 2), all[1..3]);
        // Epochs ending early (an interrupted run) move the checkpoints, not the batches.
        let mut early = EpochPlan::new(3, 8);
        early.early_ends.insert(2, 4);
        let loader = StepLoader::<NdArray>::new(seqs, 2, 1, 7, SharedPlan::new(early, None), 1, Default::default());
        let split = epochs(&loader, 5);
        assert_eq!(split.iter().map(Vec::len).collect::<Vec<_>>(), [3, 1, 2, 2, 0]);
        assert_eq!(split.concat(), all.concat());
    }

    /// Split as Burn's multi-device strategy splits it, a loader of 3 shards gives device
    /// `i` the `i`-th third of every batch of the one-device loader.
    #[test]
    fn shards_are_the_parts_of_the_one_device_batches() {
        use burn::data::dataloader::split::split_dataloader;
        let seqs: Vec<Vec<u32>> = (0..7).map(|i| vec![i, 100 + i]).collect();
        let plan = SharedPlan::new(EpochPlan::new(4, 4), None);
        let whole = epochs(&StepLoader::<NdArray>::new(seqs.clone(), 6, 1, 3, plan.clone(), 1, Default::default()), 1).remove(0);
        let loader: Arc<dyn DataLoader<NdArray, TokenBatch<NdArray>>> = Arc::new(StepLoader::<NdArray>::new(seqs, 6, 3, 3, plan, 1, Default::default()));
        let shards: Vec<_> = split_dataloader(loader, &[Default::default(); 3])
            .iter()
            .map(|l| l.iter().map(|b| b.inputs.to_data().to_vec::<i64>().unwrap()).collect::<Vec<_>>())
            .collect();
        assert_eq!(whole.len(), 4);
        for (step, batch) in whole.iter().enumerate() {
            let joined: Vec<i64> = shards.iter().flat_map(|s| s[step].clone()).collect();
            assert_eq!(&joined, batch, "step {step}");
            assert!(shards.iter().all(|s| s[step].len() == batch.len() / 3));
        }
    }
}
