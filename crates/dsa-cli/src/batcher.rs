//! Packed token sequences → training batches (Burn's [`Batcher`]).

use burn::data::dataloader::batcher::Batcher;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

/// A batch of next-token prediction examples.
#[derive(Clone, Debug)]
pub struct TokenBatch<B: Backend> {
    /// Input tokens `[batch, seq_len]`.
    pub inputs: Tensor<B, 2, Int>,
    /// The token following each input `[batch, seq_len]`.
    pub targets: Tensor<B, 2, Int>,
}

/// Turns sequences of `seq_len + 1` tokens (see [`crate::data::pack`]) into
/// [`TokenBatch`]es: the first `seq_len` tokens are the inputs, the last `seq_len` the
/// targets.
///
/// ```
/// # use burn::backend::NdArray;
/// use burn::data::dataloader::batcher::Batcher;
/// use dsa_cli::batcher::{TokenBatch, TokenBatcher};
/// let batch: TokenBatch<NdArray> = TokenBatcher.batch(vec![vec![1, 2, 3], vec![4, 5, 6]], &Default::default());
/// assert_eq!(batch.inputs.to_data().to_vec::<i64>().unwrap(), [1, 2, 4, 5]);
/// assert_eq!(batch.targets.to_data().to_vec::<i64>().unwrap(), [2, 3, 5, 6]);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct TokenBatcher;

impl<B: Backend> Batcher<B, Vec<u32>, TokenBatch<B>> for TokenBatcher {
    fn batch(&self, items: Vec<Vec<u32>>, device: &B::Device) -> TokenBatch<B> {
        let len = items.first().map_or(0, Vec::len);
        assert!(items.iter().all(|s| s.len() == len) && len >= 2, "sequences must share one length of at least 2");
        let n = items.len();
        let tokens: Vec<i64> = items.iter().flatten().map(|&t| t as i64).collect();
        let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(tokens, [n, len]), device);
        TokenBatch { inputs: tokens.clone().narrow(1, 0, len - 1), targets: tokens.narrow(1, 1, len - 1) }
    }
}
