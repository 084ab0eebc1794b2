#!/usr/bin/env bash
# Instructions per `data` value for each validator, by callgrind (see src/main.rs):
#   bash benches/validator_experiment/run.sh [VALIDATOR...]
# Only `validator_experiment::run` (the validation loop) is counted; a run of SHORT values is
# subtracted from one of LONG values, so first-call costs (feature detection, buffers) cancel.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --quiet --release
BIN="${CARGO_TARGET_DIR:-target}/release/validator-experiment"
SHORT=1000
LONG=11000
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
count() {
    valgrind --tool=callgrind --toggle-collect='validator_experiment::run' \
        --callgrind-out-file="$WORK/out" "$BIN" bench "$1" "$2" "$3" >/dev/null 2>"$WORK/err" \
        || { cat "$WORK/err" >&2; exit 1; }
    sed -n 's/^==[0-9]*== Collected : \([0-9]*\)$/\1/p' "$WORK/err"
}
[ $# -gt 0 ] || set -- ours serde sonic simd_json jiter json_checker
printf '%-10s %8s %8s\n' validator small large
for v in "$@"; do
    line="$v"
    for size in small large; do
        short=$(count "$v" "$size" "$SHORT")
        long=$(count "$v" "$size" "$LONG")
        line="$line $(( (long - short) / (LONG - SHORT) ))"
    done
    printf '%-10s %8s %8s\n' $line
done
