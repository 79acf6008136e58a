#!/usr/bin/env bash
# GPU run 51: the v5 (wgmma) sparse MLA forward. 1) the standalone harness (float64 check of
# 6 tokens, time at 4K) and ncu of it at 1K, and of a v5.1 candidate; 2) the CUDA sparse MLA tests on the landed build
# (v5 against the reference beside v4 and v3); 3) the forward, decode b64 and the layer with
# v5 (auto) and v4, and the peer, in this one call.
cd "$(dirname "$0")"   # dev-bin: this script, the binaries, harness.cu, sparse_mla_wgmma.cu, peer_torch.py
tar xJf bins.tar.xz
NV=/usr/local/cuda/bin
$NV/nvcc -std=c++17 -gencode arch=compute_90a,code=sm_90a -O3 -lineinfo -I . -o /tmp/harness harness.cu 2>&1 | grep -E "error" | head -5
/tmp/harness 4096
# v5.1 candidate (sparse_mla_wgmma_v51.cu = v5.1.diff applied to the v5 source): both
# warpgroups compute the whole S, P from registers (no exchange).
sed 's/"sparse_mla_wgmma.cu"/"sparse_mla_wgmma_v51.cu"/' harness.cu > harness51.cu
$NV/nvcc -std=c++17 -gencode arch=compute_90a,code=sm_90a -O3 -lineinfo -I . -o /tmp/harness51 harness51.cu 2>&1 | grep -E "error" | head -5
/tmp/harness51 4096; /tmp/harness51 300; /tmp/harness 4096
(timeout 120 ./kernels sparse_mla --test-threads=1) > $OUT/test.log 2>&1; echo "kernel tests rc=$?"; grep -E "^test |test result|panicked" $OUT/test.log | head -24
(timeout 100 ./dsa-bench --dtype bf16 --reps 3 --only "sparse_mla_fwd$,b64$" --lens 4096,16384 --mla v4 --out $OUT/v4.jsonl) 2>&1 | grep -iE "panick|error" | head -5
(timeout 150 ./dsa-bench --dtype bf16 --reps 3 --only "sparse_mla_fwd$,b64$,attention" --lens 4096,131072 --out $OUT/ours.jsonl) 2>&1 | grep -iE "panick|error" | head -5
PYTHONUNBUFFERED=1 timeout 100 python3 peer_torch.py --lens 4096,131072 --out $OUT/peer.jsonl > /dev/null 2>&1; echo "peer rc=$?"
echo "--- v4"; cut -c1-150 $OUT/v4.jsonl; echo "--- ours"; cut -c1-150 $OUT/ours.jsonl; echo "--- peer"; cut -c1-110 $OUT/peer.jsonl
(timeout 60 $NV/ncu -k regex:dsa_sparse_mla --launch-count 1 --section SpeedOfLight --section ComputeWorkloadAnalysis --section WarpStateStats --section MemoryWorkloadAnalysis /tmp/harness 1024) > $OUT/ncu.txt 2>&1; echo "ncu rc=$?"
grep -E "Duration|Throughput|Pipe|Stall|Warp Cycles|Issued|Eligible|Bank|Registers|Achieved" $OUT/ncu.txt | head -40
(timeout 60 $NV/ncu -k regex:dsa_sparse_mla --launch-count 1 --section SpeedOfLight --section WarpStateStats /tmp/harness51 1024) > $OUT/ncu51.txt 2>&1; echo "ncu51 rc=$?"
grep -E "Duration|Throughput|Stall|Warp Cycles|Issued" $OUT/ncu51.txt | head -20
