#!/usr/bin/env bash
# GPU run 49: fast exp (__expf) in the tensor-core attention kernels; v4 with 4 parts (16 warps)
# against 2; decode's split count swept; decode b64 at 128K with the cache joined on the host.
# The forward test (v4 parts 2 and 4, v3 tiles) on this build; A/B against run 47's v4.1 (a/); the peer.
cd "$(dirname "$0")"
export DSA_CONFORMANCE_DIR=$PWD/conformance
tar xJf bins.tar.xz; mkdir -p a && tar xJf bins-a.tar.xz -C a dsa-bench
for p in 2 4; do
(CUBECL_DEBUG_LOG=/tmp/c$p.log timeout 60 ./dsa-bench --dtype bf16 --reps 1 --mla v4 --v4-parts $p --only "sparse_mla_fwd$" --lens 4096 >/dev/null 2>&1)
python3 - $p <<'PY'
import sys
p = sys.argv[1]
s = open(f'/tmp/c{p}.log').read()
i = s.find('SparseMlaFwdMma16')
a = s.index('```cpp', i) + len('```cpp')
b = s.index('```', a)
src = s[a:b]
print('parts', p, '__expf', src.count('__expf'), 'exp(', src.count(' exp('), '__logf', src.count('__logf'))
open(f'/tmp/k{p}.cu', 'w').write(src.replace('uint64 *mbar_ptr', 'auto *mbar_ptr'))
PY
(cd /tmp && /usr/local/cuda/bin/nvcc -std=c++17 -arch=sm_90a -cubin -Xptxas -v -o k$p.cubin k$p.cu 2>&1 | grep -E "error|registers|spill" | head -4)
done
cp /tmp/k4.cu $OUT/k4.cu
(timeout 200 ./kernels --test-threads=1 sparse_mla_tensor_cores) > $OUT/test.log 2>&1; echo "forward test rc=$?"; grep -E "^test |test result|panicked" -A3 $OUT/test.log | head -24
for v in n2 a n4 n2 a n4; do
  bin=./dsa-bench; parts=2; [ $v = a ] && bin=./a/dsa-bench; [ $v = n4 ] && parts=4
  extra="--v4-parts $parts"; [ $v = a ] && extra=""
  (timeout 60 $bin --dtype bf16 --reps 3 --mla v4 $extra --only "sparse_mla_fwd$" --lens 4096,16384 --out $OUT/ab_$v.jsonl) 2>&1 | grep -i "panick\|error" | head -5
done
for v in n a; do bin=./dsa-bench; [ $v = a ] && bin=./a/dsa-bench
  (timeout 60 $bin --dtype bf16 --reps 3 --only "sparse_mla_bwd$" --lens 4096 --out $OUT/bwd_$v.jsonl) 2>&1 | grep -i "panick\|error" | head -5
done
for c in 128 256 512 1024; do for p in 2 4; do
  (timeout 60 ./dsa-bench --dtype bf16 --reps 5 --v4-parts $p --split-cubes $c --only "b64$" --lens 4096,65536 --out $OUT/dec.jsonl) 2>&1 | grep -i "panick\|error" | head -5
done; done
PYTHONUNBUFFERED=1 timeout 60 python3 peer_torch.py --lens 4096,16384 --out $OUT/peer.jsonl > /dev/null 2>&1; echo "peer rc=$?"
for v in n2 a n4; do echo "--- $v"; cut -c1-120 $OUT/ab_$v.jsonl; done
echo "--- bwd"; cut -c1-120 $OUT/bwd_*.jsonl
echo "--- dec"; cut -c1-60 $OUT/dec.jsonl | paste - - ; grep -o '"split_cubes": [0-9]*\|"v4_parts": [0-9]*' $OUT/dec.jsonl | paste - - | head -20
echo "--- peer"; cut -c1-100 $OUT/peer.jsonl
for c in 128 1024; do
(RUST_BACKTRACE=1 timeout 120 ./dsa-bench --dtype bf16 --reps 3 --split-cubes $c --only "b64$" --lens 131072 --out $OUT/d128.jsonl) 2>&1 | grep -iE "panick|error" -A12 | head -30
done
echo "--- d128"; cut -c1-140 $OUT/d128.jsonl
