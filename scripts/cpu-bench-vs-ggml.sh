#!/usr/bin/env bash
# Side-by-side CPU figures for BENCHMARKS.md: ggml's test-backend-ops (built from the
# llama-cpp-python sdist, path in $GGML_TBO) then this crate's criterion bench, in one run.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${GGML_TBO:?set GGML_TBO to the test-backend-ops binary}"
echo "== ggml test-backend-ops (CPU, $(nproc) threads)"
"$GGML_TBO" perf -o MUL_MAT -b CPU -p 'type_a=(q4_K|q6_K|q8_0|f32),type_b=f32,m=4096,n=(1|512),k=14336,' 2>&1 \
  | grep -oE 'type_a=[a-z0-9_A-Z]+|n=[0-9]+,k|[0-9.]+ us/run' | paste - - - | sed 's/,k//'
echo "== burn-quant (criterion median)"
cargo bench --bench cpu_matmul --features ndarray -- --warm-up-time 1 --measurement-time 4 2>&1 \
  | grep -E '^matmul|time:' | grep -v '%' | paste - - | awk '{print $1, $5, $6}'
