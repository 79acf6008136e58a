#!/usr/bin/env bash
# GPU run 55: the cost curve on run 54's build (v5 forward and v5 indexer): indexer + top-k, the sparse MLA
# forward, the DSA layer and decode b64 at 4K-128K, and the peer at the same lengths, in one
# call (one rep per point, as run 48).
cd "$(dirname "$0")"   # dev-bin: this script, run 54's binaries, peer_torch.py
tar xJf bins.tar.xz
(timeout 300 ./dsa-bench --dtype bf16 --reps 1 --only indexer_topk,"sparse_mla_fwd$",attention,"b64$" --lens 4096,16384,65536,131072 --out $OUT/ours.jsonl) 2>&1 | grep -iE "panick|error" | head -5
PYTHONUNBUFFERED=1 timeout 240 python3 peer_torch.py --lens 4096,16384,65536,131072 --out $OUT/peer.jsonl > /dev/null 2>&1; echo "peer rc=$?"
echo "--- ours"; cut -c1-120 $OUT/ours.jsonl; echo "--- peer"; cut -c1-100 $OUT/peer.jsonl
