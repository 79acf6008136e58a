#!/usr/bin/env bash
# GPU run 42: experiment v4.3 (v4's register layout on f16 mma.sync m16n8k16, 32 heads per
# plane): the indexer test (every kernel), A/B against v4 and v3 in one call, registers.
cd "$(dirname "$0")"
tar xJf bins.tar.xz
(timeout 150 ./kernels --test-threads=1 --nocapture indexer_scores) > $OUT/test.log 2>&1; echo "indexer test rc=$?"; grep -E "test result|panicked|error" -A3 $OUT/test.log | head -12
for k in mma16 tensor-cores half-tensor-cores; do
  (timeout 100 ./dsa-bench --dtype bf16 --reps 3 --indexer $k --only indexer_scores --lens 4096,16384 --out $OUT/ab.jsonl) 2>&1 | grep -i "panick\|error" | head -5
done
cut -c1-120 $OUT/ab.jsonl
(timeout 100 /usr/local/cuda/bin/ncu --clock-control none -k regex:indexer_scores_mma16 --launch-count 1 --section SpeedOfLight --section LaunchStats --section Occupancy ./dsa-bench --dtype bf16 --reps 1 --indexer mma16 --only indexer_scores --lens 16384) > $OUT/ncu.txt 2>&1; grep -E "Registers|Duration|Achieved Occ|Block Limit Reg|Compute \(SM\)" $OUT/ncu.txt | head -8
