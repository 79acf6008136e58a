// Dense causal attention in MHA form (the dense baseline's and the indexer warm-up's attention),
// forward and backward, on `mma.sync.m16n8k16` with f32 accumulation (sm_80 and later): the
// FlashAttention-2 schedule. `dense_attention/mod.rs` puts `#define`s of FA_DQK and FA_DV (query/key
// and value dims, multiples of 16) and FA_F16 (1: f16 inputs, 0: bf16) before this file, after
// `wgmma.cuh` (its cp.async helpers).
//
// Query `t` (at position `t + offset`) sees the keys `s <= t + offset`, `s < S`. Scores are
// scaled into the log2 domain (`scale * log2(e)`) and exponentiated with `exp2`.
//
// Forward (`dsa_flash_fwd`): a CTA of four warps takes 64 queries of one head (the last query
// blocks, which see the most keys, launched first); each warp holds 16 queries' fragments of `q`
// in registers and runs over the visible keys in blocks of 64 (double-buffered in shared memory
// by cp.async): S = q kᵀ, the online softmax in registers, then P (rounded to the input type, as
// FlashAttention's) times v from the same registers. Writes `out` and the log-sum-exp of the
// scaled scores (natural log, f32).
//
// Backward (`dsa_flash_bwd`): a CTA takes 64 keys of one head, each warp 16 of them, and runs
// over the query blocks that see them. Per block, in the transposed orientation (keys are the
// MMA's rows, so Pᵀ and dSᵀ are accumulators that feed the next products from registers):
// Sᵀ = k qᵀ, Pᵀ = exp2(Sᵀ - lse), dV += Pᵀ dO, dPᵀ = v dOᵀ, dSᵀ = Pᵀ (dPᵀ - delta),
// dK += dSᵀ q; dSᵀ then goes to shared memory, and each warp computes 16 queries of
// dQ = dS k and adds them to the f32 `dq` in global memory. `delta = rowsum(dO * out)` comes
// from the caller. dK and dV are written once, scaled, in the input type.

#if FA_F16
#include <cuda_fp16.h>
typedef __half fa_t;
#define FA_MMA "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"
__device__ __forceinline__ u32 fa_pack(float lo, float hi) {
    __half2 v = __floats2half2_rn(lo, hi);
    return *(u32*)&v;
}
#else
typedef __nv_bfloat16 fa_t;
#define FA_MMA "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"
__device__ __forceinline__ u32 fa_pack(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(u32*)&v;
}
#endif

#define FA_THREADS 128
// Queries per forward CTA and keys per backward CTA (16 per warp); keys per forward step and
// queries per backward step.
#define FA_ROWS 64
#define FA_STEP 64
// Shared-memory row strides in values: 16 bytes of padding make the eight rows an `ldmatrix`
// reads fall in distinct banks (the dims are multiples of 16, so a row is an odd number of
// 16-byte units).
#define FA_QS (FA_DQK + 8)
#define FA_VS (FA_DV + 8)
#define FA_SS (FA_STEP + 8)
#define FA_LOG2E 1.4426950408889634f
#define FA_INF __int_as_float(0x7f800000)

// Parameters, one 64-bit word each (`FlashParams` in dense_attention/mod.rs). Strides in values,
// over batch, head and row; `o_*` are the forward's `out` (unused) or the backward's `d_out`.
struct FaParams {
    u64 heads, t_len, s_len, offset;
    u64 q_sb, q_sh, q_st, k_sb, k_sh, k_st, v_sb, v_sh, v_st, o_sb, o_sh, o_st;
    u64 scale_bits;
};

