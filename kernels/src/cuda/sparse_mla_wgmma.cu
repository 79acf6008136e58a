// Sparse MLA forward on Hopper's warpgroup tensor cores (`wgmma`), v5: the contract of the
// CubeCL forwards (`q [B,T,H,576]`, `kv [B,S,576]`, `idx`/`valid [B,T,K]` -> `out
// [B,T,H,512]`, `lse [B,T,H]`, bf16) for sm_90a, which CubeCL 0.10 cannot emit. Launched
// through CubeCL's CUDA runtime by `dsa_kernels::raw_cuda`; see `sparse_mla_wgmma.rs`.
//
// One CTA of two warpgroups per (token, 64 heads). The query tile (64 heads x 576) and two
// chunks of 64 gathered latent rows live in shared memory in the 128-byte-swizzled layout
// that wgmma reads: nine column blocks of 64 values, each `rows x 128 B`, the 16-byte
// pieces of row r XOR-ed with r % 8. One chunk's rows serve both products: as K-major B of
// `S = Q K^T` and, transposed, as MN-major B of `O += P V`. Per chunk:
// 1. warpgroup w: S_w = Q K_w^T for the chunk's keys 32w..32w+31 (36 m64n32k16 steps);
// 2. the scaled, masked row maxima of both warpgroups meet in shared memory;
// 3. P = exp(s - m) (f32 sums kept per warpgroup), rounded to bf16 into shared memory;
// 4. warpgroup w: O_w += P V[:, 256w..256w+255] (4 m64n256k16 steps), O_w (64 x 256 f32,
//    128 registers a thread) held for the whole kernel.
// The next chunk's rows are copied (cp.async, zero-filled for invalid slots) while the
// current one is computed. The rows' indices are read two chunks ahead.

#define DSA_D 576
#define DSA_DV 512
#define DSA_HEADS 64
#define DSA_CHUNK 64
#define DSA_THREADS 256
#define DSA_BLOCKS (DSA_D / 64)
// One tile of `DSA_CHUNK` (or `DSA_HEADS`) rows of 576 values in the swizzled layout.
#define DSA_TILE_BYTES (DSA_BLOCKS * 64 * 128)
#define DSA_P_OFF (3 * DSA_TILE_BYTES)
#define DSA_RED_OFF (DSA_P_OFF + 64 * 128)
#define DSA_ROWS_OFF (DSA_RED_OFF + 2 * 64 * 4)
// Shared memory a CTA asks for (the layout plus 1 KiB to align its start to 1 KiB).
#define DSA_SMEM_BYTES (DSA_ROWS_OFF + 2 * DSA_CHUNK * 8 + 1024)

// Parameters, one 64-bit word each (see `WgmmaMlaParams` in sparse_mla_wgmma.rs).
struct DsaMlaParams {
    u64 bt_len, t_len, heads, kk, s_len;
    u64 q_sb, q_st, q_sh, kv_sb, kv_ss;
    u64 scale_bits, idx_bytes, valid_bytes;
};

// The row of the latent that slot `slot` of token `bt` reads, -1 for an invalid slot, -2 for
// a valid slot past the latent (a zero row that still takes part in the softmax).
__device__ __forceinline__ long long dsa_slot_row(const void* idx, const void* valid, const DsaMlaParams& p, u64 bt, u64 slot) {
    if (slot >= p.kk) return -1;
    u64 at = bt * p.kk + slot;
    bool ok = p.valid_bytes == 1 ? ((const unsigned char*)valid)[at] != 0
            : p.valid_bytes == 4 ? ((const u32*)valid)[at] != 0
                                 : ((const u64*)valid)[at] != 0;
    if (!ok) return -1;
    long long r = p.idx_bytes == 8 ? ((const long long*)idx)[at] : (long long)((const int*)idx)[at];
    return (r >= 0 && (u64)r < p.s_len) ? r : -2;
}

// Barrier 1 over both warpgroups (barrier 0 is __syncthreads).
__device__ __forceinline__ void dsa_bar_both() { asm volatile("bar.sync 1, 256;\n" ::: "memory"); }

