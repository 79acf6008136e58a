#!/usr/bin/env bash
# GPU run 67, third call: gather.cu with MODE 3 and MODE 5 (v6's crossed frees) at v6's
# shared-memory size (231368 bytes).
cd "$(dirname "$0")"
nvcc -std=c++17 -gencode arch=compute_90a,code=sm_90a -O3 -o g gather.cu > $OUT/nvcc.log 2>&1 || head -20 $OUT/nvcc.log
timeout 120 ./g | tee $OUT/gather.log
