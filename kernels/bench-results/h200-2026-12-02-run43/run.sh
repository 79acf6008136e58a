#!/usr/bin/env bash
# GPU run 43: v4.3 (f16 mma.sync, epilogue in registers) as the default tensor-core indexer:
# the indexer test (every kernel), layer-0 conformance, A/B against v4 (FP8) and v3 in one
# call, and the layer and the peer at 128K.
cd "$(dirname "$0")"
export DSA_CONFORMANCE_DIR=$PWD/conformance
tar xJf bins.tar.xz
(timeout 150 ./kernels --test-threads=1 --nocapture indexer_scores) > $OUT/test.log 2>&1; echo "indexer test rc=$?"; grep -E "test result|panicked" -A3 $OUT/test.log | head -12
(timeout 90 ./layer0 cuda --nocapture) > $OUT/layer0.log 2>&1; echo "layer0 rc=$?"; grep -E "test result|panicked|index_scores|Cores|Tiled" $OUT/layer0.log | head -8
for k in tensor-cores fp8-tensor-cores half-tensor-cores; do
  (timeout 100 ./dsa-bench --dtype bf16 --reps 3 --indexer $k --only indexer_scores,indexer_topk --lens 4096,16384 --out $OUT/ab.jsonl) 2>&1 | grep -i "panick\|error" | head -5
done
cut -c1-120 $OUT/ab.jsonl; grep -o '"tensor_cores": "[^"]*"' $OUT/ab.jsonl | sort | uniq -c
(timeout 150 ./dsa-bench --dtype bf16 --reps 1 --only indexer_scores,indexer_topk,attention --lens 131072 --out $OUT/ours.jsonl) 2>&1 | grep -i "panick\|error" | head -5
PYTHONUNBUFFERED=1 timeout 150 python3 peer_torch.py --lens 131072 --out $OUT/peer.jsonl > /dev/null 2>&1; echo "peer rc=$?"
echo "--- ours"; cut -c1-120 $OUT/ours.jsonl; echo "--- peer"; cut -c1-120 $OUT/peer.jsonl
