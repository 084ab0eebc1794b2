#!/usr/bin/env bash
# Start-up cost beside the CometD JS client: CPU from process start to the first event.
#
#   bash benches/side_by_side/startup.sh [ROUNDS]      (default 5)
#
# Same server and clients as run.sh (see there). Each client process starts, handshakes and
# subscribes; once the server shows the subscription, one event is published; the client exits
# after receiving it. CPU is user + system of the client process (bash `times`, i.e.
# getrusage(RUSAGE_CHILDREN) of a subshell running only the client, millisecond resolution),
# process start, runtime or JIT start and exit included. The median over ROUNDS is shown. The
# round trips are counted separately (README, "Startup").
set -euo pipefail
cd "$(dirname "$0")/../.."
source benches/side_by_side/server.sh
ROUNDS=${1:-5}
needs startup.sh node curl
build_sfstream_count release
start_server

# ms of user + system CPU in the second line of `times` ("0m0.012s 0m0.004s")
ms() { awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/); printf "%.0f\n", (u[1] * 60 + u[2] + s[1] * 60 + s[2]) * 1000 }' "$1"; }

RUN=0
echo "start-up: $ROUNDS round(s), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$ROUNDS"); do
    for client in sfstream cometd-js; do
        RUN=$((RUN + 1))
        channel="/event/Startup${RUN}__e"
        case $client in
            sfstream) cmd=("$SFSTREAM" "$PORT" "$channel" 1) ;;
            cometd-js) cmd=(node benches/side_by_side/cometd_count.mjs "$PORT" "$channel" 1) ;;
        esac
        ( "${cmd[@]}" >"$WORK/out" 2>"$WORK/err"; times >"$WORK/times" ) &
        pid=$!
        wait_subscribed "$channel" "$pid" "$client" "$WORK/err"
        publish "$channel" "count=1&pad=110"
        wait "$pid"
        grep -q "received 1" "$WORK/out" || { cat "$WORK/err" >&2; exit 1; }
        echo "$client $(ms "$WORK/times")" | tee -a "$WORK/results"
    done
done
echo "median CPU to the first event:"
for client in sfstream cometd-js; do
    awk -v c="$client" '$1 == c { print $2 }' "$WORK/results" | sort -n |
        awk -v c="$client" '{ a[NR] = $1 } END { m = NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "  %s: %s ms\n", c, m }'
done
