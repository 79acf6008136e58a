#!/usr/bin/env bash
# GPU run 15: v3 backward in training (dense vs sparse at 8K, small preset), backward at
# 128K, and where generation's time goes (nsys).
cd "$(dirname "$0")"
tar xJf bins.tar.xz
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee $OUT/device.txt
(timeout 40 ./dsa-bench --dtype bf16 --reps 1 --only sparse_mla_bwd --lens 131072 --out $OUT/ours.jsonl) 2>&1 | grep -i "panick\|error" | head -5
cut -c1-200 $OUT/ours.jsonl
cd ..
D="dev-bin/dsa-cli --backend cuda --dtype bf16"
(timeout 90 $D train --dense --model small --vocab 8192 --seq-len 8192 --batch-size 1 --steps 8 --checkpoint-every 8 --out /tmp/runs/dense; echo "dense rc=$?") > $OUT/dense.log 2>&1
(timeout 70 $D train --init /tmp/runs/dense --seq-len 8192 --batch-size 1 --steps 8 --checkpoint-every 8 --out /tmp/runs/sparse; echo "sparse rc=$?") > $OUT/sparse.log 2>&1
(timeout 60 $D generate --model /tmp/runs/sparse --max-tokens 100 --seed 1 "DEVIL, n."; echo "generate rc=$?") > $OUT/generate.log 2>&1
grep -h "step \|rc=\|tokens/s" $OUT/dense.log $OUT/sparse.log $OUT/generate.log | cut -c1-220
NSYS=$(command -v nsys || ls /usr/local/cuda*/bin/nsys /opt/nvidia/nsight-systems*/bin/nsys 2>/dev/null | head -1)
echo "nsys: $NSYS"
if [ -n "$NSYS" ]; then
  (timeout 150 $NSYS profile --trace=cuda,osrt --sample=none -o /tmp/gen --force-overwrite true $D generate --model /tmp/runs/sparse --max-tokens 40 --seed 1 "DEVIL, n." > $OUT/gen_nsys_run.log 2>&1; echo "nsys rc=$?")
  (timeout 120 $NSYS stats --report cuda_gpu_kern_sum,cuda_api_sum,osrt_sum --format csv -o $OUT/gen /tmp/gen.nsys-rep > $OUT/nsys_stats.log 2>&1; echo "stats rc=$?")
  ls $OUT
  for f in $OUT/gen_*.csv; do echo "== $f"; head -25 "$f" | cut -c1-230; done
fi
