// Sparse MLA backward on Hopper's warpgroup tensor cores (`wgmma`): the contract of the CubeCL
// backward `sparse_mla_bwd_cmma` at DeepSeek-V3.2's latent sizes. From `q [B,T,H,576]`,
// `kv [B,S,576]`, `idx`/`valid [B,T,K]`, the forward's `out [B,T,H,512]` and `lse [B,T,H]`
// and the gradients `d_out [B,T,H,512]` / `d_lse [B,T,H]` (bf16; either may be absent: never
// read then), it writes `dq [B,T,H,576]` (bf16) and adds to `dkv [B,S,576]` (f32, zeroed by
// the caller). With P = exp(S scale - lse) and
// delta = sum(dO * O) per head: dS = scale P (dP - delta + d_lse), dQ = dS K,
// dKV = dS^T Q + P^T dO (the values are the latent's first 512 dims).
//
// One CTA of three warpgroups per (token, 64 heads), a token's CTAs adjacent, as the forward:
// - WG2, the producer, gathers each block of 64 selected rows into a ring of nine 64-dim tiles
//   (one block): a tile is refilled for the next block as soon as both math warpgroups have
//   released it. It writes each block's latent rows (-1: an invalid slot, -2: a valid slot past
//   the latent, a zero row) to one of two row lists.
// - Per block (where dkv outgrows L2, after prefetching the block's dkv rows into L2 for its
//   reductions), WG0 computes S = Q K^T and P = exp2(S scale - lse) (0 at invalid slots) and
//   writes P (bf16) to shared memory; WG1 meanwhile computes dP = dO V^T, then dS from WG0's P,
//   written (bf16) beside it.
// - Both add dQ += dS K (WG0 dims 0..255 and 512..575, WG1 256..511; in registers for the whole
//   kernel) and release the block's tiles, then compute the block's dKV one 64-dim tile at a
//   time (WG0 tiles 8, 0, 1, 2; WG1 3..7: about equal work) and add each to dkv's rows with
//   vector reductions (red.global.add.v4.f32) straight from the accumulators, while the
//   producer gathers the next block.
// Q and dO stay in shared memory in the forward's swizzled layout (K-major A of S and dP;
// MN-major B of dKV); P and dS are K-major A of dQ and, transposed, MN-major A of dKV.
// Scores are in log2 units. Helpers: shared/wgmma.cuh and wgmma_d576.cuh.

// Shared memory (from a 1024-byte-aligned base): Q (9 tiles), dO (8), the ring (9), P, dS,
// mbarriers (tile ready x 9, tile free x 9, row list ready x 2), the row lists (2 x 64 int),
// lse in log2 units and delta - d_lse per head.
#define DSB_DO (9 * DSA_TILE)
#define DSB_K (17 * DSA_TILE)
#define DSB_P (26 * DSA_TILE)
#define DSB_DS (27 * DSA_TILE)
#define DSB_BARS (28 * DSA_TILE)
#define DSB_ROWS (DSB_BARS + 20 * 8)
#define DSB_LSE (DSB_ROWS + 2 * 64 * 4)
#define DSB_DD (DSB_LSE + 64 * 4)
#define DSB_SMEM_BYTES (DSB_DD + 64 * 4 + 1024)
// Batch x latent rows beyond which the math warpgroups prefetch each block's dkv rows into L2
// (32K rows: 75 MB of f32 dkv). At 4K queries prefetching costs up to 1.7 ms over 4K-16K
// latents, breaks even at 32K and saves 3-5 ms (11-17 %) at 64K-128K; issued by the math
// warpgroups at each block's start rather than a block ahead by the producer, 4-5 % more.
#define DSB_PREFETCH_ROWS 32768

// Named barriers of the math warpgroups: inputs loaded; P and dS free for the next block
// (WG1 done reading them); P written; dS written.
enum { DSB_LOADED = 1, DSB_PS_FREE = 2, DSB_P_READY = 3, DSB_DS_READY = 4 };

