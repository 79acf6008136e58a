#!/usr/bin/env bash
# Run 74: what the reductions cost v7 (timing only; the variants compute wrong dkv on purpose).
# nored: no reductions at all; l2red: the reductions land on rows mod 4096 (a dkv that L2
# holds) while the gathers still read the whole latent. harness71.cu (4K queries over 4K and
# 128K latents, medians of 10) built three ways. From the repository root, needs patch(1):
# bash kernels/bench-results/h200-2026-12-03-run74/run.sh
cd "$(dirname "$0")"
R=$(cd ../../.. && pwd)
F="-std=c++17 -gencode arch=compute_90a,code=sm_90a -O3"
# The variants (made here unless carried in already made).
for v in nored l2red; do
  [ -f $v/sparse_mla_bwd_wgmma.cu ] && continue
  mkdir -p $v && cp $R/kernels/src/cuda/sparse_mla_bwd_wgmma.cu $v/ && patch -s $v/sparse_mla_bwd_wgmma.cu < $v.patch || exit
done
H=../h200-2026-12-03-run71/harness71.cu
nvcc $F -I $R/kernels/src/cuda -o hb_base $H > $OUT/nvcc_base.log 2>&1 &
nvcc $F -I nored -I $R/kernels/src/cuda -o hb_nored $H > $OUT/nvcc_nored.log 2>&1 &
nvcc $F -I l2red -I $R/kernels/src/cuda -o hb_l2red $H > $OUT/nvcc_l2red.log 2>&1 &
wait; ls -la hb_*
for v in base nored l2red base; do echo "== $v"; timeout 100 ./hb_$v | tee -a $OUT/$v.log; done
