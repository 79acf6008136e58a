//! Rotary position embedding ([`DsaBackend::rope`](crate::DsaBackend::rope)) with Burn
//! tensor operations: the frequencies of [`crate::rope::Rope`] turned into `cos`/`sin`
//! tables on the host, applied pairwise (interleaved or rotate-half).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// The rotation of [`crate::ops::rope`] with Burn tensor operations: `cos`/`sin` tables of
/// the angles `f32(position) · freqs[i]` (the product in f32, its cosine and sine in f64
/// rounded to f32, in `x`'s dtype), applied pairwise; by minus the angle when `inverse`.
/// Reads `freqs` back to the host.
pub fn reference_rope<B: Backend>(x: Tensor<B, 4>, freqs: Tensor<B, 1>, start: usize, interleaved: bool, inverse: bool) -> Tensor<B, 4> {
    let [b, t, h, d] = x.dims();
    let half = d / 2;
    let freqs: Vec<f32> = freqs.into_data().convert::<f32>().into_vec().expect("f32 frequencies");
    let sign = if inverse { -1.0 } else { 1.0 };
    let (mut cos, mut sin) = (Vec::with_capacity(t * half), Vec::with_capacity(t * half));
    for p in start..start + t {
        for f in &freqs {
            let angle = (p as f32 * f) as f64;
            cos.push(angle.cos() as f32);
            sin.push(sign * angle.sin() as f32);
        }
    }
    let device = x.device();
    let cos = Tensor::<B, 2>::from_data(TensorData::new(cos, [t, half]), &device).cast(x.dtype()).reshape([1, t, 1, half]);
    let sin = Tensor::<B, 2>::from_data(TensorData::new(sin, [t, half]), &device).cast(x.dtype()).reshape([1, t, 1, half]);
    let (x0, x1) = if interleaved {
        let pairs = x.reshape([b, t, h, half, 2]);
        (pairs.clone().narrow(4, 0, 1).reshape([b, t, h, half]), pairs.narrow(4, 1, 1).reshape([b, t, h, half]))
    } else {
        (x.clone().narrow(3, 0, half), x.narrow(3, half, half))
    };
    let y0 = x0.clone() * cos.clone() - x1.clone() * sin.clone();
    let y1 = x0 * sin + x1 * cos;
    if interleaved {
        Tensor::stack::<5>(vec![y0, y1], 4).reshape([b, t, h, d])
    } else {
        Tensor::cat(vec![y0, y1], 3)
    }
}
