#!/usr/bin/env bash
# GPU run 31: build e = d + the indexer's query fragments and row weights loaded once per cube
# + the backward's dQ with two row tiles per plane. Tests of the changed kernels, then A/B
# against d (a/) in one call.
cd "$(dirname "$0")"
tar xJf bins.tar.xz
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee $OUT/device.txt
export DSA_CONFORMANCE_DIR=$PWD/conformance
(timeout 200 ./kernels --test-threads=1 indexer backward_tensor_cores autodiff 2>&1 | grep -E "^test |test result|panicked|assert|Error|error" ; echo "kernels rc=${PIPESTATUS[0]}") 2>&1 | tee $OUT/tests.log
(timeout 60 ./layer0 cuda --nocapture 2>&1 | tail -8; echo "layer0 rc=${PIPESTATUS[0]}") 2>&1 | tee -a $OUT/tests.log
AB=indexer_scores,indexer_topk,sparse_mla_bwd
(timeout 100 a/dsa-bench --dtype bf16 --reps 3 --only $AB --lens 4096,16384 --out $OUT/ab-d.jsonl) 2>&1 | grep -i "panick\|error" | head -3
(timeout 100 ./dsa-bench --dtype bf16 --reps 3 --only $AB --lens 4096,16384 --out $OUT/ab-e.jsonl) 2>&1 | grep -i "panick\|error" | head -3
for v in d e; do echo "--- $v"; cut -c1-100 $OUT/ab-$v.jsonl; done
