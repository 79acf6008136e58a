// Run 72: the backward on wgmma with a token's two head groups in a cluster (v7.1,
// `dsa_sparse_mla_bwd_wgmma_pair`: each dKV tile reduced once per token, after adding the
// partner's partial through distributed shared memory) against v7 alone
// (`dsa_sparse_mla_bwd_wgmma`), both from the copy beside this file (v7 as landed, plus the pair
// kernel; the helpers from kernels/src/cuda). Run 70's harness with the kernel
// a parameter: float64 reference on small cases, timing at 4K queries over 4K and 128K latents.
// nvcc -std=c++17 -gencode arch=compute_90a,code=sm_90a -O3 -I kernels/src/cuda -o hb harness_pair.cu && ./hb
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <vector>
#include <random>
#include <algorithm>
#include "wgmma.cuh"
#include "sparse_mla_wgmma.cuh"
#include "sparse_mla_wgmma.cu"
#include "sparse_mla_bwd_wgmma.cu"

static float bf(__nv_bfloat16 x) { return __bfloat162float(x); }

static void run(int T, int H, int S, int K, bool with_dlse, bool check, int reps, bool pair) {
    auto* kernel = pair ? dsa_sparse_mla_bwd_wgmma_pair : dsa_sparse_mla_bwd_wgmma;
    const int D = 576, DV = 512, KV_SS = 640;
    const float scale = 1.0f / sqrtf(192.0f);
    std::mt19937 g(T * 7 + K + H);
    std::normal_distribution<float> n(0.f, 1.f);
    std::vector<__nv_bfloat16> q((size_t)T * H * D), kv((size_t)S * KV_SS), gout((size_t)T * H * DV), glse((size_t)T * H);
    for (auto& x : q) x = __float2bfloat16(n(g));
    for (auto& x : kv) x = __float2bfloat16(n(g));
    for (auto& x : gout) x = __float2bfloat16(n(g));
    for (auto& x : glse) x = __float2bfloat16(n(g));
    std::vector<int> idx((size_t)T * K);
    std::vector<unsigned char> valid((size_t)T * K);
    for (int t = 0; t < T; ++t)
        for (int k = 0; k < K; ++k) {
            idx[(size_t)t * K + k] = g() % S;
            valid[(size_t)t * K + k] = (t == 3) ? 0 : (g() % 16 != 0);  // token 3: no valid slot
        }
    __nv_bfloat16 *dq_in, *dkv_in, *dout, *dlse, *dgout, *dglse, *ddq; int* didx; unsigned char* dvalid; float* ddkv;
    cudaMalloc(&dq_in, q.size() * 2); cudaMalloc(&dkv_in, kv.size() * 2);
    cudaMalloc(&dout, (size_t)T * H * DV * 2); cudaMalloc(&dlse, (size_t)T * H * 2);
    cudaMalloc(&dgout, gout.size() * 2); cudaMalloc(&dglse, glse.size() * 2);
    cudaMalloc(&ddq, q.size() * 2); cudaMalloc(&ddkv, (size_t)S * D * 4);
    cudaMalloc(&didx, idx.size() * 4); cudaMalloc(&dvalid, valid.size());
    cudaMemcpy(dq_in, q.data(), q.size() * 2, cudaMemcpyHostToDevice);
    cudaMemcpy(dkv_in, kv.data(), kv.size() * 2, cudaMemcpyHostToDevice);
    cudaMemcpy(dgout, gout.data(), gout.size() * 2, cudaMemcpyHostToDevice);
    cudaMemcpy(dglse, glse.data(), glse.size() * 2, cudaMemcpyHostToDevice);
    cudaMemcpy(didx, idx.data(), idx.size() * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(dvalid, valid.data(), valid.size(), cudaMemcpyHostToDevice);
    DsaMlaParams p{(u64)T, (u64)T, (u64)H, (u64)K, (u64)S, (u64)T * H * D, (u64)H * D, (u64)D, (u64)S * KV_SS, (u64)KV_SS, 0, 4, 1};
    u32 sb; memcpy(&sb, &scale, 4); p.scale_bits = sb;
    DsaMlaBwdParams pb{p, 1, with_dlse ? 1u : 0u};
    dim3 grid(T * ((H + 63) / 64));
    cudaFuncSetAttribute(dsa_sparse_mla_fwd_wgmma, cudaFuncAttributeMaxDynamicSharedMemorySize, DSA_SMEM_BYTES);
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, DSB_SMEM_BYTES);
    dsa_sparse_mla_fwd_wgmma<<<grid, DSA_THREADS, DSA_SMEM_BYTES>>>(dq_in, dkv_in, didx, dvalid, dout, dlse, p);
    auto bwd = [&]() {
        kernel<<<grid, DSA_THREADS, DSB_SMEM_BYTES>>>(dq_in, dkv_in, didx, dvalid, dout, dlse, dgout, dglse, ddq, ddkv, pb);
    };
    cudaMemset(ddq, 0xff, q.size() * 2);  // poisoned: NaN
    cudaMemset(ddkv, 0, (size_t)S * D * 4);
    bwd();
    cudaError_t e = cudaDeviceSynchronize();
    if (e != cudaSuccess) { printf("T=%d H=%d K=%d: launch %s\n", T, H, K, cudaGetErrorString(e)); exit(1); }
    if (check) {
        std::vector<__nv_bfloat16> out((size_t)T * H * DV), lse((size_t)T * H), gq(q.size());
        std::vector<float> gkv((size_t)S * D);
        cudaMemcpy(out.data(), dout, out.size() * 2, cudaMemcpyDeviceToHost);
        cudaMemcpy(lse.data(), dlse, lse.size() * 2, cudaMemcpyDeviceToHost);
        cudaMemcpy(gq.data(), ddq, gq.size() * 2, cudaMemcpyDeviceToHost);
        cudaMemcpy(gkv.data(), ddkv, gkv.size() * 4, cudaMemcpyDeviceToHost);
        std::vector<double> rq(q.size(), 0.0), rkv((size_t)S * D, 0.0);
        for (int t = 0; t < T; ++t)
            for (int h = 0; h < H; ++h) {
                const size_t th = (size_t)t * H + h;
                const double l = bf(lse[th]);
                if (std::isinf(l)) continue;
                double delta = 0;
                for (int d = 0; d < DV; ++d) delta += (double)bf(gout[th * DV + d]) * bf(out[th * DV + d]);
                const double dd = delta - (with_dlse ? bf(glse[th]) : 0.0);
                for (int k = 0; k < K; ++k) {
                    if (!valid[(size_t)t * K + k]) continue;
                    const int row = idx[(size_t)t * K + k];
                    const __nv_bfloat16* kr = &kv[(size_t)row * KV_SS];
                    const __nv_bfloat16* qr = &q[th * D];
                    double s = 0, dp = 0;
                    for (int d = 0; d < D; ++d) s += (double)bf(qr[d]) * bf(kr[d]);
                    for (int d = 0; d < DV; ++d) dp += (double)bf(gout[th * DV + d]) * bf(kr[d]);
                    const double pr = std::exp(s * scale - l), ds = scale * pr * (dp - dd);
                    for (int d = 0; d < D; ++d) {
                        rq[th * D + d] += ds * bf(kr[d]);
                        rkv[(size_t)row * D + d] += ds * bf(qr[d]) + (d < DV ? pr * bf(gout[th * DV + d]) : 0.0);
                    }
                }
            }
        auto rel = [](const std::vector<double>& want, auto got_at, size_t len) {
            double num = 0, den = 0; size_t nan = 0;
            for (size_t i = 0; i < len; ++i) {
                const double gv = got_at(i);
                if (std::isnan(gv)) { ++nan; continue; }
                num += (gv - want[i]) * (gv - want[i]); den += want[i] * want[i];
            }
            printf(" (NaN %zu)", nan);
            return std::sqrt(num / std::max(den, 1e-300));
        };
        printf("%s T=%d H=%d S=%d K=%d d_lse=%d: dq rel err", pair ? "pair " : "alone", T, H, S, K, with_dlse);
        const double eq = rel(rq, [&](size_t i) { return (double)bf(gq[i]); }, rq.size());
        printf(" %.3e, dkv rel err", eq);
        const double ek = rel(rkv, [&](size_t i) { return (double)gkv[i]; }, rkv.size());
        printf(" %.3e%s\n", ek, eq < 1e-2 && ek < 1e-2 ? "" : "  <-- FAIL");
    }
    cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
    bwd();
    cudaEventRecord(a);
    for (int i = 0; i < reps; ++i) bwd();
    cudaEventRecord(b); cudaEventSynchronize(b);
    float ms; cudaEventElapsedTime(&ms, a, b); ms /= reps;
    const double flops = 2.0 * T * H * (double)K * (3 * D + 2 * DV);
    printf("%s T=%d H=%d S=%d K=%d: %.4f ms, %.1f TFLOP/s (%s)\n", pair ? "pair " : "alone", T, H, S, K, ms, flops / ms / 1e9, cudaGetErrorString(cudaGetLastError()));
    cudaFree(dq_in); cudaFree(dkv_in); cudaFree(dout); cudaFree(dlse); cudaFree(dgout); cudaFree(dglse);
    cudaFree(ddq); cudaFree(ddkv); cudaFree(didx); cudaFree(dvalid);
}

int main() {
    setvbuf(stdout, nullptr, _IONBF, 0);
    // Correctness: both kernels (the pair needs an even number of head groups).
    for (int pair = 1; pair >= 0; --pair) {
        run(8, 128, 300, 150, true, true, 1, pair);    // a partial block, an odd number of blocks, repeated rows
        run(6, 70, 5000, 2048, false, true, 1, pair);  // a head group with 6 live heads; no d_lse
        run(5, 256, 700, 300, true, true, 1, pair);    // two pairs per token
    }
    run(3, 64, 400, 200, true, true, 1, false);        // one head group: alone only
    for (int pair = 1; pair >= 0; --pair) {
        run(4096, 128, 4096, 2048, false, false, 10, pair);    // training at 4K
        run(4096, 128, 131072, 2048, false, false, 10, pair);  // 4K queries against a 128K latent
    }
    return 0;
}
