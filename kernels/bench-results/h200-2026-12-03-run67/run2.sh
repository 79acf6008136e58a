#!/usr/bin/env bash
# (diag.cu and harness_diag.cu are recreated by sources.sh, beside this script, before it runs.)
# GPU run 67, second call: gather.cu with MODE 3 at v6's shared-memory size and in run 62's CTA
# order (MODE 4); then run 62's DIAG=2 (no math) with the switches of diag.cu here: NOVALID
# (math warpgroups skip the validity wait), NOQE (they skip the query load and the epilogue).
R=$(pwd)
cd "$(dirname "$0")"
F="-std=c++17 -gencode arch=compute_90a,code=sm_90a -O3"
nvcc $F -o g gather.cu > $OUT/nvcc.log 2>&1 &
for v in "0 0 0" "2 0 0" "2 1 0" "2 0 1" "2 1 1"; do set -- $v
  nvcc $F -I $R/kernels/src/cuda -DDIAG=$1 -DNOVALID=$2 -DNOQE=$3 -o d$1$2$3 harness_diag.cu > $OUT/nvcc$1$2$3.log 2>&1 &
done
wait
grep -i -A3 error $OUT/nvcc*.log | head -20
timeout 120 ./g | tee $OUT/gather.log
for v in 000 200 210 201 211; do echo "DIAG NOVALID NOQE = $v"; timeout 60 ./d$v | grep -v "K=150"; done 2>&1 | tee $OUT/diag.log
