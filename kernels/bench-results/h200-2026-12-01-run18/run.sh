#!/usr/bin/env bash
# GPU run 18: generation and a training step with the persistent kernel cache, cold then warm.
cd "$(dirname "$0")"
tar xJf bins.tar.xz
cd ..
D="dev-bin/dsa-cli --backend cuda --dtype bf16"
export DSA_KERNEL_CACHE=/tmp/kcache
rm -rf /tmp/kcache /tmp/runs/k1 /tmp/runs/k2
(timeout 100 $D train --model small --vocab 8192 --seq-len 512 --batch-size 1 --steps 1 --checkpoint-every 1 --out /tmp/runs/k1 > $OUT/train1.log 2>&1; echo "train cold rc=$?"); tail -1 $OUT/train1.log
(timeout 100 $D train --model small --vocab 8192 --seq-len 512 --batch-size 1 --steps 1 --checkpoint-every 1 --out /tmp/runs/k2 > $OUT/train2.log 2>&1; echo "train warm rc=$?"); tail -1 $OUT/train2.log
du -sh /tmp/kcache; find /tmp/kcache -type f | head -5
for run in 1 2; do timeout 60 $D generate --model /tmp/runs/k1 --max-tokens 100 --seed 1 --temperature 0 "DEVIL, n." > $OUT/gen$run.log 2>&1; echo "gen $run rc=$?"; tail -1 $OUT/gen$run.log; done
(DSA_KERNEL_CACHE=off timeout 60 $D generate --model /tmp/runs/k1 --max-tokens 100 --seed 1 --temperature 0 "DEVIL, n." > $OUT/gen_off.log 2>&1; echo "gen off rc=$?"; tail -1 $OUT/gen_off.log)
cmp <(head -c 2000 $OUT/gen1.log) <(head -c 2000 $OUT/gen2.log) && echo "same text cold and warm"
