use super::*;

/// Shared memory the top-k kernel needs: a sort buffer of `buf` entries (key, index), a
/// histogram of `2^hist_bits` bins, a prefix-sum buffer of `threads` words, a few words.
fn topk_shared_bytes(buf: usize, hist_bits: u32, threads: usize) -> usize {
    buf * 8 + (4usize << hist_bits) + threads * 4 + 16
}

/// Launch configuration of the top-k kernel for `kk` of `s` scores per row: `(buf,
/// hist_bits, threads)`, the largest sort buffer (up to `max(2·cap, 4096)` entries, `cap =
/// next_pow2(kk)`; no larger than the row needs) and histogram (12 bits, else fewer) that
/// fit in `max_shared` bytes; `None` when not even `cap` entries fit.
fn topk_config(
    kk: usize,
    s: usize,
    max_shared: usize,
    max_units: usize,
) -> Option<(usize, u32, usize)> {
    let cap = kk.next_power_of_two().max(2);
    let mut threads = 512usize.min(s.next_power_of_two().max(32));
    while threads > max_units.max(1) {
        threads /= 2;
    }
    let mut buf = (2 * cap).max(4096).min(s.next_power_of_two()).max(cap);
    while buf >= cap {
        // A row no longer than the buffer never builds a histogram.
        let bits: &[u32] = if s <= buf { &[8] } else { &[12, 11, 10, 8] };
        for &hb in bits {
            if topk_shared_bytes(buf, hb, threads) <= max_shared {
                return Some((buf, hb, threads));
            }
        }
        buf /= 2;
    }
    None
}

/// Top-k on CubeCL; `None` when the sort buffer does not fit in shared memory (the caller
/// then falls back to the reference).
pub fn topk_primitive<R: CubeRuntime>(
    scores: CubeTensor<R>,
    k: usize,
    causal_offset: Option<usize>,
    int_dtype: DType,
    bool_dtype: DType,
) -> Option<(CubeTensor<R>, CubeTensor<R>)> {
    let [b, t, s] = dims::<3, R>(&scores);
    let kk = k.min(s);
    let max_units = scores.client.properties().hardware.max_units_per_cube as usize;
    let (buf, hist_bits, threads) = topk_config(kk, s, max_shared(&scores), max_units)?;
    // Loads of up to 16 bytes (`s` a multiple of the width, so that rows start aligned).
    let max_vector = scores.client.properties().hardware.max_vector_size;
    let mut vector = (16 / scores.dtype.size()).clamp(1, max_vector.max(1));
    while s % vector != 0 {
        vector /= 2;
    }
    let scores = into_contiguous(scores);
    let indices = output(&scores, Shape::new([b, t, kk]), int_dtype);
    let valid = output(&scores, Shape::new([b, t, kk]), bool_dtype);
    let rows = b * t;
    if rows * kk == 0 {
        return Some((indices, valid));
    }
    kernels::topk::topk_kernel::launch::<R>(
        &scores.client,
        cube_count(rows, 1),
        CubeDim::new_1d(threads as u32),
        vector,
        scores.clone().into_tensor_arg(),
        indices.clone().into_tensor_arg(),
        valid.clone().into_tensor_arg(),
        rows,
        t,
        s,
        kk,
        causal_offset.unwrap_or(0),
        causal_offset.is_some(),
        buf,
        hist_bits,
        threads,
        [scores.dtype.into(), int_dtype.into(), bool_dtype.into()],
    );
    Some((indices, valid))
}