// D (64 x 32, f32) (+)= A (64 x 16, bf16, descriptor) * B (16 x 32, bf16, descriptor, K-major).
__device__ __forceinline__ void wgmma_m64n32_kmajor(float* d, u64 desc_a, u64 desc_b, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1, 0, 0;\n}\n"
        : WG_ACC8(0), WG_ACC8(8)
        : "l"(desc_a), "l"(desc_b), "r"(accumulate));
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


extern "C" __global__ void __launch_bounds__(DSA_THREADS, 1) dsa_sparse_mla_fwd_wgmma(
    const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ kv, const void* __restrict__ idx,
    const void* __restrict__ valid, __nv_bfloat16* __restrict__ out, __nv_bfloat16* __restrict__ lse,
    const __grid_constant__ DsaMlaParams p) {
    extern __shared__ __align__(1024) unsigned char dsa_smem_raw[];
    const u64 bt = blockIdx.x;
    if (bt >= p.bt_len) return;
    const u32 h0 = blockIdx.y * DSA_HEADS;
    const u32 tid = threadIdx.x;
    const u32 wg = tid / 128;
    const u32 wtid = tid % 128;
    const u32 lane = tid % 32;
    // Rows `ra`, `ra + 8` of the 64-row accumulators; columns `2 tg`, `2 tg + 1` of each 8.
    const u32 ra = (wtid / 32) * 16 + lane / 4;
    const u32 tg = lane % 4;
    const float scale = __uint_as_float((u32)p.scale_bits);
    const float neg_inf = -__int_as_float(0x7f800000);
    const u64 b = bt / p.t_len;
    const u64 t = bt % p.t_len;
    const u32 heads = (u32)p.heads;

    const u32 base_addr = (wg_smem(dsa_smem_raw) + 1023) & ~1023u;
    unsigned char* base = dsa_smem_raw + (base_addr - wg_smem(dsa_smem_raw));
    const u32 q_addr = base_addr;
    const u32 kv_addr0 = base_addr + DSA_TILE_BYTES;
    const u32 p_addr = base_addr + DSA_P_OFF;
    float* red = (float*)(base + DSA_RED_OFF);
    long long* rows_sh = (long long*)(base + DSA_ROWS_OFF);

    const u32 nchunks = (u32)((p.kk + DSA_CHUNK - 1) / DSA_CHUNK);
    const __nv_bfloat16* kv_b = kv + b * p.kv_sb;

    // The query tile (heads past `heads` read as zeros), the first chunks' rows.
    const __nv_bfloat16* q_bt = q + b * p.q_sb + t * p.q_st;
    // Thread `tid` copies pieces `tid % 4 + 4u` (u < 18) of row `tid / 4` of a tile.
    const u32 my_row = tid / 4;
    const u32 x_even = ((tid % 4) ^ (my_row & 7)) << 4;
    const u32 x_odd = ((tid % 4 + 4) ^ (my_row & 7)) << 4;
    const u32 my_dst = my_row * 128;
    auto copy_row = [&](u32 tile, const __nv_bfloat16* src, bool fill) {
        src += (tid % 4) * 8;
#pragma unroll
        for (u32 u = 0; u < 18; ++u)
            wg_cp_async(tile + my_dst + (u / 2) * (64 * 128) + (u % 2 ? x_odd : x_even), src + u * 32, fill);
    };
    {
        bool live = h0 + my_row < heads;
        copy_row(q_addr, q_bt + (u64)(live ? h0 + my_row : 0) * p.q_sh, live);
    }
    if (tid < DSA_CHUNK) {
        rows_sh[tid] = dsa_slot_row(idx, valid, p, bt, tid);
        rows_sh[DSA_CHUNK + tid] = dsa_slot_row(idx, valid, p, bt, DSA_CHUNK + tid);
    }
    __syncthreads();
    auto issue = [&](u32 chunk) {
        const long long* rows = rows_sh + (chunk & 1) * DSA_CHUNK;
        long long row = rows[my_row];
        copy_row(kv_addr0 + (chunk & 1) * DSA_TILE_BYTES, kv_b + (u64)(row >= 0 ? row : 0) * p.kv_ss, row >= 0);
        wg_cp_commit();
    };
    issue(0);

    float o[128];
#pragma unroll
    for (int i = 0; i < 128; ++i) o[i] = 0.0f;
    float m_a = neg_inf, m_b = neg_inf, l_a = 0.0f, l_b = 0.0f;

    for (u32 c = 0; c < nchunks; ++c) {
        const u32 s = c & 1;
        // Everyone is done with chunk c - 1 (its buffer, P, the maxima): copy chunk c + 1.
        __syncthreads();
        if (c + 1 < nchunks) {
            issue(c + 1);
            wg_cp_wait<1>();
        } else {
            wg_cp_wait<0>();
        }
        wg_fence_async_smem();
        __syncthreads();

        const u32 kv_addr = kv_addr0 + s * DSA_TILE_BYTES;
        float sc[16];
#pragma unroll
        for (int i = 0; i < 16; ++i) sc[i] = 0.0f;
#pragma unroll
        for (int i = 0; i < 16; ++i) wg_pin(sc[i]);
        wgmma_fence();
        // Descriptors advance by adding 16-byte units to their start address field.
        const u64 qd = wg_desc(q_addr, 16, 1024);
        const u64 kd = wg_desc(kv_addr + wg * 32 * 128, 16, 1024);
#pragma unroll
        for (u32 blk = 0; blk < DSA_BLOCKS; ++blk) {
#pragma unroll
            for (u32 ks = 0; ks < 4; ++ks) {
                u64 off = (blk * (64 * 128) + ks * 32) >> 4;
                wgmma_m64n32_kmajor(sc, qd + off, kd + off, blk + ks > 0);
            }
        }
        wgmma_commit();
        wgmma_wait0();
#pragma unroll
        for (int i = 0; i < 16; ++i) wg_pin(sc[i]);

        // Scaled scores, -inf at invalid slots; this warpgroup's row maxima.
        const long long* rows = rows_sh + s * DSA_CHUNK;
        float mx_a = neg_inf, mx_b = neg_inf;
#pragma unroll
        for (u32 j = 0; j < 4; ++j) {
#pragma unroll
            for (u32 e = 0; e < 2; ++e) {
                u32 key = wg * 32 + j * 8 + 2 * tg + e;
                bool ok = rows[key] != -1 && c * DSA_CHUNK + key < p.kk;
                sc[j * 4 + e] = ok ? sc[j * 4 + e] * scale : neg_inf;
                sc[j * 4 + 2 + e] = ok ? sc[j * 4 + 2 + e] * scale : neg_inf;
                mx_a = fmaxf(mx_a, sc[j * 4 + e]);
                mx_b = fmaxf(mx_b, sc[j * 4 + 2 + e]);
            }
        }
        mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffff, mx_a, 1));
        mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffff, mx_a, 2));
        mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffff, mx_b, 1));
        mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffff, mx_b, 2));
        if (tg == 0) {
            red[wg * 64 + ra] = mx_a;
            red[wg * 64 + ra + 8] = mx_b;
        }
        dsa_bar_both();
        // Both warpgroups see the same maxima, so their P share one reference.
        const float n_a = fmaxf(m_a, fmaxf(red[ra], red[64 + ra]));
        const float n_b = fmaxf(m_b, fmaxf(red[ra + 8], red[64 + ra + 8]));
        const float u_a = n_a == neg_inf ? 0.0f : n_a;
        const float u_b = n_b == neg_inf ? 0.0f : n_b;
        const float f_a = __expf(m_a - u_a);
        const float f_b = __expf(m_b - u_b);
        m_a = n_a;
        m_b = n_b;
        float p_a = 0.0f, p_b = 0.0f;
