// Lightning-indexer scores on Hopper's warpgroup tensor cores (`wgmma`): the contract of
// the CubeCL indexer kernels at DeepSeek-V3.2's indexer shape (64 heads x 128 dims) for
// sm_90a, which CubeCL 0.10 cannot emit. Launched through CubeCL's CUDA runtime by
// `dsa_kernels::indexer::wgmma`. Two entry points, one body (`idx_scores<CB, PIPE>`, CB bytes
// per code): `dsa_indexer_scores_wgmma_fp8` multiplies the e4m3 codes as bytes on e4m3 wgmma
// (m64n128k32, f32 accumulators; Hopper adds the products of each instruction with about 14
// bits, per DeepSeek-V3's report, as DeepSeek's own FP8 indexer does), and
// `dsa_indexer_scores_wgmma` holds them in f16 (exactly) on f16 wgmma (m64n128k16), which
// agrees with the f32 reference to rounding.
//
// out[b,t,s] = sk[s] * sum_h w[t,h] sq[t,h] ReLU(q[t,h] . k[s]) on the codes (f32 scales),
// -inf where s > t + offset (causal). One CTA of two warpgroups per (8 queries, chunk of
// keys), walking the chunk 128 keys at a time; warpgroup w takes keys 64w..64w+63 of each
// tile. The products are transposed, as in DeepGEMM's FP8 MQA logits: A = the 64 keys, B = the
// 128 head rows of a pair of queries (N = 2 x 64), so a thread's accumulators hold two keys x
// 16 heads of each query, and the sum over heads is ReLU and a weight FMA per value inside the
// thread, then two shuffles over the row group's four lanes, after which each lane holds one
// (query, key) score. In f16 the next pair's product runs while the thread sums the current
// one (two accumulator sets, one CTA per SM); in e4m3 two CTAs share an SM instead (one set,
// 128 registers), which measures faster. The
// queries' codes and two key tiles live in the 128-byte-swizzled layout (column blocks of
// 128 bytes, each `rows x 128 B`, the 16-byte pieces of row r XOR-ed with r % 8; the queries'
// rows of one column block contiguous, so that a pair's 128 rows form one operand); the head
// weights w * sq in shared memory. The next key tile is copied (cp.async) while the current
// one is computed. Helpers: wgmma.cuh (shared with the sparse MLA kernels).

#define IDX_HEADS 64
#define IDX_D 128
#define IDX_QUERIES 8
#define IDX_KEYS 128
#define IDX_THREADS 256

// Shared memory of the kernel with `CB` bytes per code: the queries' codes (8 queries x 64
// heads = 512 rows of 128 dims), two key tiles (128 keys x 128 dims), the queries' head
// weights (f32), 1 KiB to align the start.
template <u32 CB> struct IdxLayout {
    // One column block (128 bytes of each row) of the queries' codes.
    static constexpr u32 QBLK = IDX_QUERIES * IDX_HEADS * 128;
    static constexpr u32 K_OFF = CB * QBLK;
    static constexpr u32 KTILE = IDX_KEYS * IDX_D * CB;
    static constexpr u32 W_OFF = K_OFF + 2 * KTILE;
    static constexpr u32 SMEM = W_OFF + IDX_QUERIES * IDX_HEADS * 4 + 1024;
    // 16-byte pieces of a row, and k-steps of 32 bytes (k16 in f16, k32 in e4m3).
    static constexpr u32 PIECES = IDX_D * CB / 16;
    static constexpr u32 STEPS = IDX_D * CB / 32;
};

// Parameters, one 64-bit word each (see `Params` in wgmma.rs).
struct IdxParams {
    u64 t_len, s_len, offset, causal, chunk, w_bytes, out_bytes;
};

// D (64 x 128, f32) (+)= A (64 x 32 bytes) * B (32 bytes x 128), both K-major, from
// descriptors: f16 m64n128k16 (CB = 2) or e4m3 m64n128k32 (CB = 1).
template <u32 CB> __device__ __forceinline__ void idx_wgmma(float* d, u64 desc_a, u64 desc_b, int accumulate);
#define IDX_WGMMA_OPERANDS                                                                                   \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, " \
    "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, "  \
    "%42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, "  \
    "%62, %63}, %64, %65, p"
