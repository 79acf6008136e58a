#!/usr/bin/env bash
# GPU run 17: run 16 with the right pattern for CubeCL's full compilation log.
cd "$(dirname "$0")"
tar xJf bins.tar.xz
cd ..
D="dev-bin/dsa-cli --backend cuda --dtype bf16"
(timeout 90 $D train --model small --vocab 8192 --seq-len 512 --batch-size 1 --steps 1 --checkpoint-every 1 --out /tmp/runs/m > $OUT/train.log 2>&1; echo "train rc=$?")
for n in 20 60; do
  CUBECL_DEBUG_LOG=/tmp/c$n.log timeout 120 $D generate --model /tmp/runs/m --max-tokens $n --seed 1 --temperature 0 "DEVIL, n." > $OUT/gen$n.log 2>&1; echo "gen $n rc=$?"
  tail -1 $OUT/gen$n.log
  echo "compilations: $(grep -c 'START_KERNEL_COMPILATION' /tmp/c$n.log)"
  grep -A1 'START_KERNEL_COMPILATION' /tmp/c$n.log | grep '^name:' | cut -c1-100 | sort | uniq -c | sort -rn | head -15
done
grep -A2 'START_KERNEL_COMPILATION' /tmp/c60.log | grep -v START | cut -c1-300 > $OUT/compiled60.txt
for n in 100 200; do timeout 60 $D generate --model /tmp/runs/m --max-tokens $n --seed 1 --temperature 0 "DEVIL, n." > $OUT/gen$n.log 2>&1; tail -1 $OUT/gen$n.log; done
