#!/usr/bin/env bash
# (The compared versions are recreated by sources.sh, beside this script, before it runs.)
# GPU run 65 (harness only): the sparse MLA forward's producer with each iteration's rows
# loaded one iteration ahead (their latency off the copies' path; prefetch/, not landed)
# against the landed one (then `before/`: kernels/src/cuda/sparse_mla_wgmma.cu of commit
# 66d21dd), run 63's harness (float64 reference, NaN-poisoned outputs), twice each, same call.
R=$(pwd)
D=$R/kernels/bench-results/h200-2026-12-03-run65
H=$R/kernels/bench-results/h200-2026-12-03-run63/harness_mla.cu
cd $D
F="-std=c++17 -gencode arch=compute_90a,code=sm_90a -O3 -I $R/kernels/src/cuda -I $D"
nvcc $F -DMLA_FILE='"prefetch/sparse_mla_wgmma.cu"' -DGRID_SWAP=1 -o m_new $H > $OUT/nvcc_new.log 2>&1 &
nvcc $F -DMLA_FILE='"sparse_mla_wgmma.cu"' -DGRID_SWAP=1 -o m_before $H > $OUT/nvcc_before.log 2>&1 &
wait
grep -i -B2 -A3 "error" $OUT/nvcc*.log | head -40
for x in m_before m_new m_before m_new; do timeout 150 ./$x; done 2>&1 | grep -v "K=150" | tee $OUT/harness_mla.log
