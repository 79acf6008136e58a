#!/usr/bin/env bash
# GPU run 66 (microbenchmarks only). What ran (tma_gather.log): the cpasync and tma kernels of
# tma_gather.cu (gather_v6 was added after, with the DIAG=2 comparison below: prepared for the
# next session, not run yet — the session's device time was spent).
# The forward's row gathers alone (4K tokens x 2 head groups
# x 2048 rows = 19.3 GB, latents of 4K and 128K, every byte of the first buffers checked):
# 16-byte cp.async as the landed producer in a plain double buffer; 2D TMA copies of one
# 64-value row piece each (SWIZZLE_128B); v6's producer structure (halves with ready/free
# mbarriers, 384 threads) with consumers that only wait and free. Then run 62's diagnostic
# copy of v6 without math (DIAG=2) in the same call, for the same gathers inside v6.
R=$(pwd)
cd "$(dirname "$0")"
nvcc -std=c++17 -gencode arch=compute_90a,code=sm_90a -O3 -o tg tma_gather.cu -lcuda > $OUT/nvcc.log 2>&1 || { head -30 $OUT/nvcc.log; exit 1; }
nvcc -std=c++17 -gencode arch=compute_90a,code=sm_90a -O3 -I $R/kernels/src/cuda -I ../h200-2026-12-03-run62 -DDIAG=2 -o g2 ../h200-2026-12-03-run62/harness_diag.cu > $OUT/nvcc_diag.log 2>&1 || { head -30 $OUT/nvcc_diag.log; exit 1; }
timeout 120 ./tg | tee $OUT/tma_gather.log
timeout 60 ./g2 | grep -v "K=150" | tee $OUT/diag2.log
