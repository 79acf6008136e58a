#!/usr/bin/env bash
# GPU run 29: A/B/C in one call with the peer: a = v3.4 (54a2319), c = + bank-conflict-free
# score tiles, ./ = d (+ two row tiles per plane in P·V); ncu of d's forward.
cd "$(dirname "$0")"
[ -x dsa-bench ] || tar xJf bins.tar.xz
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
timeout 90 $NCU --clock-control none -k regex:sparse_mla_fwd_mma --launch-count 1 --section SpeedOfLight --section WarpStateStats --section LaunchStats --section Occupancy --metrics l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum,smsp__inst_executed_op_shared_ld.sum ./dsa-bench --dtype bf16 --reps 1 --only sparse_mla_fwd --lens 4096 > $OUT/ncu-fwd.txt 2>&1; echo "ncu rc=$?"
grep -vE "^==PROF==|^\{" $OUT/ncu-fwd.txt | grep -E "Registers|Dynamic Shared|Achieved Occupancy|Duration|Warp Cycles Per Issued|bank_conflicts|shared_ld" | head -12
AB=sparse_mla_fwd,decode,probs,sparse_mla_bwd
for v in a c; do (timeout 120 $v/dsa-bench --dtype bf16 --reps 3 --only $AB --lens 4096,16384 --out $OUT/ab-$v.jsonl) 2>&1 | grep -i "panick\|error" | head -3; done
(timeout 120 ./dsa-bench --dtype bf16 --reps 3 --only $AB --lens 4096,16384 --out $OUT/ab-d.jsonl) 2>&1 | grep -i "panick\|error" | head -3
PYTHONUNBUFFERED=1 timeout 100 python3 peer_torch.py --lens 4096,16384 --out $OUT/peer.jsonl > /dev/null 2>&1; echo "peer rc=$?"
for v in a c d; do echo "--- $v"; grep -v reference_ops $OUT/ab-$v.jsonl | cut -c1-100; done; echo "--- peer"; cut -c1-100 $OUT/peer.jsonl