#pragma unroll
        for (u32 j = 0; j < 4; ++j) {
            float x0 = __expf(sc[j * 4 + 0] - u_a), x1 = __expf(sc[j * 4 + 1] - u_a);
            float y0 = __expf(sc[j * 4 + 2] - u_b), y1 = __expf(sc[j * 4 + 3] - u_b);
            p_a += x0 + x1;
            p_b += y0 + y1;
            u32 key = wg * 32 + j * 8 + 2 * tg;
            u32 piece = key / 8;
            __nv_bfloat162 pa = __floats2bfloat162_rn(x0, x1);
            __nv_bfloat162 pb = __floats2bfloat162_rn(y0, y1);
            *(__nv_bfloat162*)(base + DSA_P_OFF + ra * 128 + ((piece ^ (ra & 7)) << 4) + (key % 8) * 2) = pa;
            *(__nv_bfloat162*)(base + DSA_P_OFF + (ra + 8) * 128 + ((piece ^ ((ra + 8) & 7)) << 4) + (key % 8) * 2) = pb;
        }
        l_a = l_a * f_a + p_a;
        l_b = l_b * f_b + p_b;
        // O's rows by their factor; accumulator register 4n + {0,1} is row ra, {2,3} row ra + 8.
#pragma unroll
        for (int n = 0; n < 32; ++n) {
            o[4 * n + 0] *= f_a;
            o[4 * n + 1] *= f_a;
            o[4 * n + 2] *= f_b;
            o[4 * n + 3] *= f_b;
        }
        // This chunk's rows are no longer needed: read those of chunk c + 2 in their place.
        if (tid < DSA_CHUNK && c + 2 < nchunks) rows_sh[s * DSA_CHUNK + tid] = dsa_slot_row(idx, valid, p, bt, (u64)(c + 2) * DSA_CHUNK + tid);
        wg_fence_async_smem();
        dsa_bar_both();

