#!/usr/bin/env bash
# GPU run 28: build d = score tiles at a padded stride, softmax lanes along the slots (no bank
# conflicts) + the forward's P·V with two row tiles per plane (each V fragment serves two
# products). Correctness: the tensor-core tests, kernel 6, autodiff, layer-0 conformance.
cd "$(dirname "$0")"
tar xJf bins.tar.xz
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee $OUT/device.txt
export DSA_CONFORMANCE_DIR=$PWD/conformance
(timeout 300 ./kernels --test-threads=1 tensor_cores indexer_loss autodiff dense_mla 2>&1 | grep -E "^test |test result|panicked|assert|Error|error" ; echo "kernels rc=${PIPESTATUS[0]}") 2>&1 | tee $OUT/tests.log
(timeout 60 ./layer0 cuda --nocapture 2>&1 | tail -8; echo "layer0 rc=${PIPESTATUS[0]}") 2>&1 | tee -a $OUT/tests.log
