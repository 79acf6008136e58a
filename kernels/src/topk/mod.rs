//! Top-k selection per score row, deterministic: higher score first, then lower index.
//!
//! One cube per row of a contiguous `scores [rows, S]` (rows = B·T; row `r` is query
//! `t = r % T`). The candidates of a row are `s < limit`, `limit = min(t + offset + 1, S)`
//! when causal, else `S`; `n = min(kk, limit)` of them are selected. Scores become
//! order-preserving u32 keys (NaN ranks as -inf, as the reference; -0 equals +0), and the
//! selection works on (key desc, index asc), a total order, in a shared sort buffer of
//! `buf` entries (a power of two ≥ `next_pow2(kk)`):
//! 1. a row with `limit ≤ buf` goes whole into the buffer (one read of the row);
//! 2. else radix levels of `hb` bits, from the top of the key (one read of the row each,
//!    a shared-memory histogram with u32 atomics, the bin found by a block prefix sum):
//!    each finds the bin `b*` holding the n-th best candidate among those sharing the
//!    digits found so far; as soon as the candidates in or above `b*` fit in the buffer
//!    (usually after the first level), they are gathered in any order (one more read);
//! 3. if not even the full key separates them (more exact ties at the n-th key `τ` than
//!    the buffer holds), candidates above `τ` are gathered in any order and ties at `τ` in
//!    index order (a block prefix sum per chunk), `n` entries in all (one more read);
//! 4. a bitonic sort of `next_pow2(count)` buffer entries puts the `n` best first;
//! 5. slots `n..kk` get index 0 and valid = false.
//!
//! Rows are read as vectors of `N` scores (`S` a multiple of `N`), a unit taking the `N`
//! scores of a vector in index order.

use cubecl::prelude::*;

/// Launch configuration of [`topk_kernel()`]: `buf` sort-buffer entries, `hist_bits` bits per
/// radix level, `threads` units per cube.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Sort buffer entries (a power of two ≥ `next_pow2(kk)`).
    pub buf: usize,
    /// Bits per radix level.
    pub hist_bits: u32,
    /// Units per cube (a power of two).
    pub threads: usize,
}

impl Config {
    /// Shared memory the kernel needs: a sort buffer of `buf` entries (key, index), a
    /// histogram of `2^hist_bits` bins, a prefix-sum buffer of `threads` words, a few words.
    pub fn shared_bytes(&self) -> usize {
        self.buf * 8 + (4usize << self.hist_bits) + self.threads * 4 + 16
    }

    /// The configuration for `kk` of `s` scores per row: the largest sort buffer (up to
    /// `max(2·cap, 4096)` entries, `cap = next_pow2(kk)`; no larger than the row needs) and
    /// histogram (12 bits, else fewer) that fit in `max_shared` bytes, at most `max_units`
    /// (and 512) threads; `None` when not even `cap` entries fit.
    pub fn new(kk: usize, s: usize, max_shared: usize, max_units: usize) -> Option<Self> {
        let cap = kk.next_power_of_two().max(2);
        let mut threads = 512usize.min(s.next_power_of_two().max(32));
        while threads > max_units.max(1) {
            threads /= 2;
        }
        let mut buf = (2 * cap).max(4096).min(s.next_power_of_two()).max(cap);
        while buf >= cap {
            // A row no longer than the buffer never builds a histogram.
            let bits: &[u32] = if s <= buf { &[8] } else { &[12, 11, 10, 8] };
            for &hist_bits in bits {
                let config = Self { buf, hist_bits, threads };
                if config.shared_bytes() <= max_shared {
                    return Some(config);
                }
            }
            buf /= 2;
        }
        None
    }
}

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

/// Appends `(key, s)` to the sort buffer at the slot `counter` hands out.
#[cube]
fn append(keys: &mut SharedMemory<u32>, idxs: &mut SharedMemory<u32>, counter: &SharedMemory<Atomic<u32>>, key: u32, s: usize) {
    let p = counter[0].fetch_add(1u32) as usize;
    keys[p] = key;
    idxs[p] = s as u32;
}

/// Inclusive prefix sum (Hillis-Steele) of `scan[0..nt]`, each unit having written its
/// entry; returns the unit's sum. Ends with a barrier; `scan[nt - 1]` is the total until a
/// unit writes `scan` again.
#[cube]
fn block_scan(scan: &mut SharedMemory<u32>, tid: usize, #[comptime] nt: usize) -> u32 {
    sync_cube();
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
    scan[tid]
}

