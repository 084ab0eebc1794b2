#!/usr/bin/env bash
# Instruction-count guard for the parse-and-route path (run by .ci/run).
#
#   bash benches/instructions/check.sh            # measure, compare with baseline.txt
#   bash benches/instructions/check.sh --update   # measure and write baseline.txt (commit it)
#
# The workload (benches/instructions/workload.rs, release build) consumes events through a
# `Subscription` from a canned transport on a current-thread runtime: parse_batch, the layers,
# routing, the inbox and the consumer, no network. callgrind counts its instructions, which
# repeat to within a few hundred per run on any load; a run of SHORT events is subtracted from a
# run of LONG events, so start-up cancels out and what is left is instructions per event.
# It fails when an event size costs more than TOLERANCE percent (default 20) above the
# baseline. Counts depend a little on the toolchain and CPU (glibc and memchr pick code by CPU
# features), hence the tolerance; a change well below the baseline is reported so that the
# baseline can be lowered with --update.
set -euo pipefail
cd "$(dirname "$0")/../.."

UPDATE=
[ "${1:-}" = --update ] && UPDATE=1
TOLERANCE=${TOLERANCE:-20}
SHORT=1000
LONG=11000
BASELINE=benches/instructions/baseline.txt
command -v valgrind >/dev/null || { echo "check.sh needs valgrind (apt-get install valgrind)" >&2; exit 2; }

cargo build --quiet --release --example instructions_workload
BIN="${CARGO_TARGET_DIR:-target}/release/examples/instructions_workload"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# count SIZE N: instructions of one run
count() {
    valgrind --tool=callgrind --callgrind-out-file="$WORK/out" "$BIN" "$1" "$2" \
        >"$WORK/stdout" 2>"$WORK/stderr" || { cat "$WORK/stderr" >&2; exit 1; }
    sed -n 's/^==[0-9]*== Collected : \([0-9]*\)$/\1/p' "$WORK/stderr"
}

status=0
: >"$WORK/measured"
for size in small large; do
    short=$(count "$size" "$SHORT")
    long=$(count "$size" "$LONG")
    per_event=$(( (long - short) / (LONG - SHORT) ))
    echo "$size $per_event" >>"$WORK/measured"
    base=$(awk -v s="$size" '$1 == s { print $2 }' "$BASELINE" 2>/dev/null || true)
    if [ -n "$UPDATE" ]; then
        echo "$size: $per_event instructions per event (was ${base:-none})"
    elif [ -z "$base" ]; then
        echo "$size: $per_event instructions per event; no baseline in $BASELINE" >&2
        status=1
    else
        limit=$(( base * (100 + TOLERANCE) / 100 ))
        change=$(awk -v m="$per_event" -v b="$base" 'BEGIN { printf "%+.1f", (m - b) * 100 / b }')
        if [ "$per_event" -gt "$limit" ]; then
            echo "$size: $per_event instructions per event, baseline $base ($change %): more than +$TOLERANCE %, FAIL" >&2
            status=1
        else
            echo "$size: $per_event instructions per event, baseline $base ($change %): ok"
            if [ "$per_event" -lt $(( base * (100 - TOLERANCE) / 100 )) ]; then
                echo "  well below the baseline: lower it with bash benches/instructions/check.sh --update"
            fi
        fi
    fi
done
if [ -n "$UPDATE" ]; then
    {
        echo "# Instructions per event of benches/instructions/workload.rs under callgrind (release"
        echo "# build), written by: bash benches/instructions/check.sh --update"
        echo "# $(date -u +%Y-%m-%d), $(rustc --version), $(valgrind --version)"
        cat "$WORK/measured"
    } >"$BASELINE"
    echo "wrote $BASELINE"
fi
exit $status
