#!/usr/bin/env bash
# (diag.cu and harness_diag.cu are recreated by sources.sh, beside this script, before it runs.)
# GPU run 67, fourth call: Nsight Compute on the same gathers in the two settings that differ
# 2.5x: run 62's DIAG=2 copy of v6 without math (with NOVALID=1 NOQE=1, 5.0 ms at 4K) and
# gather.cu's MODE 5 at v6's shared-memory size (2.02 ms), the 4K prefill launch of each.
R=$(pwd)
cd "$(dirname "$0")"
F="-std=c++17 -gencode arch=compute_90a,code=sm_90a -O3"
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1); echo "ncu: $NCU"
nvcc $F -o g gather.cu > $OUT/nvcc.log 2>&1 &
nvcc $F -I $R/kernels/src/cuda -DDIAG=2 -DNOVALID=1 -DNOQE=1 -o d211 harness_diag.cu > $OUT/nvcc211.log 2>&1 &
wait
S="--section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section LaunchStats --section Occupancy"
timeout 200 $NCU --clock-control none $S -k regex:dsa --launch-skip 31 --launch-count 1 ./d211 > $OUT/ncu-diag.txt 2>&1; echo "diag rc=$?"
timeout 200 $NCU --clock-control none $S -k regex:v6ILi5 --launch-skip 1 --launch-count 1 ./g > $OUT/ncu-g.txt 2>&1; echo "g rc=$?"
for f in diag g; do echo "=== $f"; grep -E "^  [a-z_A-Z].*\(|Duration|Memory Throughput|DRAM Throughput|L2 Hit|L1/TEX Hit|Mem Busy|Max Bandwidth|Grid Size|Block Size|Registers|Shared Memory|Warp Cycles Per Issued|Avg. Active Threads|Achieved Occupancy|L2 Compression|Stall|Theoretical Occ" $OUT/ncu-$f.txt | head -40; done
