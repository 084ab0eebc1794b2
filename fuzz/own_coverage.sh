#!/usr/bin/env bash
# Edges of sfstream's own code (src/) that a fuzz target's corpus covers, from libFuzzer's
# -print_coverage=1 over a snapshot of the corpus (-runs=0: no fuzzing). libFuzzer's `cov:`
# counts every instrumented edge, dependencies included (url/IDNA, serde_json, http), which keep
# growing long after the crate's own code has stopped gaining; this says which is which.
#
#   bash fuzz/own_coverage.sh TARGET [CORPUS_DIR]     (after `cargo +nightly fuzz build -O TARGET`)
#
# Prints: inputs, own covered/instrumented edges (in functions linked into the target), all edges.
set -euo pipefail
cd "$(dirname "$0")/.."
T=$1
CORPUS=${2:-fuzz/corpus/$T}
BIN=${CARGO_TARGET_DIR:-fuzz/target}/x86_64-unknown-linux-gnu/release/$T
[ -x "$BIN" ] || { echo "no $BIN: run cargo +nightly fuzz build -O $T first" >&2; exit 2; }
SRC="$(pwd)/src/"
SNAP=$(mktemp -d)
trap 'rm -rf "$SNAP" "$SNAP.out"' EXIT
cp -r "$CORPUS"/. "$SNAP"/
"$BIN" -runs=0 -print_coverage=1 -rss_limit_mb=2048 -timeout=10 "$SNAP" > "$SNAP.out" 2>&1 || true
awk -v src="$SRC" -v n="$(ls "$SNAP" | wc -l)" -v t="$(date -u +%FT%TZ)" '
  $1 == "COVERED_FUNC:" || $1 == "UNCOVERED_FUNC:" {
    split($5, e, "/")
    if (index($NF, src) == 1) { own += e[1]; owntotal += e[2] }
    all += e[1]
  }
  END { printf "%s inputs %d own %d/%d edges all %d edges\n", t, n, own, owntotal, all }' "$SNAP.out"
