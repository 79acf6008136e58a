#!/usr/bin/env bash
# GPU run 47: v4.1 of the forward (e: copies unrolled and the latent's metadata read once; no
# branch in O += P·V; two chains of S products): every CUDA kernel test and layer-0
# conformance on this build; A/B of the forward and decode against run 44's v4 (a/) and v3
# with the peer, 4K/16K; the layer, the forward and decode b64 at 128K against the peer.
cd "$(dirname "$0")"
export DSA_CONFORMANCE_DIR=$PWD/conformance
tar xJf bins.tar.xz; mkdir -p a && tar xJf bins-a.tar.xz -C a dsa-bench
(CUBECL_DEBUG_LOG=/tmp/c.log timeout 60 ./dsa-bench --dtype bf16 --reps 1 --mla v4 --only "sparse_mla_fwd$" --lens 4096 >/dev/null 2>&1)
python3 - <<'PY'
s = open('/tmp/c.log').read()
i = s.find('SparseMlaFwdMma16')
a = s.index('```cpp', i) + len('```cpp')
b = s.index('```', a)
open('/tmp/k.cu', 'w').write(s[a:b].replace('uint64 *mbar_ptr', 'auto *mbar_ptr'))
PY
(cd /tmp && /usr/local/cuda/bin/nvcc -std=c++17 -arch=sm_90 -cubin -Xptxas -v -o k.cubin k.cu 2>&1 | grep -E "error|registers|spill" | head -4)
(timeout 330 ./kernels --test-threads=1) > $OUT/test.log 2>&1; echo "kernel tests rc=$?"; grep -E "^test |test result|panicked" $OUT/test.log | head -24
(timeout 60 ./layer0 cuda --nocapture) > $OUT/layer0.log 2>&1; echo "layer0 rc=$?"; grep -E "test result|panicked|index_scores|max" $OUT/layer0.log | head -8
for v in e a e3 e a; do
  bin=./dsa-bench; mla=v4; [ $v = a ] && bin=./a/dsa-bench; [ $v = e3 ] && mla=v3
  (timeout 60 $bin --dtype bf16 --reps 3 --mla $mla --only "sparse_mla_fwd$,b64$" --lens 4096,16384 --out $OUT/ab_$v.jsonl) 2>&1 | grep -i "panick\|error" | head -5
done
PYTHONUNBUFFERED=1 timeout 60 python3 peer_torch.py --lens 4096,16384 --out $OUT/peer.jsonl > /dev/null 2>&1; echo "peer rc=$?"
for v in e a e3; do echo "--- $v"; cut -c1-100 $OUT/ab_$v.jsonl; done
echo "--- peer"; cut -c1-100 $OUT/peer.jsonl
(RUST_BACKTRACE=1 timeout 150 ./dsa-bench --dtype bf16 --reps 1 --only "sparse_mla_fwd$,attention,b64$" --lens 131072 --out $OUT/l128.jsonl) 2>&1 | grep -iE "panick|error" -A12 | head -30
PYTHONUNBUFFERED=1 timeout 150 python3 peer_torch.py --lens 131072 --out $OUT/peer128.jsonl > /dev/null 2>&1; echo "peer128 rc=$?"
echo "--- 128K"; cut -c1-120 $OUT/l128.jsonl; cut -c1-110 $OUT/peer128.jsonl
