#!/usr/bin/env bash
# GPU run 48: the cost curve on run 47's build (ours and the peer at 4K-128K in one call; the
# bench unstripped, for a backtrace of the decode panic at 128K), and ncu's warp-stall samples
# per SASS instruction of the v4.1 forward at 4K.
cd "$(dirname "$0")"
tar xJf bins-u.tar.xz
(RUST_BACKTRACE=1 timeout 260 ./dsa-bench-u --dtype bf16 --reps 1 --only indexer_topk,"sparse_mla_fwd$",attention,"b64$" --lens 4096,16384,65536,131072 --out $OUT/ours.jsonl) > $OUT/bt.log 2>&1; echo "ours rc=$?"
grep -A40 panicked $OUT/bt.log | grep -E "panicked|at |[0-9]+: " | head -40
PYTHONUNBUFFERED=1 timeout 200 python3 peer_torch.py --lens 4096,16384,65536,131072 --out $OUT/peer.jsonl > /dev/null 2>&1; echo "peer rc=$?"
echo "--- ours"; cut -c1-110 $OUT/ours.jsonl; echo "--- peer"; cut -c1-100 $OUT/peer.jsonl
(timeout 100 /usr/local/cuda/bin/ncu -k regex:sparse_mla_fwd_mma16 --launch-count 1 --clock-control none --section SourceCounters --section WarpStateStats --section LaunchStats --page source --csv --print-source sass ./dsa-bench-u --dtype bf16 --reps 1 --mla v4 --only "sparse_mla_fwd$" --lens 4096) > $OUT/src.csv 2>&1; echo "ncu rc=$?"
xz -9 $OUT/src.csv
