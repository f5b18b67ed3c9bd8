#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each with libFuzzer and prints, per
# target, the executions, the coverage reached and the crashes found.
#
#   fuzz/run.sh [SECONDS] [TARGET...]      (SECONDS defaults to 60)
#   FUZZ_JOBS=3 fuzz/run.sh 600            (three targets at a time)
#
# Works on the stable toolchain: the targets are built with plain `cargo build` and rustc's stable
# sanitizer-coverage flags (what `cargo fuzz build --sanitizer none` passes), and libfuzzer-sys
# compiles libFuzzer from its bundled source with the system C++ compiler. Idempotent: installs a
# C++ compiler if there is none, rebuilds only what changed, keeps each target's corpus in
# fuzz/corpus/<target> between runs and writes failing inputs to fuzz/artifacts/<target>/.
# Seeds come from the repository's fixtures through `tests/fuzz_seeds.rs`.
set -euo pipefail
cd "$(dirname "$0")"
FUZZ_DIR=$PWD
SECONDS_PER_TARGET=${1:-60}
shift || true
ALL=(condition duration quantity prometheus_response lint ingress virtual_service pod_template_hash args)
if [ "$#" -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL[@]}"); fi

if ! command -v c++ >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "installing g++ (apt-get) to build libFuzzer" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq g++ >/dev/null
fi

TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
# --target keeps the instrumentation off build scripts and proc macros (they run on the host).
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
export CARGO_TARGET_DIR="$FUZZ_DIR/target"
echo "building fuzz targets (release, coverage-instrumented)..." >&2
cargo build --quiet --release --target "$TRIPLE" --bins
BIN="$CARGO_TARGET_DIR/$TRIPLE/release"
unset RUSTFLAGS CARGO_TARGET_DIR

echo "writing seed corpora from the fixtures..." >&2
rm -rf "$FUZZ_DIR/seeds"
(cd .. && SLUICE_FUZZ_CORPUS="$FUZZ_DIR/seeds" cargo test --quiet --test fuzz_seeds \
    every_seed_goes_through_its_fuzz_target >/dev/null)

mkdir -p logs
# FUZZ_JOBS targets run at once (default 1: each target alone has the machine).
JOBS=${FUZZ_JOBS:-1}

fuzz_one() {
    local t=$1
    mkdir -p "corpus/$t" "artifacts/$t"
    local seeds="seeds/$t"; [ -d "$seeds" ] || seeds=""
    # -timeout: one input taking 10 s is a hang; -rss_limit_mb: unbounded allocation is a crash.
    "$BIN/$t" "corpus/$t" $seeds -max_total_time="$SECONDS_PER_TARGET" -timeout=10 \
        -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" >"logs/$t.log" 2>&1 || true
}

running=0
for t in "${TARGETS[@]}"; do
    fuzz_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then
        wait -n || true
        running=$((running - 1))
    fi
done
wait

status=0
printf '%-20s %12s %8s %8s %8s %s\n' target executions exec/s cov features crashes
for t in "${TARGETS[@]}"; do
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "logs/$t.log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "logs/$t.log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+' "logs/$t.log" | tail -1 | cut -d' ' -f2)
    ft=$(grep -oE 'ft: [0-9]+' "logs/$t.log" | tail -1 | cut -d' ' -f2)
    crashes=$(find "artifacts/$t" -type f | wc -l)
    printf '%-20s %12s %8s %8s %8s %s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$crashes"
    if [ "$crashes" -gt 0 ]; then
        status=1
        find "artifacts/$t" -type f | sed 's/^/    /'
        grep -m1 -E 'panicked|ERROR: libFuzzer' "logs/$t.log" | sed 's/^/    /' || true
    fi
done
exit $status
