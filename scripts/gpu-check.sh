#!/usr/bin/env bash
# Builds the CUDA check/bench binary here and runs it on the lent H100 (the `device` tool).
#
#   scripts/gpu-check.sh build     # here: cargo build --release --features cuda, strip + gzip into .gpu/,
#                                  # and untrack the fixtures too big to travel (tree limit 64 MiB)
#   (device) bash scripts/gpu-check.sh device [--bench]   # there: unpack and run; carry .gpu
#   (device) bash scripts/gpu-check.sh profile --bench-only [--types Q4_K --m 1,8]   # kernel device times
#   (device) BURN_QUANT_GRAPH=0 bash scripts/gpu-check.sh profile --shape 8b --pp 16 --tg 8
#   scripts/gpu-check.sh restore   # here: track the fixtures again
#
# The GPU machine has CUDA but no Rust, and wgpu does not run there (Vulkan driver refused), so
# the CUDA build of examples/gpu_check.rs is what runs: the correctness checks against
# tests/fixtures, then the benchmark table (examples/gpu_bench.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
BIG=(tests/fixtures/qwen3-tiny)

case "${1:-}" in
build)
    [ -d /root/.local/share/tracel ] || bash ../shared/scripts/cuda-build-prereqs.sh
    cargo build --release --features cuda --example gpu_check
    mkdir -p .gpu
    strip -o .gpu/gpu_check target/release/examples/gpu_check
    gzip -f -9 .gpu/gpu_check
    ls -la .gpu
    mkdir -p .git/info
    for p in "${BIG[@]}"; do
        # Already untracked after an earlier build: nothing to do.
        git ls-files --error-unmatch "$p" >/dev/null 2>&1 && git rm -r -q --cached "$p"
        grep -qxF "/$p/" .git/info/exclude || echo "/$p/" >> .git/info/exclude
    done
    echo "travelling tree: $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) bytes + .gpu $(du -cb .gpu | tail -1 | cut -f1)"
    ;;
device)
    shift
    gunzip -c .gpu/gpu_check.gz > /tmp/gpu_check && chmod +x /tmp/gpu_check
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    /tmp/gpu_check --backend cuda "$@" 2>&1 | tee "${OUT:-/tmp}/gpu_check.log"
    # The opt-in tensor-core Q4_K decode (BURN_QUANT_MMA_DECODE=1) against the same checks.
    echo "# again with BURN_QUANT_MMA_DECODE=1"
    BURN_QUANT_MMA_DECODE=1 /tmp/gpu_check --backend cuda 2>&1 | grep -E "^(FAIL|#)" | tee -a "${OUT:-/tmp}/gpu_check.log"
    # The RMSNorm / SwiGLU done by the decode kernels (off by default on CUDA) against the same checks.
    echo "# again with BURN_QUANT_FOLD=all"
    BURN_QUANT_FOLD=all /tmp/gpu_check --backend cuda 2>&1 | grep -E "^(FAIL|#)" | tee -a "${OUT:-/tmp}/gpu_check.log"
    ;;
profile)
    # Kernel device times: CubeCL's own profiler (a device timer around every launch, each
    # launch synchronised) over a gpu_check run (a benchmark, or a model shape with the decode
    # graph off); prints the median, min, count and total per kernel.
    shift
    gunzip -c .gpu/gpu_check.gz > /tmp/gpu_check && chmod +x /tmp/gpu_check
    LOG="${OUT:-/tmp}/cubecl.log"
    CUBECL_DEBUG_LOG="$LOG" /tmp/gpu_check --backend cuda "$@" > /dev/null 2>&1 || true
    python3 - "$LOG" <<'PY'
import re, sys, statistics, collections
times = collections.OrderedDict()
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"\|\s*([0-9.]+)(ns|µs|us|ms|s)\s*\|\s*(.*)", line)
    if not m:
        continue
    v = float(m.group(1)) * {"ns": 1e-3, "µs": 1, "us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]
    times.setdefault(m.group(3).strip()[:150], []).append(v)
print(f"{'median µs':>10} {'min µs':>9} {'count':>6} {'total ms':>9}  kernel")
for name, v in sorted(times.items(), key=lambda kv: -sum(kv[1])):
    print(f"{statistics.median(v):>10.1f} {min(v):>9.1f} {len(v):>6} {sum(v) / 1e3:>9.2f}  {name}")
PY
    gzip -f "$LOG"
    ;;
restore)
    for p in "${BIG[@]}"; do
        sed -i "\#^/$p/\$#d" .git/info/exclude
        git reset -q -- "$p"
    done
    git status --short | head
    ;;
*)
    echo "usage: $0 build|device [--bench]|profile [ARGS]|restore" >&2
    exit 2
    ;;
esac
