#!/usr/bin/env bash
# Recreates prefetch/sparse_mla_wgmma.cu (the variant run 65 measured) from the forward of
# commit 66d21dd and prefetch.diff; run it (in a git checkout) before run.sh.
set -e
cd "$(dirname "$0")"
mkdir -p prefetch
git show 66d21dd:kernels/src/cuda/sparse_mla_wgmma.cu > landed-mla.cu
patch -s -o prefetch/sparse_mla_wgmma.cu landed-mla.cu prefetch.diff
rm landed-mla.cu
