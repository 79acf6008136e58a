#!/usr/bin/env bash
# GPU run 59 (run 58's build): the numbers of the closing note. Sparse MLA forward, decode
# b64, indexer scores and indexer + top-k at 4K and 16K (medians of 3), indexer + top-k, the
# forward and the DSA layer at 128K (one rep), and the peer at 4K and 128K, in one call; then
# the indexer op's kernels at 16K timed one by one under ncu.
cd "$(dirname "$0")"
tar xJf bins.tar.xz
(timeout 90 ./dsa-bench --dtype bf16 --reps 3 --only 'sparse_mla_fwd$,b64$,indexer_scores,indexer_topk' --lens 4096,16384 --out $OUT/ours.jsonl) 2>&1 | grep -iE "panick|error" | head -5
(timeout 130 ./dsa-bench --dtype bf16 --reps 1 --only 'indexer_topk,sparse_mla_fwd$,attention' --lens 131072 --out $OUT/ours.jsonl) 2>&1 | grep -iE "panick|error" | head -5
PYTHONUNBUFFERED=1 timeout 110 python3 peer_torch.py --lens 4096,131072 --out $OUT/peer.jsonl > /dev/null 2>&1; echo "peer rc=$?"
echo "--- ours"; cut -c1-190 $OUT/ours.jsonl; echo "--- peer"; cut -c1-110 $OUT/peer.jsonl
timeout 150 ncu --metrics gpu__time_duration.sum ./dsa-bench --dtype bf16 --reps 1 --only indexer_scores --lens 16384 > $OUT/ncu-idx.txt 2>&1; echo "ncu rc=$?"
awk '/^  [a-zA-Z_]/{name=$1} /gpu__time_duration.sum/{print name, $(NF-1), $NF}' $OUT/ncu-idx.txt | head -40