// C (16 x 8, f32) += A (16 x 16, row-major fragments) * B (16 x 8, column-major fragments).
__device__ __forceinline__ void fa_mma(float* c, const u32* a, u32 b0, u32 b1) {
    asm volatile(FA_MMA " {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void fa_ldsm(u32* r, u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
__device__ __forceinline__ void fa_ldsm_t(u32* r, u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
// Shared addresses (bytes) of lane `l`'s row for the four 8 x 8 matrices of one `ldmatrix.x4`,
// in a tile of row stride `st` values, at row `r0`, column `c0`:
// the A fragments of rows r0..r0+16 x columns c0..c0+16 of a row-major tile;
__device__ __forceinline__ u32 fa_a_addr(u32 base, u32 st, u32 r0, u32 c0, u32 l) {
    return base + ((r0 + (l % 16)) * st + c0 + (l / 16) * 8) * 2;
}
// the B fragments of two 8-column tiles (n = r0..r0+16) with k = c0..c0+16, from a tile stored
// n-major (row n holds k), registers {b0, b1} of the first tile then of the second;
__device__ __forceinline__ u32 fa_b_addr(u32 base, u32 st, u32 r0, u32 c0, u32 l) {
    return base + ((r0 + (l % 8) + (l / 16) * 8) * st + c0 + ((l / 8) % 2) * 8) * 2;
}
// with `.trans`, the B fragments of two 8-column tiles (n = c0..c0+16) with k = r0..r0+16, from
// a tile stored k-major (row k holds n), and the A fragments (m = c0..c0+16, k = r0..r0+16) of
// the transpose of a tile stored k-major.
__device__ __forceinline__ u32 fa_bt_addr(u32 base, u32 st, u32 r0, u32 c0, u32 l) {
    return base + ((r0 + (l % 8) + ((l / 8) % 2) * 8) * st + c0 + (l / 16) * 8) * 2;
}
__device__ __forceinline__ u32 fa_at_addr(u32 base, u32 st, u32 r0, u32 c0, u32 l) {
    return base + ((r0 + (l % 8) + (l / 16) * 8) * st + c0 + ((l / 8) % 2) * 8) * 2;
}

// cp.async of 64 rows of D values (row `r` at `g + r * stride`) into a tile of row stride
// D + 8; rows from `valid` on are zeros.
template <int D> __device__ __forceinline__ void fa_load(u32 tile, const fa_t* g, u64 stride, u64 valid, u32 tid) {
    constexpr u32 chunks = D / 8;
#pragma unroll
    for (u32 i = tid; i < FA_ROWS * chunks; i += FA_THREADS) {
        const u32 r = i / chunks, c = i % chunks;
        const bool ok = r < valid;
        wg_cp_async(tile + (r * (D + 8) + c * 8) * 2, g + (ok ? r * stride + c * 8 : 0), ok);
    }
}

// The A fragments (16 x 16) of a k-step from an accumulator pair (two 8-column tiles).
__device__ __forceinline__ void fa_acc_to_a(u32* a, const float* lo, const float* hi) {
    a[0] = fa_pack(lo[0], lo[1]);
    a[1] = fa_pack(lo[2], lo[3]);
    a[2] = fa_pack(hi[0], hi[1]);
    a[3] = fa_pack(hi[2], hi[3]);
}

// Zeroes `N / 8` accumulator tiles (16 x 8, f32).
template <u32 N> __device__ __forceinline__ void fa_zero(float (*acc)[4]) {
#pragma unroll
    for (u32 n = 0; n < N / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
}

// One k-step of a warp's product over `N` columns: acc[2 np], acc[2 np + 1] (np < N / 16) +=
// A (the 16 x 16 fragments `a`) times the B fragments of k = k0..k0+16 of the tile at `base`
// (row stride `st` values), stored n-major (`fa_b_addr`) or, with TRANS, k-major and read by
// `ldmatrix.trans` (`fa_bt_addr`).
template <u32 N, bool TRANS>
__device__ __forceinline__ void fa_mma_row(float (*acc)[4], const u32* a, u32 base, u32 st, u32 k0, u32 lane) {
#pragma unroll
    for (u32 np = 0; np < N / 16; ++np) {
        u32 b[4];
        if (TRANS) fa_ldsm_t(b, fa_bt_addr(base, st, k0, np * 16, lane));
        else fa_ldsm(b, fa_b_addr(base, st, np * 16, k0, lane));
        fa_mma(acc[2 * np], a, b[0], b[1]);
        fa_mma(acc[2 * np + 1], a, b[2], b[3]);
    }
}

// acc (16 x N) = A Bᵀ over K dims: A the rows r0..r0+16 of the row-major tile `a_base`, B the
// N rows of the tile `b_base` (both of row stride `st` values).
template <u32 K, u32 N>
__device__ __forceinline__ void fa_abt(float (*acc)[4], u32 a_base, u32 b_base, u32 st, u32 r0, u32 lane) {
    fa_zero<N>(acc);
#pragma unroll
    for (u32 kk = 0; kk < K / 16; ++kk) {
        u32 a[4];
        fa_ldsm(a, fa_a_addr(a_base, st, r0, kk * 16, lane));
        fa_mma_row<N, false>(acc, a, b_base, st, kk * 16, lane);
    }
}

extern "C" __global__ void __launch_bounds__(FA_THREADS) dsa_flash_fwd(
    const fa_t* __restrict__ q, const fa_t* __restrict__ k, const fa_t* __restrict__ v, fa_t* __restrict__ out,
    float* __restrict__ lse, const __grid_constant__ FaParams p) {
    extern __shared__ __align__(128) unsigned char fa_smem[];
    const u32 tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, tg = lane % 4;
    const u64 q0 = (u64)(gridDim.x - 1 - blockIdx.x) * FA_ROWS, hh = blockIdx.y, bb = blockIdx.z;
    const u64 rows = min((u64)FA_ROWS, p.t_len - q0);
    const float scale = __int_as_float((int)p.scale_bits) * FA_LOG2E;
    const fa_t* qg = q + bb * p.q_sb + hh * p.q_sh + q0 * p.q_st;
    const fa_t* kg = k + bb * p.k_sb + hh * p.k_sh;
    const fa_t* vg = v + bb * p.v_sb + hh * p.v_sh;
    const u64 kv_end = min(p.s_len, q0 + rows + p.offset);
    const u32 steps = (u32)((kv_end + FA_STEP - 1) / FA_STEP);
    const u32 sq = wg_smem(fa_smem), sk = sq + FA_ROWS * FA_QS * 2, sv = sk + 2 * FA_STEP * FA_QS * 2;

    fa_load<FA_DQK>(sq, qg, p.q_st, rows, tid);
    fa_load<FA_DQK>(sk, kg, p.k_st, kv_end, tid);
    fa_load<FA_DV>(sv, vg, p.v_st, kv_end, tid);
    wg_cp_commit();

    u32 qf[FA_DQK / 16][4];
    float o[FA_DV / 8][4];
    fa_zero<FA_DV>(o);
    float m[2] = {-FA_INF, -FA_INF}, l[2] = {0.f, 0.f};
    // The rows of this thread's accumulator entries: r0 (c0, c1) and r0 + 8 (c2, c3).
    const u64 r0 = q0 + warp * 16 + g;

    for (u32 j = 0; j < steps; ++j) {
        const u32 buf = j % 2;
        if (j + 1 < steps) {
            const u64 s0 = (u64)(j + 1) * FA_STEP;
            fa_load<FA_DQK>(sk + (buf ^ 1) * FA_STEP * FA_QS * 2, kg + s0 * p.k_st, p.k_st, kv_end - s0, tid);
            fa_load<FA_DV>(sv + (buf ^ 1) * FA_STEP * FA_VS * 2, vg + s0 * p.v_st, p.v_st, kv_end - s0, tid);
            wg_cp_commit();
            wg_cp_wait<1>();
        } else {
            wg_cp_wait<0>();
        }
        __syncthreads();
        if (j == 0) {
#pragma unroll
            for (u32 kk = 0; kk < FA_DQK / 16; ++kk) fa_ldsm(qf[kk], fa_a_addr(sq, FA_QS, warp * 16, kk * 16, lane));
        }
        const u32 kt = sk + buf * FA_STEP * FA_QS * 2, vt = sv + buf * FA_STEP * FA_VS * 2;
        float s[FA_STEP / 8][4];
        fa_zero<FA_STEP>(s);
#pragma unroll
        for (u32 kk = 0; kk < FA_DQK / 16; ++kk) {
            fa_mma_row<FA_STEP, false>(s, qf[kk], kt, FA_QS, kk * 16, lane);
        }
        // Scale, mask the keys past a row's position (or past S), and the online softmax.
        const u64 s0 = (u64)j * FA_STEP;
        const bool edge = s0 + FA_STEP > q0 + warp * 16 + p.offset + 1 || s0 + FA_STEP > p.s_len;
        float mx[2] = {m[0], m[1]};
#pragma unroll
        for (u32 n = 0; n < FA_STEP / 8; ++n) {
#pragma unroll
            for (u32 e = 0; e < 4; ++e) {
                const u64 key = s0 + n * 8 + 2 * tg + (e % 2), row = r0 + (e / 2) * 8;
                float x = s[n][e] * scale;
                if (edge && (key > row + p.offset || key >= p.s_len)) x = -FA_INF;
                s[n][e] = x;
                mx[e / 2] = fmaxf(mx[e / 2], x);
            }
        }
#pragma unroll
        for (u32 i = 0; i < 2; ++i) {
            mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffff, mx[i], 1));
            mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffff, mx[i], 2));
            // Key 0 is visible to every row: the maximum is finite from the first block on.
            const float corr = exp2f(m[i] - mx[i]);
            m[i] = mx[i];
            l[i] *= corr;
#pragma unroll
            for (u32 n = 0; n < FA_DV / 8; ++n) {
                o[n][2 * i] *= corr;
                o[n][2 * i + 1] *= corr;
            }
        }
#pragma unroll
        for (u32 n = 0; n < FA_STEP / 8; ++n) {
#pragma unroll
            for (u32 e = 0; e < 4; ++e) {
                const float pe = exp2f(s[n][e] - m[e / 2]);
                s[n][e] = pe;
                l[e / 2] += pe;
            }
        }
        // O += P v: P's accumulators are the A fragments of 16 keys each.
#pragma unroll
        for (u32 kk = 0; kk < FA_STEP / 16; ++kk) {
            u32 a[4];
            fa_acc_to_a(a, s[2 * kk], s[2 * kk + 1]);
            fa_mma_row<FA_DV, true>(o, a, vt, FA_VS, kk * 16, lane);
        }
        __syncthreads();
    }

#pragma unroll
    for (u32 i = 0; i < 2; ++i) {
        l[i] += __shfl_xor_sync(0xffffffff, l[i], 1);
        l[i] += __shfl_xor_sync(0xffffffff, l[i], 2);
    }
    const u64 head = bb * p.heads + hh;
#pragma unroll
    for (u32 i = 0; i < 2; ++i) {
        const u64 row = r0 + i * 8;
        if (row < p.t_len) {
            const float inv = 1.f / l[i];
            fa_t* orow = out + (head * p.t_len + row) * FA_DV;
#pragma unroll
            for (u32 n = 0; n < FA_DV / 8; ++n)
                *(u32*)(orow + n * 8 + 2 * tg) = fa_pack(o[n][2 * i] * inv, o[n][2 * i + 1] * inv);
            if (tg == 0) lse[head * p.t_len + row] = (m[i] + __log2f(l[i])) / FA_LOG2E;
        }
    }
}

