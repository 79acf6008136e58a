#!/usr/bin/env bash
# GPU run 52: run 51's build. The tensor-core sparse MLA forward test alone (v5 beside v4 and
# every v3 tile; it outran run 51's time limit), and the v5.2 candidate in the harness: P V
# left running into the next chunk's S, the next chunk's copies issued while S runs
# (sparse_mla_wgmma_v52.cu = v5.2.diff applied to the v5 source).
cd "$(dirname "$0")"   # dev-bin: this script, run 51's binaries, harness.cu, the kernel sources
tar xJf bins.tar.xz
NV=/usr/local/cuda/bin
(timeout 420 ./kernels sparse_mla_tensor_cores_match_reference --test-threads=1 --nocapture) > $OUT/test.log 2>&1; echo "tensor-core forward test rc=$?"; grep -E "^test |test result|panicked|seed" $OUT/test.log | head -12
sed 's/"sparse_mla_wgmma.cu"/"sparse_mla_wgmma_v52.cu"/' harness.cu > harness52.cu
$NV/nvcc -std=c++17 -gencode arch=compute_90a,code=sm_90a -O3 -I . -o /tmp/harness52 harness52.cu 2>&1 | grep -E "error" | head -5
$NV/nvcc -std=c++17 -gencode arch=compute_90a,code=sm_90a -O3 -I . -o /tmp/harness harness.cu 2>&1 | grep -E "error" | head -5
/tmp/harness52 4096; /tmp/harness 4096; /tmp/harness52 4096; /tmp/harness52 300
