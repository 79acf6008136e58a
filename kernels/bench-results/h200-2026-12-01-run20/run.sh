#!/usr/bin/env bash
# GPU run 20 (diagnosis for the next versions): per-kernel times of decode b64 at 16K, and
# launch statistics (registers, shared memory, occupancy) of the v3 forward and backward.
cd "$(dirname "$0")"
tar xJf bins.tar.xz
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1); echo "ncu: $NCU"
timeout 140 $NCU --clock-control none --print-summary per-kernel --metrics gpu__time_duration.sum ./dsa-bench --dtype bf16 --reps 1 --only decode_b64 --lens 16384 > $OUT/ncu-decode.txt 2>&1; echo "decode rc=$?"
grep -E "^  [A-Za-z_].*\(|gpu__time_duration.sum|Invocations" $OUT/ncu-decode.txt | grep -v "^==" | head -60
timeout 140 $NCU --clock-control none --section LaunchStats --section Occupancy ./dsa-bench --dtype bf16 --reps 1 --only sparse_mla_bwd,sparse_mla_fwd --lens 4096 > $OUT/ncu-launch.txt 2>&1; echo "launch rc=$?"
grep -E "^  [A-Za-z_].*\(|Registers Per Thread|Dynamic Shared Memory Per Block|Theoretical Occupancy|Achieved Occupancy|Block Limit (Registers|Shared Mem)" $OUT/ncu-launch.txt | awk '/\(/{name=$0} !/\(/{print substr(name,1,60) " | " $0}' | sort | uniq -c | sort -rn | grep -i "mma\|kernel" | head -40
