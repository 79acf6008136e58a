// Lightning-indexer scores on Hopper's warpgroup tensor cores (`wgmma`): the contract of
// the CubeCL indexer kernels at DeepSeek-V3.2's indexer shape (64 heads x 128 dims) for
// sm_90a, which CubeCL 0.10 cannot emit. Launched through CubeCL's CUDA runtime by
// `dsa_kernels::indexer_wgmma`. Two entry points, one body (`idx_scores<CB, PIPE>`, CB bytes
// per code): `dsa_indexer_scores_wgmma_fp8` multiplies the e4m3 codes as bytes on e4m3 wgmma
// (m64n128k32, f32 accumulators; Hopper adds the products of each instruction with about 14
// bits, per DeepSeek-V3's report, as DeepSeek's own FP8 indexer does), and
// `dsa_indexer_scores_wgmma` holds them in f16 (exactly) on f16 wgmma (m64n128k16), which
// agrees with the f32 reference to rounding.
//
// out[b,t,s] = sk[s] * sum_h w[t,h] sq[t,h] ReLU(q[t,h] . k[s]) on the codes (f32 scales),
// -inf where s > t + offset (causal). One CTA of two warpgroups per (8 queries, chunk of
// keys); warpgroup w takes queries 4w..4w+3, each a 64-head x 128-key tile of products over
// the 128 dims against the key tile in shared memory. In f16 the next query's product runs
// while the thread sums the current one (two accumulator sets, one CTA per SM); in e4m3 two
// CTAs share an SM instead (one set, 128 registers), which measured faster (run 60). The
// queries' codes and two key tiles live in the 128-byte-swizzled layout (column blocks of
// 128 bytes, each `rows x 128 B`, the 16-byte pieces of row r XOR-ed with r % 8). The epilogue in
// registers: ReLU, the head weights, the two rows a thread holds, then the sum over the
// warp's 16 heads by three halving shuffles (each lane keeps 4 keys), over the warpgroup's 4
// warps through shared memory. The next key tile is copied (cp.async) while the current one
// is computed. Helpers: wgmma.cuh.

#define IDX_HEADS 64
#define IDX_D 128
#define IDX_QUERIES 8
#define IDX_KEYS 128
#define IDX_THREADS 256

// Shared memory of the kernel with `CB` bytes per code: the queries' codes (64 heads x 128
// dims each), two key tiles (128 keys x 128 dims), the warps' head sums (two buffers per
// warpgroup), 1 KiB to align the start.
template <u32 CB> struct IdxLayout {
    static constexpr u32 QROW = IDX_HEADS * IDX_D * CB;
    static constexpr u32 K_OFF = IDX_QUERIES * QROW;
    static constexpr u32 KTILE = IDX_KEYS * IDX_D * CB;
    static constexpr u32 RED_OFF = K_OFF + 2 * KTILE;
    static constexpr u32 SMEM = RED_OFF + 2 * 2 * 4 * IDX_KEYS * 4 + 1024;
    // 16-byte pieces of a row, and k-steps of 32 bytes (k16 in f16, k32 in e4m3).
    static constexpr u32 PIECES = IDX_D * CB / 16;
    static constexpr u32 STEPS = IDX_D * CB / 32;
};

// Parameters, one 64-bit word each (see `WgmmaIndexerParams` in indexer_wgmma.rs).
struct IdxParams {
    u64 t_len, s_len, offset, causal, chunk, w_bytes, out_bytes;
};

// Barrier 1 + w over warpgroup w's 128 threads.
__device__ __forceinline__ void idx_bar_wg(u32 wg) {
    if (wg == 0) asm volatile("bar.sync 1, 128;\n" ::: "memory");
    else asm volatile("bar.sync 2, 128;\n" ::: "memory");
}

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

// One halving step of the sum over row groups: the lanes with bit `M` set keep the upper
// `M` of their `2M` values, the others the lower ones, each adding its partner's.
template <u32 M> __device__ __forceinline__ void idx_halve(float* v, u32 lane) {
    const bool upper = (lane & M) != 0;
#pragma unroll
    for (u32 i = 0; i < M; ++i) {
        float mine = upper ? v[M + i] : v[i];
        float theirs = upper ? v[i] : v[M + i];
        v[i] = mine + __shfl_xor_sync(0xffffffff, theirs, M);
    }
}

__device__ __forceinline__ float idx_load(const void* p, u64 i, u64 bytes) {
    return bytes == 2 ? __bfloat162float(((const __nv_bfloat16*)p)[i]) : ((const float*)p)[i];
}
__device__ __forceinline__ void idx_store(void* p, u64 i, u64 bytes, float v) {
    if (bytes == 2) ((__nv_bfloat16*)p)[i] = __float2bfloat16(v);
    else ((float*)p)[i] = v;
}

// PIPE: query u + 1's product is issued before query u's sums (two accumulator sets, ~240
// registers, one CTA per SM); without it one set, 128 registers, two CTAs per SM (FP8's
// shared memory allows it), the other CTA's products hiding this one's sums.
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
    float* red = (float*)(base + L::RED_OFF);

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
            wg_cp_async(q_addr + qi * L::QROW + blk * (IDX_HEADS * 128) + h * 128 + ((sub ^ (h & 7)) << 4), src, live);
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

        // The weights w * sq of this thread's rows (heads 16 warp + g, + 8) for its 4 queries.
        float wr[4][2];
