//! The pieces of the sparse-stage indexer loss `Σ_t KL(p[t,·] ‖ softmax(I[t,·]))`
//! over each query's `K` selected keys, so that training never writes the `T×S` scores nor
//! per-head probabilities:
//!
//! - [`simt::indexer_selected_scores()`]: the indexer's scores `I[t,j]` at the selected keys only;
//! - [`simt::indexer_selected_scores_bwd()`]: their gradients into the indexer's `q`, `w` and `k`;
//! - [`simt::sparse_mla_probs()`]: the main attention's probabilities at the selected keys,
//!   averaged over heads, recomputed from sparse MLA's log-sum-exp.
//!
//! The KL itself and its gradient `softmax(I) − p` are `[B,T,K]` tensor operations.
//! Inputs are contiguous: indexer `q [B,T,H,D]` (fake-quantised), `w [B,T,H]`, `k [B,S,D]`;
//! MLA `q [B,T,H,Dqk]`, `kv [B,S,Dqk]`, `lse [B,T,H]`; selections `idx [B,T,K]`,
//! `valid [B,T,K]`.
//!
//! Variants, by instruction family: [`simt`] (all three, portable CubeCL) and [`cmma`]
//! (the selected scores from FP8 codes and the probabilities on cooperative-matrix tensor
//! cores, half-precision inputs: [`cmma::selected_head_sums_cmma()`]).

pub mod cmma;
pub mod simt;
