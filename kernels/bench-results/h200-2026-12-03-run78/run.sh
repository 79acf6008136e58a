#!/usr/bin/env bash
# Run 78: where v7's dkv prefetch is issued, and the gathers' L2 policy, at 4K queries over
# 4K/64K/128K latents. Variants of the library's kernel (made by make_variants.py): base (the producer's prefetch, always on), mathpf (the math warpgroups prefetch each
# block's rows at its start, about half a block ahead instead of one), ef / mathpf_ef (those
# with evict_first on the producer's gathers). Run 75's harness times them; ncu gives the L2
# hit rates of base and mathpf at 128K.
# From the repository root: bash kernels/bench-results/h200-2026-12-03-run78/run.sh
cd "$(dirname "$0")"
C=../../src/cuda
python3 make_variants.py || exit
V="base mathpf ef mathpf_ef"
for v in $V; do
    cat $C/wgmma.cuh $C/sparse_mla_wgmma.cuh $v/sparse_mla_bwd_wgmma.cu > $v.cu
    nvcc -cubin -std=c++17 -gencode arch=compute_90a,code=sm_90a -O3 -o $v.cubin $v.cu > $OUT/nvcc_$v.log 2>&1 &
done
wait; ls -la *.cubin
H=../h200-2026-12-03-run75/harness75.py
timeout 200 python3 $H base,mathpf,ef,mathpf_ef 4096,65536,131072 2>&1 | tee $OUT/harness.log
for v in base mathpf; do
    timeout 150 /usr/local/cuda/bin/ncu --target-processes all -k regex:dsa_sparse_mla_bwd --launch-skip 1 -c 1 \
      --metrics lts__t_sectors_op_red.sum,lts__t_sector_op_red_hit_rate.pct,lts__t_sector_hit_rate.pct,lts__t_sectors_srcunit_tex_op_read.sum,dram__bytes_read.sum,dram__bytes_write.sum,gpu__time_duration.sum \
      python3 $H $v 131072 > $OUT/ncu_$v.txt 2>&1; echo "ncu $v rc=$?"
    grep -E "lts__|dram__|gpu__time" $OUT/ncu_$v.txt
done
