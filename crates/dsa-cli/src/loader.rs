//! The training data loader: a fixed number of steps, cut into learner epochs of
//! `steps_per_epoch` steps so that Burn's learner checkpoints every that many steps.
//!
//! The batch of step `s` depends only on `s` and the seed: the sequences are visited in
//! passes, each pass a seeded permutation of all of them, and step `s` takes the next
//! `batch_size` of that endless order. Resuming from the checkpoint of epoch `e` therefore
//! sees exactly the batches the uninterrupted run would have seen.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::tensor::backend::Backend;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::batcher::{TokenBatch, TokenBatcher};

/// Training batches for Burn's learner; see the [module](self) documentation.
pub struct StepLoader<B: Backend> {
    sequences: Arc<Vec<Vec<u32>>>,
    batch_size: usize,
    steps_per_epoch: usize,
    total_steps: usize,
    seed: u64,
    /// Index (from 0) of the epoch the next [`DataLoader::iter`] call serves.
    next_epoch: Arc<AtomicUsize>,
    device: B::Device,
}

impl<B: Backend> StepLoader<B> {
    /// `total_steps` batches of `batch_size` of `sequences`, `steps_per_epoch` per learner
    /// epoch, the first served epoch being `first_epoch` (from 1, as the learner counts).
    pub fn new(
        sequences: Vec<Vec<u32>>,
        batch_size: usize,
        steps_per_epoch: usize,
        total_steps: usize,
        seed: u64,
        first_epoch: usize,
        device: B::Device,
    ) -> Self {
        Self {
            sequences: Arc::new(sequences),
            batch_size: batch_size.max(1),
            steps_per_epoch: steps_per_epoch.max(1),
            total_steps,
            seed,
            next_epoch: Arc::new(AtomicUsize::new(first_epoch.saturating_sub(1))),
            device,
        }
    }

    /// Learner epochs needed for all the steps.
    pub fn num_epochs(&self) -> usize {
        self.total_steps.div_ceil(self.steps_per_epoch)
    }

    fn with(&self, sequences: Arc<Vec<Vec<u32>>>, next_epoch: Arc<AtomicUsize>, device: B::Device) -> Self {
        Self { sequences, next_epoch, device, ..*self }
    }
}

impl<B: Backend> DataLoader<B, TokenBatch<B>> for StepLoader<B> {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<TokenBatch<B>> + 'a> {
        let epoch = self.next_epoch.fetch_add(1, Ordering::SeqCst);
        let first = (epoch * self.steps_per_epoch).min(self.total_steps);
        let last = (first + self.steps_per_epoch).min(self.total_steps);
        Box::new(StepIter { loader: self, first, step: first, last, pass: None })
    }

    fn num_items(&self) -> usize {
        self.sequences.len()
    }

    fn to_device(&self, device: &B::Device) -> Arc<dyn DataLoader<B, TokenBatch<B>>> {
        Arc::new(self.with(self.sequences.clone(), self.next_epoch.clone(), device.clone()))
    }

    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<B, TokenBatch<B>>> {
        let part = Arc::new(self.sequences[start..end].to_vec());
        let next_epoch = Arc::new(AtomicUsize::new(self.next_epoch.load(Ordering::SeqCst)));
        Arc::new(self.with(part, next_epoch, self.device.clone()))
    }
}

struct StepIter<'a, B: Backend> {
    loader: &'a StepLoader<B>,
    first: usize,
    step: usize,
    last: usize,
    /// The current pass and its order of the sequences.
    pass: Option<(usize, Vec<usize>)>,
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
}

impl<B: Backend> Iterator for StepIter<'_, B> {
    type Item = TokenBatch<B>;

    fn next(&mut self) -> Option<TokenBatch<B>> {
        if self.step >= self.last || self.loader.sequences.is_empty() {
            return None;
        }
        let bs = self.loader.batch_size;
        let items = (self.step * bs..(self.step + 1) * bs)
            .map(|position| self.loader.sequences[self.sequence_at(position)].clone())
            .collect();
        self.step += 1;
        Some(TokenBatcher.batch(items, &self.loader.device))
    }
}

impl<B: Backend> DataLoaderIterator<TokenBatch<B>> for StepIter<'_, B> {
    fn progress(&self) -> Progress {
        let bs = self.loader.batch_size;
        Progress::new((self.step - self.first) * bs, (self.last - self.first) * bs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    fn epochs(loader: &StepLoader<NdArray>, n: usize) -> Vec<Vec<Vec<i64>>> {
        (0..n)
            .map(|_| loader.iter().map(|b| b.inputs.to_data().to_vec::<i64>().unwrap()).collect())
            .collect()
    }

    #[test]
    fn batches_depend_only_on_the_step() {
        let seqs: Vec<Vec<u32>> = (0..5).map(|i| vec![i, 100 + i]).collect();
        let loader = StepLoader::<NdArray>::new(seqs.clone(), 2, 3, 8, 7, 1, Default::default());
        assert_eq!(loader.num_epochs(), 3);
        let all = epochs(&loader, 4);
        assert_eq!(all.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 2, 0]);
        // Every pass visits every sequence once: steps 0..2 and half of step 2 are pass 0.
        let flat: Vec<i64> = all.concat().concat();
        let mut pass0 = flat[..5].to_vec();
        pass0.sort();
        assert_eq!(pass0, [0, 1, 2, 3, 4]);
        // A loader resumed at epoch 2 serves epochs 2 and 3 identically.
        let resumed = StepLoader::<NdArray>::new(seqs, 2, 3, 8, 7, 2, Default::default());
        assert_eq!(epochs(&resumed, 2), all[1..3]);
    }
}