extern "C" __global__ void __launch_bounds__(FA_THREADS) dsa_flash_bwd(
    const fa_t* __restrict__ q, const fa_t* __restrict__ k, const fa_t* __restrict__ v, const fa_t* __restrict__ d_out,
    const float* __restrict__ lse, const float* __restrict__ delta, float* __restrict__ dq, fa_t* __restrict__ dk,
    fa_t* __restrict__ dv, const __grid_constant__ FaParams p) {
    extern __shared__ __align__(128) unsigned char fa_smem[];
    const u32 tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, tg = lane % 4;
    const u64 k0 = (u64)blockIdx.x * FA_ROWS, hh = blockIdx.y, bb = blockIdx.z;
    const u64 keys = min((u64)FA_ROWS, p.s_len - k0), head = bb * p.heads + hh;
    const float scale = __int_as_float((int)p.scale_bits);
    const float scale2 = scale * FA_LOG2E;
    const u32 sk = wg_smem(fa_smem), sv = sk + FA_ROWS * FA_QS * 2, sq = sv + FA_ROWS * FA_VS * 2;
    const u32 sdo = sq + FA_STEP * FA_QS * 2, sds = sdo + FA_STEP * FA_VS * 2;
    float* slse = (float*)(fa_smem + (sds - sk) + FA_ROWS * FA_SS * 2);
    float* sdelta = slse + FA_STEP;

    fa_load<FA_DQK>(sk, k + bb * p.k_sb + hh * p.k_sh + k0 * p.k_st, p.k_st, keys, tid);
    fa_load<FA_DV>(sv, v + bb * p.v_sb + hh * p.v_sh + k0 * p.v_st, p.v_st, keys, tid);
    wg_cp_commit();

    float dka[FA_DQK / 8][4], dva[FA_DV / 8][4];
    fa_zero<FA_DQK>(dka);
    fa_zero<FA_DV>(dva);
    // This thread's accumulator rows are keys kr and kr + 8.
    const u64 kr = k0 + warp * 16 + g;
    // The first query that sees key k0.
    const u64 t_first = k0 > p.offset ? k0 - p.offset : 0;
    const fa_t* qh = q + bb * p.q_sb + hh * p.q_sh;
    const fa_t* doh = d_out + bb * p.o_sb + hh * p.o_sh;

    for (u64 q0 = t_first / FA_STEP * FA_STEP; q0 < p.t_len; q0 += FA_STEP) {
        const u64 rows = min((u64)FA_STEP, p.t_len - q0);
        fa_load<FA_DQK>(sq, qh + q0 * p.q_st, p.q_st, rows, tid);
        fa_load<FA_DV>(sdo, doh + q0 * p.o_st, p.o_st, rows, tid);
        wg_cp_commit();
        if (tid < FA_STEP) {
            const bool ok = tid < rows;
            slse[tid] = ok ? lse[head * p.t_len + q0 + tid] * FA_LOG2E : FA_INF;
            sdelta[tid] = ok ? delta[head * p.t_len + q0 + tid] : 0.f;
        }
        wg_cp_wait<0>();
        __syncthreads();

        // Sᵀ = k qᵀ (16 keys x 64 queries per warp).
        float s[FA_STEP / 8][4];
        fa_abt<FA_DQK, FA_STEP>(s, sk, sq, FA_QS, warp * 16, lane);
        // Pᵀ, zero where the query does not see the key (or either is past its end).
        const bool edge = k0 + warp * 16 + 15 > q0 + p.offset || q0 + FA_STEP > p.t_len || k0 + FA_ROWS > p.s_len;
#pragma unroll
        for (u32 n = 0; n < FA_STEP / 8; ++n) {
#pragma unroll
            for (u32 e = 0; e < 4; ++e) {
                const u32 col = n * 8 + 2 * tg + (e % 2);
                const u64 key = kr + (e / 2) * 8, query = q0 + col;
                float pe = exp2f(s[n][e] * scale2 - slse[col]);
                if (edge && (key > query + p.offset || query >= p.t_len || key >= p.s_len)) pe = 0.f;
                s[n][e] = pe;
            }
        }
        // dV += Pᵀ dO.
#pragma unroll
        for (u32 kk = 0; kk < FA_STEP / 16; ++kk) {
            u32 a[4];
            fa_acc_to_a(a, s[2 * kk], s[2 * kk + 1]);
            fa_mma_row<FA_DV, true>(dva, a, sdo, FA_VS, kk * 16, lane);
        }
        // dPᵀ = v dOᵀ, then dSᵀ = Pᵀ (dPᵀ - delta), in place of Pᵀ.
        {
            float dp[FA_STEP / 8][4];
            fa_abt<FA_DV, FA_STEP>(dp, sv, sdo, FA_VS, warp * 16, lane);
#pragma unroll
            for (u32 n = 0; n < FA_STEP / 8; ++n) {
#pragma unroll
                for (u32 e = 0; e < 4; ++e) s[n][e] *= dp[n][e] - sdelta[n * 8 + 2 * tg + (e % 2)];
            }
        }
        // dK += dSᵀ q; dSᵀ to shared memory for dQ.
#pragma unroll
        for (u32 kk = 0; kk < FA_STEP / 16; ++kk) {
            u32 a[4];
            fa_acc_to_a(a, s[2 * kk], s[2 * kk + 1]);
            const u32 row = warp * 16 + g;
            asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(sds + (row * FA_SS + kk * 16 + 2 * tg) * 2), "r"(a[0]) : "memory");
            asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(sds + ((row + 8) * FA_SS + kk * 16 + 2 * tg) * 2), "r"(a[1]) : "memory");
            asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(sds + (row * FA_SS + kk * 16 + 8 + 2 * tg) * 2), "r"(a[2]) : "memory");
            asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(sds + ((row + 8) * FA_SS + kk * 16 + 8 + 2 * tg) * 2), "r"(a[3]) : "memory");
            fa_mma_row<FA_DQK, true>(dka, a, sq, FA_QS, kk * 16, lane);
        }
        __syncthreads();
        // dQ (this warp's 16 queries) = dS k, added to the f32 dq.
        {
            float dqa[FA_DQK / 8][4];
            fa_zero<FA_DQK>(dqa);
#pragma unroll
            for (u32 kk = 0; kk < FA_ROWS / 16; ++kk) {
                u32 a[4];
                fa_ldsm_t(a, fa_at_addr(sds, FA_SS, kk * 16, warp * 16, lane));
                fa_mma_row<FA_DQK, true>(dqa, a, sk, FA_QS, kk * 16, lane);
            }
#pragma unroll
            for (u32 i = 0; i < 2; ++i) {
                const u64 query = q0 + warp * 16 + g + i * 8;
                if (query < p.t_len) {
                    float* row = dq + (head * p.t_len + query) * FA_DQK + 2 * tg;
#pragma unroll
                    for (u32 n = 0; n < FA_DQK / 8; ++n) {
                        atomicAdd(row + n * 8, dqa[n][2 * i] * scale);
                        atomicAdd(row + n * 8 + 1, dqa[n][2 * i + 1] * scale);
                    }
                }
            }
        }
        __syncthreads();
    }

#pragma unroll
    for (u32 i = 0; i < 2; ++i) {
        const u64 key = kr + i * 8;
        if (key < p.s_len) {
            fa_t* krow = dk + (head * p.s_len + key) * FA_DQK + 2 * tg;
            fa_t* vrow = dv + (head * p.s_len + key) * FA_DV + 2 * tg;
#pragma unroll
            for (u32 n = 0; n < FA_DQK / 8; ++n) *(u32*)(krow + n * 8) = fa_pack(dka[n][2 * i] * scale, dka[n][2 * i + 1] * scale);
#pragma unroll
            for (u32 n = 0; n < FA_DV / 8; ++n) *(u32*)(vrow + n * 8) = fa_pack(dva[n][2 * i], dva[n][2 * i + 1]);
        }
    }
}
