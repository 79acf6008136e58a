#!/usr/bin/env bash
# GPU run 30: build d (run 28/29) at 64K and 128K with the peer in the same call.
cd "$(dirname "$0")"
[ -x dsa-bench ] || tar xJf bins.tar.xz
OPS=indexer_scores,indexer_topk,sparse_mla_fwd,sparse_mla_bwd,attention
(timeout 150 ./dsa-bench --dtype bf16 --reps 1 --only $OPS --lens 65536,131072 --out $OUT/ours.jsonl) 2>&1 | grep -i "panick\|error" | head -5
PYTHONUNBUFFERED=1 timeout 150 python3 peer_torch.py --lens 65536,131072 --out $OUT/peer.jsonl > /dev/null 2>&1; echo "peer rc=$?"
echo "--- ours"; cut -c1-100 $OUT/ours.jsonl; echo "--- peer"; cut -c1-100 $OUT/peer.jsonl
