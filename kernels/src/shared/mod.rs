//! Pieces used by the kernels of several ops: [`cmma`] (tensor-core staging in shared memory
//! and the score tile of a head group × a chunk of selected rows), [`gather`] (the selected
//! latent rows into shared memory), [`atomic`] (f32 atomic adds on every backend) and
//! [`cuda`] (kernels written in CUDA C++, launched on CubeCL's CUDA runtime; their common
//! device helpers are `shared/wgmma.cuh`).

pub mod atomic;
pub mod cmma;
pub mod cuda;
pub mod gather;
