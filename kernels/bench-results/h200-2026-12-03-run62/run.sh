#!/usr/bin/env bash
# GPU run 62: where v6's time goes. Run 56's harness on a diagnostic copy of the landed v6
# (bench-results/h200-2026-12-03-run62/diag.cu): DIAG=0 as landed, DIAG=1 without the
# producer's global reads (math and synchronisation only), DIAG=2 without the math (gathers
# and barriers only); decode b64 and prefill 4K, same inputs, one call.
R=$(pwd)
cd "$(dirname "$0")"
H=$R/kernels/bench-results/h200-2026-12-03-run62/harness_diag.cu
F="-std=c++17 -gencode arch=compute_90a,code=sm_90a -O3 -I $R/kernels/src/cuda"
for d in 0 1 2; do nvcc $F -DDIAG=$d -o g$d $H > $OUT/nvcc$d.log 2>&1 & done; wait
grep -i error $OUT/nvcc*.log | head
for d in 0 1 2; do timeout 60 ./g$d; done 2>&1 | grep -v "K=150" | tee $OUT/harness.log