/// Top-k of every row; `nt` units per cube (a power of two), one cube per row (linear cube
/// index over x and y). `buf`: sort buffer entries (a power of two ≥ `next_pow2(kk)`);
/// `hb`: bits per radix level (histogram of `2^hb` bins, `hb ≤ 16`); all three from [`Config`].
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn topk_kernel<F: Float, I: Int, BL: Int, N: Size>(
    scores: &Tensor<Vector<F, N>>,
    indices: &mut Tensor<I>,
    valid: &mut Tensor<BL>,
    rows: usize,
    t_len: usize,
    s_len: usize,
    kk: usize,
    offset: usize,
    #[comptime] causal: bool,
    #[comptime] buf: usize,
    #[comptime] hb: u32,
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
    let nv = N::value();
    // The row's vectors holding candidates (`s_len` is a multiple of `nv`).
    let vbase = row * s_len / nv;
    let nvec = limit.div_ceil(nv);
    let bufu = comptime!(buf as u32);

    let mut keys = SharedMemory::<u32>::new(buf);
    let mut idxs = SharedMemory::<u32>::new(buf);
    let hist = SharedMemory::<Atomic<u32>>::new(comptime!(1usize << hb));
    let counter = SharedMemory::<Atomic<u32>>::new(1usize);
    let mut state = SharedMemory::<u32>::new(3usize);
    let mut scan = SharedMemory::<u32>::new(nt);

    // The candidates with `key & mask == prefix` form the current bin; `above` of them rank
    // above it, `count` rank in or above it; `remaining = n - above` are taken from it.
    let mut prefix = 0u32;
    let mut mask = 0u32;
    let mut above = 0u32;
    let mut remaining = n as u32;
    let mut count = limit as u32;
    let mut shift = 32u32;
    let mut refine = limit > buf;
    while refine {
        let mut bits = hb.runtime();
        if shift < bits {
            bits = shift;
        }
        shift -= bits;
        let nb = 1u32 << bits;
        let mut i = tid;
        while i < nb as usize {
            hist[i].store(0u32);
            i += nt;
        }
        sync_cube();
        let mut v = tid;
        while v < nvec {
            let x = scores[vbase + v];
            #[unroll]
            for u in 0..nv {
                if v * nv + u < limit {
                    let key = score_key(f32::cast_from(x[u]));
                    if (key & mask) == prefix {
                        hist[((key >> shift) & (nb - 1u32)) as usize].fetch_add(1u32);
                    }
                }
            }
            v += nt;
        }
        sync_cube();
        // The digit d with (count above d) < remaining ≤ (count at or above d): each unit
        // sums `per` bins from the top, a prefix sum over the units finds the one holding d.
        let per = (nb as usize).div_ceil(nt);
        let lo = tid * per;
        let mut hi = lo + per;
        if hi > nb as usize {
            hi = nb as usize;
        }
        let mut mine = 0u32;
        let mut r = lo;
        while r < hi {
            mine += hist[nb as usize - 1 - r].load();
            r += 1;
        }
        scan[tid] = mine;
        let incl = block_scan(&mut scan, tid, nt);
        let mut acc = incl - mine;
        if acc < remaining && remaining <= incl {
            let mut rr = lo;
            let mut found = false;
            while !found {
                let d = nb as usize - 1 - rr;
                let c = hist[d].load();
                if acc + c >= remaining {
                    found = true;
                    state[0] = d as u32;
                    state[1] = acc;
                    state[2] = c;
                } else {
                    acc += c;
                }
                rr += 1;
            }
        }
        sync_cube();
        let above_bin = state[1];
        prefix |= state[0] << shift;
        mask |= (nb - 1u32) << shift;
        above += above_bin;
        remaining -= above_bin;
        count = above + state[2];
        refine = count > bufu && shift > 0u32;
        // The next level clears `hist` (last read before the barrier above) and rewrites
        // `state` only after its own barriers.
    }

    if tid == 0 {
        counter[0].store(0u32);
    }
    sync_cube();
    if count <= bufu {
        // Everything in or above the bin, in any order.
        let mut v = tid;
        while v < nvec {
            let x = scores[vbase + v];
            #[unroll]
            for u in 0..nv {
                let s = v * nv + u;
                if s < limit {
                    let key = score_key(f32::cast_from(x[u]));
                    if (key & mask) >= prefix {
                        append(&mut keys, &mut idxs, &counter, key, s);
                    }
                }
            }
            v += nt;
        }
    } else {
        // Too many exact ties at τ = prefix: those above τ in any order into [0, above),
        // the first `remaining` ties in index order after them (a prefix sum over the units
        // of their tie counts, chunk by chunk of `nt` vectors, while ties are missing).
        let mut ks = Array::<u32>::new(nv);
        let mut taken = 0u32;
        let mut start = 0usize;
        while start < nvec {
            let v = start + tid;
            let mut ties = 0u32;
            #[unroll]
            for u in 0..nv {
                ks[u] = 0u32; // below every score's key
            }
            if v < nvec {
                let x = scores[vbase + v];
                #[unroll]
                for u in 0..nv {
                    let s = v * nv + u;
                    if s < limit {
                        let key = score_key(f32::cast_from(x[u]));
                        ks[u] = key;
                        if key > prefix {
                            append(&mut keys, &mut idxs, &counter, key, s);
                        }
                        if key == prefix {
                            ties += 1u32;
                        }
                    }
                }
            }
            if taken < remaining {
                scan[tid] = ties;
                let incl = block_scan(&mut scan, tid, nt);
                let total = scan[nt - 1];
                let mut rank = taken + incl - ties;
                #[unroll]
                for u in 0..nv {
                    if ks[u] == prefix {
                        if rank < remaining {
                            let p = (above + rank) as usize;
                            keys[p] = prefix;
                            idxs[p] = (v * nv + u) as u32;
                        }
                        rank += 1u32;
                    }
                }
                taken += total;
                sync_cube();
            }
            start += nt;
        }
        count = n as u32;
    }
    // Padding to a power of two ranks last.
    let mut p = 1usize;
    while p < count as usize {
        p *= 2usize;
    }
    let mut i = count as usize + tid;
    while i < p {
        keys[i] = 0u32;
        idxs[i] = 0xffff_ffffu32;
        i += nt;
    }
    sync_cube();

    // Bitonic sort of the p entries, best first; each unit takes pairs (i, i + stride).
    let half = p / 2;
    let mut size = 2usize;
    while size <= p {
        let mut stride = size / 2;
        while stride > 0 {
            let mut q = tid;
            while q < half {
                let i = 2 * q - (q & (stride - 1));
                let j = i + stride;
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
                q += nt;
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
