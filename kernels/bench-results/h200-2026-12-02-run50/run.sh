#!/usr/bin/env bash
# GPU run 50: the landed build (fast exp, v4 decode without splits at batch 64): every CUDA
# kernel test and layer-0 conformance; decode b64 at 4K-128K with the new default and with
# run 48's 1024 cubes; the decode kernels' own times (ncu); the peer at 4K and 128K.
cd "$(dirname "$0")"
export DSA_CONFORMANCE_DIR=$PWD/conformance
tar xJf bins.tar.xz
(timeout 300 ./kernels --test-threads=1) > $OUT/test.log 2>&1; echo "kernel tests rc=$?"; grep -E "^test |test result|panicked" $OUT/test.log | head -24
(timeout 60 ./layer0 cuda --nocapture) > $OUT/layer0.log 2>&1; echo "layer0 rc=$?"; grep -E "test result|panicked|index_scores|max" $OUT/layer0.log | head -8
(timeout 40 ./dsa-bench --dtype bf16 --reps 3 --only "sparse_mla_fwd$" --lens 4096 --out $OUT/ours.jsonl) 2>&1 | grep -iE "panick|error" | head -5
for c in 0 1024; do
  extra=""; [ $c = 1024 ] && extra="--split-cubes 1024"
  (timeout 70 ./dsa-bench --dtype bf16 --reps 5 $extra --only "b64$" --lens 4096,16384,65536,131072 --out $OUT/ours.jsonl) 2>&1 | grep -iE "panick|error" | head -5
done
(timeout 40 /usr/local/cuda/bin/ncu -k regex:"sparse_mla|combine" --metrics gpu__time_duration.sum ./dsa-bench --dtype bf16 --reps 1 --only "b64$" --lens 65536) > $OUT/ncu.log 2>&1; echo "ncu rc=$?"; grep -E "sparse_mla|combine|duration" $OUT/ncu.log | head -12
PYTHONUNBUFFERED=1 timeout 130 python3 peer_torch.py --lens 4096,131072 --out $OUT/peer.jsonl > /dev/null 2>&1; echo "peer rc=$?"
echo "--- ours"; cut -c1-150 $OUT/ours.jsonl; echo "--- peer"; cut -c1-110 $OUT/peer.jsonl
