// Run 67 (from run 66's tma_gather.cu): which part of v6's producer structure slows its gathers?
// gather_v6<MODE>: 0 as v6 (each consumer frees after its whole buffer landed), 1 as 0 with
// FlashMLA's copy hints (L2::256B prefetch, evict_last), 2 consumers free each half as soon as it
// landed, 3 v6's real slot lookup (i64 index + byte validity, ~1/16 invalid, row stride 640).
// Run 66: can TMA gather the sparse MLA forward's rows faster than cp.async? A gather-only
// microbenchmark of the v6 producer's job: each CTA copies 32 blocks of 64 selected latent rows
// (576 bf16 = 9 pieces of 64 values) into two 73.7 KB buffers in the 128-byte-swizzled layout
// wgmma reads (piece c of row r of a 64-row tile at r * 128 + ((c ^ (r % 8)) << 4)), no math:
// - cpasync: 128 threads, 16-byte cp.async as the landed producer (thread: piece c of rows
//   rg + 16 j), completion through cp.async.mbarrier.arrive.noinc;
// - tma: one warp issues a 2D TMA tensor copy per (row, piece) — a box of 64 values x 1 row
//   with SWIZZLE_128B, written at r * 128 of a 1024-byte-aligned tile — on an mbarrier with
//   expect_tx. Whether TMA swizzles by the destination address (what this layout needs) is
//   checked: every byte of the first buffers against the source rows;
// - v6-like: the landed v6's producer warpgroup and issue order (halves with ready/free
//   mbarriers, 384 threads, setmaxnreg), two consumer warpgroups that only wait and free.
// nvcc -std=c++17 -gencode arch=compute_90a,code=sm_90a -O3 -o tg tma_gather.cu -lcuda && ./tg
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <random>
#include <cuda.h>
#include <cuda_runtime.h>
#include <cuda_bf16.h>

typedef unsigned int u32;
typedef unsigned long long u64;
#define TILE (64 * 128)
#define BUF (9 * TILE)
#define BLOCKS 32

__device__ __forceinline__ u32 smem_u32(const void* p) { return (u32)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void bar_init(u32 bar, u32 n) { asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(n) : "memory"); }
__device__ __forceinline__ void bar_wait(u32 bar, u32 parity) {
    asm volatile("{\n.reg .pred done;\nW:\nmbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n@!done bra W;\n}\n" ::"r"(bar), "r"(parity) : "memory");
}
__device__ __forceinline__ void bar_expect(u32 bar, u32 bytes) {
    asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1;\n}\n" ::"r"(bar), "r"(bytes) : "memory");
}

// Verifies buffer `buf` of block `blk` against the source rows; counts wrong 16-byte pieces.
__device__ void verify(const unsigned char* buf, const __nv_bfloat16* kv, const int* rows, u32* bad) {
    for (u32 i = threadIdx.x; i < 64 * 72; i += blockDim.x) {
        const u32 r = i / 72, t = (i % 72) / 8, c = i % 8;
        const uint4 got = *(const uint4*)(buf + t * TILE + r * 128 + ((c ^ (r & 7)) << 4));
        const uint4 want = *(const uint4*)(kv + (u64)rows[r] * 576 + t * 64 + c * 8);
        if (got.x != want.x || got.y != want.y || got.z != want.z || got.w != want.w) atomicAdd(bad, 1u);
    }
}

template <bool TMA>
__global__ void __launch_bounds__(128, 1) gather(const __grid_constant__ CUtensorMap tmap, const __nv_bfloat16* kv, const int* idx, u32* bad, int check) {
    extern __shared__ __align__(1024) unsigned char raw[];
    unsigned char* base = raw + ((1024 - (smem_u32(raw) & 1023)) & 1023);
    __shared__ __align__(8) u64 full[2];
    const u32 tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    const int* my = idx + (u64)blockIdx.x * BLOCKS * 64;
    if (tid == 0) {
        bar_init(smem_u32(&full[0]), TMA ? 1 : 128);
        bar_init(smem_u32(&full[1]), TMA ? 1 : 128);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
    auto issue = [&](u32 blk, u32 b) {
        const u32 dst = smem_u32(base + b * BUF), bar = smem_u32(&full[b]);
        const int* rows = my + blk * 64;
        if (TMA) {
            if (warp != 0) return;
            if (lane == 0) bar_expect(bar, BUF);
            __syncwarp();
            // Lane l: rows l and l + 32, all nine pieces.
            for (u32 h = 0; h < 2; ++h) {
                const u32 r = lane + 32 * h;
                const int row = rows[r];
                for (u32 t = 0; t < 9; ++t)
                    asm volatile(
                        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst + t * TILE + r * 128),
                        "l"((u64)&tmap), "r"(t * 64), "r"(row), "r"(bar)
                        : "memory");
            }
        } else {
            const u32 c = tid % 8, rg = tid / 8;
            for (u32 j = 0; j < 4; ++j) {
                const u32 r = rg + 16 * j;
                const __nv_bfloat16* src = kv + (u64)rows[r] * 576 + c * 8;
                for (u32 t = 0; t < 9; ++t)
                    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst + t * TILE + r * 128 + ((c ^ (r & 7)) << 4)), "l"(src + t * 64) : "memory");
            }
            asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
        }
    };
    issue(0, 0);
    issue(1, 1);
    for (u32 i = 0; i < BLOCKS; ++i) {
        const u32 b = i & 1;
        bar_wait(smem_u32(&full[b]), (i >> 1) & 1);
        if (check) verify(base + b * BUF, kv, my + i * 64, bad);
        __syncthreads();
        if (i + 2 < BLOCKS) issue(i + 2, b);
    }
    if (!TMA) asm volatile("cp.async.wait_all;\n" ::: "memory");
}


