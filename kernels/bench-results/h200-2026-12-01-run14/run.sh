#!/usr/bin/env bash
# GPU run 14: v3 (tensor-core) sparse MLA backward: tests, then bench v3 vs v2.
cd "$(dirname "$0")"
tar xJf bins.tar.xz
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee $OUT/device.txt
(timeout 100 ./kernels --test-threads=1 backward 2>&1 | grep -E "^test |test result|panicked|assert|Error|error" | head -30; echo "bwd tests rc=${PIPESTATUS[0]}") 2>&1 | tee $OUT/tests.log
(timeout 120 ./kernels --test-threads=1 --skip backward 2>&1 | grep -E "^test |test result|panicked|assert|Error|error" | head -30; echo "other tests rc=${PIPESTATUS[0]}") 2>&1 | tee -a $OUT/tests.log
(timeout 120 ./dsa-bench --dtype bf16 --reps 3 --only sparse_mla_bwd,sparse_mla_fwd --lens 4096,16384,65536 --out $OUT/ours.jsonl) 2>&1 | grep -i "panick\|error" | head -5
(timeout 60 ./dsa-bench --dtype bf16 --reps 1 --mla v2 --only sparse_mla_bwd --lens 4096 --out $OUT/v2.jsonl) 2>&1 | grep -i "panick\|error" | head -5
echo "--- ours"; cut -c1-160 $OUT/ours.jsonl; echo "--- v2"; cut -c1-160 $OUT/v2.jsonl
