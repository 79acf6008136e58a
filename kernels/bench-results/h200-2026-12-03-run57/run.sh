#!/usr/bin/env bash
# GPU run 57 (run 56's binaries): where the time goes. (1) v6 with the producer's copies
# fetching 256-byte L2 segments against v6 as in run 56 (harness, same call); (2) nsys (or
# ncu) kernel times of the indexer scores op at 16K (quantisation vs scores); (3) ncu on the
# v6 forward at 1K tokens.
R=$(pwd)
cd "$(dirname "$0")"
tar xJf bins.tar.xz
H=$R/kernels/bench-results/h200-2026-12-03-run56/harness_ws.cu
nvcc -std=c++17 -gencode arch=compute_90a,code=sm_90a -O3 -I $R/kernels/src/cuda -o h0 $H > $OUT/nvcc.log 2>&1 &
nvcc -std=c++17 -gencode arch=compute_90a,code=sm_90a -O3 -DM6_L2_256=1 -I $R/kernels/src/cuda -o h1 $H >> $OUT/nvcc.log 2>&1 &
wait
(timeout 60 ./h0; timeout 60 ./h1) 2>&1 | grep -v "K=150" | tee $OUT/harness.log
which nsys ncu
if which nsys >/dev/null; then
  timeout 120 nsys profile -o $OUT/idx --force-overwrite true --stats=false ./dsa-bench --dtype bf16 --reps 1 --only indexer_scores --lens 16384 > /dev/null 2>&1
  timeout 60 nsys stats --report cuda_gpu_kern_sum --format csv $OUT/idx.nsys-rep 2>/dev/null | cut -c1-220 | head -20
fi
timeout 150 ncu --set full -k regex:dsa_sparse_mla_fwd_ws -c 1 ./h0 > $OUT/ncu-v6.txt 2>&1; echo "ncu rc=$?"
grep -E "Duration|Tensor|Issue Slots Busy|Registers Per|Achieved Occupancy|Stall|L2 Hit|Mem Busy|Max Bandwidth|Warp Cycles Per Issued|L1/TEX Hit|DRAM Throughput|Compute \(SM\)" $OUT/ncu-v6.txt | head -40
