#!/usr/bin/env bash
# Run 77: every issue-5 target measured by one build (dev-bin/, the commit in dev-bin/BUILT_AT)
# with the peer in the same call: decode b64 at 4K/16K (medians of 10, back to back); the cost
# curve (indexer + top-k, sparse MLA forward and backward, DSA layer, decode; 4K-128K; one rep
# a point, three for the backward); then ../shared/bench/peer_torch.py (carried in dev-bin/).
# From the repository root, with dev-bin carried: bash kernels/bench-results/h200-2026-12-03-run77/run.sh
cd "$(dirname "$0")/../../../dev-bin"
tar xJf bins.tar.xz && echo "built at $(cat BUILT_AT)"
L=4096,16384,65536,131072
(timeout 45 ./dsa-bench --dtype bf16 --reps 10 --back-to-back --only "b64$" --lens 4096,16384 --out $OUT/decode.jsonl) 2>&1 | grep -iE "panick|error" | head -5
(timeout 150 ./dsa-bench --dtype bf16 --reps 1 --only indexer_topk,"sparse_mla_fwd$",attention,"b64$" --lens $L --out $OUT/ours.jsonl) 2>&1 | grep -iE "panick|error" | head -5
(timeout 130 ./dsa-bench --dtype bf16 --reps 3 --only sparse_mla_bwd --lens $L --out $OUT/bwd.jsonl) 2>&1 | grep -iE "panick|error" | head -5
PYTHONUNBUFFERED=1 timeout 200 python3 peer_torch.py --lens $L --out $OUT/peer.jsonl > $OUT/peer.log 2>&1; echo "peer rc=$?"
echo "--- decode"; cut -c1-200 $OUT/decode.jsonl
echo "--- ours"; cut -c1-160 $OUT/ours.jsonl $OUT/bwd.jsonl; echo "--- peer"; cut -c1-110 $OUT/peer.jsonl