// The forward's parameters, then whether `d_out` and `d_lse` are given.
struct DsaMlaBwdParams {
    DsaMlaParams f;
    u64 has_dout, has_dlse;
};

// dkv[row, col..col + 4] += v (`dst` 16-byte aligned).
__device__ __forceinline__ void dsb_red4(float* dst, float v0, float v1, float v2, float v3) {
    asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};\n" ::"l"(dst), "f"(v0), "f"(v1), "f"(v2), "f"(v3) : "memory");
}

extern "C" __global__ void __launch_bounds__(DSA_THREADS, 1) dsa_sparse_mla_bwd_wgmma(
    const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ kv, const void* __restrict__ idx,
    const void* __restrict__ valid, const __nv_bfloat16* __restrict__ out, const __nv_bfloat16* __restrict__ lse,
    const __nv_bfloat16* __restrict__ d_out, const __nv_bfloat16* __restrict__ d_lse, __nv_bfloat16* __restrict__ dq,
    float* __restrict__ dkv, const __grid_constant__ DsaMlaBwdParams p) {
    extern __shared__ __align__(1024) unsigned char dsa_smem_raw[];
    u64 bt;
    u32 h0;
    dsa_cta_coords(p.f, bt, h0);
    const u32 tid = threadIdx.x, wg = __shfl_sync(0xffffffff, tid / 128, 0), wtid = tid % 128, lane = tid % 32;
    const float inf = __int_as_float(0x7f800000);
    const u64 b = bt / p.f.t_len, t = bt % p.f.t_len;
    const u32 heads = (u32)p.f.heads;
    const u32 base_addr = (wg_smem(dsa_smem_raw) + 1023) & ~1023u;
    unsigned char* base = dsa_smem_raw + (base_addr - wg_smem(dsa_smem_raw));
    const u32 q_addr = base_addr, do_addr = base_addr + DSB_DO, k_addr = base_addr + DSB_K;
    const u32 p_addr = base_addr + DSB_P, ds_addr = base_addr + DSB_DS;
    auto ready = [&](u32 tile) { return base_addr + DSB_BARS + tile * 8; };
    auto freed = [&](u32 tile) { return base_addr + DSB_BARS + (9 + tile) * 8; };
    auto rows_ready = [&](u32 list) { return base_addr + DSB_BARS + (18 + list) * 8; };
    int* s_rows = (int*)(base + DSB_ROWS);
    float* s_lse = (float*)(base + DSB_LSE);
    float* s_dd = (float*)(base + DSB_DD);
    const u32 blocks = (u32)((p.f.kk + 63) / 64);
    // Prefetching the dkv rows pays only where dkv (f32) far outgrows L2.
    const bool warm_dkv = p.f.bt_len / p.f.t_len * p.f.s_len > DSB_PREFETCH_ROWS;

    if (tid == 0) {
        for (u32 tile = 0; tile < 9; ++tile) {
            dsa_bar_init(ready(tile), 128);
            dsa_bar_init(freed(tile), 256);
        }
        dsa_bar_init(rows_ready(0), 128);
        dsa_bar_init(rows_ready(1), 128);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();

    if (wg == 2) {
        // Producer: thread `wtid` copies piece `c` (16 bytes) of each tile row of rows
        // `rg + 16 j` of a block; the lookups cover two blocks at a time.
        asm volatile("setmaxnreg.dec.sync.aligned.u32 56;\n");
        const u32 c = wtid % 8, rg = wtid / 8;
        const __nv_bfloat16* kv_b = kv + b * p.f.kv_sb + c * 8;
        long long rows[2][4];
        for (u32 it = 0; 2 * it < blocks; ++it) {
            dsa_slot_rows(idx, valid, p.f, bt, (u64)it * 128 + rg, rows);
            for (u32 half = 0; half < 2 && 2 * it + half < blocks; ++half) {
                const u32 blk = 2 * it + half, parity = (blk & 1) ^ 1;
                // The math warpgroups are done with block blk - 1's tiles, hence with the
                // row list of block blk - 2, which this block's takes over.
                dsa_bar_wait(freed(0), parity);
                if (c == 0) {
#pragma unroll
                    for (u32 j = 0; j < 4; ++j) s_rows[(blk & 1) * 64 + rg + 16 * j] = (int)rows[half][j];
                }
                dsa_bar_arrive(rows_ready(blk & 1));
#pragma unroll 1
                for (u32 tile = 0; tile < 9; ++tile) {
                    if (tile > 0) dsa_bar_wait(freed(tile), parity);
#pragma unroll
                    for (u32 j = 0; j < 4; ++j) {
                        const u32 r = rg + 16 * j;
                        const long long row = rows[half][j];
                        const __nv_bfloat16* src = kv_b + (u64)(row >= 0 ? row : 0) * p.f.kv_ss + tile * 64;
                        wg_cp_async(k_addr + tile * DSA_TILE + r * 128 + ((c ^ (r & 7)) << 4), src, row >= 0);
                    }
                    dsa_bar_arrive_copies(ready(tile));
                }
            }
        }
        // Drain: no copy may be in flight when the CTA exits.
        wg_cp_wait<0>();
        return;
    }

    asm volatile("setmaxnreg.inc.sync.aligned.u32 224;\n");
    // Q's and dO's tiles, copied by the 256 math threads (row tid / 4, pieces tid % 4 + 4 u),
    // and per head lse (log2 units; +inf where P is 0 throughout: a dead head, or no valid slot)
    // and delta - d_lse.
    {
        const u32 row = tid / 4;
        const bool live = h0 + row < heads, live_do = live && p.has_dout != 0;
        const u64 hrow = bt * heads + (live ? h0 + row : 0);
        const __nv_bfloat16* src = q + b * p.f.q_sb + t * p.f.q_st + (u64)(live ? h0 + row : 0) * p.f.q_sh;
#pragma unroll
        for (u32 u = 0; u < 18; ++u) {
            const u32 pc = tid % 4 + 4 * u;
            wg_cp_async(q_addr + (pc / 8) * DSA_TILE + row * 128 + (((pc % 8) ^ (row & 7)) << 4), src + pc * 8, live);
        }
        const __nv_bfloat16* g = d_out + hrow * DSA_DV;
#pragma unroll
        for (u32 u = 0; u < 16; ++u) {
            const u32 pc = tid % 4 + 4 * u;
            wg_cp_async(do_addr + (pc / 8) * DSA_TILE + row * 128 + (((pc % 8) ^ (row & 7)) << 4), g + pc * 8, live_do);
        }
        wg_cp_commit();
        float delta = 0.0f;
        if (live_do) {
            const __nv_bfloat16* o = out + hrow * DSA_DV;
#pragma unroll 4
            for (u32 u = 0; u < 16; ++u) {
                const u32 pc = tid % 4 + 4 * u;
                const uint4 gv = *(const uint4*)(g + pc * 8), ov = *(const uint4*)(o + pc * 8);
                const __nv_bfloat162* g2 = (const __nv_bfloat162*)&gv;
                const __nv_bfloat162* o2 = (const __nv_bfloat162*)&ov;
#pragma unroll
                for (u32 e = 0; e < 4; ++e) {
                    const float2 gf = __bfloat1622float2(g2[e]), of = __bfloat1622float2(o2[e]);
                    delta += gf.x * of.x + gf.y * of.y;
                }
            }
        }
        delta += __shfl_xor_sync(0xffffffff, delta, 1);
        delta += __shfl_xor_sync(0xffffffff, delta, 2);
        if (tid % 4 == 0) {
            const float l = live ? __bfloat162float(lse[hrow]) : -inf;
            const float dl = live && p.has_dlse != 0 ? __bfloat162float(d_lse[hrow]) : 0.0f;
            s_lse[row] = l == -inf ? inf : l * 1.4426950408889634f;
            s_dd[row] = delta - dl;
        }
        wg_cp_wait<0>();
        wg_fence_async_smem();
        dsa_sync<DSB_LOADED>();
    }

    // Rows `ra`, `ra + 8` of the accumulators; columns `8 j + 2 tg + {0, 1}`.
    const u32 ra = (wtid / 32) * 16 + lane / 4, tg = lane % 4;
    const float scale = __uint_as_float((u32)p.f.scale_bits);
    const float scale2 = scale * 1.4426950408889634f;
    // dQ: WG0 dims 0..255 and 512..575, WG1 256..511.
    float dq_main[128], dq_rope[32];
#pragma unroll
    for (int i = 0; i < 128; ++i) dq_main[i] = 0.0f;
#pragma unroll
    for (int i = 0; i < 32; ++i) dq_rope[i] = 0.0f;
    float acc[32];
    const u64 qd = wg_desc(q_addr, 16, 1024), dod = wg_desc(do_addr, 16, 1024), kd = wg_desc(k_addr, 16, 1024);
    // A (64 x 64, bf16) at `addr` to shared memory, swizzled: the accumulator layout's pairs.
    auto store_pairs = [&](u32 addr, const u32* v) {
#pragma unroll
        for (u32 j = 0; j < 8; ++j) {
            asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr + ra * 128 + ((j ^ (ra & 7)) << 4) + tg * 4), "r"(v[2 * j]) : "memory");
            asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr + (ra + 8) * 128 + ((j ^ ((ra + 8) & 7)) << 4) + tg * 4), "r"(v[2 * j + 1]) : "memory");
        }
        wg_fence_async_smem();
    };
    // acc (+)= A B^T over tiles [0, tiles) of A at `a` (Q or dO) and of the ring.
    auto scores = [&](u64 a, u32 tiles, u32 parity) {
#pragma unroll
        for (int i = 0; i < 32; ++i) wg_pin(acc[i]);
        wgmma_fence();
#pragma unroll 1
        for (u32 tile = 0; tile < tiles; ++tile) {
            dsa_bar_wait(ready(tile), parity);
#pragma unroll
            for (u32 ks = 0; ks < 4; ++ks) {
                const u64 off = (tile * DSA_TILE + ks * 32) >> 4;
                dsa_wgmma_s(acc, a + off, kd + off, tile > 0 || ks > 0);
            }
        }
        wgmma_commit();
        wgmma_wait0();
#pragma unroll
        for (int i = 0; i < 32; ++i) wg_pin(acc[i]);
    };

    for (u32 blk = 0; blk < blocks; ++blk) {
        const u32 parity = blk & 1, list = blk & 1;
        const int* rws = s_rows + list * 64;
        if (warm_dkv) {
            // This block's dkv rows into L2 ahead of its reductions (after S or dP, dS and dQ):
            // row tid / 4, lines tid % 4 + 4 m.
            dsa_bar_wait(rows_ready(list), (blk >> 1) & 1);
            const int row = rws[tid / 4];
            if (row >= 0) {
                const char* line = (const char*)(dkv + ((u64)b * p.f.s_len + (u64)row) * 576) + (tid % 4) * 128;
                for (u32 l = tid % 4; l < 18; l += 4, line += 4 * 128) asm volatile("prefetch.global.L2 [%0];\n" ::"l"(line));
            }
        }
        if (wg == 0) {
            // S, then P (0 at invalid slots and where lse is +inf).
            scores(qd, 9, parity);
            dsa_bar_wait(rows_ready(list), (blk >> 1) & 1);
            const float la = s_lse[ra], lb = s_lse[ra + 8];
            u32 pk[16];
#pragma unroll
            for (u32 j = 0; j < 8; ++j) {
                const bool v0 = rws[8 * j + 2 * tg] != -1, v1 = rws[8 * j + 2 * tg + 1] != -1;
                pk[2 * j] = dsa_pack(v0 ? dsa_exp2(acc[4 * j] * scale2 - la) : 0.0f, v1 ? dsa_exp2(acc[4 * j + 1] * scale2 - la) : 0.0f);
                pk[2 * j + 1] = dsa_pack(v0 ? dsa_exp2(acc[4 * j + 2] * scale2 - lb) : 0.0f, v1 ? dsa_exp2(acc[4 * j + 3] * scale2 - lb) : 0.0f);
            }
            dsa_sync<DSB_PS_FREE>();
            store_pairs(p_addr, pk);
            dsa_arrive<DSB_P_READY>();
        } else {
            if (blk == 0) dsa_arrive<DSB_PS_FREE>();
            // dP, then dS = scale P (dP - delta + d_lse) with WG0's P.
            scores(dod, 8, parity);
            dsa_bar_wait(rows_ready(list), (blk >> 1) & 1);
            const float da = s_dd[ra], db = s_dd[ra + 8];
            dsa_sync<DSB_P_READY>();
            u32 pk[16];
#pragma unroll
            for (u32 j = 0; j < 8; ++j) {
                u32 pa, pb;
                asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(pa) : "r"(p_addr + ra * 128 + ((j ^ (ra & 7)) << 4) + tg * 4) : "memory");
                asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(pb) : "r"(p_addr + (ra + 8) * 128 + ((j ^ ((ra + 8) & 7)) << 4) + tg * 4) : "memory");
                const float2 fa = __bfloat1622float2(*(__nv_bfloat162*)&pa), fb = __bfloat1622float2(*(__nv_bfloat162*)&pb);
                pk[2 * j] = dsa_pack(scale * fa.x * (acc[4 * j] - da), scale * fa.y * (acc[4 * j + 1] - da));
                pk[2 * j + 1] = dsa_pack(scale * fb.x * (acc[4 * j + 2] - db), scale * fb.y * (acc[4 * j + 3] - db));
            }
            store_pairs(ds_addr, pk);
        }
        dsa_sync<DSB_DS_READY>();

        // dQ += dS K over this warpgroup's dims; then, behind it, the first tile of dKV.
