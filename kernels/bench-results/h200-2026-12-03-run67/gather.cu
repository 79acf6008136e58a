// Run 67: which part of v6's structure slows the sparse MLA forward's row gathers? (Run 66:
// 2.02 ms for the 19.3 GB of a 4K prefill by cp.async in a plain double buffer, 5.89 ms inside
// v6 with its math removed.) Every kernel copies, per CTA, 32 blocks of 64 selected latent rows
// (576 bf16 = 9 pieces of 64 values) into two 73.7 KB buffers in wgmma's 128-byte-swizzled
// layout (piece c of row r of a 64-row tile at r * 128 + ((c ^ (r % 8)) << 4)), no math;
// 8192 CTAs (4K tokens x 2 head groups, a token's two CTAs adjacent and reading the same rows).
// - plain<HINT>: 128 threads, run 66's cpasync double buffer; HINT: FlashMLA's copy
//   (cp.async.cg ... L2::cache_hint.L2::256B with an evict_last policy);
// - v6<MODE>: 384 threads, warpgroup 2 the producer exactly as the landed v6 (two blocks per
//   iteration into k0 / k1, each in halves dims 0..255 / 256..575, ready/free mbarriers, issue
//   order k0a k1b k0b k1a, setmaxnreg), warpgroup 0 consuming k0 and warpgroup 1 k1:
//   MODE 0: a consumer waits both halves of its buffer, then frees both (run 62's DIAG=2);
//   MODE 1: as 0 with FlashMLA's copy hints;
//   MODE 2: a consumer frees each half as soon as it has landed;
//   MODE 3: as 0 with v6's real slot lookup (i64 indices, byte validity with 1/16 invalid slots
//   zero-filled, row stride 640 values as run 62's harness);
//   MODE 4: as 3 with the CTAs in run 62's order (grid (T, 2): all tokens' first head group,
//   then the second); MODE 5: as 3 with the consumers' waits and frees crossed as in v6
//   (warpgroup 0: k0a, k0b, free k0a, k1a, free k1a; warpgroup 1: k1b, free, k0b, free); "smem 231 KB": MODE 3 with v6's dynamic shared memory size (231368 bytes; a first try asked 236544, over the limit, and did not launch).
// Every byte of the first 256 CTAs' buffers is checked against the source rows.
// nvcc -std=c++17 -gencode arch=compute_90a,code=sm_90a -O3 -o g gather.cu && ./g
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <random>
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
__device__ __forceinline__ void bar_arrive(u32 bar) { asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}\n" ::"r"(bar) : "memory"); }
__device__ __forceinline__ void bar_arrive_copies(u32 bar) { asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory"); }
template <bool HINT> __device__ __forceinline__ void cp16(u32 dst, const void* src, bool fill, u64 pol) {
    if (HINT)
        asm volatile("cp.async.cg.shared.global.L2::cache_hint.L2::256B [%0], [%1], 16, %2, %3;\n" ::"r"(dst), "l"(src), "r"(fill ? 16 : 0), "l"(pol) : "memory");
    else
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(fill ? 16 : 0) : "memory");
}
__device__ __forceinline__ u64 evict_last() {
    u64 pol;
    asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;\n" : "=l"(pol));
    return pol;
}

struct Src {
    const __nv_bfloat16* kv;
    const int* idx32;             // plain, MODE 0-2
    const long long* idx64;       // MODE 3
    const unsigned char* valid;   // MODE 3
    u32 stride;                   // values per latent row
};
// The row of slot `k` of CTA `cta`'s list, -1 for an invalid slot.
template <bool REAL> __device__ __forceinline__ long long slot_row(const Src& s, u64 cta, u32 k) {
    const u64 at = cta * BLOCKS * 64 + k;
    if (!REAL) return s.idx32[at];
    return s.valid[at] ? s.idx64[at] : -1;
}

// Counts wrong 16-byte pieces of block `blk` in `buf` (zero for an invalid slot).
template <bool REAL> __device__ void verify(const unsigned char* buf, const Src& s, u64 cta, u32 blk, u32 tid, u32 nthreads, u32* bad) {
    for (u32 i = tid; i < 64 * 72; i += nthreads) {
        const u32 r = i / 72, t = (i % 72) / 8, c = i % 8;
        const uint4 got = *(const uint4*)(buf + t * TILE + r * 128 + ((c ^ (r & 7)) << 4));
        const long long row = slot_row<REAL>(s, cta, blk * 64 + r);
        const uint4 want = row >= 0 ? *(const uint4*)(s.kv + (u64)row * s.stride + t * 64 + c * 8) : make_uint4(0, 0, 0, 0);
        if (got.x != want.x || got.y != want.y || got.z != want.z || got.w != want.w) atomicAdd(bad, 1u);
    }
}

