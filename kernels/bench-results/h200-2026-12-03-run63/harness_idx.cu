// Standalone check and timing of the wgmma indexer (indexer_wgmma.cu) at V3.2's shape, causal,
// T = S = L: random e4m3 codes (as bytes for the FP8 entry, as f16 for the f16 entry), f32
// weights and scales, f32 scores poisoned with NaN, a float64 reference for a few queries.
// Run 63: the source under test by -DIDX_FILE (the landed v6 or run 61's v5.1 in old/), its
// two entries plus FP8 with PIPE at one CTA per SM and f16 without PIPE.
// nvcc -std=c++17 -gencode arch=compute_90a,code=sm_90a -O3 -I kernels/src/cuda -DIDX_FILE='"indexer_wgmma.cu"' -o hi harness_idx.cu && ./hi 16384
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <vector>
#include <random>
#include <cuda_fp8.h>
#include <cuda_fp16.h>
#include "wgmma.cuh"
#include IDX_FILE

#define IDX_VARIANT(name, CB, PIPE, CTAS)                                                                              \
    extern "C" __global__ void __launch_bounds__(IDX_THREADS, CTAS) name(                                              \
        const unsigned char* __restrict__ q, const void* __restrict__ w, const float* __restrict__ sq,                 \
        const unsigned char* __restrict__ k, const float* __restrict__ sk, void* __restrict__ out, const IdxParams p) { \
        extern __shared__ __align__(1024) unsigned char sm[];                                                          \
        idx_scores<CB, PIPE>(q, w, sq, k, sk, out, p, sm);                                                             \
    }
IDX_VARIANT(h_fp8_pipe, 1, true, 1)
IDX_VARIANT(h_f16_nopipe, 2, false, 1)

int main(int argc, char** argv) {
    const int L = argc > 1 ? atoi(argv[1]) : 16384, H = 64, D = 128, T = L, S = L;
    std::mt19937 g(5);
    std::normal_distribution<float> n(0.f, 1.f);
    std::vector<unsigned char> q8((size_t)T * H * D), k8((size_t)S * D);
    std::vector<__half> q16(q8.size()), k16(k8.size());
    std::vector<float> qv(q8.size()), kv(k8.size()), w((size_t)T * H), sq((size_t)T * H), sk(S);
    auto code = [&](float x, unsigned char& b, __half& h, float& v) {
        __nv_fp8_e4m3 c(x * 100.0f);
        b = *(unsigned char*)&c;
        v = float(c);
        h = __float2half(v);
    };
    for (size_t i = 0; i < q8.size(); ++i) code(n(g), q8[i], q16[i], qv[i]);
    for (size_t i = 0; i < k8.size(); ++i) code(n(g), k8[i], k16[i], kv[i]);
    for (auto& x : w) x = n(g);
    for (auto& x : sq) x = 0.01f * (1.0f + 0.1f * n(g));
    for (auto& x : sk) x = 0.01f * (1.0f + 0.1f * n(g));
    unsigned char *dq8, *dk8; __half *dq16, *dk16; float *dw, *dsq, *dsk, *dout;
    cudaMalloc(&dq8, q8.size()); cudaMalloc(&dk8, k8.size());
    cudaMalloc(&dq16, q8.size() * 2); cudaMalloc(&dk16, k8.size() * 2);
    cudaMalloc(&dw, w.size() * 4); cudaMalloc(&dsq, sq.size() * 4); cudaMalloc(&dsk, sk.size() * 4);
    cudaMalloc(&dout, (size_t)T * S * 4);
    cudaMemcpy(dq8, q8.data(), q8.size(), cudaMemcpyHostToDevice);
    cudaMemcpy(dk8, k8.data(), k8.size(), cudaMemcpyHostToDevice);
    cudaMemcpy(dq16, q16.data(), q8.size() * 2, cudaMemcpyHostToDevice);
    cudaMemcpy(dk16, k16.data(), k8.size() * 2, cudaMemcpyHostToDevice);
    cudaMemcpy(dw, w.data(), w.size() * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(dsq, sq.data(), sq.size() * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(dsk, sk.data(), sk.size() * 4, cudaMemcpyHostToDevice);
    IdxParams p{(u64)T, (u64)S, 0, 1, 2048, 4, 4};
    dim3 grid((T + IDX_QUERIES - 1) / IDX_QUERIES, (S + 2047) / 2048);
    typedef void (*K)(const unsigned char*, const void*, const float*, const unsigned char*, const float*, void*, IdxParams);
    struct V { const char* name; K kern; int smem; const unsigned char *qc, *kc; } vs[] = {
        {"fp8", dsa_indexer_scores_wgmma_fp8, (int)IdxLayout<1>::SMEM, dq8, dk8},
        {"f16", dsa_indexer_scores_wgmma, (int)IdxLayout<2>::SMEM, (const unsigned char*)dq16, (const unsigned char*)dk16},
        {"fp8 PIPE 1 CTA", h_fp8_pipe, (int)IdxLayout<1>::SMEM, dq8, dk8},
        {"f16 no PIPE", h_f16_nopipe, (int)IdxLayout<2>::SMEM, (const unsigned char*)dq16, (const unsigned char*)dk16},
    };
    std::vector<float> out((size_t)T * S);
    for (auto& v : vs) {
        cudaFuncSetAttribute(v.kern, cudaFuncAttributeMaxDynamicSharedMemorySize, v.smem);
        cudaMemset(dout, 0xff, (size_t)T * S * 4);
        v.kern<<<grid, IDX_THREADS, v.smem>>>(v.qc, dw, dsq, v.kc, dsk, dout, p);
        cudaError_t e = cudaDeviceSynchronize();
        if (e != cudaSuccess) { printf("%s: %s\n", v.name, cudaGetErrorString(e)); return 1; }
        cudaMemcpy(out.data(), dout, out.size() * 4, cudaMemcpyDeviceToHost);
        double num = 0, den = 0; int bad = 0;
        int ts[] = {0, 1, 7, 8, std::min(1000, T - 2), T / 2, T - 1};
        for (int t : ts)
            for (int s = 0; s < S; ++s) {
                float got = out[(size_t)t * S + s];
                if (s > t) { if (!(std::isinf(got) && got < 0)) bad++; continue; }
                double acc = 0;
                for (int h = 0; h < H; ++h) {
                    double dot = 0;
                    for (int d = 0; d < D; ++d) dot += (double)qv[((size_t)t * H + h) * D + d] * kv[(size_t)s * D + d];
                    acc += (double)w[(size_t)t * H + h] * sq[(size_t)t * H + h] * std::max(dot, 0.0);
                }
                acc *= sk[s];
                if (std::isnan(got)) { bad++; continue; }
                num += (got - acc) * (got - acc); den += acc * acc;
            }
        cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
        const int reps = 5;
        cudaEventRecord(a);
        for (int i = 0; i < reps; ++i) v.kern<<<grid, IDX_THREADS, v.smem>>>(v.qc, dw, dsq, v.kc, dsk, dout, p);
        cudaEventRecord(b); cudaEventSynchronize(b);
        float ms; cudaEventElapsedTime(&ms, a, b); ms /= reps;
        double flops = 2.0 * H * D * (double)T * S / 2;
        printf("%s %s L=%d: rel err %.2e, bad %d; %.3f ms, %.0f TFLOP/s\n", IDX_FILE, v.name, L, std::sqrt(num / den), bad, ms, flops / ms / 1e9);
    }
    return 0;
}
