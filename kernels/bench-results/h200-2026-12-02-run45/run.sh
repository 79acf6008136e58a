#!/usr/bin/env bash
# GPU run 45: why v4's forward is slow: registers and spills (ptxas -v on the generated
# source) and ncu's warp states for build a (run 44's) and b (S loop software-pipelined),
# and the A/B of the two at 4K/16K in one call.
cd "$(dirname "$0")"
tar xJf bins.tar.xz; tar xJf bins-b.tar.xz
NV=/usr/local/cuda/bin
for v in a b; do
  bin=./dsa-bench; [ $v = b ] && bin=./dsa-bench-b
  rm -f /tmp/c.log
  (CUBECL_DEBUG_LOG=/tmp/c.log timeout 60 $bin --dtype bf16 --reps 1 --mla v4 --only "sparse_mla_fwd$" --lens 4096 >/dev/null 2>&1)
  python3 - <<'PY'
s = open('/tmp/c.log').read()
i = s.find('SparseMlaFwdMma16')
a = s.index('```cpp', i) + len('```cpp')
b = s.index('```', a)
open('/tmp/k.cu', 'w').write(s[a:b].replace('uint64 *mbar_ptr', 'auto *mbar_ptr'))
PY
  cp /tmp/k.cu $OUT/fwd_$v.cu
  (cd /tmp && $NV/nvcc -std=c++17 -arch=sm_90 -cubin -Xptxas -v -o k.cubin k.cu 2>&1 | grep -E "error|registers|spill|stack" | head -6; $NV/cuobjdump -sass k.cubin > k$v.sass 2>&1; echo "$v: LDL $(grep -c LDL k$v.sass) STL $(grep -c STL k$v.sass) HMMA $(grep -c HMMA k$v.sass) LDSM $(grep -c LDSM k$v.sass) BAR $(grep -c 'BAR\|SYNCS' k$v.sass) total $(grep -cE '^ +/\*[0-9a-f]+\*/' k$v.sass)")
  (timeout 120 $NV/ncu --clock-control none -k regex:sparse_mla_fwd_mma16 --launch-count 1 --section LaunchStats --section Occupancy --section WarpStateStats --section SchedulerStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" $bin --dtype bf16 --reps 1 --mla v4 --only "sparse_mla_fwd$" --lens 4096) > $OUT/ncu_$v.txt 2>&1
  grep -E "Registers Per|Duration|Achieved Occ|Stall|Issue Slots Busy|Executed Ipc A|Warp Cycles Per Issued|Eligible Warps|No Eligible|Local|Bank" $OUT/ncu_$v.txt | head -30
done
cp /tmp/kb.sass $OUT/fwd_b.sass
for v in a b a b; do
  bin=./dsa-bench; [ $v = b ] && bin=./dsa-bench-b
  (timeout 60 $bin --dtype bf16 --reps 3 --mla v4 --only "sparse_mla_fwd$" --lens 4096,16384 --out $OUT/ab_$v.jsonl) 2>&1 | grep -i "panick\|error" | head -5
done
for v in a b; do echo "--- $v"; cut -c1-110 $OUT/ab_$v.jsonl; done
