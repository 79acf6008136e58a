#!/usr/bin/env bash
# GPU run 23: run 22's build with every cmma tile 32-byte aligned (run 22's forward test hit a
# misaligned address); A/B against run 21's two-pass build (b/); ncu of the one-pass forward.
cd "$(dirname "$0")"
tar xJf bins.tar.xz
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee $OUT/device.txt
export DSA_CONFORMANCE_DIR=$PWD/conformance
(timeout 200 ./kernels --test-threads=1 2>&1 | grep -E "^test |test result|panicked|assert|Error|error" ; echo "kernels rc=${PIPESTATUS[0]}") 2>&1 | tee $OUT/tests.log
(timeout 40 ./layer0 cuda --nocapture 2>&1 | tail -4; echo "layer0 rc=${PIPESTATUS[0]}") 2>&1 | tee -a $OUT/tests.log
AB=sparse_mla_fwd,decode,probs
(timeout 90 b/dsa-bench --dtype bf16 --reps 3 --mla-tile 32x8x32 --only $AB --lens 4096,16384 --out $OUT/ab-b.jsonl) 2>&1 | grep -i "panick\|error" | head -3
(timeout 120 ./dsa-bench --dtype bf16 --reps 3 --only $AB,sparse_mla_bwd --lens 4096,16384 --out $OUT/ab-c.jsonl) 2>&1 | grep -i "panick\|error" | head -3
echo "--- ab-b"; cut -c1-120 $OUT/ab-b.jsonl; echo "--- ab-c"; cut -c1-120 $OUT/ab-c.jsonl
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
timeout 120 $NCU --clock-control none -k regex:sparse_mla_fwd_mma --launch-count 1 --section SpeedOfLight --section WarpStateStats --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section LaunchStats --section Occupancy ./dsa-bench --dtype bf16 --reps 1 --only sparse_mla_fwd --lens 4096 > $OUT/ncu-fwd.txt 2>&1; echo "ncu rc=$?"
grep -vE "^==PROF==|^\{" $OUT/ncu-fwd.txt | grep -E "[A-Za-z].*[0-9]" | head -90
timeout 90 $NCU --clock-control none -k regex:sparse_mla_fwd_mma --launch-count 1 --metrics l1tex__t_sectors_pipe_lsu_mem_local_op_ld.sum,l1tex__t_sectors_pipe_lsu_mem_local_op_st.sum,smsp__inst_executed.sum,smsp__inst_executed_op_shared_ld.sum,smsp__inst_executed_op_shared_st.sum,smsp__inst_executed_op_global_ld.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum,smsp__warp_issue_stalled_barrier_per_warp_active.pct,smsp__warp_issue_stalled_long_scoreboard_per_warp_active.pct,smsp__warp_issue_stalled_short_scoreboard_per_warp_active.pct,smsp__warp_issue_stalled_mio_throttle_per_warp_active.pct,smsp__warp_issue_stalled_math_pipe_throttle_per_warp_active.pct,smsp__warp_issue_stalled_lg_throttle_per_warp_active.pct ./dsa-bench --dtype bf16 --reps 1 --only sparse_mla_fwd --lens 4096 > $OUT/ncu-metrics.txt 2>&1; echo "ncu metrics rc=$?"
grep -E "l1tex|smsp" $OUT/ncu-metrics.txt | head -20
