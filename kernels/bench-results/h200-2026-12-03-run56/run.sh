#!/usr/bin/env bash
# GPU run 56: (1) the v6 sparse MLA forward (warp-specialised, sparse_mla_ws.cu) against v5 in
# the standalone harness (float64 reference, poisoned outputs, timing) at a partial block
# (K = 150), decode b64 and prefill 4K; (2) the indexer test with v5.1 (FP8 wgmma) and the
# pipelined f16 wgmma beside every other kernel, and the top-k test; (3) the indexer scores
# and indexer + top-k with v5.1 (auto) and f16 wgmma at 4K/16K, indexer + top-k and the layer
# at 128K, and the peer at 128K, in one call.
R=$(pwd)
cd "$(dirname "$0")"   # dev-bin: this script, the binaries, peer_torch.py
tar xJf bins.tar.xz
(nvcc -std=c++17 -gencode arch=compute_90a,code=sm_90a -O3 -I $R/kernels/src/cuda -o h $R/kernels/bench-results/h200-2026-12-03-run56/harness_ws.cu > $OUT/nvcc.log 2>&1 && timeout 120 ./h 16384) > $OUT/harness.log 2>&1; echo "harness rc=$?"; cat $OUT/harness.log | head -20; grep -i error $OUT/nvcc.log | head -5
(timeout 150 ./kernels indexer_scores_match --test-threads=1 --nocapture) > $OUT/test.log 2>&1; echo "indexer test rc=$?"; grep -E "^test |test result|relative error" $OUT/test.log | head -12
grep -A12 panicked $OUT/test.log | head -16
(timeout 60 ./kernels topk_matches --test-threads=1) > $OUT/test-topk.log 2>&1; echo "topk test rc=$?"; grep -E "test result|panicked" $OUT/test-topk.log | head -3
(timeout 70 ./dsa-bench --dtype bf16 --reps 3 --only indexer_scores,indexer_topk --lens 4096,16384 --out $OUT/ours.jsonl) 2>&1 | grep -iE "panick|error" | head -5
(timeout 60 ./dsa-bench --dtype bf16 --reps 3 --only indexer_scores,indexer_topk --lens 4096,16384 --indexer wgmma --out $OUT/f16.jsonl) 2>&1 | grep -iE "panick|error" | head -5
(timeout 120 ./dsa-bench --dtype bf16 --reps 1 --only indexer_topk,attention --lens 131072 --out $OUT/ours.jsonl) 2>&1 | grep -iE "panick|error" | head -5
PYTHONUNBUFFERED=1 timeout 90 python3 peer_torch.py --lens 131072 --out $OUT/peer.jsonl > /dev/null 2>&1; echo "peer rc=$?"
echo "--- ours"; cut -c1-200 $OUT/ours.jsonl; echo "--- f16"; cut -c1-200 $OUT/f16.jsonl; echo "--- peer"; cut -c1-110 $OUT/peer.jsonl