template <bool HINT>
__global__ void __launch_bounds__(128, 1) plain(const Src s, u32* bad, int check) {
    extern __shared__ __align__(1024) unsigned char raw[];
    unsigned char* base = raw + ((1024 - (smem_u32(raw) & 1023)) & 1023);
    __shared__ __align__(8) u64 full[2];
    const u32 tid = threadIdx.x;
    const u64 pol = evict_last();
    if (tid == 0) {
        bar_init(smem_u32(&full[0]), 128);
        bar_init(smem_u32(&full[1]), 128);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
    auto issue = [&](u32 blk, u32 b) {
        const u32 dst = smem_u32(base + b * BUF), c = tid % 8, rg = tid / 8;
        for (u32 j = 0; j < 4; ++j) {
            const u32 r = rg + 16 * j;
            const __nv_bfloat16* src = s.kv + (u64)slot_row<false>(s, blockIdx.x, blk * 64 + r) * s.stride + c * 8;
            for (u32 t = 0; t < 9; ++t) cp16<HINT>(dst + t * TILE + r * 128 + ((c ^ (r & 7)) << 4), src + t * 64, true, pol);
        }
        bar_arrive_copies(smem_u32(&full[b]));
    };
    issue(0, 0);
    issue(1, 1);
    for (u32 i = 0; i < BLOCKS; ++i) {
        const u32 b = i & 1;
        bar_wait(smem_u32(&full[b]), (i >> 1) & 1);
        if (check) verify<false>(base + b * BUF, s, blockIdx.x, i, tid, 128, bad);
        __syncthreads();
        if (i + 2 < BLOCKS) issue(i + 2, b);
    }
    asm volatile("cp.async.wait_all;\n" ::: "memory");
}

template <int MODE>
__global__ void __launch_bounds__(384, 1) v6(const Src s, u32* bad, int check) {
    constexpr bool HINT = MODE == 1, REAL = MODE >= 3;
    const u64 cta = MODE == 4 ? (u64)(blockIdx.x % (gridDim.x / 2)) * 2 + blockIdx.x / (gridDim.x / 2) : blockIdx.x;
    extern __shared__ __align__(1024) unsigned char raw[];
    unsigned char* base = raw + ((1024 - (smem_u32(raw) & 1023)) & 1023);
    __shared__ __align__(8) u64 bars[8];  // ready[buf][half], free[buf][half]
    const u32 tid = threadIdx.x, wg = __shfl_sync(0xffffffff, tid / 128, 0), wtid = tid % 128;
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
        const u64 pol = evict_last();
        const u32 c = wtid % 8, rg = wtid / 8;
        long long rows[2][4];
        auto load_rows = [&](u32 it) {
#pragma unroll
            for (u32 b = 0; b < 2; ++b)
#pragma unroll
                for (u32 j = 0; j < 4; ++j) rows[b][j] = slot_row<REAL>(s, cta, (2 * it + b) * 64 + rg + 16 * j);
        };
        auto copy = [&](u32 b, u32 t0, u32 t1) {
#pragma unroll
            for (u32 j = 0; j < 4; ++j) {
                const u32 r = rg + 16 * j;
                const long long row = rows[b][j];
                const __nv_bfloat16* src = s.kv + (u64)(row >= 0 ? row : 0) * s.stride + c * 8;
#pragma unroll
                for (u32 t = t0; t < t1; ++t) cp16<HINT>(smem_u32(base + b * BUF) + t * TILE + r * 128 + ((c ^ (r & 7)) << 4), src + t * 64, row >= 0, pol);
            }
        };
        load_rows(0);
        u32 phase = 1;
        for (u32 it = 0; it < iters; ++it) {
            bar_wait(freed(0, 0), phase); copy(0, 0, 4); bar_arrive_copies(ready(0, 0));
            bar_wait(freed(1, 1), phase); copy(1, 4, 9); bar_arrive_copies(ready(1, 1));
            bar_wait(freed(0, 1), phase); copy(0, 4, 9); bar_arrive_copies(ready(0, 1));
            bar_wait(freed(1, 0), phase); copy(1, 0, 4); bar_arrive_copies(ready(1, 0));
            if (it + 1 < iters) load_rows(it + 1);
            phase ^= 1;
        }
        asm volatile("cp.async.wait_all;\n" ::: "memory");
        return;
    }
    asm volatile("setmaxnreg.inc.sync.aligned.u32 216;\n");
    const u32 b = wg;
    for (u32 it = 0; it < iters; ++it) {
        if (MODE == 5 && !check) {
            if (wg == 0) {
                bar_wait(ready(0, 0), it & 1);
                bar_wait(ready(0, 1), it & 1);
                bar_arrive(freed(0, 0));
                bar_wait(ready(1, 0), it & 1);
                bar_arrive(freed(1, 0));
            } else {
                bar_wait(ready(1, 1), it & 1);
                bar_arrive(freed(1, 1));
                bar_wait(ready(0, 1), it & 1);
                bar_arrive(freed(0, 1));
            }
            continue;
        }
        if (MODE == 2) {
            bar_wait(ready(b, 0), it & 1);
            if (!check) bar_arrive(freed(b, 0));
            bar_wait(ready(b, 1), it & 1);
            if (!check) bar_arrive(freed(b, 1));
        } else {
            bar_wait(ready(b, 0), it & 1);
            bar_wait(ready(b, 1), it & 1);
        }
        if (check) verify<REAL>(base + b * BUF, s, cta, 2 * it + b, wtid, 128, bad);
        if (check || MODE != 2) {
            if (check) asm volatile("bar.sync %0, 128;\n" ::"r"(1 + b) : "memory");
            bar_arrive(freed(b, 0));
            bar_arrive(freed(b, 1));
        }
    }
}

