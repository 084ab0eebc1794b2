#!/usr/bin/env bash
# CPU of the `tail` example per event, stdout redirected to /dev/null and to a pipe.
#
#   bash benches/tail_cpu/run.sh [EVENTS] [ROUNDS]      (defaults: 100000 events, 5 rounds)
#   BENCH_PROFILE=debug ...   uses the debug build (only to see that it runs)
#
# Needs /usr/bin/time (GNU time). An emulator process (benches/tail_cpu/server.rs) holds EVENTS
# retained platform events; `tail --replay all --count EVENTS` prints them all, and
# `--count 1` (which still receives the whole backlog, but prints one line) is the baseline.
# Figures: whole-process CPU (user + system; GNU time counts in 10 ms steps) per event, and the
# marginal CPU of printing, (cpu(EVENTS) - cpu(1)) / EVENTS, medians over the rounds.
set -euo pipefail
cd "$(dirname "$0")/../.."
EVENTS=${1:-100000}
ROUNDS=${2:-5}
command -v /usr/bin/time >/dev/null || { echo "run.sh needs GNU time (/usr/bin/time)" >&2; exit 2; }
PROFILE=${BENCH_PROFILE:-release}
flag=--release
[ "$PROFILE" = release ] || flag=
cargo build $flag --example tail --example tail_cpu_server >&2
bin=${CARGO_TARGET_DIR:-target}/$PROFILE/examples
work=$(mktemp -d)
trap 'exec 3>&- 2>/dev/null; kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
mkfifo "$work/in"
"$bin/tail_cpu_server" "$EVENTS" <"$work/in" >"$work/env" &
server=$!
exec 3>"$work/in"
until [ -s "$work/env" ]; do sleep 0.1; done
export $(cat "$work/env")
for round in $(seq "$ROUNDS"); do
    for n in "$EVENTS" 1; do
        /usr/bin/time -f "null $n %U %S" -a -o "$work/times" \
            "$bin/tail" --replay all --count "$n" /event/Order__e >/dev/null 2>/dev/null
        /usr/bin/time -f "pipe $n %U %S" -a -o "$work/times" \
            "$bin/tail" --replay all --count "$n" /event/Order__e 2>/dev/null | cat >/dev/null
    done
done
awk -v events="$EVENTS" '
    { cpu[$1" "$2] = cpu[$1" "$2] " " ($3 + $4) }
    function median(list,   a, n, i, j, t) {
        n = split(list, a, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    END {
        split("null pipe", outs, " ")
        for (k = 1; k <= 2; k++) {
            o = outs[k]; all = median(cpu[o" "events]); one = median(cpu[o" 1"])
            printf "stdout %s: %.2f us CPU per event in all, %.2f us marginal (printing)\n", \
                (o == "null" ? "/dev/null" : "a pipe  "), all / events * 1e6, (all - one) / events * 1e6
        }
    }' "$work/times"
