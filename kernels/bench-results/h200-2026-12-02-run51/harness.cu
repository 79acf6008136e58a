// Standalone check of the v5 (wgmma) sparse MLA forward: random bf16 inputs at V3.2's
// shapes, a float64 reference on the host for a few tokens, and the kernel's time.
// nvcc -std=c++17 -arch=sm_90a -O3 -o harness harness.cu && ./harness T
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <vector>
#include <random>
// The helpers moved into wgmma.cuh after run 52 (the same PTX); run 51 compiled the kernel
// file alone.
#include "wgmma.cuh"
#include "sparse_mla_wgmma.cu"

int main(int argc, char** argv) {
    const int T = argc > 1 ? atoi(argv[1]) : 4096, H = 128, D = 576, DV = 512, K = 2048, S = T, KV_SS = 640;
    const float scale = 0.0625f;
    std::mt19937 g(1);
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
    cudaMemset(dout, 0xff, (size_t)T * H * DV * 2);
    DsaMlaParams p{(u64)T, (u64)T, (u64)H, (u64)K, (u64)S, (u64)T * H * D, (u64)H * D, (u64)D, (u64)S * KV_SS, (u64)KV_SS, 0, 4, 1};
    u32 sb; memcpy(&sb, &scale, 4); p.scale_bits = sb;
    cudaFuncSetAttribute(dsa_sparse_mla_fwd_wgmma, cudaFuncAttributeMaxDynamicSharedMemorySize, DSA_SMEM_BYTES);
    dim3 grid(T, (H + 63) / 64);
    dsa_sparse_mla_fwd_wgmma<<<grid, DSA_THREADS, DSA_SMEM_BYTES>>>(dq, dkv, didx, dvalid, dout, dlse, p);
    cudaError_t e = cudaDeviceSynchronize();
    printf("launch: %s (smem %d bytes)\n", cudaGetErrorString(e), DSA_SMEM_BYTES);
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
            if (l > 0) max_lse_err = std::max(max_lse_err, std::fabs(lgot - lref) / std::max(1.0, std::fabs(lref)));
            else if (!(std::isinf(lgot) && lgot < 0)) bad_empty++;
        }
    }
    printf("check: max |out - ref| %.3e (max |ref| %.3e), lse rel err %.3e, empty rows wrong %d\n", max_err, max_ref, max_lse_err, bad_empty);
    cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
    for (int i = 0; i < 2; ++i) dsa_sparse_mla_fwd_wgmma<<<grid, DSA_THREADS, DSA_SMEM_BYTES>>>(dq, dkv, didx, dvalid, dout, dlse, p);
    const int reps = 10;
    cudaEventRecord(a);
    for (int i = 0; i < reps; ++i) dsa_sparse_mla_fwd_wgmma<<<grid, DSA_THREADS, DSA_SMEM_BYTES>>>(dq, dkv, didx, dvalid, dout, dlse, p);
    cudaEventRecord(b); cudaEventSynchronize(b);
    float ms; cudaEventElapsedTime(&ms, a, b); ms /= reps;
    double flops = 2.0 * T * H * (double)K * (D + DV);
    printf("time: T=%d %.3f ms, %.1f TFLOP/s\n", T, ms, flops / ms / 1e9);
    return 0;
}
