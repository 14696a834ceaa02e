#!/usr/bin/env bash
# The comparison benchmark of issue 9 item 1, in one command: the same wrk load against the
# upstream directly, nginx as a plain reverse proxy (the no-logic floor), Portkey's gateway
# (@portkey-ai/gateway on Node) and moongate with a shipped policy; then streaming (time to first
# token, events per second) through each; the concurrent-streams run (bench/streams.sh); and the
# micro-benchmarks. Prints markdown tables on stdout (progress on stderr).
#
#   bench/compare.sh                  the full run (~6 min)
#   bench/compare.sh --quick          3 s wrk runs, fewer streams: checks that everything works
#   bench/compare.sh --origins mock --peers "nginx moongate" --duration 5
#
# Placement: the peer under test (nginx, Portkey or moongate) runs alone on CPU 1 (`taskset -c 1`);
# wrk, the upstream and the streaming client share CPU 0. Upstreams ("origins"): `mock` is
# bench/mock_upstream (C, epoll; also serves the streams), `nginx` is nginx answering a fixed body
# (`return 200`), the fastest origin there is. For every origin and peer:
#   saturation  wrk -t1 -c<--conns> for --duration s: requests/s, p50/p99, the peer's CPU time per
#               request (utime+stime from /proc/PID/stat before and after);
#   1 conn      wrk -c1: latency with no queueing;
#   half        half of the saturated rate, twice: Debian's wrk has no fixed-rate mode, so
#               bench/wrk/chat.lua paces the requests itself (WRK_RATE: send slots 1/R apart through
#               wrk's delay() hook, 1 ms timer resolution, so each millisecond's requests leave in
#               one burst) over 16 connections; then bench/paced_load sends the same body at the
#               same rate with Poisson arrivals, each at its own microsecond, over 16 connections.
#               The upstream directly is measured the same two ways at the same rate, and "added"
#               is the difference.
# Every peer gets a 2 s warm-up first and is checked with one request (HTTP 200, a completion in
# the body) before it is measured; a peer that does not start or answer stops the script. Each
# measurement also reports the "other work" on the machine meanwhile (/proc/stat minus this
# script's processes), so a run disturbed by something else shows it.
#
# Options: --duration S (10), --conns N (64), --origins "mock nginx", --peers "direct nginx
# portkey moongate", --policy FILE (policies/fallback.lua), --streams "1000" (bench/streams.sh
# runs; "" skips), --no-stream (skip the streaming part), --no-micro, --build-dir DIR
# (build-compare, configured Release if missing), --no-build, --no-install (do not apt-get/npm),
# --prio (SCHED_RR priority 1 for every process measured, for a shared machine; note that the
# kernel's RT throttling then caps each CPU at 95%, which lowers saturated figures), --same-rate R
# (also measure every peer and the upstream directly at R requests/s, both ways, as a control: at
# one rate, peers that cost more per request run busier), --keep (keep the work directory), --quick.
# Installs what is missing: wrk and nginx with apt-get, Portkey with npm into BUILD_DIR/portkey
# (versions pinned in bench/portkey/package.json). nginx runs from its own config and prefix in the
# work directory, never the system service. Loopback only; nothing is sent to a hosted provider.
# Every process it starts is killed on exit (and on Ctrl-C); every step has a time limit.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
BUILD_DIR=${BUILD_DIR:-$REPO/build-compare}
DURATION=10
CONNS=64
ORIGINS="mock nginx"
PEERS="direct nginx portkey moongate"
POLICY=$REPO/policies/fallback.lua
STREAMS_RUN="1000"
STREAMING=1
MICRO=1
BUILD=1
INSTALL=1
PRIO=0
KEEP=0
QUICK=0
SAME_RATE=
HALF_CONNS=16
WARM_S=2
TTFT_N=200
EV_N=32
EV_EVENTS=2000
CMDLINE="bench/compare.sh $*"

while [ $# -gt 0 ]; do
    case $1 in
    --duration) DURATION=$2; shift ;;
    --conns) CONNS=$2; shift ;;
    --origins) ORIGINS=$2; shift ;;
    --peers) PEERS=$2; shift ;;
    --policy) POLICY=$(realpath "$2"); shift ;;
    --streams) STREAMS_RUN=$2; shift ;;
    --no-stream) STREAMING=0 ;;
    --no-micro) MICRO=0 ;;
    --build-dir) BUILD_DIR=$(realpath -m "$2"); shift ;;
    --no-build) BUILD=0 ;;
    --no-install) INSTALL=0 ;;
    --prio) PRIO=1 ;;
    --same-rate) SAME_RATE=$2; shift ;;
    --keep) KEEP=1 ;;
    --quick) QUICK=1 DURATION=3 WARM_S=1 STREAMS_RUN=200 TTFT_N=50 EV_EVENTS=500 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "$ME: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

say() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# ---- what it needs ----
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
    [ "$INSTALL" = 1 ] || die "wrk and nginx are needed (apt-get install -y wrk nginx)"
    say "installing wrk and nginx (apt-get)"
    timeout 600 apt-get install -y wrk nginx >/dev/null 2>&1 || die "apt-get install -y wrk nginx failed"
