#!/usr/bin/env bash
# GPU run 41: where the v4 indexer's registers go: its generated CUDA source compiled by
# nvcc with -Xptxas -v (as is and capped at 128 registers), local-memory and MMA counts in SASS.
cd "$(dirname "$0")"
tar xJf bins.tar.xz
(CUBECL_DEBUG_LOG=/tmp/c.log timeout 60 ./dsa-bench --dtype bf16 --reps 1 --only indexer_scores --lens 4096 >/dev/null 2>&1)
python3 - <<'PY'
s = open('/tmp/c.log').read()
i = s.index('IndexerScoresFp8<')
a = s.index('```cpp', i) + len('```cpp')
b = s.index('```', a)
open('/tmp/k.cu', 'w').write(s[a:b])
PY
cp /tmp/k.cu $OUT/indexer_scores_fp8.cu; wc -l /tmp/k.cu
NV=/usr/local/cuda/bin/nvcc; ls $NV
cd /tmp && for cap in 0 128; do
  extra=""; [ $cap -gt 0 ] && extra="-maxrregcount=$cap"
  $NV -std=c++17 -arch=sm_90 -cubin $extra -Xptxas -v -o k$cap.cubin k.cu 2>&1 | grep -E "error|registers|spill|stack" | head -6
  /usr/local/cuda/bin/cuobjdump -sass k$cap.cubin > k$cap.sass 2>&1; echo "cap=$cap: LDL $(grep -c LDL k$cap.sass) STL $(grep -c STL k$cap.sass) MMA $(grep -cE 'HMMA|QMMA' k$cap.sass) LDS $(grep -c 'LDS' k$cap.sass) SHFL $(grep -c SHFL k$cap.sass) total $(grep -cE '^ +/\*[0-9a-f]+\*/' k$cap.sass)"
done
cp /tmp/k0.sass $OUT/indexer_scores_fp8.sass