#pragma unroll
        for (u32 u = 0; u < 4; ++u) {
            u64 t = t0 + wg * 4 + u;
#pragma unroll
            for (u32 r = 0; r < 2; ++r) {
                u64 row = (b * p.t_len + t) * IDX_HEADS + warp * 16 + g + 8 * r;
                wr[u][r] = t < p.t_len ? idx_load(w, row, p.w_bytes) * sq[row] : 0.0f;
            }
        }

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

            // The key this thread stores for every query of the tile, and its scale.
            const u64 s = s0 + wtid;
            const float sks = s < s_end ? sk[b * p.s_len + s] : 0.0f;
            const u64 kd = wg_desc(k_addr0 + stage * L::KTILE, 16, 1024);
            // acc[u & PIPE]: query 4 wg + u's 64 heads x 128 keys (with PIPE, query u + 1's
            // product is issued before query u's sums).
            float acc[1 + PIPE][64];
            auto product = [&](u32 u) {
                const u64 qd = wg_desc(q_addr + (wg * 4 + u) * L::QROW, 16, 1024);
                wgmma_fence();
#pragma unroll
                for (u32 ks = 0; ks < L::STEPS; ++ks) {
                    // Column block ks / 4 of 128 bytes, 32 bytes per step inside it (units of 16 bytes).
                    const u64 qo = ((ks / 4) * (IDX_HEADS * 128) + (ks % 4) * 32) >> 4;
                    const u64 ko = ((ks / 4) * (IDX_KEYS * 128) + (ks % 4) * 32) >> 4;
                    idx_wgmma<CB>(acc[u & PIPE], qd + qo, kd + ko, ks > 0);
                }
                wgmma_commit();
            };
            if (PIPE) product(0);
#pragma unroll
            for (u32 u = 0; u < 4; ++u) {
                const u64 t = t0 + wg * 4 + u;
                if (!PIPE) {
                    product(u);
                    wgmma_wait0();
                } else if (u < 3) {
                    product(u + 1);
                    asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
                } else {
                    wgmma_wait0();
                }
                float* a = acc[u & PIPE];
#pragma unroll
                for (int i = 0; i < 64; ++i) wg_pin(a[i]);
                // v[2j + e]: key 8j + 2tg + e, this thread's two rows weighted and summed.
                float v[32];
#pragma unroll
                for (u32 j = 0; j < 16; ++j) {
#pragma unroll
                    for (u32 e = 0; e < 2; ++e)
                        v[2 * j + e] = wr[u][0] * fmaxf(a[4 * j + e], 0.0f) + wr[u][1] * fmaxf(a[4 * j + 2 + e], 0.0f);
                }
                // Sum over the 8 row groups g (lane bits 4, 3, 2), halving the values each
                // step: lane (g, tg) ends with v[4g .. 4g+3], i.e. keys 16g + 2tg + {0, 1}
                // and 16g + 8 + 2tg + {0, 1}.
                idx_halve<16>(v, lane);
                idx_halve<8>(v, lane);
                idx_halve<4>(v, lane);
                float* red_u = red + ((wg * 2 + (u & 1)) * 4 + warp) * IDX_KEYS;
#pragma unroll
                for (u32 i = 0; i < 4; ++i) red_u[16 * g + 8 * (i / 2) + 2 * tg + (i % 2)] = v[i];
                idx_bar_wg(wg);
                // Thread wtid: key s, summed over the 4 warps.
                const float* red_r = red + (wg * 2 + (u & 1)) * 4 * IDX_KEYS;
                if (t < p.t_len && s < s_end) {
                    float x = red_r[wtid] + red_r[IDX_KEYS + wtid] + red_r[2 * IDX_KEYS + wtid] + red_r[3 * IDX_KEYS + wtid];
                    x *= sks;
                    if (p.causal && s > t + p.offset) x = neg_inf;
                    idx_store(out, (b * p.t_len + t) * p.s_len + s, p.out_bytes, x);
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

// The f16 codes (exact products and sums to f32 rounding).
extern "C" __global__ void __launch_bounds__(IDX_THREADS, 1) dsa_indexer_scores_wgmma(
    const unsigned char* __restrict__ q, const void* __restrict__ w, const float* __restrict__ sq,
    const unsigned char* __restrict__ k, const float* __restrict__ sk, void* __restrict__ out,
    const __grid_constant__ IdxParams p) {
    extern __shared__ __align__(1024) unsigned char idx_smem_raw[];
    idx_scores<2, true>(q, w, sq, k, sk, out, p, idx_smem_raw);
}

// The e4m3 codes as bytes on FP8 wgmma, two CTAs per SM.
extern "C" __global__ void __launch_bounds__(IDX_THREADS, 2) dsa_indexer_scores_wgmma_fp8(
    const unsigned char* __restrict__ q, const void* __restrict__ w, const float* __restrict__ sq,
    const unsigned char* __restrict__ k, const float* __restrict__ sk, void* __restrict__ out,
    const __grid_constant__ IdxParams p) {
    extern __shared__ __align__(1024) unsigned char idx_smem_raw[];
    idx_scores<1, false>(q, w, sq, k, sk, out, p, idx_smem_raw);
}
