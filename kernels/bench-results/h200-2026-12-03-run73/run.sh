#!/usr/bin/env bash
# Run 73: the library with v7 as Auto's backward (binaries in dev-bin/, built at the commit in
# dev-bin/BUILT_AT): the backward under Auto at 4K and 128K, then every CUDA kernel test.
# From the repository root, with dev-bin carried: bash kernels/bench-results/h200-2026-12-03-run73/run.sh
cd "$(dirname "$0")/../../../dev-bin"
tar xJf bins.tar.xz
echo "built at $(cat BUILT_AT)"
timeout 100 ./dsa-bench --dtype bf16 --reps 3 --only sparse_mla_bwd --lens 4096,131072 > $OUT/bench_auto.jsonl 2> $OUT/bench_auto.err
echo "bench rc=$?"; cat $OUT/bench_auto.jsonl
(timeout 420 ./kernels --test-threads=1) > $OUT/test.log 2>&1; echo "kernel tests rc=$?"
grep -E "^test |test result" $OUT/test.log | head -24
grep -B2 -A14 panicked $OUT/test.log | head -30
