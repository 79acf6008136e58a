#!/usr/bin/env bash
# GPU run 44: the v4 sparse MLA forward (mma.sync, softmax in registers): its registers
# (ptxas -v on the generated source), the forward test (v4 and every v3 tile), an A/B of the
# forward and decode against v3 with the peer in the same call, decode b64 at 128K.
cd "$(dirname "$0")"
export DSA_CONFORMANCE_DIR=$PWD/conformance
tar xJf bins.tar.xz
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
(CUBECL_DEBUG_LOG=/tmp/c.log timeout 60 ./dsa-bench --dtype bf16 --reps 1 --mla v4 --only "sparse_mla_fwd$" --lens 4096 --out $OUT/first.jsonl >/dev/null 2>&1); echo "first rc=$?"; cut -c1-150 $OUT/first.jsonl
python3 - <<'PY'
s = open('/tmp/c.log').read()
i = s.find('SparseMlaFwdMma16')
print('kernel name at', i)
a = s.index('```cpp', i) + len('```cpp')
b = s.index('```', a)
open('/tmp/k.cu', 'w').write(s[a:b])
PY
cp /tmp/k.cu $OUT/fwd_mma16.cu
(cd /tmp && /usr/local/cuda/bin/nvcc -std=c++17 -arch=sm_90 -cubin -Xptxas -v -o k.cubin k.cu 2>&1 | grep -E "error|registers|spill|stack" | head -6; /usr/local/cuda/bin/cuobjdump -sass k.cubin > k.sass 2>&1; echo "LDL $(grep -c LDL k.sass) STL $(grep -c STL k.sass) HMMA $(grep -c HMMA k.sass) LDSM $(grep -c LDSM k.sass) total $(grep -cE '^ +/\*[0-9a-f]+\*/' k.sass)")
(timeout 240 ./kernels --test-threads=1 --nocapture sparse_mla_tensor_cores) > $OUT/test.log 2>&1; echo "fwd test rc=$?"; grep -E "test result|panicked" -A4 $OUT/test.log | head -14
for k in v4 v3; do
  (timeout 120 ./dsa-bench --dtype bf16 --reps 3 --mla $k --only "sparse_mla_fwd$,b64$" --lens 4096,16384 --out $OUT/ab.jsonl) 2>&1 | grep -i "panick\|error" | head -5
done
PYTHONUNBUFFERED=1 timeout 120 python3 peer_torch.py --lens 4096,16384 --out $OUT/peer.jsonl > /dev/null 2>&1; echo "peer rc=$?"
echo "--- ab"; grep -v reference_ops $OUT/ab.jsonl | cut -c1-130; grep -o '"mla_kernel": "[^"]*"' $OUT/ab.jsonl | sort | uniq -c
echo "--- peer"; cut -c1-110 $OUT/peer.jsonl
