//! Grouped matrix products for mixture-of-experts layers: the rows of `x [M, K]`, sorted by
//! expert, are split into `G` consecutive groups by `offsets [G + 1]` (group `g` is rows
//! `offsets[g] .. offsets[g+1]`; `offsets[0] = 0`, `offsets[G] = M`, non-decreasing, groups
//! may be empty), and each group is multiplied by its own weight `w[g] [K, N]`.
//!
//! The reference reads `offsets` to the host and runs one `matmul` per non-empty group; the
//! CubeCL kernels (`dsa_kernels::grouped_matmul`) find the groups on the device instead, so
//! that a model never waits for the host there.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// Reference grouped product `y [M, N]`, `y[r] = x[r] · w[g]` for the rows `r` of group `g`;
/// see [`DsaBackend::grouped_matmul`](crate::DsaBackend::grouped_matmul).
pub fn reference_grouped_matmul<B: Backend>(x: Tensor<B, 2>, w: Tensor<B, 3>, offsets: Tensor<B, 1, Int>) -> Tensor<B, 2> {
    let [m, k] = x.dims();
    let [_, _, n] = w.dims();
    let parts: Vec<Tensor<B, 2>> = groups(&offsets, m)
        .filter(|&(_, _, rows)| rows > 0)
        .map(|(g, start, rows)| x.clone().narrow(0, start, rows).matmul(w.clone().narrow(0, g, 1).reshape([k, n])))
        .collect();
    if parts.is_empty() {
        return Tensor::zeros([m, n], &x.device());
    }
    Tensor::cat(parts, 0)
}

/// Reference weight gradient `dw [G, K, N]`, `dw[g] = x_gᵀ · dy_g` over the rows of group
/// `g` (zero for an empty group); see
/// [`DsaBackend::grouped_matmul_weight_grad`](crate::DsaBackend::grouped_matmul_weight_grad).
pub fn reference_grouped_matmul_weight_grad<B: Backend>(x: Tensor<B, 2>, dy: Tensor<B, 2>, offsets: Tensor<B, 1, Int>) -> Tensor<B, 3> {
    let [m, k] = x.dims();
    let [_, n] = dy.dims();
    let device = x.device();
    let parts: Vec<Tensor<B, 3>> = groups(&offsets, m)
        .map(|(_, start, rows)| match rows {
            0 => Tensor::zeros([1, k, n], &device),
            _ => x.clone().narrow(0, start, rows).transpose().matmul(dy.clone().narrow(0, start, rows)).reshape([1, k, n]),
        })
        .collect();
    if parts.is_empty() {
        return Tensor::zeros([0, k, n], &device);
    }
    Tensor::cat(parts, 0)
}

/// `(group, first row, rows)` of every group, read from `offsets` on the host; panics unless
/// the offsets start at 0, never decrease and end at `m`.
fn groups<B: Backend>(offsets: &Tensor<B, 1, Int>, m: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    let off = offsets.clone().into_data().convert::<i64>().into_vec::<i64>().expect("offsets are readable as i64");
    assert!(
        off.first() == Some(&0) && off.last() == Some(&(m as i64)) && off.windows(2).all(|p| p[0] <= p[1]),
        "grouped_matmul: offsets {off:?} must rise from 0 to the {m} rows"
    );
    (0..off.len() - 1).map(move |g| (g, off[g] as usize, (off[g + 1] - off[g]) as usize))
}