fi
case " $PEERS " in *" portkey "*) NEED_PORTKEY=1 ;; *) NEED_PORTKEY=0 ;; esac
PORTKEY_DIR=$BUILD_DIR/portkey
PORTKEY_JS=$PORTKEY_DIR/node_modules/@portkey-ai/gateway/build/start-server.js
if [ "$NEED_PORTKEY" = 1 ]; then
    command -v node >/dev/null || die "node is needed for Portkey (or leave portkey out of --peers)"
    if [ ! -f "$PORTKEY_JS" ] || ! cmp -s "$REPO/bench/portkey/package.json" "$PORTKEY_DIR/package.json"; then
        [ "$INSTALL" = 1 ] || die "Portkey is not installed in $PORTKEY_DIR (drop --no-install)"
        say "installing Portkey's gateway with npm into $PORTKEY_DIR"
        mkdir -p "$PORTKEY_DIR" && cp "$REPO/bench/portkey/package.json" "$PORTKEY_DIR/package.json"
        (cd "$PORTKEY_DIR" && timeout 600 npm install --no-audit --no-fund >npm.log 2>&1) ||
            die "npm install failed: $(tail -5 "$PORTKEY_DIR/npm.log")"
        [ -f "$PORTKEY_JS" ] || die "npm install did not produce $PORTKEY_JS"
    fi
fi

if [ "$BUILD" = 1 ]; then
    build_tools "moongate, the bench tools and the micro-benchmarks" 900 "$BUILD_DIR/compare-build.log" \
        moongate bench_mock_upstream bench_stream_load bench_paced_load bench_cpu_gaps bench_sse bench_compact bench_policy
fi
MOCK=$BUILD_DIR/bench/mock_upstream
LOAD=$BUILD_DIR/bench/stream_load
MOONGATE=$BUILD_DIR/moongate
LUA=$REPO/bench/wrk/chat.lua
need_built "$MOCK" "$LOAD" "$MOONGATE"
[ -f "$POLICY" ] || die "no policy file $POLICY"

# ---- CPUs, priorities ----
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null
if [ "$(nproc)" -ge 2 ]; then LOAD_CPU=0 PEER_CPU=1; else LOAD_CPU=0 PEER_CPU=0; say "warning: one CPU: everything shares it"; fi
PIN_PEER=(taskset -c "$PEER_CPU") PIN_LOAD=(taskset -c "$LOAD_CPU")
[ "$PRIO" = 1 ] && with_prio PIN_PEER PIN_LOAD
HZ=$(getconf CLK_TCK)

# ---- processes: ours only, killed on exit ----
work_dir compare 0.3

