#!/usr/bin/env bash
# GPU run 64, second call: the benchmark rebuilt with each CUDA source's hash computed once
# (not at every launch): decode b64 at 4K/16K (medians of 10, back-to-back times); then the
# cost curve (indexer + top-k, the sparse MLA forward, the DSA layer, decode b64 at 4K-128K,
# one rep per point) and the peer at the same lengths, in one call.
cd "$(dirname "$0")"
tar xJf bins.tar.xz
(timeout 45 ./dsa-bench --dtype bf16 --reps 10 --back-to-back --only "b64$" --lens 4096,16384 --out $OUT/decode.jsonl) 2>&1 | grep -iE "panick|error" | head -5
cut -c1-200 $OUT/decode.jsonl
(timeout 230 ./dsa-bench --dtype bf16 --reps 1 --only indexer_topk,"sparse_mla_fwd$",attention,"b64$" --lens 4096,16384,65536,131072 --out $OUT/ours.jsonl) 2>&1 | grep -iE "panick|error" | head -5
PYTHONUNBUFFERED=1 timeout 250 python3 peer_torch.py --lens 4096,16384,65536,131072 --out $OUT/peer.jsonl > /dev/null 2>&1; echo "peer rc=$?"
echo "--- ours"; cut -c1-160 $OUT/ours.jsonl; echo "--- peer"; cut -c1-110 $OUT/peer.jsonl
