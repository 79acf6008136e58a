#!/usr/bin/env bash
# GPU run 63, third call (call1/, call2/: the earlier ones): the indexer v6 with each thread's
# head weights read as four 16-byte loads; timing at L = 1003 and 16K, then ncu on one launch
# of the FP8 entry at 16K (where its time goes).
R=$(pwd)
D=$R/kernels/bench-results/h200-2026-12-03-run63
cd $D
F="-std=c++17 -gencode arch=compute_90a,code=sm_90a -O3 -I $R/kernels/src/cuda"
nvcc $F -lineinfo -DIDX_FILE='"indexer_wgmma.cu"' -o i_new harness_idx.cu > $OUT/nvcc_i_new.log 2>&1
grep -i -B2 -A3 "error" $OUT/nvcc*.log | head -40
for L in 1003 16384 16384; do timeout 120 ./i_new $L; done 2>&1 | tee $OUT/harness_idx.log
/usr/local/cuda/bin/ncu --kernel-name dsa_indexer_scores_wgmma_fp8 --launch-count 1 --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section Occupancy --section SourceCounters ./i_new 16384 > $OUT/ncu_idx.txt 2>&1
grep -v "^==PROF==" $OUT/ncu_idx.txt | head -150
