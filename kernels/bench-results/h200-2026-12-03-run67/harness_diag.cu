// Run 62 (copied for run 67, which compiles its diag.cu beside it): run 56's harness on the diagnostic copy of v6 (diag.cu; -DDIAG=0, 1, 2), on the same random bf16 inputs at V3.2's shapes,
// against a float64 reference on the host for a few tokens (one with no valid slot).
// nvcc -std=c++17 -gencode arch=compute_90a,code=sm_90a -O3 -I kernels/src/cuda -o h harness_ws.cu && ./h
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <vector>
#include <random>
#include "wgmma.cuh"
#include "diag.cu"

typedef void (*Kernel)(const __nv_bfloat16*, const __nv_bfloat16*, const void*, const void*, __nv_bfloat16*, __nv_bfloat16*, DsaMlaParams);

static void run(int T, int S, int K, int reps) {
    const int H = 128, D = 576, DV = 512, KV_SS = 640;
    const float scale = 0.0625f;
    std::mt19937 g(T * 7 + K);
    std::normal_distribution<float> n(0.f, 1.f);
    std::vector<__nv_bfloat16> q((size_t)T * H * D), kv((size_t)S * KV_SS);
    for (auto& x : q) x = __float2bfloat16(n(g));
    for (auto& x : kv) x = __float2bfloat16(n(g));
    std::vector<int> idx((size_t)T * K);
    std::vector<unsigned char> valid((size_t)T * K);
    for (int t = 0; t < T; ++t)
        for (int k = 0; k < K; ++k) {
            idx[(size_t)t * K + k] = g() % S;
            valid[(size_t)t * K + k] = (t == 3) ? 0 : (g() % 16 != 0);  // token 3: no valid slot
        }
    __nv_bfloat16 *dq, *dkv, *dout, *dlse; int* didx; unsigned char* dvalid;
    cudaMalloc(&dq, q.size() * 2); cudaMalloc(&dkv, kv.size() * 2);
    cudaMalloc(&dout, (size_t)T * H * DV * 2); cudaMalloc(&dlse, (size_t)T * H * 2);
    cudaMalloc(&didx, idx.size() * 4); cudaMalloc(&dvalid, valid.size());
    cudaMemcpy(dq, q.data(), q.size() * 2, cudaMemcpyHostToDevice);
    cudaMemcpy(dkv, kv.data(), kv.size() * 2, cudaMemcpyHostToDevice);
    cudaMemcpy(didx, idx.data(), idx.size() * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(dvalid, valid.data(), valid.size(), cudaMemcpyHostToDevice);
    DsaMlaParams p{(u64)T, (u64)T, (u64)H, (u64)K, (u64)S, (u64)T * H * D, (u64)H * D, (u64)D, (u64)S * KV_SS, (u64)KV_SS, 0, 4, 1};
    u32 sb; memcpy(&sb, &scale, 4); p.scale_bits = sb;
    dim3 grid(T, (H + 63) / 64);
    struct V { const char* name; Kernel k; int threads, smem; } vs[] = {
        {"v6", dsa_sparse_mla_fwd_wgmma, DSA_THREADS, DSA_SMEM_BYTES},
    };
    for (auto& v : vs) {
        cudaFuncSetAttribute(v.k, cudaFuncAttributeMaxDynamicSharedMemorySize, v.smem);
        cudaMemset(dout, 0xff, (size_t)T * H * DV * 2);  // poisoned: NaN
        cudaMemset(dlse, 0xff, (size_t)T * H * 2);
        v.k<<<grid, v.threads, v.smem>>>(dq, dkv, didx, dvalid, dout, dlse, p);
        cudaError_t e = cudaDeviceSynchronize();
        if (e != cudaSuccess) { printf("%s DIAG=%d T=%d K=%d: launch %s\n", v.name, DIAG, T, K, cudaGetErrorString(e)); exit(1); }
        std::vector<__nv_bfloat16> out((size_t)T * H * DV), lse((size_t)T * H);
        cudaMemcpy(out.data(), dout, out.size() * 2, cudaMemcpyDeviceToHost);
        cudaMemcpy(lse.data(), dlse, lse.size() * 2, cudaMemcpyDeviceToHost);
        double max_err = 0, max_ref = 0, max_lse_err = 0; int bad_empty = 0;
        int toks[] = {0, 1, 2, 3, T / 2, T - 1};
        for (int t : toks) {
            for (int h = 0; h < H; ++h) {
                std::vector<double> sc(K); double m = -INFINITY;
                for (int k = 0; k < K; ++k) {
                    if (!valid[(size_t)t * K + k]) { sc[k] = -INFINITY; continue; }
                    const __nv_bfloat16* kr = &kv[(size_t)idx[(size_t)t * K + k] * KV_SS];
                    const __nv_bfloat16* qr = &q[((size_t)t * H + h) * D];
                    double s = 0; for (int d = 0; d < D; ++d) s += (double)__bfloat162float(qr[d]) * __bfloat162float(kr[d]);
                    sc[k] = s * scale; m = std::max(m, sc[k]);
                }
                std::vector<double> o(DV, 0.0); double l = 0;
                if (m > -INFINITY) for (int k = 0; k < K; ++k) {
                    if (sc[k] == -INFINITY) continue;
                    double pk = std::exp(sc[k] - m); l += pk;
                    const __nv_bfloat16* kr = &kv[(size_t)idx[(size_t)t * K + k] * KV_SS];
                    for (int d = 0; d < DV; ++d) o[d] += pk * __bfloat162float(kr[d]);
                }
                for (int d = 0; d < DV; ++d) {
                    double ref = l > 0 ? o[d] / l : 0.0;
                    double got = __bfloat162float(out[((size_t)t * H + h) * DV + d]);
                    if (std::isnan(got)) got = 1e30;
                    max_err = std::max(max_err, std::fabs(got - ref)); max_ref = std::max(max_ref, std::fabs(ref));
                }
                double lref = l > 0 ? m + std::log(l) : -INFINITY;
                double lgot = __bfloat162float(lse[(size_t)t * H + h]);
                if (l > 0) max_lse_err = std::max(max_lse_err, std::isnan(lgot) ? 1e30 : std::fabs(lgot - lref) / std::max(1.0, std::fabs(lref)));
                else if (!(std::isinf(lgot) && lgot < 0)) bad_empty++;
            }
        }
        cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
        for (int i = 0; i < 2; ++i) v.k<<<grid, v.threads, v.smem>>>(dq, dkv, didx, dvalid, dout, dlse, p);
        cudaEventRecord(a);
        for (int i = 0; i < reps; ++i) v.k<<<grid, v.threads, v.smem>>>(dq, dkv, didx, dvalid, dout, dlse, p);
        cudaEventRecord(b); cudaEventSynchronize(b);
        float ms; cudaEventElapsedTime(&ms, a, b); ms /= reps;
        double flops = 2.0 * T * H * (double)K * (D + DV);
        printf("%s DIAG=%d T=%d S=%d K=%d: max |out - ref| %.3e (max |ref| %.3e), lse rel err %.3e, empty rows wrong %d; %.4f ms, %.1f TFLOP/s\n",
               v.name, DIAG, T, S, K, max_err, max_ref, max_lse_err, bad_empty, ms, flops / ms / 1e9);
    }
    cudaFree(dq); cudaFree(dkv); cudaFree(dout); cudaFree(dlse); cudaFree(didx); cudaFree(dvalid);
}

int main(int argc, char** argv) {
    run(64, 4096, 150, 5);     // a partial block and an odd number of blocks
    run(64, 4096, 2048, 20);   // decode, batch 64
    run(4096, 4096, 2048, 5);  // prefill 4K
    if (argc > 1) run(atoi(argv[1]), atoi(argv[1]), 2048, 3);
    return 0;
}
