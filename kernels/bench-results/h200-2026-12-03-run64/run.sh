#!/usr/bin/env bash
# GPU run 64, first call: every CUDA kernel test on the build with the v6 indexer (transposed
# products), the MLA forward's head groups adjacent, indexer_topk's causal key narrowing; then
# the indexer scores, indexer + top-k, the sparse MLA forward and decode b64 at 4K/16K (medians
# of 5, plus back-to-back times), and the peer at 4K/16K, in one call.
cd "$(dirname "$0")"
tar xJf bins.tar.xz
(timeout 330 ./kernels --test-threads=1) > $OUT/test.log 2>&1; echo "kernel tests rc=$?"
grep -E "^test |test result|relative error" $OUT/test.log | head -24
grep -B2 -A14 panicked $OUT/test.log | head -30
(timeout 120 ./dsa-bench --dtype bf16 --reps 5 --back-to-back --only indexer_scores,indexer_topk,"sparse_mla_fwd$","b64$" --lens 4096,16384 --out $OUT/short.jsonl) 2>&1 | grep -iE "panick|error" | head -5
PYTHONUNBUFFERED=1 timeout 120 python3 peer_torch.py --lens 4096,16384 --out $OUT/peer-short.jsonl > /dev/null 2>&1; echo "peer rc=$?"
echo "--- ours"; cut -c1-230 $OUT/short.jsonl; echo "--- peer"; cut -c1-120 $OUT/peer-short.jsonl
