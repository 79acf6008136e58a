#!/usr/bin/env bash
# GPU run 68 (harness only): the sparse MLA forward with the producer's slot lookups issued
# together (dsa_slot_rows, the working tree's source) against the landed one (before/: the
# working tree's source with slot_rows.diff reversed), run 63's harness (float64 reference,
# NaN-poisoned outputs), twice each, same call.
R=$(pwd)
D=$R/kernels/bench-results/h200-2026-12-03-run68
H=$R/kernels/bench-results/h200-2026-12-03-run63/harness_mla.cu
cd $D
mkdir -p before && cp $R/kernels/src/cuda/sparse_mla_wgmma.cu before/ && patch -s -R before/sparse_mla_wgmma.cu < slot_rows.diff || exit 1
F="-std=c++17 -gencode arch=compute_90a,code=sm_90a -O3 -I $R/kernels/src/cuda -I $D"
nvcc $F -DMLA_FILE='"'$R'/kernels/src/cuda/sparse_mla_wgmma.cu"' -DGRID_SWAP=1 -o m_new $H > $OUT/nvcc_new.log 2>&1 &
nvcc $F -DMLA_FILE='"before/sparse_mla_wgmma.cu"' -DGRID_SWAP=1 -o m_before $H > $OUT/nvcc_before.log 2>&1 &
wait
grep -i -B2 -A3 "error" $OUT/nvcc*.log | head -40
for x in m_before m_new m_before m_new; do echo "== $x"; timeout 150 ./$x; done 2>&1 | grep -v "K=150" | tee $OUT/harness_mla.log
