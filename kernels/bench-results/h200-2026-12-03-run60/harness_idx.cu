// Standalone check and timing of the wgmma indexer (indexer_wgmma.cu) at V3.2's shape, causal,
// T = S = L: random e4m3 codes (as bytes for the FP8 entry, as f16 for the f16 entry), f32
// weights and scales, f32 scores poisoned with NaN, a float64 reference for a few queries.
// Variants by -D: IDX_PIPE (next product issued before the sums), IDX_FP8_CTAS (CTAs per SM
// the FP8 entry is compiled for).
// nvcc -std=c++17 -gencode arch=compute_90a,code=sm_90a -O3 -I kernels/src/cuda -o hi harness_idx.cu && ./hi 16384
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <vector>
#include <random>
#include <cuda_fp8.h>
#include <cuda_fp16.h>
#include "wgmma.cuh"
#include "indexer_wgmma.cu"

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
    dim3 grid((T + 7) / 8, (S + 2047) / 2048);
    typedef void (*K)(const unsigned char*, const void*, const float*, const unsigned char*, const float*, void*, IdxParams);
    struct V { const char* name; K kern; int smem; const unsigned char *qc, *kc; } vs[] = {
        {"fp8", dsa_indexer_scores_wgmma_fp8, (int)IdxLayout<1>::SMEM, dq8, dk8},
        {"f16", dsa_indexer_scores_wgmma, (int)IdxLayout<2>::SMEM, (const unsigned char*)dq16, (const unsigned char*)dk16},
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
        int ts[] = {0, 1, 7, 8, 1000, T / 2, T - 1};
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
        printf("%s PIPE=%d FP8_CTAS=%d L=%d: rel err %.2e, bad %d; %.3f ms, %.0f TFLOP/s\n", v.name, IDX_PIPE, IDX_FP8_CTAS, L, std::sqrt(num / den), bad, ms, flops / ms / 1e9);
    }
    return 0;
}
