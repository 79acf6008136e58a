#!/usr/bin/env bash
# GPU run 38: v4.1 indexer (key tiles in a run-time loop, run 37 hit 255 registers): tests,
# layer-0 conformance, A/B against v3 (half cmma) in one call, ncu, decode b64 at 128K.
cd "$(dirname "$0")"
export DSA_CONFORMANCE_DIR=$PWD/conformance
tar xJf bins.tar.xz
(timeout 150 ./kernels --test-threads=1 --nocapture indexer_scores) > $OUT/test.log 2>&1; echo "indexer test rc=$?"; grep -E "test result|panicked|error" $OUT/test.log | head -12
(timeout 90 ./layer0 cuda --nocapture) > $OUT/layer0.log 2>&1; echo "layer0 rc=$?"; grep -E "test result|panicked|indexer|differ|Cores|Tiled" $OUT/layer0.log | head -16
for k in tensor-cores half-tensor-cores; do
  (timeout 120 ./dsa-bench --dtype bf16 --reps 3 --indexer $k --only indexer_scores,indexer_topk --lens 4096,16384 --out $OUT/ab.jsonl) 2>&1 | grep -i "panick\|error" | head -5
done
(timeout 100 ./dsa-bench --dtype bf16 --reps 1 --indexer tensor-cores --only indexer_scores,indexer_topk --lens 65536,131072 --out $OUT/ab.jsonl) 2>&1 | grep -i "panick\|error" | head -5
cut -c1-200 $OUT/ab.jsonl
(timeout 100 /usr/local/cuda/bin/ncu --clock-control none -k regex:indexer_scores_fp8 --launch-count 1 --section SpeedOfLight --section LaunchStats --section Occupancy --section ComputeWorkloadAnalysis --section WarpStateStats ./dsa-bench --dtype bf16 --reps 1 --indexer tensor-cores --only indexer_scores --lens 16384) > $OUT/ncu.txt 2>&1; grep -E "Registers|Throughput|Duration|Achieved Occ|Block Limit Reg|Issue Slots|Executed Ipc A|Stall|Local" $OUT/ncu.txt | head -30
(timeout 100 ./dsa-bench --dtype bf16 --reps 3 --only decode_b64 --lens 131072 --out $OUT/b64.jsonl) > $OUT/b64.log 2>&1; echo "b64 rc=$?"; grep -i panick -A2 $OUT/b64.log | head -4; cut -c1-150 $OUT/b64.jsonl
