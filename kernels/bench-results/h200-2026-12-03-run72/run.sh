#!/usr/bin/env bash
# Run 72: v7.1 (pair) against v7 (alone), harness_pair.cu built with nvcc here; then Nsight
# Compute on both at 4K queries over a 128K latent. From the repository root:
# bash kernels/bench-results/h200-2026-12-03-run72/run.sh
cd "$(dirname "$0")"
R=$(cd ../../.. && pwd)
# The kernels (v7 alone and the pair): v7 (kernels/src/cuda at fc22c1b) with pair.patch; the
# harness: run 70's with harness_pair.patch (the kernel a parameter). Needs patch(1).
mkdir -p pair && cp $R/kernels/src/cuda/sparse_mla_bwd_wgmma.cu pair/ && patch -s pair/sparse_mla_bwd_wgmma.cu < pair.patch || exit
cp ../h200-2026-12-03-run70/harness_bwd.cu pair/harness_pair.cu && patch -s pair/harness_pair.cu < harness_pair.patch || exit
nvcc -std=c++17 -gencode arch=compute_90a,code=sm_90a -O3 -I pair -I $R/kernels/src/cuda -o hb pair/harness_pair.cu > $OUT/nvcc.log 2>&1; echo "nvcc rc=$?"
grep -i -A3 error $OUT/nvcc.log | head -20
timeout 150 ./hb 2>&1 | tee $OUT/harness.log; rc=${PIPESTATUS[0]}; echo "harness rc=$rc"
[ $rc = 0 ] || exit
[ "$1" = ncu ] || exit
# The first launch at 4K x 128K: after 9 (pair) or 12 (alone) checking launches and 12 at 4K.
for ks in dsa_sparse_mla_bwd_wgmma_pair:21 dsa_sparse_mla_bwd_wgmma:24; do k=${ks%:*}
timeout 120 /usr/local/cuda/bin/ncu -k regex:"^$k\$" --launch-skip ${ks#*:} -c 1 --section SpeedOfLight --section WarpStateStats \
  --metrics lts__t_sectors_op_red.sum,lts__t_sector_op_red_hit_rate.pct,dram__bytes_read.sum,dram__bytes_write.sum,gpu__time_duration.sum \
  ./hb > $OUT/ncu_$k.txt 2>&1; echo "ncu $k rc=$?"
grep -E "Duration|Throughput|red|dram__|L2 Hit|Warp Cycles" $OUT/ncu_$k.txt | head -16
done
