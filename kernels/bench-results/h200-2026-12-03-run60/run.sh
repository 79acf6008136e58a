#!/usr/bin/env bash
# GPU run 60: the wgmma indexer's variants in a standalone harness (same inputs, float64
# reference on 7 queries, NaN-poisoned f32 scores, causal L = 16K): the landed build
# (next product before the sums, 1 CTA per SM), no pipelining at 2 CTAs per SM (128
# registers), pipelining at 2 CTAs per SM (spills); and the SASS instruction mix of the landed one.
R=$(pwd)
cd "$(dirname "$0")"
H=$R/kernels/bench-results/h200-2026-12-03-run60/harness_idx.cu
F="-std=c++17 -gencode arch=compute_90a,code=sm_90a -O3 -I $R/kernels/src/cuda"
nvcc $F -o a $H > $OUT/nvcc.log 2>&1 &
nvcc $F -DIDX_PIPE=0 -DIDX_FP8_CTAS=2 -o b $H >> $OUT/nvcc.log 2>&1 &
nvcc $F -DIDX_PIPE=1 -DIDX_FP8_CTAS=2 -o c $H >> $OUT/nvcc.log 2>&1 &
nvcc $F -DIDX_PIPE=0 -o d $H >> $OUT/nvcc.log 2>&1 &
wait
grep -i error $OUT/nvcc.log | head
for x in a b c d; do timeout 100 ./$x 16384; done 2>&1 | tee $OUT/harness.log
cuobjdump -sass a | awk '/Function : dsa_indexer_scores_wgmma_fp8/{f=1} /Function : dsa_indexer_scores_wgmma$/{f=0} f' > $OUT/fp8.sass
grep -oE "^\s+/\*[0-9a-f]+\*/\s+[A-Z0-9.]+" $OUT/fp8.sass | awk '{print $2}' | sed 's/\..*//' | sort | uniq -c | sort -rn | head -25
xz -9 $OUT/fp8.sass
