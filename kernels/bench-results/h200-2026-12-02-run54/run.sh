#!/usr/bin/env bash
# GPU run 54: the v5 (wgmma) indexer. The CUDA indexer test (v5 at V3.2's 64 x 128 beside
# every other indexer kernel, against the reference within 1e-5) and the v5 MLA forward test
# (its launcher moved into `cuda_source`); the indexer scores and indexer + top-k with v5
# (auto) and v4.3 (`--indexer tensor-cores`) at 4K and 16K, the layer at 128K, and the
# peer at 4K and 128K, in one call.
cd "$(dirname "$0")"   # dev-bin: this script, the binaries, peer_torch.py
tar xJf bins.tar.xz
(timeout 150 ./kernels indexer_scores_match --test-threads=1) > $OUT/test.log 2>&1; echo "indexer test rc=$?"; grep -E "^test |test result" $OUT/test.log | head -6
grep -A12 panicked $OUT/test.log | head -16
(timeout 80 ./dsa-bench --dtype bf16 --reps 3 --only indexer_scores,indexer_topk --lens 4096,16384 --out $OUT/ours.jsonl) 2>&1 | grep -iE "panick|error" | head -5
(timeout 60 ./dsa-bench --dtype bf16 --reps 3 --only indexer_scores,indexer_topk --lens 4096,16384 --indexer tensor-cores --out $OUT/v43.jsonl) 2>&1 | grep -iE "panick|error" | head -5
(timeout 120 ./dsa-bench --dtype bf16 --reps 1 --only indexer_topk,attention --lens 131072 --out $OUT/ours.jsonl) 2>&1 | grep -iE "panick|error" | head -5
PYTHONUNBUFFERED=1 timeout 100 python3 peer_torch.py --lens 4096,131072 --out $OUT/peer.jsonl > /dev/null 2>&1; echo "peer rc=$?"
echo "--- ours"; cut -c1-180 $OUT/ours.jsonl; echo "--- v4.3"; cut -c1-180 $OUT/v43.jsonl; echo "--- peer"; cut -c1-110 $OUT/peer.jsonl
(timeout 150 ./kernels sparse_mla_tensor_cores_match_reference --test-threads=1) > $OUT/test-mla.log 2>&1; echo "mla forward test rc=$?"; grep -E "test result|panicked" $OUT/test-mla.log | head -3
