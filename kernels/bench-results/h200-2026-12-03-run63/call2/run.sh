#!/usr/bin/env bash
# GPU run 63, second call (the first, call1/, measured the first v6 draft of the indexer and
# only the evict_last MLA variant, the others failing to compile): the indexer v6 with FMA
# chains and its index arithmetic hoisted out of the pairs; the sparse MLA forward in run 61's
# grid order (old/), with a token's head groups adjacent, and adjacent + L2::evict_last.
R=$(pwd)
D=$R/kernels/bench-results/h200-2026-12-03-run63
cd $D
sed -e 's/wg_cp_async(k_addr\[buf\]/wg_cp_async_el(k_addr[buf]/' $R/kernels/src/cuda/sparse_mla_wgmma.cu > el.cu
F="-std=c++17 -gencode arch=compute_90a,code=sm_90a -O3 -I $R/kernels/src/cuda"
nvcc $F -DIDX_FILE='"indexer_wgmma.cu"' -o i_new harness_idx.cu > $OUT/nvcc_i_new.log 2>&1 &
nvcc $F -DMLA_FILE='"sparse_mla_wgmma.cu"' -DGRID_SWAP=1 -o m_new harness_mla.cu > $OUT/nvcc_m_new.log 2>&1 &
nvcc $F -DMLA_FILE='"old/sparse_mla_wgmma.cu"' -DGRID_SWAP=0 -o m_old harness_mla.cu > $OUT/nvcc_m_old.log 2>&1 &
nvcc $F -I . -DMLA_FILE='"el.cu"' -DGRID_SWAP=1 -DEVICT_LAST=1 -o m_el harness_mla.cu > $OUT/nvcc_m_el.log 2>&1 &
wait
grep -i -B2 -A3 "error" $OUT/nvcc*.log | head -40
for L in 1003 16384; do timeout 120 ./i_new $L; done 2>&1 | tee $OUT/harness_idx.log
for x in m_old m_new m_el; do timeout 150 ./$x; done 2>&1 | tee $OUT/harness_mla.log
cuobjdump -sass i_new | awk '/Function :/{f = ($3 == "dsa_indexer_scores_wgmma_fp8")} f' > $OUT/fp8_v6.sass
grep -oE "^\s+/\*[0-9a-f]+\*/\s+[A-Z0-9.]+" $OUT/fp8_v6.sass | awk '{print $2}' | sed 's/\..*//' | sort | uniq -c | sort -rn | head -25
xz -9 $OUT/fp8_v6.sass
