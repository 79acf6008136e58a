#!/usr/bin/env bash
# GPU run 33: where decode b64 at 128K panics (its cache has 64·131072·576 = 4.8 G elements),
# and decode b32 at 128K (2.4 G elements).
cd "$(dirname "$0")"
[ -x dsa-bench ] || tar xJf bins.tar.xz
(RUST_BACKTRACE=1 timeout 100 ./dsa-bench --dtype bf16 --reps 1 --only decode_b64 --lens 131072 --out $OUT/b64.jsonl) > $OUT/b64.log 2>&1; echo "b64 rc=$?"
grep -E "panicked|^   [0-9]+: (dsa|burn|cubecl)" -A1 $OUT/b64.log | grep -v "^--" | head -40
(timeout 100 ./dsa-bench --dtype bf16 --reps 3 --decode-batch 32 --only decode --lens 131072 --out $OUT/b32.jsonl) 2>&1 | grep -i "panick" | head -3
cut -c1-110 $OUT/b32.jsonl
