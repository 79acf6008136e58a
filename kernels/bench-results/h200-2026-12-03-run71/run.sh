#!/usr/bin/env bash
# Run 71: v7 against the L2-policy variant (harness71.cu), then Nsight Compute on v7 at 4K
# queries over a 128K latent. From the repository root: bash kernels/bench-results/h200-2026-12-03-run71/run.sh
cd "$(dirname "$0")"
R=$(cd ../../.. && pwd)
# The variant: v7 (kernels/src/cuda at fc22c1b) with l2hint.patch (needs patch(1)).
mkdir -p l2hint && cp $R/kernels/src/cuda/sparse_mla_bwd_wgmma.cu l2hint/ && patch -s l2hint/sparse_mla_bwd_wgmma.cu < l2hint.patch || exit
F="-std=c++17 -gencode arch=compute_90a,code=sm_90a -O3"
nvcc $F -I $R/kernels/src/cuda -o hb_base harness71.cu > $OUT/nvcc_base.log 2>&1; echo "nvcc base rc=$?"
nvcc $F -I l2hint -I $R/kernels/src/cuda -o hb_l2 harness71.cu > $OUT/nvcc_l2.log 2>&1; echo "nvcc l2hint rc=$?"
echo "== base"; timeout 100 ./hb_base | tee $OUT/base.log
echo "== l2hint"; timeout 100 ./hb_l2 check | tee $OUT/l2hint.log
echo "== base again"; timeout 100 ./hb_base | tee -a $OUT/base.log
timeout 200 /usr/local/cuda/bin/ncu -k regex:dsa_sparse_mla_bwd --launch-skip 12 -c 1 --section SpeedOfLight --section WarpStateStats --section MemoryWorkloadAnalysis \
  --metrics lts__t_sectors_op_red.sum,lts__t_sector_op_red_hit_rate.pct,lts__t_sector_hit_rate.pct,dram__bytes_read.sum,dram__bytes_write.sum,gpu__time_duration.sum,smsp__inst_executed_op_global_red.sum \
  ./hb_base > $OUT/ncu128k.txt 2>&1; echo "ncu rc=$?"
grep -E "Duration|Throughput|red|hit|dram__|Stall|Warp Cycles|L2 Hit|stall" $OUT/ncu128k.txt | head -40
