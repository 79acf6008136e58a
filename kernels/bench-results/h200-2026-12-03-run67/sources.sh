#!/usr/bin/env bash
# Recreates run 67's diag.cu and harness_diag.cu (run 62's files with this run's switches) from
# run 62's copies and the diffs beside this script; run2.sh and run4.sh compile them.
cd "$(dirname "$0")"
for f in diag harness_diag; do cp ../h200-2026-12-03-run62/$f.cu $f.cu && patch -s $f.cu < $f.diff || exit 1; done
