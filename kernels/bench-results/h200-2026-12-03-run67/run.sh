#!/usr/bin/env bash
# GPU run 67 (microbenchmarks): gather.cu's variants of v6's producer structure without math,
# then run 62's diagnostic copy of v6 (DIAG=0 as landed, DIAG=2 without math) in the same call.
R=$(pwd)
cd "$(dirname "$0")"
F="-std=c++17 -gencode arch=compute_90a,code=sm_90a -O3"
H=$R/kernels/bench-results/h200-2026-12-03-run62/harness_diag.cu
nvcc $F -o g gather.cu > $OUT/nvcc.log 2>&1 &
for d in 0 2; do nvcc $F -I $R/kernels/src/cuda -DDIAG=$d -o d$d $H > $OUT/nvcc$d.log 2>&1 & done
wait
grep -i -A3 error $OUT/nvcc*.log | head -20
timeout 120 ./g | tee $OUT/gather.log
for d in 0 2; do timeout 60 ./d$d; done 2>&1 | grep -v "K=150" | tee $OUT/diag.log
