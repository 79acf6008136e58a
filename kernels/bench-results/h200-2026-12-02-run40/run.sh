#!/usr/bin/env bash
# GPU run 40: the landed v4 indexer (v4.0's layout, runs 36-37): every CUDA kernel test,
# layer-0 conformance, A/B against v3 (half cmma), the layer and the peer at 16K/128K in one
# call, and the kernel's CUDA source for offline reading.
cd "$(dirname "$0")"
export DSA_CONFORMANCE_DIR=$PWD/conformance
tar xJf bins.tar.xz
(timeout 240 ./kernels --test-threads=1) > $OUT/test.log 2>&1; echo "kernels rc=$?"; grep -E "^test |test result|panicked" $OUT/test.log | head -16
(timeout 90 ./layer0 cuda --nocapture) > $OUT/layer0.log 2>&1; echo "layer0 rc=$?"; grep -E "test result|panicked|index_scores|Cores|Tiled" $OUT/layer0.log | head -8
for k in tensor-cores half-tensor-cores; do
  (timeout 120 ./dsa-bench --dtype bf16 --reps 3 --indexer $k --only indexer_scores,indexer_topk --lens 4096,16384 --out $OUT/ab.jsonl) 2>&1 | grep -i "panick\|error" | head -5
done
cut -c1-130 $OUT/ab.jsonl
(timeout 200 ./dsa-bench --dtype bf16 --reps 1 --only indexer_scores,indexer_topk,attention --lens 16384,131072 --out $OUT/ours.jsonl) 2>&1 | grep -i "panick\|error" | head -5
PYTHONUNBUFFERED=1 timeout 150 python3 peer_torch.py --lens 16384,131072 --out $OUT/peer.jsonl > /dev/null 2>&1; echo "peer rc=$?"
echo "--- ours"; cut -c1-130 $OUT/ours.jsonl; echo "--- peer"; cut -c1-130 $OUT/peer.jsonl
(CUBECL_DEBUG_LOG=/tmp/cubecl.log timeout 60 ./dsa-bench --dtype bf16 --reps 1 --only indexer_scores --lens 4096 >/dev/null 2>&1)
n=$(grep -n "indexer_scores_fp8" /tmp/cubecl.log | head -1 | cut -d: -f1); [ -n "$n" ] && sed -n "$((n-80)),$((n+900))p" /tmp/cubecl.log > $OUT/fp8.cu; wc -l $OUT/fp8.cu
