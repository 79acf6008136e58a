#!/usr/bin/env bash
# GPU run 34: backtrace of decode b64's panic at 128K with an unstripped build (3.7).
cd "$(dirname "$0")"
tar xJf dbg.tar.xz
(RUST_BACKTRACE=1 timeout 100 ./dsa-bench-dbg --dtype bf16 --reps 1 --only decode_b64 --lens 131072) > $OUT/b64.log 2>&1; echo "b64 rc=$?"
grep -vE "at /rustc|std::|core::|__libc|_start" $OUT/b64.log | head -60