wait_port() { # port, pid, seconds: listening (and the process still alive)
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        kill -0 "$2" 2>/dev/null || return 1
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $12 + $13 }'; }
# Other work on the machine during a measurement: user+nice+system ticks of all CPUs (/proc/stat)
# minus what this script's processes used: the peer, the upstream, and every child this shell has
# waited for (wrk, stream_load: this shell's cutime+cstime). Softirq time is left out on both sides.
sys_ticks() { awk '/^cpu /{ print $2 + $3 + $4 }' /proc/stat; }
self_ticks() { sed 's/^.*) //' "/proc/$$/stat" | awk '{ print $12 + $13 + $14 + $15 }'; }
OTHER_MAX=0
others_begin() { O_S=$(sys_ticks) O_SELF=$(self_ticks) O_T=$(date +%s%N); O_P=(); local p; for p in "$@"; do O_P+=("$p:$(cpu_ticks "$p")"); done; }
others_begin_peer() { # pid measured: others_begin for it and the current origin (once if the same)
    if [ "$CUR_ORIGIN_PID" != "$1" ]; then others_begin "$1" "$CUR_ORIGIN_PID"; else others_begin "$1"; fi
}
others_end() { # -> OTHERS (CPUs' worth of other work, e.g. 0.02), OTHER_MAX updated
    local s self t used=0 e p v n
    s=$(sys_ticks) self=$(self_ticks) t=$(date +%s%N)
    for e in "${O_P[@]}"; do
        p=${e%%:*} v=${e#*:}
        n=$(cpu_ticks "$p")
        used=$((used + ${n:-$v} - v))
    done
    OTHERS=$(awk -v d=$((s - O_S - (self - O_SELF) - used)) -v hz="$HZ" -v w=$((t - O_T)) 'BEGIN { x = d / hz / (w / 1e9); if (x < 0) x = 0; printf "%.2f", x }')
    OTHER_MAX=$(awk -v a="$OTHER_MAX" -v b="$OTHERS" 'BEGIN { print (b > a ? b : a) }')
}

# ---- results: R[origin.peer.key] ----
declare -A R

# run_wrk LABEL URL CONNS SECONDS PID [wrk args...] -> WRK line in $WRK_LINE, plus the peer's CPU.
run_wrk() {
    local label=$1 url=$2 c=$3 d=$4 pid=$5
    shift 5
    local c0 c1 t0 t1
    others_begin_peer "$pid"
    c0=$(cpu_ticks "$pid")
    t0=$(date +%s%N)
    WRK_RATE=${WRK_RATE:-} run_waited timeout -k 5 $((d + 30)) "${PIN_LOAD[@]}" wrk -t1 -c"$c" -d"${d}s" --timeout 10s -s "$LUA" "$@" "$url" \
        >"$WORK/wrk-$label.out" 2>&1
    t1=$(date +%s%N)
    c1=$(cpu_ticks "$pid")
    others_end
    kill -0 "$pid" 2>/dev/null || die "$label: the process measured (pid $pid) exited during the run"
    WRK_LINE=$(grep '^WRK ' "$WORK/wrk-$label.out") || die "$label: wrk failed: $(tail -5 "$WORK/wrk-$label.out")"
    local req dur
    req=$(field "$WRK_LINE" requests)
    dur=$(field "$WRK_LINE" duration_us)
    [ "$req" -gt 0 ] || die "$label: no request completed: $(tail -5 "$WORK/wrk-$label.out")"
    WRK_LINE="$WRK_LINE rps=$(awk -v r="$req" -v d="$dur" 'BEGIN { printf "%.0f", r / (d / 1e6) }')"
    WRK_LINE="$WRK_LINE cpu_us_req=$(awk -v t=$((c1 - c0)) -v hz="$HZ" -v r="$req" 'BEGIN { printf "%.1f", t * 1e6 / hz / r }')"
    WRK_LINE="$WRK_LINE cpu_pct=$(awk -v t=$((c1 - c0)) -v hz="$HZ" -v w=$((t1 - t0)) 'BEGIN { printf "%.0f", 100 * t / hz / (w / 1e9) }')"
    local errs
    errs=$(awk -v l="$WRK_LINE" 'BEGIN { n = split(l, f, " "); s = 0; for (i = 1; i <= n; i++) if (f[i] ~ /^err_/) { split(f[i], kv, "="); s += kv[2] } print s }')
    WRK_LINE="$WRK_LINE errors=$errs others=$OTHERS"
    say "    $label: c=$c${WRK_RATE:+ paced at $WRK_RATE/s} $(field "$WRK_LINE" rps) req/s, p50 $(field "$WRK_LINE" p50_us) us, p99 $(field "$WRK_LINE" p99_us) us, CPU $(field "$WRK_LINE" cpu_us_req) us/req ($(field "$WRK_LINE" cpu_pct)% of a core), errors $errs; other work $OTHERS CPU"
}

# run_paced LABEL URL RATE PID [wrk -H args...] -> PACED line in $PACED_LINE: bench/paced_load,
# Poisson arrivals at RATE/s over $HALF_CONNS connections for $DURATION s (after 1 s not counted).
run_paced() {
    local label=$1 url=$2 rate=$3 pid=$4 hostport path
    shift 4
    hostport=${url#http://}
    path=/${hostport#*/}
    hostport=${hostport%%/*}
    local hdrs=()
    while [ $# -ge 2 ]; do
        [ "$1" = -H ] && hdrs+=(--header "$2")
        shift 2
    done
    others_begin_peer "$pid"
    run_waited timeout -k 5 $((DURATION + 30)) "${PIN_LOAD[@]}" "$BUILD_DIR/bench/paced_load" --host "${hostport%:*}" \
        --port "${hostport##*:}" --path "$path" --rate "$rate" --conns "$HALF_CONNS" --duration "$DURATION" \
        --body-file "$REPO/bench/wrk/chat.json" "${hdrs[@]}" >"$WORK/paced-$label.out" 2>&1
    others_end
    kill -0 "$pid" 2>/dev/null || die "$label: the process measured (pid $pid) exited during the run"
    PACED_LINE=$(grep '^PACED ' "$WORK/paced-$label.out") || die "$label: paced_load failed: $(tail -5 "$WORK/paced-$label.out")"
    PACED_LINE="$PACED_LINE others=$OTHERS"
    say "    $label: paced_load, Poisson at $rate/s: $(field "$PACED_LINE" rate) answered/s, p50 $(field "$PACED_LINE" p50_us) us, p99 $(field "$PACED_LINE" p99_us) us, $(field "$PACED_LINE" queued) waited for a connection, $(($(field "$PACED_LINE" err_status) + $(field "$PACED_LINE" err_conn) + $(field "$PACED_LINE" unanswered))) failed; other work $OTHERS CPU"
}

# ---- origins ----
MOCK_PID= MOCK_PORT= CUR_ORIGIN_PID=
HI='{"model":"default","messages":[{"role":"user","content":"hi"}]}' # the body of check requests

NGINX_COMMON="daemon off; master_process off; worker_rlimit_nofile 65536;"
nginx_temp_paths() { # prefix
    local t
    for t in client_body proxy fastcgi uwsgi scgi; do printf '  %s_temp_path %s/%s;\n' "$t" "$1" "$t"; done
}

# nginx_conf DIR ACCESS_LOG: writes DIR/nginx.conf for an nginx of our own with DIR as its prefix
# (pid file, error log in DIR/logs, temp paths), its http block holding access_log ACCESS_LOG,
# keep-alive and then what comes on stdin.
nginx_conf() {
    mkdir -p "$1/logs"
    {
        cat <<EOF
$NGINX_COMMON
pid $1/nginx.pid;
error_log $1/logs/error.log warn;
events { worker_connections 16384; }
http {
$(nginx_temp_paths "$1")
  access_log $2;
  keepalive_requests 1000000;
EOF
        cat
        echo "}"
    } >"$1/nginx.conf"
}

# run_nginx DIR PORT WHAT [command prefix...]: nginx from DIR/nginx.conf -> SPAWNED; dies ("nginx
# (WHAT) did not start") unless it listens on PORT within 5 s.
run_nginx() {
    local dir=$1 port=$2 what=$3
    shift 3
    spawn "$@" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" >"$dir/stdout" 2>&1
    wait_port "$port" "$SPAWNED" 5 || die "nginx ($what) did not start: $(tail -5 "$dir/logs/error.log" "$dir/stdout" 2>/dev/null)"
}

ORIGIN_PID= ORIGIN_PORT=
start_nginx_origin() {
    local dir=$WORK/nginx-origin body
    # The same answer as the mock's non-streamed one, byte for byte.
    body=$(curl -s -m 5 "http://127.0.0.1:$MOCK_PORT/v1/chat/completions" -H 'content-type: application/json' -d "$HI")
    case $body in *chat.completion*) ;; *) die "could not fetch the mock's answer for the nginx origin" ;; esac
    ORIGIN_PORT=$(free_port)
    nginx_conf "$dir" off <<EOF
  server {
    listen 127.0.0.1:$ORIGIN_PORT;
    location / { default_type application/json; return 200 '$body'; }
  }
EOF
    run_nginx "$dir" "$ORIGIN_PORT" origin "${PIN_LOAD[@]}"
    ORIGIN_PID=$SPAWNED
}

# ---- peers: start_<peer> ORIGIN_BASE (http://127.0.0.1:PORT/v1) -> P_PID, P_URL, P_HDRS ----
P_PID= P_URL= P_HDRS=() P_LOG=

start_direct() { # the origin itself: nothing to start
    P_URL=$1/chat/completions P_HDRS=() P_LOG=
    P_PID=$CUR_ORIGIN_PID
}

start_nginx() {
    local dir=$WORK/nginx-proxy-$CUR_ORIGIN port hostport=${1#http://}
    hostport=${hostport%%/*}
    port=$(free_port)
    # A plain reverse proxy as one would configure it for an LLM API: upstream keep-alive, no
    # response buffering (so streams flow event by event), the default access log.
    nginx_conf "$dir" "$dir/logs/access.log" <<EOF
  upstream origin { server $hostport; keepalive 256; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$port;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
EOF
    run_nginx "$dir" "$port" proxy "${PIN_PEER[@]}"
    P_PID=$SPAWNED P_LOG=$dir/logs/error.log
    P_URL=http://127.0.0.1:$port/v1/chat/completions P_HDRS=()
}

start_portkey() {
    local port
    port=$(free_port)
    P_LOG=$WORK/portkey-$CUR_ORIGIN.log
    # NODE_ENV=production and --headless: no UI routes, no log streaming. The preload only serves
    # bench/stream_load, which cannot send x-portkey-* headers (wrk sends them itself).
    (cd "$PORTKEY_DIR" && NODE_ENV=production PORTKEY_BENCH_HOST=$1 exec "${PIN_PEER[@]}" node \
        -r "$REPO/bench/portkey/default-headers.cjs" "$PORTKEY_JS" --port="$port" --headless) >"$P_LOG" 2>&1 &
    P_PID=$!
    PIDS+=("$P_PID")
    wait_port "$port" "$P_PID" 20 || die "Portkey did not start: $(tail -5 "$P_LOG")"
    P_URL=http://127.0.0.1:$port/v1/chat/completions
    P_HDRS=(-H "x-portkey-provider: openai" -H "x-portkey-custom-host: $1")
}

start_moongate() {
    local cfg=$WORK/moongate-$CUR_ORIGIN.json5
    P_LOG=$WORK/moongate-$CUR_ORIGIN.log
    bench_config "$cfg" "$1" "$POLICY"
    "$MOONGATE" check --config "$cfg" >"$WORK/moongate-check.out" 2>&1 || die "moongate check failed: $(tail -5 "$WORK/moongate-check.out")"
    serve_moongate "$cfg" "$P_LOG" "${PIN_PEER[@]}"
    P_PID=$MG_PID
    P_URL=http://127.0.0.1:$MG_PORT/v1/chat/completions P_HDRS=()
}

check_peer() { # peer: one request must come back 200 with a completion
    local out code
    out=$(curl -s -m 10 -o "$WORK/check.body" -w '%{http_code}' "$P_URL" -H 'content-type: application/json' \
        "${P_HDRS[@]}" -d "$HI")
    code=$out
    if [ "$code" != 200 ] || ! grep -q '"chat.completion"' "$WORK/check.body"; then
        die "$1 answered HTTP $code: $(head -c 300 "$WORK/check.body")${P_LOG:+; log: $(tail -3 "$P_LOG" | cut -c1-300)}"
    fi
}

# Streaming through the current peer (mock origin only): time to first token and per-event latency
# for TTFT_N streams of 5 events started over 2 s; then events per second, EV_N streams of
# EV_EVENTS events each, all at once and as fast as the mock writes (pacing 0).
run_streams() { # origin peer
    load_peer "$1" "$2" ttft TTFT 60 'time to first event us: ' \
        -n "$TTFT_N" --events 5 --max-tokens 5 --ramp-ms 2000 --batch 8 --timeout-s 40
    load_peer "$1" "$2" events events 120 'events ' -n "$EV_N" --events "$EV_EVENTS" --ramp-ms 0 --timeout-s 100
}

# load_peer ORIGIN PEER KIND TITLE SECONDS SUMMARY [stream_load options...]: one bench/stream_load
# run against the current peer within SECONDS -> R[ORIGIN.PEER.KIND], its RESULT line; says its
# summary (the line of its stderr that starts with two spaces and SUMMARY, without them).
load_peer() {
    local key=$1.$2.$3 peer=$2 label=$3-$2 title=$4 secs=$5 summary=$6
    shift 6
    others_begin_peer "$P_PID"
    run_waited timeout -k 5 "$secs" "${PIN_LOAD[@]}" "$LOAD" --url "$P_URL" "$@" --pid "$P_PID" --label "$label" \
        >"$WORK/$label.out" 2>"$WORK/$label.err"
    others_end
    R[$key]=$(grep '^RESULT' "$WORK/$label.out") || die "stream_load ($title, $peer) failed: $(tail -5 "$WORK/$label.err")"
    say "    streams $title: $(sed -n "s/^  $summary//p" "$WORK/$label.err"); dropped $(field "${R[$key]}" dropped); other work $OTHERS CPU"
}

# ---- the run ----
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null | grep -c . || true)
DIRTY_FILES=$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null | awk '{ print $NF }' | paste -sd, -)
MACHINE="$(nproc) CPUs ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)), $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r)"
BUSY=$(busy_pct 2)
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
PK_VER=$( [ -f "$PORTKEY_DIR/node_modules/@portkey-ai/gateway/package.json" ] && sed -n 's/^ *"version": "\(.*\)",/\1/p' "$PORTKEY_DIR/node_modules/@portkey-ai/gateway/package.json" | head -1)
say "machine: $MACHINE; ${BUSY}% busy, load $LOADAVG"
say "peer on CPU $PEER_CPU; wrk, upstream and stream client on CPU $LOAD_CPU; wrk runs ${DURATION} s, saturation at $CONNS connections"

# cpu_gaps on both CPUs at once, as busy as a measurement keeps them: the time each loses to gaps
# nothing on the machine shows (a VM's host, interrupts). Gaps of milliseconds put a floor under
# every p99 below, for every peer alike. -> GAPS[label]: the GAPS lines, one per CPU
declare -A GAPS
measure_gaps() {
    local label=$1 secs c pids=()
    secs=$([ "$QUICK" = 1 ] && echo 2 || echo 5)
    for c in $(printf '%s\n' "$LOAD_CPU" "$PEER_CPU" | sort -u); do
        spawn taskset -c "$c" "$BUILD_DIR/bench/cpu_gaps" --seconds "$secs" >"$WORK/gaps-$label-$c.out" 2>/dev/null
        pids+=("$SPAWNED")
    done
    wait "${pids[@]}"
    GAPS[$label]=$(cat "$WORK"/gaps-"$label"-*.out 2>/dev/null | grep '^GAPS ')
}
gaps_text() { # label -> "CPU 0 lost 0.41% (3 gaps ≥ 1 ms, longest 2.1 ms); CPU 1 ..."
    local l first=1
    while read -r l; do
        [ -n "$l" ] || continue
        [ $first = 1 ] || printf '; '
        first=0
        printf 'CPU %s lost %s%% (%s gaps ≥ 1 ms, %s ≥ 5 ms, longest %s ms)' "$(field "$l" cpu)" "$(field "$l" lost_pct)" \
            "$(field "$l" n_1ms)" "$(field "$l" n_5ms)" "$(field "$l" max_ms)"
    done <<<"${GAPS[$1]:-}"
}

measure_gaps before
say "cpu_gaps before: $(gaps_text before)"
start_mock "$EV_EVENTS" 0
for ORIGIN in $ORIGINS; do
    CUR_ORIGIN=$ORIGIN
    case $ORIGIN in
    mock) CUR_ORIGIN_PID=$MOCK_PID BASE=http://127.0.0.1:$MOCK_PORT/v1 ;;
    nginx)
        start_nginx_origin
        CUR_ORIGIN_PID=$ORIGIN_PID BASE=http://127.0.0.1:$ORIGIN_PORT/v1 ;;
    *) die "unknown origin $ORIGIN (mock, nginx)" ;;
    esac
    DIRECT_URL=$BASE/chat/completions
    for PEER in $PEERS; do
        case $PEER in direct | nginx | portkey | moongate) ;; *) die "unknown peer $PEER" ;; esac
        say "== origin $ORIGIN, peer $PEER"
        "start_$PEER" "$BASE"
        check_peer "$PEER"
        key=$ORIGIN.$PEER
        R[$key.idle_rss]=$(awk '/VmRSS/{print $2}' "/proc/$P_PID/status")
        run_wrk "$key-warmup" "$P_URL" "$CONNS" "$WARM_S" "$P_PID" "${P_HDRS[@]}"
        run_wrk "$key-sat" "$P_URL" "$CONNS" "$DURATION" "$P_PID" "${P_HDRS[@]}"
        R[$key.sat]=$WRK_LINE
        R[$key.rss]=$(awk '/VmRSS/{print $2}' "/proc/$P_PID/status")
        run_wrk "$key-one" "$P_URL" 1 "$DURATION" "$P_PID" "${P_HDRS[@]}"
        R[$key.one]=$WRK_LINE
        if [ "$PEER" != direct ]; then
            HALF_RATE=$(($(field "${R[$key.sat]}" rps) / 2))
            WRK_RATE=$HALF_RATE run_wrk "$key-half" "$P_URL" "$HALF_CONNS" "$DURATION" "$P_PID" "${P_HDRS[@]}"
            R[$key.half]="$WRK_LINE target=$HALF_RATE"
            run_paced "$key-paced" "$P_URL" "$HALF_RATE" "$P_PID" "${P_HDRS[@]}"
            R[$key.paced]=$PACED_LINE
        fi
        if [ -n "$SAME_RATE" ]; then
            WRK_RATE=$SAME_RATE run_wrk "$key-same" "$P_URL" "$HALF_CONNS" "$DURATION" "$P_PID" "${P_HDRS[@]}"
            R[$key.same]=$WRK_LINE
            run_paced "$key-same-paced" "$P_URL" "$SAME_RATE" "$P_PID" "${P_HDRS[@]}"
            R[$key.same_paced]=$PACED_LINE
        fi
        if [ "$ORIGIN" = mock ] && [ "$STREAMING" = 1 ]; then run_streams "$ORIGIN" "$PEER"; fi
        if [ "$PEER" != direct ]; then
            if ! kill -0 "$P_PID" 2>/dev/null; then die "$PEER exited during the run${P_LOG:+: $(tail -3 "$P_LOG")}"; fi
            stop_pid "$P_PID"
            # The upstream directly at the same rate, for "added latency".
            WRK_RATE=$HALF_RATE run_wrk "$ORIGIN-direct-for-$PEER" "$DIRECT_URL" "$HALF_CONNS" "$DURATION" "$CUR_ORIGIN_PID"
            R[$ORIGIN.direct.for.$PEER]=$WRK_LINE
            run_paced "$ORIGIN-direct-paced-for-$PEER" "$DIRECT_URL" "$HALF_RATE" "$CUR_ORIGIN_PID"
            R[$ORIGIN.direct.paced.for.$PEER]=$PACED_LINE
        fi
    done
    [ "$ORIGIN" = nginx ] && stop_pid "$ORIGIN_PID"
done
measure_gaps after
say "cpu_gaps after: $(gaps_text after)"

# ---- concurrent streams (bench/streams.sh) ----
STREAMS_TABLE=
if [ -n "$STREAMS_RUN" ]; then
    say "== concurrent streams: bench/streams.sh --streams \"$STREAMS_RUN\""
    sargs=(--no-build --build-dir "$BUILD_DIR" --quiet --streams "$STREAMS_RUN")
    [ "$PRIO" = 1 ] && sargs+=(--prio)
    STREAMS_TABLE=$(timeout -k 5 900 "$REPO/bench/streams.sh" "${sargs[@]}" 2>"$WORK/streams.err") ||
        say "    streams.sh failed: $(tail -3 "$WORK/streams.err")"
fi

# ---- micro-benchmarks ----
if [ "$MICRO" = 1 ]; then
    say "== micro-benchmarks"
    ( cd "$REPO" && timeout 300 "${PIN_PEER[@]}" "$BUILD_DIR/bench/sse_bench" $([ "$QUICK" = 1 ] && echo 64 || echo 256) ) >"$WORK/sse.out" 2>&1 || say "    sse_bench failed"
    ( cd "$REPO" && timeout 300 "${PIN_PEER[@]}" "$BUILD_DIR/bench/compact_bench" ) >"$WORK/compact.out" 2>&1 || say "    compact_bench failed"
    ( cd "$REPO" && timeout 300 "${PIN_PEER[@]}" "$BUILD_DIR/bench/policy_bench" $([ "$QUICK" = 1 ] && echo 50000) ) >"$WORK/policy.out" 2>&1 || say "    policy_bench failed"
fi

# ---- tables ----
added() { awk -v g="$1" -v d="$2" 'BEGIN { if (g == "" || d == "") print "n/a"; else printf "%+.2f", (g - d) / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "n/a"; else printf "%.2f", a / b }'; }
name() { case $1 in direct) echo "upstream directly" ;; nginx) echo "nginx (reverse proxy)" ;; portkey) echo "Portkey ${PK_VER:-}" ;; moongate) echo "moongate ($(basename "$POLICY"))" ;; esac; }

echo
echo "Date: $DATE. Machine: $MACHINE; ${BUSY}% busy and load average $LOADAVG before the run."
echo "moongate at commit $COMMIT$([ "$DIRTY" -gt 0 ] && echo " plus uncommitted changes to $DIRTY files ($DIRTY_FILES)"), build type ${BUILD_TYPE:-unknown}; nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'); wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'); node $(node --version 2>/dev/null)."
echo "Command: \`$CMDLINE\`. Peer on CPU $PEER_CPU; wrk (1 thread), the upstream and the stream client on CPU $LOAD_CPU."
echo "Other work on the machine during the wrk and streaming measurements: at most $OTHER_MAX CPU (/proc/stat minus this script's processes; per run in the progress log)."
echo "Time the CPUs lost to gaps no process shows (bench/cpu_gaps spinning on both at once, gaps of 0.1 ms or more): before the measurements $(gaps_text before); after them $(gaps_text after). Gaps of milliseconds are a floor under every p99 below, for every peer alike."
echo
for ORIGIN in $ORIGINS; do
    echo "Throughput, upstream \`$ORIGIN\` ($([ "$ORIGIN" = mock ] && echo "bench/mock_upstream" || echo "nginx return 200")); wrk -t1 -c$CONNS -d${DURATION}s, 655-byte JSON POST:"
    echo
    echo "| peer | requests/s | p50 (ms) | p99 (ms) | CPU per request (µs) | CPU of its core | errors | RSS after (MiB) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for PEER in $PEERS; do
        l=${R[$ORIGIN.$PEER.sat]:-}
        [ -n "$l" ] || continue
        echo "| $(name "$PEER")$([ "$PEER" = direct ] && echo " (CPU: the upstream's)") | $(field "$l" rps) | $(ms "$(field "$l" p50_us)") | $(ms "$(field "$l" p99_us)") | $(field "$l" cpu_us_req) | $(field "$l" cpu_pct)% | $(field "$l" errors) | $(awk -v k="${R[$ORIGIN.$PEER.rss]}" 'BEGIN { printf "%.1f", k / 1024 }') |"
    done
    mg=$(field "${R[$ORIGIN.moongate.sat]:-}" rps)
    echo
    echo "Ratios (requests/s at saturation): moongate / nginx = $(ratio "$mg" "$(field "${R[$ORIGIN.nginx.sat]:-}" rps)"), moongate / Portkey = $(ratio "$mg" "$(field "${R[$ORIGIN.portkey.sat]:-}" rps)"), moongate / upstream directly = $(ratio "$mg" "$(field "${R[$ORIGIN.direct.sat]:-}" rps)")."
    echo
    echo "Latency, upstream \`$ORIGIN\` (added = the peer's percentile minus the upstream's directly; at 1 connection, and paced at half of the peer's saturated rate over $HALF_CONNS connections, the upstream directly paced at the same rate):"
    echo
    echo "| peer | 1 conn p50 / p99 (ms) | added at 1 conn p50 / p99 | half saturation: requests/s (% of sat.) | p50 / p99 (ms) | upstream directly, same rate | added at half sat. p50 / p99 |"
    echo "|---|---|---|---|---|---|---|"
    d1=${R[$ORIGIN.direct.one]:-}
    for PEER in $PEERS; do
        l=${R[$ORIGIN.$PEER.one]:-}
        [ -n "$l" ] || continue
        if [ "$PEER" = direct ]; then
            echo "| $(name direct) | $(ms "$(field "$l" p50_us)") / $(ms "$(field "$l" p99_us)") | | | | | |"
            continue
        fi
        h=${R[$ORIGIN.$PEER.half]}
        dh=${R[$ORIGIN.direct.for.$PEER]:-}
        echo "| $(name "$PEER") | $(ms "$(field "$l" p50_us)") / $(ms "$(field "$l" p99_us)") | $(added "$(field "$l" p50_us)" "$(field "$d1" p50_us)") / $(added "$(field "$l" p99_us)" "$(field "$d1" p99_us)")" \
            "| $(field "$h" rps) ($(awk -v a="$(field "$h" rps)" -v b="$(field "${R[$ORIGIN.$PEER.sat]}" rps)" 'BEGIN { printf "%.0f%%", 100 * a / b }')) | $(ms "$(field "$h" p50_us)") / $(ms "$(field "$h" p99_us)")" \
            "| $(ms "$(field "$dh" p50_us)") / $(ms "$(field "$dh" p99_us)") | $(added "$(field "$h" p50_us)" "$(field "$dh" p50_us)") / $(added "$(field "$h" p99_us)" "$(field "$dh" p99_us)") |"
    done
    echo
    echo "Latency at half of saturation with Poisson arrivals, upstream \`$ORIGIN\` (bench/paced_load at the same rate as the wrk run above, $HALF_CONNS connections; latency from each request's scheduled time):"
    echo
    echo "| peer | rate (answered/s) | p50 / p99 / p99.9 (ms) | upstream directly, same arrivals | added p50 / p99 | waited for a connection |"
    echo "|---|---:|---|---|---|---:|"
    for PEER in $PEERS; do
        p=${R[$ORIGIN.$PEER.paced]:-}
        [ -n "$p" ] || continue
        dp=${R[$ORIGIN.direct.paced.for.$PEER]:-}
        echo "| $(name "$PEER") | $(field "$p" rate) | $(ms "$(field "$p" p50_us)") / $(ms "$(field "$p" p99_us)") / $(ms "$(field "$p" p999_us)")" \
            "| $(ms "$(field "$dp" p50_us)") / $(ms "$(field "$dp" p99_us)") / $(ms "$(field "$dp" p999_us)")" \
            "| $(added "$(field "$p" p50_us)" "$(field "$dp" p50_us)") / $(added "$(field "$p" p99_us)" "$(field "$dp" p99_us)") | $(field "$p" queued) |"
    done
    echo
    if [ -n "$SAME_RATE" ]; then
        echo "All at the same rate, upstream \`$ORIGIN\` (--same-rate $SAME_RATE: a control; at one rate a peer that costs more per request is busier), $HALF_CONNS connections; ms:"
        echo
        echo "| peer | busy (CPU of its core) | wrk pacing p50 / p99 | Poisson p50 / p99 / p99.9 |"
        echo "|---|---:|---|---|"
        for PEER in $PEERS; do
            l=${R[$ORIGIN.$PEER.same]:-}
            p=${R[$ORIGIN.$PEER.same_paced]:-}
            [ -n "$l" ] || continue
            echo "| $(name "$PEER") | $(field "$l" cpu_pct)% | $(ms "$(field "$l" p50_us)") / $(ms "$(field "$l" p99_us)")" \
                "| $(ms "$(field "$p" p50_us)") / $(ms "$(field "$p" p99_us)") / $(ms "$(field "$p" p999_us)") |"
        done
        echo
    fi
done

if [ "$STREAMING" = 1 ] && [[ " $ORIGINS " == *" mock "* ]]; then
    echo "Streaming through each peer (upstream bench/mock_upstream): TTFT = $TTFT_N streams of 5 events started over 2 s, time from connect() to the first content event; events/s = $EV_N streams of $EV_EVENTS events at once, the mock writing as fast as it can."
    echo
    echo "| peer | TTFT p50 / p99 (ms) | TTFT added p50 / p99 (ms) | events/s | CPU per event (µs) | dropped |"
    echo "|---|---|---|---:|---:|---:|"
    dt=${R[mock.direct.ttft]:-}
    for PEER in $PEERS; do
        t=${R[mock.$PEER.ttft]:-}
        e=${R[mock.$PEER.events]:-}
        [ -n "$t" ] || continue
        echo "| $(name "$PEER")$([ "$PEER" = direct ] && echo " (CPU: the mock's)") | $(ms "$(field "$t" ttft_p50_us)") / $(ms "$(field "$t" ttft_p99_us)")" \
            "| $([ "$PEER" = direct ] && echo "" || echo "$(added "$(field "$t" ttft_p50_us)" "$(field "$dt" ttft_p50_us)") / $(added "$(field "$t" ttft_p99_us)" "$(field "$dt" ttft_p99_us)")")" \
            "| $(awk -v n="$(field "$e" events)" -v w="$(field "$e" wall_s)" 'BEGIN { printf "%.0f", n / w }')" \
            "| $(awk -v c="$(field "$e" cpu_s)" -v n="$(field "$e" events)" 'BEGIN { printf "%.2f", c * 1e6 / n }')" \
            "| $(($(field "$t" dropped) + $(field "$e" dropped))) |"
    done
    echo
fi

if [ -n "$STREAMS_TABLE" ]; then
    echo "Concurrent slow streams (bench/streams.sh --streams \"$STREAMS_RUN\"; its own placement: moongate on CPU 0, mock and client on CPU 1):"
    echo "$STREAMS_TABLE"
    echo
fi

SSE_MBS= POL_US= EST_US= CMP_US=
if [ "$MICRO" = 1 ]; then
    SSE_MBS=$(awk '/^openai-chat LF/ { print $3 }' "$WORK/sse.out")
    POL_US=$(awk -v p="$(basename "$POLICY")" 'index($0, p) == 1 { print $2; exit }' "$WORK/policy.out")
    EST_US=$(awk '/^estimate: 100 KB agent conversation/ { for (i = 1; i <= NF; i++) if ($i == "median") { print $(i + 1); exit } }' "$WORK/compact.out")
    CMP_US=$(awk '/^compact the 100 KB conversation into 8000 tokens/ { for (i = 1; i <= NF; i++) if ($i == "median") { print $(i + 1); exit } }' "$WORK/compact.out")
    echo "Micro-benchmarks (each pinned to CPU $PEER_CPU):"
    echo
    echo "| what | result |"
    echo "|---|---:|"
    echo "| SSE parsing, OpenAI chunks, 16 KiB feeds (sse_bench) | ${SSE_MBS:-n/a} MB/s |"
    echo "| policy decision, $(basename "$POLICY"), CPU time (policy_bench) | ${POL_US:-n/a} µs |"
    echo "| token estimate, 100 KB agent conversation, median (compact_bench) | ${EST_US:-n/a} µs |"
    echo "| compaction of that conversation to 8,000 tokens, median | ${CMP_US:-n/a} µs |"
    echo
    echo '<details><summary>micro-benchmark output</summary>'
    echo
    echo '```'
    cat "$WORK/sse.out" "$WORK/policy.out" "$WORK/compact.out"
    echo '```'
    echo '</details>'
    echo
fi

# ---- targets ----
verdict() { awk -v v="$1" -v t="$2" -v dir="$3" 'BEGIN { if (v == "" || v == "n/a") print "n/a";
    else if ((dir == "ge" && v + 0 >= t + 0) || (dir == "le" && v + 0 <= t + 0)) print "met"; else print "NOT met" }'; }
echo "Targets:"
echo
echo "| target | upstream | result | |"
echo "|---|---|---|---|"
for ORIGIN in $ORIGINS; do
    mg=$(field "${R[$ORIGIN.moongate.sat]:-}" rps)
    r=$(ratio "$mg" "$(field "${R[$ORIGIN.nginx.sat]:-}" rps)")
    echo "| throughput ≥ 0.8× nginx's | $ORIGIN | ${r}× | $(verdict "$r" 0.8 ge) |"
    r=$(ratio "$mg" "$(field "${R[$ORIGIN.portkey.sat]:-}" rps)")
    echo "| throughput ≥ 20× Portkey's | $ORIGIN | ${r}× | $(verdict "$r" 20 ge) |"
    h=${R[$ORIGIN.moongate.half]:-}
    if [ -n "$h" ]; then
        dh=${R[$ORIGIN.direct.for.moongate]:-}
        a=$(awk -v g="$(field "$h" p99_us)" -v d="$(field "$dh" p99_us)" 'BEGIN { printf "%.2f", (g - d) / 1000 }')
        echo "| added p99 ≤ 1 ms at half of saturation (wrk, 1 ms bursts) | $ORIGIN | ${a} ms | $(verdict "$a" 1 le) |"
    fi
    p=${R[$ORIGIN.moongate.paced]:-}
    if [ -n "$p" ]; then
        dp=${R[$ORIGIN.direct.paced.for.moongate]:-}
        a=$(awk -v g="$(field "$p" p99_us)" -v d="$(field "$dp" p99_us)" 'BEGIN { printf "%.2f", (g - d) / 1000 }')
        echo "| added p99 ≤ 1 ms at half of saturation (Poisson arrivals) | $ORIGIN | ${a} ms | $(verdict "$a" 1 le) |"
    fi
done
[ "$MICRO" = 1 ] && echo "| SSE parsing ≥ 1 GB/s | | ${SSE_MBS:-n/a} MB/s | $(verdict "${SSE_MBS:-}" 1000 ge) |"
echo
exit 0