#pragma unroll
        for (int i = 0; i < 128; ++i) wg_pin(dq_main[i]);
#pragma unroll
        for (int i = 0; i < 32; ++i) wg_pin(dq_rope[i]);
        wgmma_fence();
#pragma unroll
        for (u32 ks = 0; ks < 4; ++ks)
            wgmma_m64n256_mnmajor(dq_main, wg_desc(ds_addr + ks * 32, 16, 1024), wg_desc(k_addr + wg * 4 * DSA_TILE + ks * 16 * 128, DSA_TILE, 1024), 1);
        if (wg == 0) {
#pragma unroll
            for (u32 ks = 0; ks < 4; ++ks)
                dsa_wgmma_s<0, 1>(dq_rope, wg_desc(ds_addr + ks * 32, 16, 1024), wg_desc(k_addr + 8 * DSA_TILE + ks * 16 * 128, DSA_TILE, 1024), 1);
        }
        wgmma_commit();
        const u32 chunks = wg == 0 ? 4 : 5;
#pragma unroll 1
        for (u32 n = 0; n < chunks; ++n) {
            const u32 tile = wg == 0 ? (n == 0 ? 8 : n - 1) : 3 + n;
            // acc = dS^T Q + P^T dO over the tile's 64 dims (dO only below 512).
#pragma unroll
            for (int i = 0; i < 32; ++i) wg_pin(acc[i]);
            wgmma_fence();
#pragma unroll
            for (u32 ks = 0; ks < 4; ++ks)
                dsa_wgmma_s<1, 1>(acc, wg_desc(ds_addr + ks * 16 * 128, DSA_TILE, 1024), wg_desc(q_addr + tile * DSA_TILE + ks * 16 * 128, DSA_TILE, 1024), ks > 0);
            if (tile < 8) {
#pragma unroll
                for (u32 ks = 0; ks < 4; ++ks)
                    dsa_wgmma_s<1, 1>(acc, wg_desc(p_addr + ks * 16 * 128, DSA_TILE, 1024), wg_desc(do_addr + tile * DSA_TILE + ks * 16 * 128, DSA_TILE, 1024), 1);
            }
            wgmma_commit();
            if (n == 0) {
                // dQ is done with the block's rows: the producer may refill the ring.
                asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
#pragma unroll
                for (int i = 0; i < 128; ++i) wg_pin(dq_main[i]);
#pragma unroll
                for (int i = 0; i < 32; ++i) wg_pin(dq_rope[i]);
#pragma unroll 1
                for (u32 tl = 0; tl < 9; ++tl) dsa_bar_arrive(freed(tl));
            }
            wgmma_wait0();
#pragma unroll
            for (int i = 0; i < 32; ++i) wg_pin(acc[i]);
            // To dkv: lanes 2i and 2i + 1 swap halves so that each holds four adjacent dims of
            // one row (the even lane row ra, the odd one row ra + 8).
            const bool odd = tg & 1;
            const int row = odd ? rws[ra + 8] : rws[ra];
            float* dst = dkv + ((u64)b * p.f.s_len + (u64)(row >= 0 ? row : 0)) * 576 + tile * 64 + 2 * tg - (odd ? 2 : 0);
#pragma unroll
            for (u32 j = 0; j < 8; ++j) {
                const float r0 = __shfl_xor_sync(0xffffffff, odd ? acc[4 * j] : acc[4 * j + 2], 1);
                const float r1 = __shfl_xor_sync(0xffffffff, odd ? acc[4 * j + 1] : acc[4 * j + 3], 1);
                if (row >= 0) {
                    if (odd)
                        dsb_red4(dst + 8 * j, r0, r1, acc[4 * j + 2], acc[4 * j + 3]);
                    else
                        dsb_red4(dst + 8 * j, acc[4 * j], acc[4 * j + 1], r0, r1);
                }
            }
        }
        // WG1 is done reading P and dS: WG0 may write the next block's.
        if (wg == 1 && blk + 1 < blocks) dsa_arrive<DSB_PS_FREE>();
    }

    // dq (bf16): WG0 dims 0..255 and 512..575, WG1 256..511; heads past H are not written.
    dsa_cta_coords(p.f, bt, h0);
    const u32 ha = h0 + ra, hb = h0 + ra + 8;
    __nv_bfloat16* dq_a = dq + (bt * heads + ha) * 576;
    __nv_bfloat16* dq_b = dq + (bt * heads + hb) * 576;
#pragma unroll
    for (u32 n = 0; n < 32; ++n) {
        const u32 col = wg * 256 + n * 8 + 2 * tg;
        if (ha < heads) *(__nv_bfloat162*)(dq_a + col) = __floats2bfloat162_rn(dq_main[4 * n], dq_main[4 * n + 1]);
        if (hb < heads) *(__nv_bfloat162*)(dq_b + col) = __floats2bfloat162_rn(dq_main[4 * n + 2], dq_main[4 * n + 3]);
    }
    if (wg == 0) {
#pragma unroll
        for (u32 n = 0; n < 8; ++n) {
            const u32 col = 512 + n * 8 + 2 * tg;
            if (ha < heads) *(__nv_bfloat162*)(dq_a + col) = __floats2bfloat162_rn(dq_rope[4 * n], dq_rope[4 * n + 1]);
            if (hb < heads) *(__nv_bfloat162*)(dq_b + col) = __floats2bfloat162_rn(dq_rope[4 * n + 2], dq_rope[4 * n + 3]);
        }
    }
}
