//! Top-k selection per score row, deterministic: higher score first, then lower index.
//!
//! One cube per row of a contiguous `scores [rows, S]` (rows = B·T; row `r` is query
//! `t = r % T`). The candidates of a row are `s < limit`, `limit = min(t + offset + 1, S)`
//! when causal, else `S`; `n = min(kk, limit)` of them are selected:
//! 1. scores become order-preserving u32 keys (NaN ranks as -inf, as the reference; -0
//!    equals +0);
//! 2. radix select (4 passes of 8 bits, shared-memory histograms with u32 atomics) finds
//!    the key `τ` of the n-th best candidate and how many candidates equal to `τ` to take;
//! 3. candidates above `τ` are gathered in any order, those equal to `τ` in index order
//!    (a block-wide prefix sum per chunk), into shared memory;
//! 4. a bitonic sort in shared memory orders them by (key desc, index asc);
//! 5. slots `n..kk` get index 0 and valid = false.
//! The shared sort buffer holds `cap` (a power of two ≥ kk) keys and indices.

use cubecl::prelude::*;

/// Order-preserving key of a score: larger score, larger key; NaN as -inf, -0 as +0.
#[cube]
pub fn score_key(v: f32) -> u32 {
    let mut bits = u32::reinterpret(v);
    if (bits & 0x7fff_ffffu32) > 0x7f80_0000u32 {
        bits = 0xff80_0000u32; // NaN ranks below every number, as -inf.
    }
    if bits == 0x8000_0000u32 {
        bits = 0u32; // -0 ties with +0 (lower index first).
    }
    if (bits & 0x8000_0000u32) != 0u32 {
        !bits
    } else {
        bits | 0x8000_0000u32
    }
}

/// `(ka, ia)` ranks strictly before `(kb, ib)`.
#[cube]
fn better(ka: u32, ia: u32, kb: u32, ib: u32) -> bool {
    ka > kb || (ka == kb && ia < ib)
}

/// Top-k of every row; `cube_dim` threads per cube (`nt`, a power of two ≥ 32 not needed
/// but assumed ≥ 1), one cube per row (linear cube index over x and y).
#[cube(launch)]
pub fn topk_kernel<F: Float, I: Int, BL: Int>(
    scores: &Tensor<F>,
    indices: &mut Tensor<I>,
    valid: &mut Tensor<BL>,
    rows: usize,
    t_len: usize,
    s_len: usize,
    kk: usize,
    offset: usize,
    #[comptime] causal: bool,
    #[comptime] cap: usize,
    #[comptime] nt: usize,
    #[define(F, I, BL)] _dtypes: [StorageType; 3],
) {
    let row = crate::cube_index();
    if row >= rows {
        terminate!();
    }
    let tid = UNIT_POS as usize;
    let mut limit = s_len;
    if causal {
        let t = row % t_len;
        if t + offset + 1 < s_len {
            limit = t + offset + 1;
        }
    }
    let mut n = kk;
    if limit < n {
        n = limit;
    }
    let base = row * s_len;

    let mut keys = SharedMemory::<u32>::new(cap);
    let mut idxs = SharedMemory::<u32>::new(cap);
    let hist = SharedMemory::<Atomic<u32>>::new(256usize);
    let counter = SharedMemory::<Atomic<u32>>::new(1usize);
    let mut state = SharedMemory::<u32>::new(2usize);
    let mut scan = SharedMemory::<u32>::new(nt);

    // Threshold key τ and the number of candidates equal to τ to take.
    let mut tau = 0u32;
    let mut remaining = n as u32;
    let all = n == limit;
    if !all {
        let mut prefix = 0u32;
        let mut mask = 0u32;
        #[unroll]
        for pass in 0..4u32 {
            let shift = 24u32 - 8u32 * pass;
            let mut i = tid;
            while i < 256usize {
                hist[i].store(0u32);
                i += nt;
            }
            sync_cube();
            let mut s = tid;
            while s < limit {
                let key = score_key(f32::cast_from(scores[base + s]));
                if (key & mask) == prefix {
                    hist[((key >> shift) & 255u32) as usize].fetch_add(1u32);
                }
                s += nt;
            }
            sync_cube();
            if tid == 0 {
                // The digit d with (count above d) < remaining ≤ (count at or above d).
                let mut acc = 0u32;
                let mut d = 256u32;
                let mut found = false;
                while !found {
                    d -= 1u32;
                    let c = hist[d as usize].load();
                    if acc + c >= remaining {
                        found = true;
                    } else {
                        acc += c;
                    }
                }
                state[0] = prefix | (d << shift);
                state[1] = remaining - acc;
            }
            sync_cube();
            prefix = state[0];
            remaining = state[1];
            mask |= 255u32 << shift;
            sync_cube();
        }
        tau = prefix;
    }

    // Gather: candidates above τ anywhere in [0, n - remaining), ties at τ in index order.
    if tid == 0 {
        counter[0].store(0u32);
    }
    sync_cube();
    if !all {
        let mut s = tid;
        while s < limit {
            let key = score_key(f32::cast_from(scores[base + s]));
            if key > tau {
                let p = counter[0].fetch_add(1u32) as usize;
                keys[p] = key;
                idxs[p] = s as u32;
            }
            s += nt;
        }
    }
    let first_tie = n - remaining as usize;
    let mut taken = 0u32;
    let mut start = 0usize;
    while start < limit && taken < remaining {
        let s = start + tid;
        let mut flag = 0u32;
        let mut key = 0u32;
        if s < limit {
            key = score_key(f32::cast_from(scores[base + s]));
            if all || key == tau {
                flag = 1u32;
            }
        }
        scan[tid] = flag;
        sync_cube();
        // Inclusive Hillis-Steele scan of the flags.
        let mut off = 1usize;
        while off < nt {
            let mut v = 0u32;
            if tid >= off {
                v = scan[tid - off];
            }
            sync_cube();
            scan[tid] += v;
            sync_cube();
            off *= 2usize;
        }
        let incl = scan[tid];
        let total = scan[nt - 1];
        if flag == 1u32 && taken + incl <= remaining {
            let p = first_tie + (taken + incl - 1u32) as usize;
            keys[p] = key;
            idxs[p] = s as u32;
        }
        taken += total;
        start += nt;
        sync_cube();
    }
    // Padding ranks last.
    let mut i = n + tid;
    while i < cap {
        keys[i] = 0u32;
        idxs[i] = 0xffff_ffffu32;
        i += nt;
    }
    sync_cube();

    // Bitonic sort of the cap entries, best first.
    let mut size = 2usize;
    while size <= cap {
        let mut stride = size / 2;
        while stride > 0 {
            let mut i = tid;
            while i < cap {
                let j = i ^ stride;
                if j > i {
                    let ka = keys[i];
                    let ia = idxs[i];
                    let kb = keys[j];
                    let ib = idxs[j];
                    let a_first = better(ka, ia, kb, ib);
                    let mut swap = a_first;
                    if (i & size) == 0 {
                        swap = !a_first;
                    }
                    if swap {
                        keys[i] = kb;
                        idxs[i] = ib;
                        keys[j] = ka;
                        idxs[j] = ia;
                    }
                }
                i += nt;
            }
            sync_cube();
            stride /= 2;
        }
        size *= 2;
    }

    let out0 = row * kk;
    let mut j = tid;
    while j < kk {
        if j < n {
            indices[out0 + j] = I::cast_from(idxs[j]);
            valid[out0 + j] = BL::from_int(1);
        } else {
            indices[out0 + j] = I::from_int(0);
            valid[out0 + j] = BL::from_int(0);
        }
        j += nt;
    }
}