// v6's structure without math: 384 threads; warpgroup 2 the producer exactly as the landed v6
// (two blocks per iteration into k0 / k1, each in halves dims 0..255 / 256..575, ready/free
// mbarriers, the same issue order and per-thread copies); warpgroup 0 consumes k0 and
// warpgroup 1 k1 (wait ready, arrive free; no cross-warpgroup dependencies, unlike v6's math).
__global__ void __launch_bounds__(384, 1) gather_v6(const __nv_bfloat16* kv, const int* idx, u32* bad, int check) {
    extern __shared__ __align__(1024) unsigned char raw[];
    unsigned char* base = raw + ((1024 - (smem_u32(raw) & 1023)) & 1023);
    __shared__ __align__(8) u64 bars[8];  // ready[buf][half], free[buf][half]
    const u32 tid = threadIdx.x, wg = tid / 128, wtid = tid % 128;
    const int* my = idx + (u64)(blockIdx.x / 1) * BLOCKS * 64;
    auto ready = [&](u32 b, u32 h) { return smem_u32(&bars[b * 2 + h]); };
    auto freed = [&](u32 b, u32 h) { return smem_u32(&bars[4 + b * 2 + h]); };
    if (tid == 0) {
        for (u32 i = 0; i < 8; ++i) bar_init(smem_u32(&bars[i]), 128);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
    const u32 iters = BLOCKS / 2;
    if (wg == 2) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 72;\n");
        const u32 c = wtid % 8, rg = wtid / 8;
        int rows[2][4];
        auto load_rows = [&](u32 it) {
            for (u32 b = 0; b < 2; ++b)
                for (u32 j = 0; j < 4; ++j) rows[b][j] = my[(2 * it + b) * 64 + rg + 16 * j];
        };
        auto copy = [&](u32 b, u32 t0, u32 t1) {
            for (u32 j = 0; j < 4; ++j) {
                const u32 r = rg + 16 * j;
                const __nv_bfloat16* src = kv + (u64)rows[b][j] * 576 + c * 8;
                for (u32 t = t0; t < t1; ++t)
                    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(base + b * BUF) + t * TILE + r * 128 + ((c ^ (r & 7)) << 4)), "l"(src + t * 64) : "memory");
            }
        };
        auto done = [&](u32 bar) { asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory"); };
        load_rows(0);
        u32 phase = 1;
        for (u32 it = 0; it < iters; ++it) {
            bar_wait(freed(0, 0), phase); copy(0, 0, 4); done(ready(0, 0));
            bar_wait(freed(1, 1), phase); copy(1, 4, 9); done(ready(1, 1));
            bar_wait(freed(0, 1), phase); copy(0, 4, 9); done(ready(0, 1));
            bar_wait(freed(1, 0), phase); copy(1, 0, 4); done(ready(1, 0));
            if (it + 1 < iters) load_rows(it + 1);
            phase ^= 1;
        }
        asm volatile("cp.async.wait_all;\n" ::: "memory");
        return;
    }
    asm volatile("setmaxnreg.inc.sync.aligned.u32 216;\n");
    const u32 b = wg;
    for (u32 it = 0; it < iters; ++it) {
        bar_wait(ready(b, 0), it & 1);
        bar_wait(ready(b, 1), it & 1);
        if (check) {
            // Warpgroup-local check of its block (rows of block 2 it + b).
            const int* rows = my + (2 * it + b) * 64;
            for (u32 i = wtid; i < 64 * 72; i += 128) {
                const u32 r = i / 72, t = (i % 72) / 8, c = i % 8;
                const uint4 got = *(const uint4*)(base + b * BUF + t * TILE + r * 128 + ((c ^ (r & 7)) << 4));
                const uint4 want = *(const uint4*)(kv + (u64)rows[r] * 576 + t * 64 + c * 8);
                if (got.x != want.x || got.y != want.y || got.z != want.z || got.w != want.w) atomicAdd(bad, 1u);
            }
        }
        asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}\n" ::"r"(freed(b, 0)) : "memory");
        asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}\n" ::"r"(freed(b, 1)) : "memory");
    }
}

