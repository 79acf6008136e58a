#!/usr/bin/env bash
# GPU run 32: the cost curve (ours and the peer at 4K-128K in one call), build e.
cd "$(dirname "$0")"
[ -x dsa-bench ] || tar xJf bins.tar.xz
(timeout 200 ./dsa-bench --dtype bf16 --reps 1 --only indexer_topk,sparse_mla_fwd,attention,decode --lens 4096,16384,65536,131072 --out $OUT/ours.jsonl) 2>&1 | grep -i "panick\|error" | head -5
PYTHONUNBUFFERED=1 timeout 200 python3 peer_torch.py --lens 4096,16384,65536,131072 --out $OUT/peer.jsonl > /dev/null 2>&1; echo "peer rc=$?"
echo "--- ours"; cut -c1-100 $OUT/ours.jsonl; echo "--- peer"; cut -c1-100 $OUT/peer.jsonl
