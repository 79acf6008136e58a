#!/usr/bin/env bash
# GPU run 19: after the cmma tile helpers and zero_padding taking d: every kernel test,
# layer-0 conformance, and the bench with the peer at 4K / 16K (ratios against run 13/14).
cd "$(dirname "$0")"
tar xJf bins.tar.xz
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee $OUT/device.txt
export DSA_CONFORMANCE_DIR=$PWD/conformance
(timeout 150 ./kernels --test-threads=1 2>&1 | grep -E "^test |test result|panicked|assert|Error|error" ; echo "kernels rc=${PIPESTATUS[0]}") 2>&1 | tee $OUT/tests.log
(timeout 40 ./layer0 cuda --nocapture 2>&1 | tail -8; echo "layer0 rc=${PIPESTATUS[0]}") 2>&1 | tee -a $OUT/tests.log
OPS=indexer_scores,indexer_topk,sparse_mla_fwd,sparse_mla_bwd,attention,decode
(timeout 120 ./dsa-bench --dtype bf16 --reps 3 --only $OPS --lens 4096,16384 --out $OUT/ours.jsonl) 2>&1 | grep -i "panick\|error" | head -5
PYTHONUNBUFFERED=1 timeout 60 python3 peer_torch.py --lens 4096,16384 --out $OUT/peer.jsonl > $OUT/peer.log 2>&1; echo "peer rc=$?"
echo "--- ours"; cut -c1-150 $OUT/ours.jsonl; echo "--- peer"; cut -c1-110 $OUT/peer.jsonl