#pragma unroll
        for (int i = 0; i < 128; ++i) wg_pin(o[i]);
        wgmma_fence();
#pragma unroll
        for (u32 ks = 0; ks < DSA_CHUNK / 16; ++ks) {
            wgmma_m64n256_mnmajor(o, wg_desc(p_addr + ks * 32, 16, 1024),
                                  wg_desc(kv_addr + wg * 4 * (64 * 128) + ks * 16 * 128, 64 * 128, 1024), 1);
        }
        wgmma_commit();
        wgmma_wait0();
#pragma unroll
        for (int i = 0; i < 128; ++i) wg_pin(o[i]);
    }

    // out = O / l, lse = m + ln l (0 and -inf for a head with no valid slot); l is summed
    // over the quad, then over both warpgroups.
    l_a += __shfl_xor_sync(0xffffffff, l_a, 1);
    l_a += __shfl_xor_sync(0xffffffff, l_a, 2);
    l_b += __shfl_xor_sync(0xffffffff, l_b, 1);
    l_b += __shfl_xor_sync(0xffffffff, l_b, 2);
    __syncthreads();
    if (tg == 0) {
        red[wg * 64 + ra] = l_a;
        red[wg * 64 + ra + 8] = l_b;
    }
    __syncthreads();
    l_a = red[ra] + red[64 + ra];
    l_b = red[ra + 8] + red[64 + ra + 8];
    const float inv_a = l_a > 0.0f ? 1.0f / l_a : 0.0f;
    const float inv_b = l_b > 0.0f ? 1.0f / l_b : 0.0f;
    const u32 ha = h0 + ra, hb = h0 + ra + 8;
    __nv_bfloat16* out_a = out + (bt * heads + ha) * DSA_DV + wg * 256;
    __nv_bfloat16* out_b = out + (bt * heads + hb) * DSA_DV + wg * 256;
#pragma unroll
    for (u32 n = 0; n < 32; ++n) {
        u32 col = n * 8 + 2 * tg;
        if (ha < heads) *(__nv_bfloat162*)(out_a + col) = __floats2bfloat162_rn(o[4 * n] * inv_a, o[4 * n + 1] * inv_a);
        if (hb < heads) *(__nv_bfloat162*)(out_b + col) = __floats2bfloat162_rn(o[4 * n + 2] * inv_b, o[4 * n + 3] * inv_b);
    }
    if (wg == 0 && tg == 0) {
        if (ha < heads) lse[bt * heads + ha] = __float2bfloat16(l_a > 0.0f ? m_a + __logf(l_a) : neg_inf);
        if (hb < heads) lse[bt * heads + hb] = __float2bfloat16(l_b > 0.0f ? m_b + __logf(l_b) : neg_inf);
    }
}
