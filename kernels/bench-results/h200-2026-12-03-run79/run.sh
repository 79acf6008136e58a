#!/usr/bin/env bash
# Run 79: the library with v7's dkv prefetch issued by the math warpgroups (run 78's mathpf;
# binaries in dev-bin/, built at the commit in dev-bin/BUILT_AT): the backward under Auto at
# 4K-128K (medians of 3), then the CUDA tests of the backward (one of them past the prefetch
# threshold).
# From the repository root, with dev-bin carried: bash kernels/bench-results/h200-2026-12-03-run79/run.sh
cd "$(dirname "$0")/../../../dev-bin"
tar xJf bins.tar.xz && echo "built at $(cat BUILT_AT)"
timeout 130 ./dsa-bench --dtype bf16 --reps 3 --only sparse_mla_bwd --lens 4096,16384,65536,131072 > $OUT/bench_auto.jsonl 2> $OUT/bench_auto.err
echo "bench rc=$?"; cut -c1-200 $OUT/bench_auto.jsonl
(timeout 300 ./kernels --test-threads=1 sparse_mla_backward sparse_mla_autodiff) > $OUT/test.log 2>&1; echo "kernel tests rc=$?"
grep -E "^test |test result" $OUT/test.log | head -24
grep -B2 -A14 panicked $OUT/test.log | head -30
