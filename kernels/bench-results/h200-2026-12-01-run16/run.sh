#!/usr/bin/env bash
# GPU run 16: does generation compile kernels at every step? Count CubeCL's compilations
# for 20 and 60 new tokens.
cd "$(dirname "$0")"
tar xJf bins.tar.xz
cd ..
D="dev-bin/dsa-cli --backend cuda --dtype bf16"
(timeout 90 $D train --model small --vocab 8192 --seq-len 512 --batch-size 1 --steps 1 --checkpoint-every 1 --out /tmp/runs/m > $OUT/train.log 2>&1; echo "train rc=$?")
for n in 20 60; do
  CUBECL_DEBUG_LOG=/tmp/c$n.log timeout 120 $D generate --model /tmp/runs/m --max-tokens $n --seed 1 --temperature 0 "DEVIL, n." > $OUT/gen$n.log 2>&1; echo "gen $n rc=$?"
  tail -1 $OUT/gen$n.log
  echo "compilations: $(grep -c '^\[Compiling kernel\]' /tmp/c$n.log)"
  grep '^\[Compiling kernel\]' /tmp/c$n.log | cut -c1-120 | sort | uniq -c | sort -rn | head -12
done
grep '^\[Compiling kernel\]' /tmp/c60.log | cut -c1-200 > $OUT/compiled60.txt
timeout 60 $D generate --model /tmp/runs/m --max-tokens 100 --seed 1 --temperature 0 "DEVIL, n." > $OUT/gen100.log 2>&1; tail -1 $OUT/gen100.log
