// The parts of the sparse MLA kernels on `wgmma` (forward: wgmma_fwd_d576.cu, backward:
// wgmma_bwd_d576.cu) that both use: the launch parameters, the producer's slot lookups,
// the CTA's coordinates, mbarriers and named barriers, the m64n64 and m64n256 products, exp2
// and bf16 packing. Comes after shared/wgmma.cuh, before either kernel.

#define DSA_DV 512
#define DSA_HEADS 64

// Parameters, one 64-bit word each (see `WgmmaMlaParams` in sparse_mla/wgmma.rs).
struct DsaMlaParams {
    u64 bt_len, t_len, heads, kk, s_len;
    u64 q_sb, q_st, q_sh, kv_sb, kv_ss;
    u64 scale_bits, idx_bytes, valid_bytes;
};

// The rows of the latent that the 8 slots `first + 16 j + 64 k` (j < 4, k < 2) of token `bt`
// read: -1 for an invalid slot (or one past `kk`), -2 for a valid slot past the latent (a zero
// row that still takes part in the softmax). Every load is issued before any is used, and the
// width switches sit outside the loops: a load behind a branch on another's value waits for it,
// and 16 such waits in a row held the producer.
__device__ __forceinline__ void dsa_slot_rows(const void* idx, const void* valid, const DsaMlaParams& p, u64 bt, u64 first, long long (&rows)[2][4]) {
    u64 at[8];
    bool ok[8];
    long long r[8];
#pragma unroll
    for (u32 i = 0; i < 8; ++i) {
        const u64 slot = first + 16 * (i % 4) + 64 * (i / 4);
        at[i] = bt * p.kk + (slot < p.kk ? slot : p.kk - 1);
    }
    if (p.valid_bytes == 1) {
#pragma unroll
        for (u32 i = 0; i < 8; ++i) ok[i] = ((const unsigned char*)valid)[at[i]] != 0;
    } else if (p.valid_bytes == 4) {
#pragma unroll
        for (u32 i = 0; i < 8; ++i) ok[i] = ((const u32*)valid)[at[i]] != 0;
    } else {
#pragma unroll
        for (u32 i = 0; i < 8; ++i) ok[i] = ((const u64*)valid)[at[i]] != 0;
    }
    if (p.idx_bytes == 8) {
#pragma unroll
        for (u32 i = 0; i < 8; ++i) r[i] = ((const long long*)idx)[at[i]];
    } else {
#pragma unroll
        for (u32 i = 0; i < 8; ++i) r[i] = ((const int*)idx)[at[i]];
    }
#pragma unroll
    for (u32 i = 0; i < 8; ++i) {
        const bool in = first + 16 * (i % 4) + 64 * (i / 4) < p.kk && ok[i];
        rows[i / 4][i % 4] = !in ? -1 : (r[i] >= 0 && (u64)r[i] < p.s_len) ? r[i] : -2;
    }
}

// The CTA's token and first head. A token's head-group CTAs are neighbours in launch order,
// so that they run together and the second finds the token's rows in L2. Read from the CTA
// index where used (volatile: not held in a register across the main loop).
__device__ __forceinline__ void dsa_cta_coords(const DsaMlaParams& p, u64& bt, u32& h0) {
    u32 x;
    asm volatile("mov.u32 %0, %%ctaid.x;\n" : "=r"(x));
    const u32 groups = (u32)((p.heads + DSA_HEADS - 1) / DSA_HEADS);
    bt = x / groups;
    h0 = (x % groups) * DSA_HEADS;
}

// D (64 x 256, f32) (+)= A (64 x 16, bf16, descriptor) * B (16 x 256, bf16, descriptor, MN-major).
__device__ __forceinline__ void wgmma_m64n256_mnmajor(float* d, u64 desc_a, u64 desc_b, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, %128, %129, p, 1, 1, 0, 1;\n}\n"
        : WG_ACC8(0), WG_ACC8(8), WG_ACC8(16), WG_ACC8(24), WG_ACC8(32), WG_ACC8(40), WG_ACC8(48), WG_ACC8(56), WG_ACC8(64), WG_ACC8(72), WG_ACC8(80), WG_ACC8(88), WG_ACC8(96), WG_ACC8(104), WG_ACC8(112), WG_ACC8(120)
        : "l"(desc_a), "l"(desc_b), "r"(accumulate));
}

#define DSA_THREADS 384
#define DSA_TILE (64 * 128)

__device__ __forceinline__ void dsa_bar_init(u32 bar, u32 count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void dsa_bar_arrive(u32 bar) {
    asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}\n" ::"r"(bar) : "memory");
}
// Arrives on `bar` when this thread's earlier cp.async copies have landed (not counted
// in advance: the barrier's count includes this arrival).
__device__ __forceinline__ void dsa_bar_arrive_copies(u32 bar) {
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void dsa_bar_wait(u32 bar, u32 parity) {
    asm volatile(
        "{\n.reg .pred done;\nWAIT:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
        "@!done bra WAIT;\n}\n" ::"r"(bar),
        "r"(parity)
        : "memory");
}
// Named barriers over the two math warpgroups (256 threads).
template <int ID> __device__ __forceinline__ void dsa_arrive() { asm volatile("bar.arrive %0, 256;\n" ::"n"(ID) : "memory"); }
template <int ID> __device__ __forceinline__ void dsa_sync() { asm volatile("bar.sync %0, 256;\n" ::"n"(ID) : "memory"); }

// D (64 x 64, f32) (+)= A (64 x 16, bf16, descriptor) * B (16 x 64, bf16, descriptor): both
// K-major, or MN-major (transposed) where TA / TB is 1.
template <int TA = 0, int TB = 0> __device__ __forceinline__ void dsa_wgmma_s(float* d, u64 desc_a, u64 desc_b, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, "
        "%23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, %35, %36;\n}\n"
        : WG_ACC8(0), WG_ACC8(8), WG_ACC8(16), WG_ACC8(24)
        : "l"(desc_a), "l"(desc_b), "r"(accumulate), "n"(TA), "n"(TB));
}

__device__ __forceinline__ float dsa_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

__device__ __forceinline__ u32 dsa_pack(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(u32*)&v;
}
