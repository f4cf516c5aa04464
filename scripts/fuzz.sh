#!/usr/bin/env bash
# Runs the fuzz targets of kmsfs (fuzz/fuzz_targets, cargo-fuzz on the
# nightly toolchain), each for N seconds, J at a time, and prints for each
# the executions, the corpus size and any crash. Seeds come from
# kmsfs::fuzzing::seeds (the golden files and inputs sealed under the fuzz
# keys); the corpus grows in target/fuzz-corpus/TARGET between runs.
# A crash input is left in fuzz/artifacts/TARGET/: once fixed, copy it to
# fuzz/regressions/TARGET/ so tests/fuzz_regressions.rs keeps it fixed.
#
#   scripts/fuzz.sh [--seconds N] [--jobs J] [TARGET...]   (default 600 s, 2 jobs, all)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=600
jobs=2
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --jobs) jobs="$2"; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) targets+=("$1"); shift ;;
    esac
done

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
command -v tar >/dev/null || { apt-get update && apt-get install -y tar; }

if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^kmsfs-fuzz$')
fi

seeds=target/fuzz-seeds
logs=target/fuzz-logs
rm -rf "$seeds"
rm -f "$logs"/*
mkdir -p "$seeds" "$logs"
KMSFS_FUZZ_SEEDS="$PWD/$seeds" cargo test --release --locked --test fuzz_regressions -- \
    --ignored --exact write_seeds --quiet
cargo +nightly fuzz build --fuzz-dir fuzz

# The targets run from their built binaries, not `cargo fuzz run`, which
# would rebuild mid-run if a source file changed.
bin=fuzz/target/x86_64-unknown-linux-gnu/release
run_one() {
    local t="$1"
    mkdir -p "target/fuzz-corpus/$t" "fuzz/artifacts/$t"
    if "$bin/$t" -artifact_prefix="fuzz/artifacts/$t/" -max_total_time="$seconds" \
        -rss_limit_mb=2048 -timeout=30 -print_final_stats=1 \
        "target/fuzz-corpus/$t" "$seeds/$t" > "$logs/$t.log" 2>&1; then
        echo "ok" > "$logs/$t.rc"
    else
        echo "failed" > "$logs/$t.rc"
    fi
}

running=0
for t in "${targets[@]}"; do
    run_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n
        running=$((running - 1))
    fi
done
wait

failed=0
printf '%-16s %12s %10s %8s  %s\n' target executions exec/s corpus result
for t in "${targets[@]}"; do
    log="$logs/$t.log"
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    corpus=$(find "target/fuzz-corpus/$t" -type f | wc -l)
    result=$(cat "$logs/$t.rc")
    if [ "$result" != ok ]; then
        failed=1
        result="CRASH: $(grep -m1 -E 'panicked|ERROR: libFuzzer|SUMMARY' "$log" || echo "see $log"); input in fuzz/artifacts/$t/"
    fi
    printf '%-16s %12s %10s %8s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "$corpus" "$result"
done
exit "$failed"
