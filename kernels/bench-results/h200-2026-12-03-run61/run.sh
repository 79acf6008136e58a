#!/usr/bin/env bash
# GPU run 61: the FP8 wgmma indexer at two CTAs per SM (run 60's fastest variant) in the
# library. The indexer test; the indexer scores and indexer + top-k at 4K and 16K (medians of
# 3); then the cost curve (indexer + top-k, the sparse MLA forward, the DSA layer, decode b64
# at 4K-128K, one rep per point) and the peer at the same lengths, in one call.
cd "$(dirname "$0")"
tar xJf bins.tar.xz
(timeout 100 ./kernels indexer_scores_match --test-threads=1 --nocapture) > $OUT/test.log 2>&1; echo "indexer test rc=$?"; grep -E "test result|relative error" $OUT/test.log | head -8
grep -A12 panicked $OUT/test.log | head -16
(timeout 60 ./dsa-bench --dtype bf16 --reps 3 --only indexer_scores,indexer_topk --lens 4096,16384 --out $OUT/idx.jsonl) 2>&1 | grep -iE "panick|error" | head -5
(timeout 200 ./dsa-bench --dtype bf16 --reps 1 --only indexer_topk,"sparse_mla_fwd$",attention,"b64$" --lens 4096,16384,65536,131072 --out $OUT/ours.jsonl) 2>&1 | grep -iE "panick|error" | head -5
PYTHONUNBUFFERED=1 timeout 250 python3 peer_torch.py --lens 4096,16384,65536,131072 --out $OUT/peer.jsonl > /dev/null 2>&1; echo "peer rc=$?"
echo "--- idx"; cut -c1-150 $OUT/idx.jsonl; echo "--- ours"; cut -c1-150 $OUT/ours.jsonl; echo "--- peer"; cut -c1-100 $OUT/peer.jsonl
