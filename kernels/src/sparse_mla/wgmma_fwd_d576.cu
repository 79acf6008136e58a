// Sparse MLA forward on Hopper's warpgroup tensor cores (`wgmma`): the contract of the
// CubeCL forwards (`q [B,T,H,576]`, `kv [B,S,576]`, `idx`/`valid [B,T,K]` -> `out
// [B,T,H,512]`, `lse [B,T,H]`, bf16) for sm_90a, which CubeCL 0.10 cannot emit. Launched
// through CubeCL's CUDA runtime by `dsa_kernels::sparse_mla::wgmma`. Warp-specialised, after
// the scheme of FlashMLA's SM90 sparse prefill.
//
// One CTA of three warpgroups per (token, 64 heads), a token's CTAs adjacent in the grid:
// - WG2, the producer (72 registers), gathers the selected latent rows of two blocks of 64
//   slots into two buffers k0, k1 with cp.async, each buffer in two halves (dims 0..255 and
//   256..575) with ready/free mbarriers, and writes the slots' validity;
// - WG0 computes S0 = Q K0^T (64 heads x 64 slots, m64n64k16) and WG1 S1 = Q K1^T; the online
//   softmax runs WG0 then WG1 (WG1's maxima include WG0's, through shared memory);
// - WG0 accumulates O[:, 0..255] and WG1 O[:, 256..511]: each multiplies its own P from
//   registers (wgmma RS) with its half of its own block's V, and the other's P (written to
//   shared memory, WG0's into k0's RoPE tile, no longer needed) with its half of the other
//   block's V. WG0 issues the next S0 while its last product runs.
// The query tile and the buffers live in the 128-byte-swizzled layout that wgmma reads: nine
// column blocks of 64 values, each `64 rows x 128 B`, the 16-byte pieces of row r XOR-ed with
// r % 8; a buffer serves both products, as K-major B of S and, transposed, as MN-major B of
// P V. Scores are kept in log2 units. Helpers: shared/wgmma.cuh and wgmma_d576.cuh.

#define DSA_BUF (9 * DSA_TILE)
#define DSA_K0 DSA_BUF
#define DSA_K1 (2 * DSA_BUF)
#define DSA_S1 (3 * DSA_BUF)
#define DSA_BARS (DSA_S1 + DSA_TILE)
// mbarriers: k0 ready (2), k0 free (2), k1 ready (2), k1 free (2), valid ready.
#define DSA_VALID (DSA_BARS + 9 * 8)
#define DSA_SM (DSA_VALID + 2 * 64)
#define DSA_SL (DSA_SM + 64 * 4)
#define DSA_SMEM_BYTES (DSA_SL + 128 * 4 + 1024)

enum { DSA_Q_READY = 1, DSA_WG0_MAX = 2, DSA_WG1_MAX = 3, DSA_WG0_P = 4, DSA_WG1_P = 5, DSA_L_READY = 6 };

// D (64 x 256, f32) += A (64 x 16, bf16, registers) * B (16 x 256, bf16, descriptor, MN-major).
__device__ __forceinline__ void dsa_wgmma_pv_rs(float* d, const u32* a, u64 desc_b) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, "
        "{%128, %129, %130, %131}, %132, 1, 1, 1, 1;\n"
        : WG_ACC8(0), WG_ACC8(8), WG_ACC8(16), WG_ACC8(24), WG_ACC8(32), WG_ACC8(40), WG_ACC8(48), WG_ACC8(56), WG_ACC8(64), WG_ACC8(72), WG_ACC8(80), WG_ACC8(88), WG_ACC8(96), WG_ACC8(104), WG_ACC8(112), WG_ACC8(120)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b));
}

