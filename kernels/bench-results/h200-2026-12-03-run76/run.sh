#!/usr/bin/env bash
# Run 76: v7 with the dkv prefetch gated on the latent's size (DSB_PREFETCH_ROWS, run 75).
# 1. Where prefetching starts to pay: nvcc builds the library's kernel with the prefetch never
#    (never.cubin) and always (always.cubin) on; run 75's harness times both for 4K queries over
#    latents of 4K..128K rows.
# 2. The library (binaries in dev-bin/, built at the commit in dev-bin/BUILT_AT): the backward
#    under Auto at 4K..128K, then every CUDA kernel test.
# From the repository root, with dev-bin carried: bash kernels/bench-results/h200-2026-12-03-run76/run.sh
cd "$(dirname "$0")"
C=../../src/cuda
for v in never always; do
    n=$([ $v = never ] && echo '~0ull' || echo 0)
    cat $C/wgmma.cuh $C/sparse_mla_wgmma.cuh $C/sparse_mla_bwd_wgmma.cu | sed "s/^#define DSB_PREFETCH_ROWS .*/#define DSB_PREFETCH_ROWS $n/" > $v.cu
    nvcc -cubin -std=c++17 -gencode arch=compute_90a,code=sm_90a -O3 -o $v.cubin $v.cu > $OUT/nvcc_$v.log 2>&1 &
done
wait; ls -la *.cubin; grep -h "PREFETCH_ROWS " never.cu always.cu
timeout 150 python3 ../h200-2026-12-03-run75/harness75.py never,always 4096,8192,16384,32768,65536,131072 2>&1 | tee $OUT/harness.log
cd ../../../dev-bin && tar xJf bins.tar.xz && echo "built at $(cat BUILT_AT)"
timeout 200 ./dsa-bench --dtype bf16 --reps 3 --only sparse_mla_bwd --lens 4096,16384,65536,131072 > $OUT/bench_auto.jsonl 2> $OUT/bench_auto.err
echo "bench rc=$?"; cat $OUT/bench_auto.jsonl
(timeout 400 ./kernels --test-threads=1) > $OUT/test.log 2>&1; echo "kernel tests rc=$?"
grep -E "^test |test result" $OUT/test.log | head -24
grep -B2 -A14 panicked $OUT/test.log | head -30
