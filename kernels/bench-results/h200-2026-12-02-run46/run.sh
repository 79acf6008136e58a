#!/usr/bin/env bash
# GPU run 46: where v4's forward waits: ncu's warp-stall samples per SASS instruction (build a,
# run 44's), and the forward with the gathers after the second chunk left out (build c: wrong
# results, the compute alone) and build d (the gathers' copies unrolled, the latent's
# metadata read once) against a, in one call.
cd "$(dirname "$0")"
tar xJf bins.tar.xz; tar xJf bins-c.tar.xz; tar xJf bins-d.tar.xz
NV=/usr/local/cuda/bin
K="-k regex:sparse_mla_fwd_mma16 --launch-count 1 --clock-control none"
(timeout 150 $NV/ncu $K --section SourceCounters --section WarpStateStats ./dsa-bench --dtype bf16 --reps 1 --mla v4 --only "sparse_mla_fwd$" --lens 4096) > $OUT/ncu_src.txt 2>&1; echo "ncu details rc=$?"
(timeout 150 $NV/ncu $K --section SourceCounters --page source --csv --print-source sass ./dsa-bench --dtype bf16 --reps 1 --mla v4 --only "sparse_mla_fwd$" --lens 4096) > $OUT/src_a.csv 2>&1; echo "ncu source rc=$?"; wc -l $OUT/src_a.csv; head -c 600 $OUT/src_a.csv
for v in a c d a c d; do
  bin=./dsa-bench; [ $v != a ] && bin=./dsa-bench-$v
  (timeout 60 $bin --dtype bf16 --reps 3 --mla v4 --only "sparse_mla_fwd$" --lens 4096,16384 --out $OUT/ab_$v.jsonl) 2>&1 | grep -i "panick\|error" | head -5
done
for m in v3; do
  (timeout 60 ./dsa-bench --dtype bf16 --reps 3 --mla v3 --only "sparse_mla_fwd$" --lens 4096,16384 --out $OUT/ab_a3.jsonl) 2>&1 | grep -i "panick\|error" | head -5
  (timeout 60 ./dsa-bench-d --dtype bf16 --reps 3 --mla v3 --only "sparse_mla_fwd$" --lens 4096,16384 --out $OUT/ab_d3.jsonl) 2>&1 | grep -i "panick\|error" | head -5
done
for v in a c d a3 d3; do echo "--- $v"; cut -c1-110 $OUT/ab_$v.jsonl; done
xz -9 $OUT/src_a.csv
