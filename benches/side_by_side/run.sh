#!/usr/bin/env bash
# Side-by-side benchmark: sfstream against the CometD JavaScript client, same server, same run.
#
#   bash benches/side_by_side/run.sh [EVENTS] [ROUNDS]      (defaults: 100000 events, 3 rounds)
#   BENCH_PROFILE=debug ...   uses the debug build (what .ci/run does, only to see that it runs)
#
# Needs: node + npm (`npm ci --prefix tests/interop`), curl, /usr/bin/time (GNU time).
#
# What is measured. One server for the whole run: the CometD project's Node.js server from
# tests/interop/ (cometd-server.js, on 127.0.0.1). That server keeps no replay backlog, so a
# backlog is emulated: each client process starts, handshakes and subscribes to a channel of its
# own; once the server's stats show the subscription, this script asks the server to publish the
# N events (`/control/publish`, chunk=1000: the server yields after every 1,000 events, so the
# client receives them in batches of up to a few thousand per response, as from a replay
# backlog). The client counts events and exits after the N-th. Clients:
#   sfstream   benches/side_by_side/sfstream_count.rs: #[tokio::main] (multi-thread runtime),
#              default settings (max_pending_count 100), counts `Subscription` items;
#   cometd-js  benches/side_by_side/cometd_count.mjs: npm `cometd` + `cometd-nodejs-client`
#              (versions pinned in tests/interop/package-lock.json), counts subscribe callbacks.
# For each client: whole-process CPU (user + system, GNU time, i.e. getrusage of the child) and
# peak RSS. The same client also runs with N=1 in the same round; marginal CPU per event is
# (cpu(N) - cpu(1)) / (N - 1), which removes process start, runtime/JIT start, handshake and
# subscribe. Two event sizes on the wire (~280 B and ~1.2 KB, set with the server's `pad`).
# Runs are interleaved (round -> size -> client) so that a change of machine load hits both
# clients alike; the table shows the median over rounds. The server's own CPU is not counted.
set -euo pipefail
cd "$(dirname "$0")/../.."
source benches/side_by_side/server.sh

EVENTS=${1:-100000}
ROUNDS=${2:-3}
PROFILE=${BENCH_PROFILE:-release}
if [ "$EVENTS" -lt 2 ] || [ "$ROUNDS" -lt 1 ]; then
    echo "usage: run.sh [EVENTS>=2] [ROUNDS>=1]" >&2
    exit 2
fi
needs run.sh node curl /usr/bin/time
build_sfstream_count "$PROFILE"
start_server

RUN=0
# run CLIENT PAD COUNT: sets CPU (seconds, user + system) and RSS (peak, KiB)
run() {
    local client=$1 pad=$2 count=$3
    RUN=$((RUN + 1))
    # A channel per run: a finished client's session (expired only after 10 s) gets nothing.
    local channel="/event/Bench${RUN}__e"
    local cmd
    case $client in
        sfstream) cmd=("$SFSTREAM" "$PORT" "$channel" "$count") ;;
        cometd-js) cmd=(node benches/side_by_side/cometd_count.mjs "$PORT" "$channel" "$count") ;;
    esac
    /usr/bin/time -f '%U %S %M' -o "$WORK/time" "${cmd[@]}" >"$WORK/client.out" 2>"$WORK/client.err" &
    local pid=$!
    wait_subscribed "$channel" "$pid" "$client" "$WORK/client.err"
    publish "$channel" "count=$count&chunk=1000&pad=$pad"
    if ! wait "$pid"; then
        echo "$client failed:" >&2
        cat "$WORK/client.err" "$WORK/time" >&2
        exit 1
    fi
    read -r CPU RSS < <(awk 'END { printf "%.3f %d\n", $1 + $2, $3 }' "$WORK/time")
}

# Wire size of one event as the client receives it, for the table.
size_of() {
    local pad=$1
    node -e '
        const d = {channel: "/event/Bench100000__e", data: {schema: "interop",
            payload: {seq: 100000, CreatedDate: new Date().toISOString(), Text__c: "x".repeat(+process.argv[1])},
            event: {replayId: 100000}}};
        console.log(JSON.stringify(d).length + 1);' "$pad"
}

PADS="110 1030"
echo "side-by-side: $EVENTS events, $ROUNDS round(s), sfstream $PROFILE build, $(node --version)," \
     "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-6s %-9s %-6s %12s %12s %10s\n' round client bytes "cpu(N) s" "cpu(1) s" "rss(N) MB"
RESULTS="$WORK/results"
: >"$RESULTS"
for round in $(seq "$ROUNDS"); do
    for pad in $PADS; do
        bytes=$(size_of "$pad")
        for client in sfstream cometd-js; do
            run "$client" "$pad" "$EVENTS"
            cpu_n=$CPU rss_n=$RSS
            run "$client" "$pad" 1
            cpu_1=$CPU
            printf '%-6s %-9s %-6s %12s %12s %10.1f\n' "$round" "$client" "$bytes" "$cpu_n" "$cpu_1" \
                "$(echo "$rss_n" | awk '{ print $1 / 1024 }')"
            echo "$client $bytes $cpu_n $cpu_1 $rss_n" >>"$RESULTS"
        done
    done
done

echo
echo "median over $ROUNDS round(s); marginal CPU per event = (cpu(N) - cpu(1)) / (N - 1)"
echo "| client | event size | CPU per event | peak RSS | CPU ratio cometd-js / sfstream |"
echo "|---|---|---|---|---|"
awk -v n="$EVENTS" '
    function median(list,   a, k, i, j, t) {
        k = split(list, a, " ")
        for (i = 2; i <= k; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
        return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
    }
    {
        key = $1 " " $2
        per[key] = per[key] " " ($3 - $4) / (n - 1) * 1e6
        rss[key] = rss[key] " " $5 / 1024
        if (!(key in seen)) { seen[key] = 1; order[++count] = key }
        sizes[$2] = 1
    }
    END {
        for (i = 1; i <= count; i++) {
            split(order[i], kc, " ")
            us = median(per[order[i]])
            ratio = ""
            if (kc[1] == "cometd-js") {
                sf = median(per["sfstream " kc[2]])
                ratio = sf > 0 ? sprintf("%.1f×", us / sf) : "n/a"
            }
            printf "| %s | %d B | %.2f µs | %.0f MB | %s |\n", kc[1], kc[2], us, median(rss[order[i]]), ratio
        }
    }' "$RESULTS"
