//! CubeCL kernels for DeepSeek Sparse Attention.
