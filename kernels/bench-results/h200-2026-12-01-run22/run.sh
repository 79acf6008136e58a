#!/usr/bin/env bash
# GPU run 22: one-pass forward (lazily moved reference max), the selections' window in shared memory
# and the 32x8x32 forward tile as default. b/dsa-bench: run 21's cp.async build (two passes).
# Every kernel test, layer-0 conformance, A/B at 4K/16K in one call, ours at 64K/128K, the peer at all four.
cd "$(dirname "$0")"
tar xJf bins.tar.xz
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee $OUT/device.txt
export DSA_CONFORMANCE_DIR=$PWD/conformance
(timeout 200 ./kernels --test-threads=1 2>&1 | grep -E "^test |test result|panicked|assert|Error|error" ; echo "kernels rc=${PIPESTATUS[0]}") 2>&1 | tee $OUT/tests.log
(timeout 40 ./layer0 cuda --nocapture 2>&1 | tail -8; echo "layer0 rc=${PIPESTATUS[0]}") 2>&1 | tee -a $OUT/tests.log
AB=sparse_mla_fwd,sparse_mla_bwd,decode,probs
(timeout 60 b/dsa-bench --dtype bf16 --reps 3 --mla-tile 32x8x32 --only $AB --lens 4096,16384 --out $OUT/ab-b.jsonl) 2>&1 | grep -i "panick\|error" | head -3
(timeout 60 ./dsa-bench --dtype bf16 --reps 3 --only $AB --lens 4096,16384 --out $OUT/ab-c.jsonl) 2>&1 | grep -i "panick\|error" | head -3
OPS=indexer_scores,indexer_topk,sparse_mla_fwd,sparse_mla_bwd,attention
(timeout 120 ./dsa-bench --dtype bf16 --reps 1 --only $OPS --lens 65536,131072 --out $OUT/ours.jsonl) 2>&1 | grep -i "panick\|error" | head -5
PYTHONUNBUFFERED=1 timeout 120 python3 peer_torch.py --lens 4096,16384,65536,131072 --out $OUT/peer.jsonl > /dev/null 2>&1; echo "peer rc=$?"
echo "--- ab-b"; cut -c1-120 $OUT/ab-b.jsonl; echo "--- ab-c"; cut -c1-120 $OUT/ab-c.jsonl; echo "--- ours"; cut -c1-120 $OUT/ours.jsonl; echo "--- peer"; cut -c1-110 $OUT/peer.jsonl
