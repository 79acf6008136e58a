#!/usr/bin/env bash
# GPU run 21: the v3 forward's tile (heads x planes x slots) and asynchronous gathers (cp.async).
# a/dsa-bench: tiles only (gathers as before); ./dsa-bench: tiles + cp.async in every v3 kernel.
# Every kernel test (the forward at each tile), layer-0 conformance, A/B in one call, the peer.
cd "$(dirname "$0")"
tar xJf bins.tar.xz
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee $OUT/device.txt
export DSA_CONFORMANCE_DIR=$PWD/conformance
(timeout 200 ./kernels --test-threads=1 2>&1 | grep -E "^test |test result|panicked|assert|Error|error" ; echo "kernels rc=${PIPESTATUS[0]}") 2>&1 | tee $OUT/tests.log
(timeout 40 ./layer0 cuda --nocapture 2>&1 | tail -8; echo "layer0 rc=${PIPESTATUS[0]}") 2>&1 | tee -a $OUT/tests.log
for bin in a/dsa-bench ./dsa-bench; do
  for tile in 64x8x64 32x8x32 32x8x64 32x4x32; do
    tag=$(dirname $bin | tr -d ./)${bin##*/}-$tile
    (timeout 60 $bin --dtype bf16 --reps 3 --mla-tile $tile --only sparse_mla_fwd,decode --lens 4096,16384 --out $OUT/ab.jsonl) 2>&1 | grep -i "panick\|error" | head -3
    echo "$tag done"; echo "{\"run\": \"$tag\"}" >> $OUT/ab.jsonl
  done
done
OPS=indexer_scores,indexer_topk,sparse_mla_fwd,sparse_mla_bwd,attention,decode,probs
(timeout 120 ./dsa-bench --dtype bf16 --reps 3 --only $OPS --lens 4096,16384 --out $OUT/ours.jsonl) 2>&1 | grep -i "panick\|error" | head -5
(timeout 60 a/dsa-bench --dtype bf16 --reps 3 --only sparse_mla_bwd,indexer_topk,probs --lens 4096,16384 --out $OUT/ours-a.jsonl) 2>&1 | grep -i "panick\|error" | head -5
PYTHONUNBUFFERED=1 timeout 60 python3 peer_torch.py --lens 4096,16384 --out $OUT/peer.jsonl > $OUT/peer.log 2>&1; echo "peer rc=$?"
echo "--- ab"; cut -c1-120 $OUT/ab.jsonl; echo "--- ours"; cut -c1-150 $OUT/ours.jsonl; echo "--- ours-a"; cut -c1-120 $OUT/ours-a.jsonl; echo "--- peer"; cut -c1-110 $OUT/peer.jsonl
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
for tile in 64x8x64 32x8x32; do
timeout 60 $NCU --clock-control none --section LaunchStats --section Occupancy ./dsa-bench --dtype bf16 --reps 1 --mla-tile $tile --only sparse_mla_fwd --lens 4096 > $OUT/ncu-$tile.txt 2>&1; echo "ncu $tile rc=$?"
grep -E "^  [A-Za-z_].*\(|Registers Per Thread|Dynamic Shared Memory Per Block|Theoretical Occupancy|Achieved Occupancy" $OUT/ncu-$tile.txt | awk '/\(/{name=$0} !/\(/{print substr(name,1,40) " | " $0}' | sort | uniq -c | grep -i "mma" | head -12
done
