#!/usr/bin/env bash
# Run 75 (prepared 2026-12-03, not yet run): v7 against v7 with the dkv rows prefetched into
# L2 a block ahead of their reductions (prefetch.patch). Cubins built here by nvcc from the
# sources the library concatenates; harness75.py times them (driver API on PyTorch tensors).
# From the repository root: bash kernels/bench-results/h200-2026-12-03-run75/run.sh
# (patch(1) makes the variant unless prefetch/ is carried in already made.)
cd "$(dirname "$0")"
C=../../src/cuda
[ -f prefetch/sparse_mla_bwd_wgmma.cu ] || { mkdir -p prefetch && cp $C/sparse_mla_bwd_wgmma.cu prefetch/ && patch -s prefetch/sparse_mla_bwd_wgmma.cu < prefetch.patch; } || exit
cat $C/wgmma.cuh $C/sparse_mla_wgmma.cuh $C/sparse_mla_bwd_wgmma.cu > base.cu
cat $C/wgmma.cuh $C/sparse_mla_wgmma.cuh prefetch/sparse_mla_bwd_wgmma.cu > prefetch.cu
# prefetch_el: the same prefetches with an evict_last hint (sed of prefetch/, made beside it).
[ -f prefetch_el/sparse_mla_bwd_wgmma.cu ] || { mkdir -p prefetch_el && sed 's/prefetch.global.L2 \[/prefetch.global.L2::evict_last [/' prefetch/sparse_mla_bwd_wgmma.cu > prefetch_el/sparse_mla_bwd_wgmma.cu; }
cat $C/wgmma.cuh $C/sparse_mla_wgmma.cuh prefetch_el/sparse_mla_bwd_wgmma.cu > prefetch_el.cu
for v in base prefetch prefetch_el; do nvcc -cubin -std=c++17 -gencode arch=compute_90a,code=sm_90a -O3 -o $v.cubin $v.cu > $OUT/nvcc_$v.log 2>&1 & done
wait; ls -la *.cubin || exit
timeout 120 python3 harness75.py 2>&1 | tee $OUT/harness75.log