#define IDX_WGMMA_ARGS                                                                                          \
    : WG_ACC8(0), WG_ACC8(8), WG_ACC8(16), WG_ACC8(24), WG_ACC8(32), WG_ACC8(40), WG_ACC8(48), WG_ACC8(56) \
    : "l"(desc_a), "l"(desc_b), "r"(accumulate)
template <> __device__ __forceinline__ void idx_wgmma<2>(float* d, u64 desc_a, u64 desc_b, int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 " IDX_WGMMA_OPERANDS ", 1, 1, 0, 0;\n}\n" IDX_WGMMA_ARGS);
}
template <> __device__ __forceinline__ void idx_wgmma<1>(float* d, u64 desc_a, u64 desc_b, int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 " IDX_WGMMA_OPERANDS ", 1, 1;\n}\n" IDX_WGMMA_ARGS);
}

__device__ __forceinline__ float idx_load(const void* p, u64 i, u64 bytes) {
    return bytes == 2 ? __bfloat162float(((const __nv_bfloat16*)p)[i]) : ((const float*)p)[i];
}
__device__ __forceinline__ void idx_store(void* p, u64 i, u64 bytes, float v) {
    if (bytes == 2) ((__nv_bfloat16*)p)[i] = __float2bfloat16(v);
    else ((float*)p)[i] = v;
}

