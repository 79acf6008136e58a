#!/usr/bin/env bash
# Recreates the source versions run 63 compiled beside the landed ones (old/: run 61's, v6a/,
# v62/) from the sources of commit 66d21dd and the diffs in this folder; run it (in a git
# checkout) before run.sh.
set -e
cd "$(dirname "$0")"
mkdir -p old v6a v62
git show 66d21dd:kernels/src/cuda/indexer_wgmma.cu > landed-indexer.cu
git show 66d21dd:kernels/src/cuda/sparse_mla_wgmma.cu > landed-mla.cu
patch -s -o old/indexer_wgmma.cu landed-indexer.cu old-indexer.diff
patch -s -o old/sparse_mla_wgmma.cu landed-mla.cu old-mla.diff
patch -s -o v6a/indexer_wgmma.cu landed-indexer.cu v6a.diff
patch -s -o v62/indexer_wgmma.cu landed-indexer.cu v62.diff
rm landed-indexer.cu landed-mla.cu
