#!/usr/bin/env bash
# GPU run 69: the library with the forward's slot lookups issued together (commit 0a52ed4).
# The CUDA kernel tests of the sparse MLA (forward on wgmma and CubeCL, backward, autodiff, the
# dense-by-kernels check); decode b64 at 4K/16K (medians of 10, back to back); then the cost
# curve (indexer + top-k, forward, DSA layer, decode, 4K-128K, one rep per point) and the peer
# at the same lengths, in one call.
cd "$(dirname "$0")"
tar xJf bins.tar.xz
(timeout 200 ./kernels --test-threads=1 mla) > $OUT/test.log 2>&1; echo "kernel tests rc=$?"
grep -E "^test |test result|relative error" $OUT/test.log | head -24
grep -B2 -A14 panicked $OUT/test.log | head -30
(timeout 45 ./dsa-bench --dtype bf16 --reps 10 --back-to-back --only "b64$" --lens 4096,16384 --out $OUT/decode.jsonl) 2>&1 | grep -iE "panick|error" | head -5
cut -c1-200 $OUT/decode.jsonl
(timeout 150 ./dsa-bench --dtype bf16 --reps 1 --only indexer_topk,"sparse_mla_fwd$",attention,"b64$" --lens 4096,16384,65536,131072 --out $OUT/ours.jsonl) 2>&1 | grep -iE "panick|error" | head -5
PYTHONUNBUFFERED=1 timeout 200 python3 peer_torch.py --lens 4096,16384,65536,131072 --out $OUT/peer.jsonl > /dev/null 2>&1; echo "peer rc=$?"
echo "--- ours"; cut -c1-160 $OUT/ours.jsonl; echo "--- peer"; cut -c1-110 $OUT/peer.jsonl
