#!/usr/bin/env bash
# GPU run 27: wip/fwd-registers (./dsa-bench) against main (b/dsa-bench = run 23's build) in one
# call, with the peer; ncu launch stats of the new forward.
cd "$(dirname "$0")"
[ -x dsa-bench ] || tar xJf bins.tar.xz
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
timeout 90 $NCU --clock-control none -k regex:sparse_mla_fwd_mma --launch-count 1 --section SpeedOfLight --section WarpStateStats --section LaunchStats --section Occupancy ./dsa-bench --dtype bf16 --reps 1 --only sparse_mla_fwd --lens 4096 > $OUT/ncu-fwd.txt 2>&1; echo "ncu rc=$?"
grep -vE "^==PROF==|^\{" $OUT/ncu-fwd.txt | grep -E "Registers|Shared Memory Per Block|Occupancy|Duration|Issue Slots|Compute \(SM\)|Block Limit" | head -20
AB=sparse_mla_fwd,decode,probs
(timeout 100 b/dsa-bench --dtype bf16 --reps 3 --only $AB --lens 4096,16384 --out $OUT/ab-main.jsonl) 2>&1 | grep -i "panick\|error" | head -3
(timeout 100 ./dsa-bench --dtype bf16 --reps 3 --only $AB --lens 4096,16384 --out $OUT/ab-wip.jsonl) 2>&1 | grep -i "panick\|error" | head -3
PYTHONUNBUFFERED=1 timeout 100 python3 peer_torch.py --lens 4096,16384 --out $OUT/peer.jsonl > /dev/null 2>&1; echo "peer rc=$?"
echo "--- main"; cut -c1-120 $OUT/ab-main.jsonl; echo "--- wip"; cut -c1-120 $OUT/ab-wip.jsonl; echo "--- peer"; cut -c1-110 $OUT/peer.jsonl