extern "C" __global__ void __launch_bounds__(DSA_THREADS, 1) dsa_sparse_mla_fwd_wgmma(
    const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ kv, const void* __restrict__ idx,
    const void* __restrict__ valid, __nv_bfloat16* __restrict__ out, __nv_bfloat16* __restrict__ lse,
    const __grid_constant__ DsaMlaParams p) {
    extern __shared__ __align__(1024) unsigned char dsa_smem_raw[];
    u64 bt;
    u32 h0;
    dsa_cta_coords(p, bt, h0);
    // The warpgroup index through a shuffle, so that the compiler knows it is warp-uniform.
    const u32 tid = threadIdx.x, wg = __shfl_sync(0xffffffff, tid / 128, 0), wtid = tid % 128, lane = tid % 32;
    const float neg_inf = -__int_as_float(0x7f800000);
    const u64 b = bt / p.t_len, t = bt % p.t_len;
    const u32 heads = (u32)p.heads;
    const u32 base_addr = (wg_smem(dsa_smem_raw) + 1023) & ~1023u;
    unsigned char* base = dsa_smem_raw + (base_addr - wg_smem(dsa_smem_raw));
    const u32 q_addr = base_addr, k_addr[2] = {base_addr + DSA_K0, base_addr + DSA_K1};
    // Barrier addresses: ready[buf][half], free[buf][half], valid.
    auto ready = [&](u32 buf, u32 half) { return base_addr + DSA_BARS + (buf * 4 + half) * 8; };
    auto freed = [&](u32 buf, u32 half) { return base_addr + DSA_BARS + (buf * 4 + 2 + half) * 8; };
    const u32 valid_bar = base_addr + DSA_BARS + 8 * 8;
    unsigned char* is_valid = base + DSA_VALID;
    float* s_m = (float*)(base + DSA_SM);
    float* s_l = (float*)(base + DSA_SL);
    // Two blocks of 64 slots per iteration.
    const u32 iters = (u32)((p.kk + 127) / 128);

    if (tid == 0) {
        for (u32 buf = 0; buf < 2; ++buf)
            for (u32 half = 0; half < 2; ++half) {
                dsa_bar_init(ready(buf, half), 128);
                dsa_bar_init(freed(buf, half), 128);
            }
        dsa_bar_init(valid_bar, 128);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();

    if (wg == 2) {
        // Producer: thread `wtid` copies piece `c` (16 bytes) of each 128-byte tile row of
        // rows `rg + 16 j` of a block.
        asm volatile("setmaxnreg.dec.sync.aligned.u32 72;\n");
        const u32 c = wtid % 8, rg = wtid / 8;
        const __nv_bfloat16* kv_b = kv + b * p.kv_sb + c * 8;
        long long rows[2][4];
        auto load_rows = [&](u32 it) { dsa_slot_rows(idx, valid, p, bt, (u64)it * 128 + rg, rows); };
        auto copy = [&](u32 buf, u32 t_begin, u32 t_end) {
#pragma unroll
            for (u32 j = 0; j < 4; ++j) {
                const u32 r = rg + 16 * j;
                const long long row = rows[buf][j];
                const __nv_bfloat16* src = kv_b + (u64)(row >= 0 ? row : 0) * p.kv_ss;
#pragma unroll
                for (u32 tl = t_begin; tl < t_end; ++tl)
                    wg_cp_async(k_addr[buf] + tl * DSA_TILE + r * 128 + ((c ^ (r & 7)) << 4), src + tl * 64, row >= 0);
            }
        };
        load_rows(0);
        u32 phase = 1;
        for (u32 it = 0; it < iters; ++it) {
            dsa_bar_wait(freed(0, 0), phase);
            copy(0, 0, 4);
            dsa_bar_arrive_copies(ready(0, 0));
            dsa_bar_wait(freed(1, 1), phase);
            copy(1, 4, 9);
            dsa_bar_arrive_copies(ready(1, 1));
            dsa_bar_wait(freed(0, 1), phase);
            copy(0, 4, 9);
            dsa_bar_arrive_copies(ready(0, 1));
            dsa_bar_wait(freed(1, 0), phase);
            copy(1, 0, 4);
            dsa_bar_arrive_copies(ready(1, 0));
            // Every math thread is past the previous iteration's masks (it freed k1's halves).
            if (c == 0) {
#pragma unroll
                for (u32 buf = 0; buf < 2; ++buf)
#pragma unroll
                    for (u32 j = 0; j < 4; ++j) is_valid[buf * 64 + rg + 16 * j] = rows[buf][j] != -1;
            }
            dsa_bar_arrive(valid_bar);
            if (it + 1 < iters) load_rows(it + 1);
            phase ^= 1;
        }
        // Drain: no copy may be in flight when the CTA exits.
        wg_cp_wait<0>();
        return;
    }

    asm volatile("setmaxnreg.inc.sync.aligned.u32 216;\n");
    // The query tile, copied by the 256 math threads: row tid / 4, pieces tid % 4 + 4 u.
    {
        const u32 row = tid / 4;
        const bool live = h0 + row < heads;
        const __nv_bfloat16* src = q + b * p.q_sb + t * p.q_st + (u64)(live ? h0 + row : 0) * p.q_sh;
#pragma unroll
        for (u32 u = 0; u < 18; ++u) {
            const u32 pc = tid % 4 + 4 * u;
            wg_cp_async(q_addr + (pc / 8) * DSA_TILE + row * 128 + (((pc % 8) ^ (row & 7)) << 4), src + pc * 8, live);
        }
        wg_cp_commit();
        wg_cp_wait<0>();
        wg_fence_async_smem();
        dsa_sync<DSA_Q_READY>();
    }

    // Rows `ra`, `ra + 8` of the accumulators; columns `8 j + 2 tg + {0, 1}`.
    const u32 ra = (wtid / 32) * 16 + lane / 4, tg = lane % 4;
    const float scale = __uint_as_float((u32)p.scale_bits) * 1.4426950408889634f;
    const u32 own = wg;
    float o[128];
#pragma unroll
    for (int i = 0; i < 128; ++i) o[i] = 0.0f;
    float sc[32];
    u32 ps[16];
    float m_a = neg_inf, m_b = neg_inf, l_a = 0.0f, l_b = 0.0f;
    // P of the other warpgroup: WG0's in k0's RoPE tile, WG1's in its own tile.
    const u32 p_own = wg == 0 ? k_addr[0] + 8 * DSA_TILE : base_addr + DSA_S1;
    const u32 p_other = wg == 0 ? base_addr + DSA_S1 : k_addr[0] + 8 * DSA_TILE;
    const u64 qd = wg_desc(q_addr, 16, 1024);

    // S (+)= Q K^T of buffer `own` over tiles [t_begin, t_end) (issued, not waited); `first`:
    // these are S's first tiles.
    auto s_tiles = [&](u32 t_begin, u32 t_end, bool first) {
        const u64 kd = wg_desc(k_addr[own], 16, 1024);
#pragma unroll
        for (u32 tl = t_begin; tl < t_end; ++tl)
#pragma unroll
            for (u32 ks = 0; ks < 4; ++ks) {
                const u64 off = (tl * DSA_TILE + ks * 32) >> 4;
                dsa_wgmma_s(sc, qd + off, kd + off, !(first && tl == t_begin && ks == 0));
            }
    };
    // Scores in log2 units, -inf at invalid slots; the row maxima over this block.
    auto mask = [&](u32 phase, float& mx_a, float& mx_b) {
        dsa_bar_wait(valid_bar, phase);
        const unsigned char* ok = is_valid + own * 64;
        mx_a = neg_inf;
        mx_b = neg_inf;
#pragma unroll
        for (u32 j = 0; j < 8; ++j)
#pragma unroll
            for (u32 e = 0; e < 2; ++e) {
                const bool v = ok[8 * j + 2 * tg + e] != 0;
                sc[4 * j + e] = v ? sc[4 * j + e] * scale : neg_inf;
                sc[4 * j + 2 + e] = v ? sc[4 * j + 2 + e] * scale : neg_inf;
                mx_a = fmaxf(mx_a, sc[4 * j + e]);
                mx_b = fmaxf(mx_b, sc[4 * j + 2 + e]);
            }
        mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffff, mx_a, 1));
        mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffff, mx_a, 2));
        mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffff, mx_b, 1));
        mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffff, mx_b, 2));
    };
    // O's and l's rows by their factors; accumulator register 4n + {0,1} is row ra, {2,3}
    // row ra + 8.
    auto rescale = [&](float f_a, float f_b) {
#pragma unroll
        for (int n = 0; n < 32; ++n) {
            o[4 * n + 0] *= f_a;
            o[4 * n + 1] *= f_a;
            o[4 * n + 2] *= f_b;
            o[4 * n + 3] *= f_b;
        }
        l_a *= f_a;
        l_b *= f_b;
    };
    // P = exp2(s - n) against the new maxima n (0 for a row with nothing yet), O and l
    // rescaled from the old maxima; ps: P as bf16 pairs, the A fragments of P V.
    auto softmax = [&](float n_a, float n_b) {
        const float u_a = n_a == neg_inf ? 0.0f : n_a, u_b = n_b == neg_inf ? 0.0f : n_b;
        const float f_a = m_a == neg_inf ? 0.0f : dsa_exp2(m_a - u_a);
        const float f_b = m_b == neg_inf ? 0.0f : dsa_exp2(m_b - u_b);
        float p_a = 0.0f, p_b = 0.0f;
#pragma unroll
        for (u32 j = 0; j < 8; ++j) {
            sc[4 * j + 0] = dsa_exp2(sc[4 * j + 0] - u_a);
            sc[4 * j + 1] = dsa_exp2(sc[4 * j + 1] - u_a);
            sc[4 * j + 2] = dsa_exp2(sc[4 * j + 2] - u_b);
            sc[4 * j + 3] = dsa_exp2(sc[4 * j + 3] - u_b);
            p_a += sc[4 * j + 0] + sc[4 * j + 1];
            p_b += sc[4 * j + 2] + sc[4 * j + 3];
            ps[2 * j] = dsa_pack(sc[4 * j + 0], sc[4 * j + 1]);
            ps[2 * j + 1] = dsa_pack(sc[4 * j + 2], sc[4 * j + 3]);
        }
        rescale(f_a, f_b);
        l_a += p_a;
        l_b += p_b;
        m_a = n_a;
        m_b = n_b;
    };
    // This warpgroup's maxima to shared memory for the other (after every lane of the
    // quad has read what was there).
    auto publish_max = [&]() {
        __syncwarp();
        if (tg == 0) {
            s_m[ra] = m_a;
            s_m[ra + 8] = m_b;
        }
    };
    // ps to shared memory at `addr` (64 rows x 64 bf16, swizzled) for the other warpgroup.
    auto store_p = [&](u32 addr) {
#pragma unroll
        for (u32 j = 0; j < 8; ++j) {
            const u32 key = 8 * j + 2 * tg;
            asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr + ra * 128 + ((j ^ (ra & 7)) << 4) + (key % 8) * 2), "r"(ps[2 * j]) : "memory");
            asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr + (ra + 8) * 128 + ((j ^ ((ra + 8) & 7)) << 4) + (key % 8) * 2), "r"(ps[2 * j + 1]) : "memory");
        }
        wg_fence_async_smem();
    };
    // O[:, 256 wg ..] += P (registers) V of buffer `buf`.
    auto pv_own = [&](u32 buf) {
#pragma unroll
        for (u32 ks = 0; ks < 4; ++ks)
            dsa_wgmma_pv_rs(o, ps + 4 * ks, wg_desc(k_addr[buf] + wg * 4 * DSA_TILE + ks * 16 * 128, DSA_TILE, 1024));
    };
    // O[:, 256 wg ..] += P (shared memory at `addr`) V of buffer `buf`.
    auto pv_shared = [&](u32 addr, u32 buf) {
#pragma unroll
        for (u32 ks = 0; ks < 4; ++ks)
            wgmma_m64n256_mnmajor(o, wg_desc(addr + ks * 32, 16, 1024), wg_desc(k_addr[buf] + wg * 4 * DSA_TILE + ks * 16 * 128, DSA_TILE, 1024), 1);
    };

    u32 phase = 0;
    if (wg == 0 && iters > 0) {
        // S0 of the first iteration.
#pragma unroll
        for (int i = 0; i < 32; ++i) wg_pin(sc[i]);
        wgmma_fence();
        dsa_bar_wait(ready(0, 0), 0);
        s_tiles(0, 4, true);
        dsa_bar_wait(ready(0, 1), 0);
        s_tiles(4, 9, false);
        wgmma_commit();
        wgmma_wait0();
    }
    for (u32 it = 0; it < iters; ++it) {
        if (wg == 1) {
#pragma unroll
            for (int i = 0; i < 32; ++i) wg_pin(sc[i]);
            wgmma_fence();
            dsa_bar_wait(ready(1, 1), phase);
            s_tiles(4, 9, true);
            dsa_bar_wait(ready(1, 0), phase);
            s_tiles(0, 4, false);
            wgmma_commit();
            wgmma_wait0();
        }
#pragma unroll
        for (int i = 0; i < 32; ++i) wg_pin(sc[i]);
        float mx_a, mx_b;
        mask(phase, mx_a, mx_b);
        if (wg == 0) {
            softmax(fmaxf(m_a, mx_a), fmaxf(m_b, mx_b));
            publish_max();
            dsa_arrive<DSA_WG0_MAX>();
            wgmma_fence();
            pv_own(0);
            wgmma_commit();
            wgmma_wait0();
#pragma unroll
            for (int i = 0; i < 128; ++i) wg_pin(o[i]);
            dsa_bar_arrive(freed(0, 0));
            // WG1's maxima include this block's: P and O to them.
            dsa_sync<DSA_WG1_MAX>();
            const float n_a = s_m[ra], n_b = s_m[ra + 8];
            const float f_a = m_a == neg_inf ? 0.0f : dsa_exp2(m_a - n_a);
            const float f_b = m_b == neg_inf ? 0.0f : dsa_exp2(m_b - n_b);
#pragma unroll
            for (u32 j = 0; j < 8; ++j) {
                ps[2 * j] = dsa_pack(sc[4 * j + 0] * f_a, sc[4 * j + 1] * f_a);
                ps[2 * j + 1] = dsa_pack(sc[4 * j + 2] * f_b, sc[4 * j + 3] * f_b);
            }
            store_p(p_own);
            dsa_arrive<DSA_WG0_P>();
            rescale(f_a, f_b);
            m_a = n_a;
            m_b = n_b;
            dsa_sync<DSA_WG1_P>();
#pragma unroll
            for (int i = 0; i < 128; ++i) wg_pin(o[i]);
            wgmma_fence();
            pv_shared(p_other, 1);
            wgmma_commit();
            if (it + 1 < iters) {
                // The next S0 runs behind this product.
#pragma unroll
                for (int i = 0; i < 32; ++i) wg_pin(sc[i]);
                dsa_bar_wait(ready(0, 0), phase ^ 1);
                s_tiles(0, 4, true);
                wgmma_commit();
                asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
                dsa_bar_arrive(freed(1, 0));
                dsa_bar_wait(ready(0, 1), phase ^ 1);
                s_tiles(4, 9, false);
                wgmma_commit();
                wgmma_wait0();
            } else {
                wgmma_wait0();
                dsa_bar_arrive(freed(1, 0));
            }
#pragma unroll
            for (int i = 0; i < 128; ++i) wg_pin(o[i]);
        } else {
            dsa_sync<DSA_WG0_MAX>();
            const float w_a = s_m[ra], w_b = s_m[ra + 8];
            softmax(fmaxf(w_a, mx_a), fmaxf(w_b, mx_b));
            publish_max();
            dsa_arrive<DSA_WG1_MAX>();
            wgmma_fence();
            pv_own(1);
            wgmma_commit();
            store_p(p_own);
            dsa_sync<DSA_WG0_P>();
            pv_shared(p_other, 0);
            wgmma_commit();
            dsa_arrive<DSA_WG1_P>();
            asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
            dsa_bar_arrive(freed(1, 1));
            wgmma_wait0();
            dsa_bar_arrive(freed(0, 1));
#pragma unroll
            for (int i = 0; i < 128; ++i) wg_pin(o[i]);
        }
        phase ^= 1;
    }

    // out = O / l, lse = (m + log2 l) ln 2 (0 and -inf for a head with no valid slot); l is
    // summed over the quad, then over both warpgroups.
    l_a += __shfl_xor_sync(0xffffffff, l_a, 1);
    l_a += __shfl_xor_sync(0xffffffff, l_a, 2);
    l_b += __shfl_xor_sync(0xffffffff, l_b, 1);
    l_b += __shfl_xor_sync(0xffffffff, l_b, 2);
    if (tg == 0) {
        s_l[wg * 64 + ra] = l_a;
        s_l[wg * 64 + ra + 8] = l_b;
    }
    dsa_sync<DSA_L_READY>();
    l_a = s_l[ra] + s_l[64 + ra];
    l_b = s_l[ra + 8] + s_l[64 + ra + 8];
    const float inv_a = l_a > 0.0f ? 1.0f / l_a : 0.0f;
    const float inv_b = l_b > 0.0f ? 1.0f / l_b : 0.0f;
    dsa_cta_coords(p, bt, h0);
    const u32 ha = h0 + ra, hb = h0 + ra + 8;
    __nv_bfloat16* out_a = out + (bt * heads + ha) * DSA_DV + wg * 256;
    __nv_bfloat16* out_b = out + (bt * heads + hb) * DSA_DV + wg * 256;
#pragma unroll
    for (u32 n = 0; n < 32; ++n) {
        const u32 col = n * 8 + 2 * tg;
        if (ha < heads) *(__nv_bfloat162*)(out_a + col) = __floats2bfloat162_rn(o[4 * n] * inv_a, o[4 * n + 1] * inv_a);
        if (hb < heads) *(__nv_bfloat162*)(out_b + col) = __floats2bfloat162_rn(o[4 * n + 2] * inv_b, o[4 * n + 3] * inv_b);
    }
    if (wg == 1 && tg == 0) {
        const float ln2 = 0.6931471805599453f;
        if (ha < heads) lse[bt * heads + ha] = __float2bfloat16(l_a > 0.0f ? (m_a + __log2f(l_a)) * ln2 : neg_inf);
        if (hb < heads) lse[bt * heads + hb] = __float2bfloat16(l_b > 0.0f ? (m_b + __log2f(l_b)) * ln2 : neg_inf);
    }
}
