#!/usr/bin/env bash
# Fuzzes burn-quant's entry points with cargo-fuzz (libFuzzer; works on stable Rust with
# `-s none`, i.e. coverage instrumentation without a sanitizer; debug assertions and overflow
# checks on). Usage:
#   scripts/fuzz.sh SECONDS [TARGET...]     run each target for SECONDS (default: all targets);
#                                           with RUNS=N, stop a target after N inputs if sooner
#   scripts/fuzz.sh seeds                   regenerate fuzz/seeds/ from tests/fixtures
# Each run starts from the committed seeds (fuzz/seeds/<target>, generated), the inputs that once
# failed (fuzz/regressions/<target>, kept by hand) and the corpus grown by
# earlier runs (fuzz/corpus/<target>, ignored by git); a crash, a timeout (10 s per input) or an
# RSS above 2 GiB fails the script, and libFuzzer leaves the input in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

if [ "${1:-}" = seeds ]; then
    rm -rf seeds
    exec cargo run --release --example make_seeds
fi
secs=${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}
shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(gguf_reader hf_import quant_linear)

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
mkdir -p logs
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "== $t: ${secs} s"
    rc=0
    cargo fuzz run -s none -a "$t" "corpus/$t" "seeds/$t" "regressions/$t" -- \
        -max_total_time="$secs" ${RUNS:+-runs=$RUNS} -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
        >"logs/$t.log" 2>&1 || rc=$?
    grep -E "^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)" "logs/$t.log" || true
    if [ "$rc" -ne 0 ]; then
        grep -E -m5 -A3 "panicked|ERROR|Failing input" "logs/$t.log" | cut -c1-300 >&2
        echo "$t: failed (rc $rc); the input is in fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
