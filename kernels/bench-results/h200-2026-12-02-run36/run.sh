#!/usr/bin/env bash
# GPU run 36: v4 indexer (FP8 mma.sync m16n8k32, register epilogue): tests, A/B against v3
# (half cmma) in one call, ncu of v4, decode b64 at 128K on the fixed benchmark.
cd "$(dirname "$0")"
tar xJf bins.tar.xz
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
(timeout 150 ./kernels --test-threads=1 --nocapture indexer_scores) > $OUT/test.log 2>&1; echo "indexer test rc=$?"; grep -E "test result|panicked|error|relative" $OUT/test.log | head -12
(timeout 90 ./layer0 cuda --nocapture) > $OUT/layer0.log 2>&1; echo "layer0 rc=$?"; grep -E "test result|panicked|indexer|differ" $OUT/layer0.log | head -12
for k in tensor-cores half-tensor-cores; do
  (timeout 120 ./dsa-bench --dtype bf16 --reps 3 --indexer $k --only indexer --lens 4096,16384 --out $OUT/ab.jsonl) 2>&1 | grep -i "panick\|error" | head -5
done
(timeout 100 ./dsa-bench --dtype bf16 --reps 1 --indexer tensor-cores --only indexer --lens 65536,131072 --out $OUT/ab.jsonl) 2>&1 | grep -i "panick\|error" | head -5
cut -c1-150 $OUT/ab.jsonl
(timeout 100 /usr/local/cuda/bin/ncu --clock-control none -k regex:indexer_scores_fp8 --launch-count 1 --section SpeedOfLight --section LaunchStats --section Occupancy --section ComputeWorkloadAnalysis ./dsa-bench --dtype bf16 --reps 1 --indexer tensor-cores --only indexer_scores --lens 16384) > $OUT/ncu.txt 2>&1; grep -E "Registers|Throughput|Duration|Achieved Occ|Shared Memory Config|Block Limit|Issue|Executed Ipc" $OUT/ncu.txt | head -30
(RUST_BACKTRACE=1 timeout 100 ./dsa-bench --dtype bf16 --reps 3 --only decode_b64 --lens 131072 --out $OUT/b64.jsonl) > $OUT/b64.log 2>&1; echo "b64 rc=$?"; grep -i panick -A3 $OUT/b64.log | head; cut -c1-110 $OUT/b64.jsonl
