#!/usr/bin/env bash
# (The compared versions are recreated by sources.sh, beside this script, before it runs.)
# GPU run 63, fourth call (call1-3/: the earlier ones): the indexer v6.2 (4 queries per CTA,
# warpgroup w owns queries 2w, 2w+1 with their head weights in registers, 256-key tiles)
# against v6 as in call 2 (v6a/) and run 61's v5.1 (old/), same call, L = 1003 and 16K.
R=$(pwd)
D=$R/kernels/bench-results/h200-2026-12-03-run63
cd $D
F="-std=c++17 -gencode arch=compute_90a,code=sm_90a -O3 -I $R/kernels/src/cuda"
nvcc $F -DIDX_FILE='"indexer_wgmma.cu"' -o i_new harness_idx.cu > $OUT/nvcc_i_new.log 2>&1 &
nvcc $F -I v6a -DIDX_FILE='"v6a/indexer_wgmma.cu"' -o i_v6a harness_idx.cu > $OUT/nvcc_i_v6a.log 2>&1 &
nvcc $F -I old -DIDX_FILE='"old/indexer_wgmma.cu"' -o i_old harness_idx.cu > $OUT/nvcc_i_old.log 2>&1 &
wait
grep -i -B2 -A3 "error" $OUT/nvcc*.log | head -40
for x in i_new i_v6a i_old i_new; do for L in 1003 16384; do timeout 120 ./$x $L; done; done 2>&1 | tee $OUT/harness_idx.log
