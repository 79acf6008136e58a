#!/usr/bin/env bash
# GPU run 58: every CUDA kernel test on the build with v6 as the wgmma forward (MlaKernel::V5),
# top-k v2 and the FP8 wgmma indexer.
cd "$(dirname "$0")"
tar xJf bins.tar.xz
(timeout 420 ./kernels --test-threads=1) > $OUT/test.log 2>&1; echo "kernel tests rc=$?"
grep -E "^test |test result" $OUT/test.log | head -20
grep -B2 -A14 panicked $OUT/test.log | head -30
