// Helpers of the `wgmma` kernels (CUDA C++, sm_90a): asynchronous copies, proxy fences,
// warpgroup MMA synchronisation and shared-memory matrix descriptors. `dsa_kernels::
// shared::cuda`'s users put this file before each kernel's source.

#include <cuda_bf16.h>

typedef unsigned int u32;
typedef unsigned long long u64;

__device__ __forceinline__ u32 wg_smem(const void* ptr) { return (u32)__cvta_generic_to_shared(ptr); }
// 16 bytes from global to shared memory, or 16 zero bytes where `fill` is false.
__device__ __forceinline__ void wg_cp_async(u32 dst, const void* src, bool fill) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(fill ? 16 : 0) : "memory");
}
__device__ __forceinline__ void wg_cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void wg_cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }
// Makes this thread's generic-proxy writes to shared memory visible to wgmma (async proxy).
__device__ __forceinline__ void wg_fence_async_smem() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
// Pins accumulator registers in place around the asynchronous products.
__device__ __forceinline__ void wg_pin(float& x) { asm volatile("" : "+f"(x)::"memory"); }

// Descriptor of a 128-byte-swizzled operand at shared address `addr`: leading byte offset
// `lbo` (MN-major: the next 64 values of M/N; unused for K-major), stride byte offset `sbo`
// (the next 8 rows).
__device__ __forceinline__ u64 wg_desc(u32 addr, u32 lbo, u32 sbo) {
    return (u64)((addr & 0x3FFFF) >> 4) | ((u64)(lbo >> 4) << 16) | ((u64)(sbo >> 4) << 32) | (1ull << 62);
}

// Eight accumulator registers d[i..i+8] as in-out operands of a wgmma asm statement.
#define WG_ACC8(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])