int main() {
    const int smem = 2 * BUF + 1024;
    u32* bad;
    cudaMalloc(&bad, 4);
    const int T = 4096, ctas = T * 2;
    for (int S : {4096, 131072}) {
        for (int real = 0; real < 2; ++real) {
            const u32 stride = real ? 640 : 576;
            std::mt19937 g(S + real);
            std::vector<__nv_bfloat16> kv((size_t)S * stride);
            for (size_t i = 0; i < kv.size(); ++i) kv[i] = __float2bfloat16((float)(int)(g() % 2001) - 1000.0f);
            const size_t n = (size_t)ctas * BLOCKS * 64;
            std::vector<int> idx(n);
            std::vector<long long> idx64(n);
            std::vector<unsigned char> valid(n);
            for (int t = 0; t < T; ++t)
                for (int k = 0; k < BLOCKS * 64; ++k) {
                    const int row = g() % S;
                    const unsigned char ok = real ? (g() % 16 != 0) : 1;
                    for (int h = 0; h < 2; ++h) {
                        const size_t at = ((size_t)2 * t + h) * BLOCKS * 64 + k;
                        idx[at] = row; idx64[at] = row; valid[at] = ok;
                    }
                }
            Src s{};
            s.stride = stride;
            cudaMalloc(&s.kv, kv.size() * 2);
            cudaMalloc(&s.idx32, n * 4);
            cudaMalloc(&s.idx64, n * 8);
            cudaMalloc(&s.valid, n);
            cudaMemcpy((void*)s.kv, kv.data(), kv.size() * 2, cudaMemcpyHostToDevice);
            cudaMemcpy((void*)s.idx32, idx.data(), n * 4, cudaMemcpyHostToDevice);
            cudaMemcpy((void*)s.idx64, idx64.data(), n * 8, cudaMemcpyHostToDevice);
            cudaMemcpy((void*)s.valid, valid.data(), n, cudaMemcpyHostToDevice);
            struct K { const char* name; void (*k)(const Src, u32*, int); int threads; int smem; };
            std::vector<K> ks;
            if (!real) ks = {{"plain", plain<false>, 128, smem}, {"v6 mode0", v6<0>, 384, smem}, {"v6 mode2 free-halves", v6<2>, 384, smem}};
            else ks = {{"v6 mode3 real-lookup", v6<3>, 384, smem}, {"v6 mode3 smem 225.9 KB", v6<3>, 384, 231368}, {"v6 mode4 order (T,2)", v6<4>, 384, smem}, {"v6 mode5 crossed frees", v6<5>, 384, smem}, {"v6 mode5 smem 225.9 KB", v6<5>, 384, 231368}};
            for (auto& k : ks) {
                cudaFuncSetAttribute(k.k, cudaFuncAttributeMaxDynamicSharedMemorySize, k.smem);
                cudaMemset(bad, 0, 4);
                k.k<<<256, k.threads, k.smem>>>(s, bad, 1);
                cudaError_t e = cudaGetLastError();
                if (e == cudaSuccess) e = cudaDeviceSynchronize();
                u32 nbad = 0;
                cudaMemcpy(&nbad, bad, 4, cudaMemcpyDeviceToHost);
                cudaEvent_t a, b;
                cudaEventCreate(&a); cudaEventCreate(&b);
                k.k<<<ctas, k.threads, k.smem>>>(s, bad, 0);
                cudaEventRecord(a);
                const int reps = 5;
                for (int i = 0; i < reps; ++i) k.k<<<ctas, k.threads, k.smem>>>(s, bad, 0);
                cudaEventRecord(b); cudaEventSynchronize(b);
                float ms; cudaEventElapsedTime(&ms, a, b); ms /= reps;
                const double bytes = (double)ctas * BLOCKS * 64 * 1152;
                printf("%-24s S=%6d: %s, wrong pieces %u of %u; %.3f ms, %.2f TB/s\n", k.name, S, cudaGetErrorString(e), nbad, 256u * BLOCKS * 64 * 72, ms, bytes / ms / 1e9);
            }
            cudaFree((void*)s.kv); cudaFree((void*)s.idx32); cudaFree((void*)s.idx64); cudaFree((void*)s.valid);
        }
    }
    return 0;
}
