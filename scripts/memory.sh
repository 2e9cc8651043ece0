#!/usr/bin/env bash
# Issue 6's memory figure: the peak resident memory (`/usr/bin/time -v`) of the tiny Qwen3 loaded
# and run on the CPU (flex), against its quantized weights plus activations, for two builds:
#   release  the default build (`cargo build --release`: dynamically linked, position-independent);
#   lean     `--profile lean` (fat LTO, one codegen unit), linked statically (`crt-static`) and not
#            position-independent (`relocation-model=static`): no dynamic loader, no relocations
#            applied to the binary's pages at start, glibc's used parts only.
# What the process allocates is the same in both; they differ by the code pages mapped.
#   scripts/memory.sh [release|lean|both]   (default both; x86_64 Linux with glibc)
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=x86_64-unknown-linux-gnu
ARGS=(--no-tokenizer --tokens 9707,1879,11,419,374,264,1273)
# The tiny model's quantized weights (bytes) and activations: the KV cache buffers (2 · layers ·
# 256 positions · kv_heads · head_dim f32 = 1,048,576 B) and one row of logits (151,936 f32).
WEIGHTS=33087232
ACT=$((1048576 + 151936 * 4))
run() {
    local bin=$1 name=$2
    for n in 1 64; do
        for i in 1 2 3; do
            kib=$(/usr/bin/time -v "$bin" "${ARGS[@]}" --max-tokens $n 2>&1 >/dev/null | awk '/Maximum resident/ {print $NF}')
            python3 -c "k=$kib; print(f'$name --max-tokens $n: peak {k:,} KiB = {k*1024/1e6:.2f} MB = {k*1024/($WEIGHTS+$ACT):.3f}x (weights + activations)')"
        done
    done
}
case "${1:-both}" in
release|both)
    cargo build --release --example qwen3
    run target/release/examples/qwen3 release
    ;;&
lean|both)
    RUSTFLAGS="-C relocation-model=static -C target-feature=+crt-static" \
        cargo build --profile lean --example qwen3 --target $TARGET
    run target/$TARGET/lean/examples/qwen3 lean
    ;;
esac
