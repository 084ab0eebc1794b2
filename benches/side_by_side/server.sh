# Sourced by run.sh and startup.sh (from the repository root): what both need around the one
# server of a run, the CometD project's Node.js server from tests/interop/ (cometd-server.js,
# on 127.0.0.1).
#   needs SCRIPT TOOL...             exit 2 unless every TOOL and the interop packages are there
#   build_sfstream_count PROFILE     build the sfstream client (release or debug); sets SFSTREAM
#   start_server                     start the server; sets WORK (a temp dir), PORT and BASE;
#                                    the server is stopped and WORK removed on exit
#   wait_subscribed CHANNEL PID NAME ERR   until the server shows CHANNEL subscribed; fails
#                                    (showing the file ERR) if process PID ends first or after 30 s
#   publish CHANNEL QUERY            the server publishes on CHANNEL (QUERY: count=N&pad=B...)

needs() {
    local script=$1 tool
    shift
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "$script needs $tool" >&2; exit 2; }
    done
    [ -d tests/interop/node_modules/cometd ] || { echo "run: npm ci --prefix tests/interop" >&2; exit 2; }
}

build_sfstream_count() {
    local profile=$1
    if [ "$profile" = release ]; then
        cargo build --quiet --release --example sfstream_count
    else
        # --all-features: the features `cargo test --all-features` built with, so CI rebuilds nothing.
        cargo build --quiet --all-features --example sfstream_count
    fi
    SFSTREAM="${CARGO_TARGET_DIR:-target}/$profile/examples/sfstream_count"
}

WORK=
SERVER_PID=
stop_server() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
    if [ -n "$WORK" ]; then rm -rf "$WORK"; fi
}

start_server() {
    WORK=$(mktemp -d)
    trap stop_server EXIT
    INTEROP_IGNORE_STDIN=1 node tests/interop/cometd-server.js >"$WORK/server.out" 2>"$WORK/server.err" &
    SERVER_PID=$!
    PORT=
    for _ in $(seq 200); do
        PORT=$(sed -n 's/^{"port":\([0-9]*\)}$/\1/p' "$WORK/server.out")
        [ -n "$PORT" ] && break
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.err" >&2; exit 1; }
        sleep 0.05
    done
    [ -n "$PORT" ] || { echo "the interop server printed no port within 10 s" >&2; exit 1; }
    BASE="http://127.0.0.1:$PORT"
}

wait_subscribed() {
    local channel=$1 pid=$2 name=$3 err=$4
    for _ in $(seq 600); do
        curl -sf "$BASE/control/stats" | grep -qF "\"$channel\":1" && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill "$pid" 2>/dev/null || true
    echo "$name did not subscribe within 30 s:" >&2
    cat "$err" >&2
    exit 1
}

publish() {
    curl -sf -X POST "$BASE/control/publish?channel=${1//\//%2F}&$2" >/dev/null
}