// PIPE: the next pair's product is issued before the current pair's sums (two accumulator
// sets, one CTA per SM); without it one set, two CTAs per SM (FP8's shared memory allows it),
// the other CTA's products hiding this one's sums.
template <u32 CB, bool PIPE>
__device__ __forceinline__ void idx_scores(const unsigned char* __restrict__ q, const void* __restrict__ w, const float* __restrict__ sq,
                                           const unsigned char* __restrict__ k, const float* __restrict__ sk, void* __restrict__ out,
                                           const IdxParams& p, unsigned char* smem_raw) {
    typedef IdxLayout<CB> L;
    const u64 n_tq = (p.t_len + IDX_QUERIES - 1) / IDX_QUERIES;
    const u64 b = blockIdx.x / n_tq;
    const u64 t0 = (blockIdx.x % n_tq) * IDX_QUERIES;
    const u32 tid = threadIdx.x, wg = tid / 128, wtid = tid % 128, warp = wtid / 32, lane = tid % 32;
    const u32 g = lane / 4, tg = lane % 4;
    const float neg_inf = -__int_as_float(0x7f800000);
    const u64 s_begin = (u64)blockIdx.y * p.chunk;
    const u64 s_end = min(s_begin + p.chunk, p.s_len);
    u64 t_last = min(t0 + IDX_QUERIES, p.t_len) - 1;
    // Keys below `limit` are computed; later ones are in every query's future.
    u64 limit = s_end;
    if (p.causal && t_last + p.offset + 1 < limit) limit = t_last + p.offset + 1;

    const u32 base_addr = (wg_smem(smem_raw) + 1023) & ~1023u;
    unsigned char* base = smem_raw + (base_addr - wg_smem(smem_raw));
    const u32 q_addr = base_addr, k_addr0 = base_addr + L::K_OFF;
    float* wsm = (float*)(base + L::W_OFF);

    u64 s_done = s_begin;
    if (s_begin < limit) {
        // Thread `tid` copies piece `tid % PIECES` (of 16 bytes: column block `piece / 8`)
        // of rows `tid / PIECES + (256 / PIECES) u` of a tile.
        const u32 piece = tid % L::PIECES, row0 = tid / L::PIECES, rows_per = IDX_THREADS / L::PIECES;
        const u32 sub = piece % 8, blk = piece / 8;
        for (u32 u = 0; u < IDX_QUERIES * IDX_HEADS / rows_per; ++u) {
            u32 r = row0 + rows_per * u, qi = r / IDX_HEADS, h = r % IDX_HEADS;
            bool live = t0 + qi < p.t_len;
            const unsigned char* src = q + ((b * p.t_len + (live ? t0 + qi : 0)) * IDX_HEADS + h) * (IDX_D * CB) + piece * 16;
            wg_cp_async(q_addr + blk * L::QBLK + r * 128 + ((sub ^ (r & 7)) << 4), src, live);
        }
        auto issue = [&](u64 s0, u32 stage) {
#pragma unroll
            for (u32 u = 0; u < IDX_KEYS / rows_per; ++u) {
                u32 r = row0 + rows_per * u;
                bool live = s0 + r < p.s_len;
                const unsigned char* src = k + (b * p.s_len + (live ? s0 + r : 0)) * (IDX_D * CB) + piece * 16;
                wg_cp_async(k_addr0 + stage * L::KTILE + blk * (IDX_KEYS * 128) + r * 128 + ((sub ^ (r & 7)) << 4), src, live);
            }
            wg_cp_commit();
        };
        issue(s_begin, 0);
        // The weights w * sq of the CTA's queries (0 past the end), visible after the first
        // iteration's barrier.
        for (u32 i = tid; i < IDX_QUERIES * IDX_HEADS; i += IDX_THREADS) {
            const u64 t = t0 + i / IDX_HEADS, row = (b * p.t_len + t) * IDX_HEADS + i % IDX_HEADS;
            wsm[i] = t < p.t_len ? idx_load(w, row, p.w_bytes) * sq[row] : 0.0f;
        }

        // This lane's key within a tile: row 16 warp + g + 8 (tg & 1) of its warpgroup's 64;
        // its query within a pair: tg >> 1 (after the sum over the lanes below).
        const u32 key = 64 * wg + 16 * warp + g + 8 * (tg & 1), qsub = tg >> 1;
        u32 it = 0;
        for (u64 s0 = s_begin; s0 < limit; s0 += IDX_KEYS, ++it) {
            const u32 stage = it & 1;
            __syncthreads();
            if (s0 + IDX_KEYS < limit) {
                issue(s0 + IDX_KEYS, stage ^ 1);
                wg_cp_wait<1>();
            } else {
                wg_cp_wait<0>();
            }
            wg_fence_async_smem();
            __syncthreads();

            const u64 s = s0 + key;
            const float sks = s < s_end ? sk[b * p.s_len + s] : 0.0f;
            // For query t = t0 + 2 pair + qsub: its score's index is at0 + pair * step; it is
            // past T when 2 pair >= rows_left, in the causal future when 2 pair < ahead.
            const u64 at0 = (b * p.t_len + t0 + qsub) * p.s_len + s, step = 2 * p.s_len;
            const long long rows_left = s < s_end ? (long long)(p.t_len - t0) - qsub : 0;
            const long long ahead = (long long)s - (long long)(t0 + qsub + p.offset);
            // A: this warpgroup's 64 keys; B: the 128 head rows of a pair of queries.
            const u64 kd = wg_desc(k_addr0 + stage * L::KTILE + wg * (64 * 128), 16, 1024);
            float acc[1 + PIPE][64];
            auto product = [&](u32 pair) {
                const u64 qd = wg_desc(q_addr + pair * (2 * IDX_HEADS * 128), 16, 1024);
                wgmma_fence();
#pragma unroll
                for (u32 ks = 0; ks < L::STEPS; ++ks) {
                    // Column block ks / 4 of 128 bytes, 32 bytes per step inside it (units of 16 bytes).
                    const u64 ko = ((ks / 4) * (IDX_KEYS * 128) + (ks % 4) * 32) >> 4;
                    const u64 qo = ((ks / 4) * L::QBLK + (ks % 4) * 32) >> 4;
                    idx_wgmma<CB>(acc[pair & PIPE], kd + ko, qd + qo, ks > 0);
                }
                wgmma_commit();
            };
            if (PIPE) product(0);
#pragma unroll
            for (u32 pair = 0; pair < IDX_QUERIES / 2; ++pair) {
                if (!PIPE) {
                    product(pair);
                    wgmma_wait0();
                } else if (pair + 1 < IDX_QUERIES / 2) {
                    product(pair + 1);
                    asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
                } else {
                    wgmma_wait0();
                }
                float* a = acc[pair & PIPE];
#pragma unroll
                for (int i = 0; i < 64; ++i) wg_pin(a[i]);
                // x[qq][rr]: query 2 pair + qq, key row g + 8 rr, over this thread's 16 heads
                // 8 j + 2 tg + e (a[4 (8 qq + j) + 2 rr + e]); two chains of FMAs, one per e.
                float x[2][2];
#pragma unroll
                for (u32 qq = 0; qq < 2; ++qq) {
                    const float* wq = wsm + (2 * pair + qq) * IDX_HEADS + 2 * tg;
                    float xe[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};
#pragma unroll
                    for (u32 j = 0; j < 8; ++j) {
                        const float2 wv = *(const float2*)(wq + 8 * j);
                        const float* aj = a + 4 * (8 * qq + j);
#pragma unroll
                        for (u32 rr = 0; rr < 2; ++rr) {
                            xe[rr][0] = fmaf(wv.x, fmaxf(aj[2 * rr], 0.0f), xe[rr][0]);
                            xe[rr][1] = fmaf(wv.y, fmaxf(aj[2 * rr + 1], 0.0f), xe[rr][1]);
                        }
                    }
                    x[qq][0] = xe[0][0] + xe[0][1];
                    x[qq][1] = xe[1][0] + xe[1][1];
                }
                // Sum over the four lanes tg of a row group, each lane keeping one (query,
                // row): bit 0 of tg picks the row, bit 1 the query.
                const bool b0 = tg & 1, b1 = tg & 2;
                float y[2];
#pragma unroll
                for (u32 qq = 0; qq < 2; ++qq)
                    y[qq] = (b0 ? x[qq][1] : x[qq][0]) + __shfl_xor_sync(0xffffffff, b0 ? x[qq][0] : x[qq][1], 1);
                float z = (b1 ? y[1] : y[0]) + __shfl_xor_sync(0xffffffff, b1 ? y[0] : y[1], 2);
                if ((long long)(2 * pair) < rows_left) {
                    z *= sks;
                    if (p.causal && (long long)(2 * pair) < ahead) z = neg_inf;
                    idx_store(out, at0 + pair * step, p.out_bytes, z);
                }
            }
            s_done = s0 + IDX_KEYS;
        }
        if (s_done > s_end) s_done = s_end;
    }
    // The rest of the chunk is in the causal future of every query of the CTA.
    const u64 width = s_end - s_done;
    for (u64 o = tid; o < IDX_QUERIES * width; o += IDX_THREADS) {
        u64 t = t0 + o / width;
        if (t < p.t_len) idx_store(out, (b * p.t_len + t) * p.s_len + s_done + o % width, p.out_bytes, neg_inf);
    }
}

// An entry point: `CB` bytes per code, `PIPE` two accumulator sets, at least `MIN_CTAS` CTAs per SM.
#define IDX_ENTRY(NAME, MIN_CTAS, CB, PIPE)                                                              \
    extern "C" __global__ void __launch_bounds__(IDX_THREADS, MIN_CTAS) NAME(                            \
        const unsigned char* __restrict__ q, const void* __restrict__ w, const float* __restrict__ sq,   \
        const unsigned char* __restrict__ k, const float* __restrict__ sk, void* __restrict__ out,       \
        const __grid_constant__ IdxParams p) {                                                           \
        extern __shared__ __align__(1024) unsigned char idx_smem_raw[];                                  \
        idx_scores<CB, PIPE>(q, w, sq, k, sk, out, p, idx_smem_raw);                                     \
    }

// The f16 codes (exact products and sums to f32 rounding).
IDX_ENTRY(dsa_indexer_scores_wgmma, 1, 2, true)
// The e4m3 codes as bytes on FP8 wgmma, two CTAs per SM.
IDX_ENTRY(dsa_indexer_scores_wgmma_fp8, 2, 1, false)
