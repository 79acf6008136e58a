#!/usr/bin/env bash
# GPU run 39: v4.2 indexer (32 heads per plane, two planes per query at 64 heads): tests,
# layer-0 conformance, A/B against v3 (half cmma), ncu; then the layer and the peer at 16K/128K.
cd "$(dirname "$0")"
export DSA_CONFORMANCE_DIR=$PWD/conformance
tar xJf bins.tar.xz
(timeout 150 ./kernels --test-threads=1 --nocapture indexer_scores) > $OUT/test.log 2>&1; echo "indexer test rc=$?"; grep -E "test result|panicked|error" $OUT/test.log | head -12
(timeout 90 ./layer0 cuda --nocapture) > $OUT/layer0.log 2>&1; echo "layer0 rc=$?"; grep -E "test result|panicked|index_scores|Cores|Tiled" $OUT/layer0.log | head -16
for k in tensor-cores half-tensor-cores; do
  (timeout 120 ./dsa-bench --dtype bf16 --reps 3 --indexer $k --only indexer_scores,indexer_topk --lens 4096,16384 --out $OUT/ab.jsonl) 2>&1 | grep -i "panick\|error" | head -5
done
cut -c1-130 $OUT/ab.jsonl
(timeout 100 /usr/local/cuda/bin/ncu --clock-control none -k regex:indexer_scores_fp8 --launch-count 1 --section SpeedOfLight --section LaunchStats --section Occupancy --section ComputeWorkloadAnalysis ./dsa-bench --dtype bf16 --reps 1 --indexer tensor-cores --only indexer_scores --lens 16384) > $OUT/ncu.txt 2>&1; grep -E "Registers|Duration|Achieved Occ|Block Limit Reg|Issue Slots|Executed Ipc A|Compute \(SM\)" $OUT/ncu.txt | head -12
(timeout 200 ./dsa-bench --dtype bf16 --reps 1 --only indexer_scores,indexer_topk,attention --lens 16384,131072 --out $OUT/ours.jsonl) 2>&1 | grep -i "panick\|error" | head -5
PYTHONUNBUFFERED=1 timeout 200 python3 peer_torch.py --lens 16384,131072 --out $OUT/peer.jsonl > /dev/null 2>&1; echo "peer rc=$?"
echo "--- ours"; cut -c1-130 $OUT/ours.jsonl; echo "--- peer"; cut -c1-130 $OUT/peer.jsonl