int main() {
    typedef CUresult (*Encode)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*, const cuuint64_t*, const cuuint32_t*, const cuuint32_t*,
                               CUtensorMapInterleave, CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
    Encode encode = nullptr;
    cudaDriverEntryPointQueryResult q;
    cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", (void**)&encode, cudaEnableDefault, &q);
    if (!encode) { printf("no cuTensorMapEncodeTiled\n"); return 1; }
    const int smem = 2 * BUF + 1024;
    cudaFuncSetAttribute(gather<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    cudaFuncSetAttribute(gather<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    u32* bad; cudaMalloc(&bad, 4);
    for (int S : {4096, 131072}) {
        const int T = 4096, ctas = T * 2;  // two head groups per token, as v6
        std::mt19937 g(S);
        std::vector<__nv_bfloat16> kv((size_t)S * 576);
        for (size_t i = 0; i < kv.size(); ++i) kv[i] = __float2bfloat16((float)(int)(g() % 2001) - 1000.0f);
        std::vector<int> idx((size_t)ctas * BLOCKS * 64);
        // Both head groups of a token read the same rows (CTAs 2t and 2t+1).
        for (int t = 0; t < T; ++t)
            for (int k = 0; k < BLOCKS * 64; ++k) idx[((size_t)2 * t) * BLOCKS * 64 + k] = idx[((size_t)2 * t + 1) * BLOCKS * 64 + k] = g() % S;
        __nv_bfloat16* dkv; int* didx;
        cudaMalloc(&dkv, kv.size() * 2); cudaMalloc(&didx, idx.size() * 4);
        cudaMemcpy(dkv, kv.data(), kv.size() * 2, cudaMemcpyHostToDevice);
        cudaMemcpy(didx, idx.data(), idx.size() * 4, cudaMemcpyHostToDevice);
        CUtensorMap tmap;
        cuuint64_t dims[2] = {576, (cuuint64_t)S}, strides[1] = {576 * 2};
        cuuint32_t box[2] = {64, 1}, es[2] = {1, 1};
        CUresult r = encode(&tmap, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, dkv, dims, strides, box, es, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
        if (r != CUDA_SUCCESS) { printf("encode failed %d\n", (int)r); return 1; }
        for (int tma = 0; tma < 2; ++tma) {
            auto k = tma ? gather<true> : gather<false>;
            cudaMemset(bad, 0, 4);
            k<<<256, 128, smem>>>(tmap, dkv, didx, bad, 1);
            cudaError_t e = cudaDeviceSynchronize();
            u32 nbad = 0; cudaMemcpy(&nbad, bad, 4, cudaMemcpyDeviceToHost);
            cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
            k<<<ctas, 128, smem>>>(tmap, dkv, didx, bad, 0);
            cudaEventRecord(a);
            const int reps = 5;
            for (int i = 0; i < reps; ++i) k<<<ctas, 128, smem>>>(tmap, dkv, didx, bad, 0);
            cudaEventRecord(b); cudaEventSynchronize(b);
            float ms; cudaEventElapsedTime(&ms, a, b); ms /= reps;
            const double bytes = (double)ctas * BLOCKS * 64 * 1152;
            printf("%s S=%d: %s, wrong pieces %u of %u checked; %.3f ms for %.1f GB, %.2f TB/s\n", tma ? "tma    " : "cpasync", S,
                   cudaGetErrorString(e), nbad, 256u * BLOCKS * 64 * 72, ms, bytes / 1e9, bytes / ms / 1e9);
        }
        {
            cudaFuncSetAttribute(gather_v6, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
            cudaMemset(bad, 0, 4);
            gather_v6<<<256, 384, smem>>>(dkv, didx, bad, 1);
            cudaError_t e = cudaDeviceSynchronize();
            u32 nbad = 0; cudaMemcpy(&nbad, bad, 4, cudaMemcpyDeviceToHost);
            cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
            gather_v6<<<ctas, 384, smem>>>(dkv, didx, bad, 0);
            cudaEventRecord(a);
            const int reps = 5;
            for (int i = 0; i < reps; ++i) gather_v6<<<ctas, 384, smem>>>(dkv, didx, bad, 0);
            cudaEventRecord(b); cudaEventSynchronize(b);
            float ms; cudaEventElapsedTime(&ms, a, b); ms /= reps;
            const double bytes = (double)ctas * BLOCKS * 64 * 1152;
            printf("v6-like S=%d: %s, wrong pieces %u of %u checked; %.3f ms for %.1f GB, %.2f TB/s\n", S, cudaGetErrorString(e), nbad, 256u * BLOCKS * 64 * 72, ms, bytes / 1e9, bytes / ms / 1e9);
        }
        cudaFree(dkv); cudaFree(didx);
    }
    return 0;
}
