#!/usr/bin/env bash
# GPU run 63, harnesses only (nvcc on the device, one call):
# - the indexer v6 (transposed products: keys x heads, the head sum inside each thread) against
#   run 61's v5.1 (old/), FP8 and f16 entries plus the other pipelining of each, L = 16K and an
#   odd L = 1003 (float64 reference on 7 queries, NaN-poisoned f32 scores);
# - the sparse MLA forward with a token's two head-group CTAs adjacent in the grid, against
#   run 61's order (old/), and with the row copies marked L2::evict_last; decode b64, prefill 4K,
#   4K queries against a 128K latent.
R=$(pwd)
D=$R/kernels/bench-results/h200-2026-12-03-run63
cd $D
sed -e 's/wg_cp_async(k_addr\[buf\]/wg_cp_async_el(k_addr[buf]/' $R/kernels/src/cuda/sparse_mla_wgmma.cu > el.cu
grep -c wg_cp_async_el el.cu
F="-std=c++17 -gencode arch=compute_90a,code=sm_90a -O3 -I $R/kernels/src/cuda"
nvcc $F -DIDX_FILE='"indexer_wgmma.cu"' -o i_new harness_idx.cu > $OUT/nvcc_i_new.log 2>&1 &
nvcc $F -I old -DIDX_FILE='"old/indexer_wgmma.cu"' -o i_old harness_idx.cu > $OUT/nvcc_i_old.log 2>&1 &
nvcc $F -DMLA_FILE='"sparse_mla_wgmma.cu"' -DGRID_SWAP=1 -o m_new harness_mla.cu > $OUT/nvcc_m_new.log 2>&1 &
nvcc $F -DMLA_FILE='"old/sparse_mla_wgmma.cu"' -DGRID_SWAP=0 -o m_old harness_mla.cu > $OUT/nvcc_m_old.log 2>&1 &
nvcc $F -I . -DMLA_FILE='"el.cu"' -DGRID_SWAP=1 -DEVICT_LAST=1 -o m_el harness_mla.cu > $OUT/nvcc_m_el.log 2>&1 &
wait
grep -i -B2 -A3 "error" $OUT/nvcc*.log | head -40
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv
for x in i_new i_old; do for L in 1003 16384; do timeout 120 ./$x $L; done; done 2>&1 | tee $OUT/harness_idx.log
for x in m_old m_new m_el; do timeout 150 ./$x; done 2>&1 | tee $OUT/harness_mla.log
cuobjdump -sass i_new | awk '/Function :/{f = ($3 == "dsa_indexer_scores_wgmma_fp8")} f' > $OUT/fp8_v6.sass
grep -oE "^\s+/\*[0-9a-f]+\*/\s+[A-Z0-9.]+" $OUT/fp8_v6.sass | awk '{print $2}' | sed 's/\..*//' | sort | uniq -c | sort -rn | head -25
xz -9 $OUT/fp8_v6.sass
