#!/usr/bin/env bash
# Concurrent slow streams through moongate versus the same load sent straight to the mock upstream
# (issue 3 item 9, issue 9 item 1 "streaming"). One command: builds, starts, measures, cleans up.
#
#   bench/streams.sh                      1,000 and 10,000 streams, 20 events 500 ms apart
#   bench/streams.sh --smoke              200 streams, 5 events 200 ms apart (< 20 s; exit 1 on drops)
#   bench/streams.sh --streams "500 2000" --events 40 --pacing-ms 250
#   bench/streams.sh --h2 --streams 10000 --events 40 --pacing-ms 1000
#   bench/streams.sh --h2 --streams 10000 --events 40 --pacing-ms 1000
#
# For every N it runs bench/stream_load against bench/mock_upstream directly (the baseline), then
# against a freshly started moongate (pinned to CPU 0; the mock and the load client share CPU 1)
# after a small warm-up, sampling moongate's RSS and CPU while all N streams are open. It prints a
# markdown table: drops, RSS at the plateau and per stream (minus idle), and what moongate adds to
# per-event latency and to time to first event (p50/p99, gateway minus direct).
#
# Environment / options: BUILD_DIR (default build-bench, configured Release if missing; --build-dir),
# --no-build, --moongate BIN (test another binary), --threads N (gateway.threads), --keep (keep the
# work directory with logs and configs), --ramp-ms MS (streams start evenly over it; default
# max(pacing, N/5): <= 5,000 new connections per second), --quiet (only the table),
# --wait-quiet S (before each run wait up to S s for other work on the machine to fall under 10%
# CPU; the busy figure seen is printed with the results either way), --h2 (moongate reaches the mock
# through nghttpx, Debian's nghttp2-proxy, terminating TLS with a throw-away certificate and speaking
# HTTP/2 to moongate (provider http2 + caFile), so ~100 streams share one upstream connection: with
# HTTP/1.1 each stream costs moongate two descriptors and 10,000 streams do not fit a 20,000 limit;
# nghttpx runs on the load CPU and its hop counts in "added" latency), --prio (run the mock,
# moongate and the client under SCHED_RR priority 1 so other work on a shared machine cannot
# preempt them; root; PRIO_CMD="nice -n -20" for a milder variant).
# Loopback only. Every process it starts is killed on exit; every step has a time limit.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
BUILD_DIR=${BUILD_DIR:-$REPO/build-bench}
STREAMS="1000 10000"
EVENTS=20
PACING=500
SMOKE=0
BUILD=1
KEEP=0
QUIET=0
THREADS=1
WAIT_QUIET=0
PRIO=0
H2=0
BUSY=0
RAMP_MS=
MOONGATE=${MOONGATE:-}

while [ $# -gt 0 ]; do
    case $1 in
    --smoke) SMOKE=1 STREAMS=200 EVENTS=5 PACING=200 ;;
    --streams) STREAMS=$2; shift ;;
    --events) EVENTS=$2; shift ;;
    --pacing-ms) PACING=$2; shift ;;
    --ramp-ms) RAMP_MS=$2; shift ;;
    --build-dir) BUILD_DIR=$2; shift ;;
    --no-build) BUILD=0 ;;
    --moongate) MOONGATE=$2; shift ;;
    --threads) THREADS=$2; shift ;;
    --keep) KEEP=1 ;;
    --wait-quiet) WAIT_QUIET=$2; shift ;;
    --prio) PRIO=1 ;;
    --h2) H2=1 ;;
    --quiet) QUIET=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "$ME: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

say() { [ "$QUIET" = 1 ] || echo "$@" >&2; }

# ---- build ----
if [ "$BUILD" = 1 ]; then
    build_tools "moongate and the bench tools" 600 "${TMPDIR:-/tmp}/streams-build.$$.log" \
        moongate bench_mock_upstream bench_stream_load
    rm -f "${TMPDIR:-/tmp}/streams-build.$$.log"
fi
MOCK=$BUILD_DIR/bench/mock_upstream
LOAD=$BUILD_DIR/bench/stream_load
MOONGATE=${MOONGATE:-$BUILD_DIR/moongate}
need_built "$MOCK" "$LOAD" "$MOONGATE"

# ---- limits and CPUs ----
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null
FDS=$(ulimit -n)
if [ "$(nproc)" -ge 2 ]; then GW_CPU=0 LOAD_CPU=1; else GW_CPU=0 LOAD_CPU=0; fi
if command -v taskset >/dev/null; then
    PIN_GW=(taskset -c "$GW_CPU") PIN_LOAD=(taskset -c "$LOAD_CPU")
else
    PIN_GW=() PIN_LOAD=()
fi
# --prio: real-time round-robin, priority 1: other work on a shared machine cannot preempt the three
# processes measured, as if they had the machine to themselves (the kernel still keeps 5% of
# each CPU for everything else). PRIO_CMD overrides, e.g. PRIO_CMD="nice -n -20".
[ "$PRIO" = 1 ] && with_prio PIN_GW PIN_LOAD

# ---- processes: ours only, killed on exit ----
work_dir streams 0.2

# With --wait-quiet S: wait up to S seconds for the machine to be under 10% busy.
settle() {
    local waited=0 b
    b=$(busy_pct 1)
    while [ "$b" -gt 10 ] && [ "$waited" -lt "$WAIT_QUIET" ]; do
        b=$(busy_pct 2)
        waited=$((waited + 3))
    done
    BUSY=$b
}

# ---- the mock ----
start_mock "$EVENTS" "$PACING"
MOCK_URL=http://127.0.0.1:$MOCK_PORT/v1/chat/completions

# ---- with --h2: nghttpx in front of the mock, TLS + HTTP/2 towards moongate ----
UPSTREAM_BASE=http://127.0.0.1:$MOCK_PORT/v1
UPSTREAM_EXTRA=
if [ "$H2" = 1 ]; then
    NGHTTPX=$(command -v nghttpx || echo /usr/sbin/nghttpx)
    [ -x "$NGHTTPX" ] || die "--h2 needs nghttpx (apt-get install nghttp2-proxy)"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -days 2 \
        -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1 || die "openssl failed"
    H2_PORT=$(free_port)
    spawn "${PIN_LOAD[@]}" "$NGHTTPX" --conf=/dev/null --frontend="127.0.0.1,$H2_PORT" "$WORK/key.pem" "$WORK/cert.pem" \
        --backend="127.0.0.1,$MOCK_PORT" --workers=1 --no-ocsp --backend-keep-alive-timeout=60s \
        --rlimit-nofile="$(ulimit -Hn)" --errorlog-file="$WORK/nghttpx.err" --accesslog-file=/dev/null \
        >/dev/null 2>&1
    wait_for "$WORK/nghttpx.err" "Created worker thread" 10 || die "nghttpx did not start: $(tail -3 "$WORK/nghttpx.err")"
    UPSTREAM_BASE=https://127.0.0.1:$H2_PORT/v1
    UPSTREAM_EXTRA="providers: { mock: { http2: true, caFile: \"$WORK/cert.pem\" } },"
fi

say "machine: $(nproc) CPUs, $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1), $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r)"
say "moongate: $MOONGATE (build type ${BUILD_TYPE:-unknown}), gateway CPU $GW_CPU, mock + client CPU $LOAD_CPU, fd limit $FDS$([ "$PRIO" = 1 ] && echo ", priority: ${PRIO_ARGV[*]}")"
[ "$H2" = 1 ] && say "upstream: HTTP/2 over TLS through nghttpx (pid on CPU $LOAD_CPU) to the mock; direct runs go to the mock"
say "load: $EVENTS events per stream, ${PACING} ms apart (each stream lasts ~$(awk -v e="$EVENTS" -v p="$PACING" 'BEGIN { printf "%.1f", (e - 1) * p / 1000 }') s)"

start_moongate() { # N -> sets GW_PID, GW_URL
    local n=$1 maxc=20000
    [ "$n" -ge 19000 ] && maxc=$((n + 1000))
    [ "$H2" = 1 ] && maxc=$((n + 1000)) # one descriptor per client: keep under the clamp
    cat >"$WORK/moongate-$n.json5" <<EOF
{
  models: { mode: "replace", providers: { mock: { baseUrl: "$UPSTREAM_BASE", apiKey: "x",
            api: "openai-completions", models: [{ id: "m" }] } } },
  agents: { defaults: { model: { primary: "mock/m" } } },
  gateway: { threads: $THREADS, maxConnections: $maxc, $UPSTREAM_EXTRA
             timeouts: { firstTokenMs: 60000, idleMs: 120000, totalMs: 3600000 } },
}
EOF
    serve_moongate "$WORK/moongate-$n.json5" "$WORK/moongate-$n.log" "${PIN_GW[@]}"
    GW_PID=$MG_PID
    GW_URL=http://127.0.0.1:$MG_PORT/v1/chat/completions
}

run_load() { # label url n pid [extra args...] -> sets RESULT to the client's RESULT line
    local label=$1 url=$2 n=$3 pid=$4
    shift 4
    local ramp=${RAMP_MS:-$((n / 5 > PACING ? n / 5 : PACING))}
    local limit=$((ramp / 1000 + (EVENTS * PACING) / 1000 + 30))
    run_waited timeout -k 5 $((limit + 10)) "${PIN_LOAD[@]}" "$LOAD" --url "$url" -n "$n" --events "$EVENTS" \
        --ramp-ms "$ramp" --batch 64 --timeout-s "$limit" --pid "$pid" --label "$label" "$@" \
        >"$WORK/load-$label.out" 2>"$WORK/load-$label.err"
    [ "$QUIET" = 1 ] || sed 's/^/    /' "$WORK/load-$label.err" >&2
    RESULT=$(grep '^RESULT' "$WORK/load-$label.out" || echo "RESULT label=$label n=$n completed=0 dropped=$n")
}

ROWS=()
TOTAL_DROPPED=0
for N in $STREAMS; do
    if [ "$H2" = 0 ] && [ $((2 * N + 16)) -gt "$FDS" ]; then
        say "note: $N streams through a proxy need ~$((2 * N + 16)) descriptors in moongate (one per client, one per" \
            "upstream, ~16 of its own); the limit here is $FDS, so about $(((2 * N + 16 - FDS + 1) / 2)) will fail upstream"
    fi
    settle
    say "== $N streams: direct to the mock (machine ${BUSY}% busy before)"
    run_load "direct-$N" "$MOCK_URL" "$N" "$MOCK_PID"
    D="$RESULT busy=$BUSY"
    start_moongate "$N"
    # Warm-up: a few short streams so one-time set-up (curl, pools, first allocations) counts as idle.
    timeout 20 "${PIN_LOAD[@]}" "$LOAD" --url "$GW_URL" -n 20 --events 2 --max-tokens 2 --ramp-ms 0 \
        --timeout-s 15 --label warmup >/dev/null 2>&1
    settle
    say "== $N streams: through moongate (machine ${BUSY}% busy before)"
    run_load "moongate-$N" "$GW_URL" "$N" "$GW_PID"
    G="$RESULT busy=$BUSY"
    if ! kill -0 "$GW_PID" 2>/dev/null; then
        wait "$GW_PID" 2>/dev/null
        say "    moongate EXITED during the run (status $?); last log lines:"
        tail -5 "$WORK/moongate-$N.log" | cut -c1-300 | sed 's/^/      /' >&2
        G="$G crashed=1"
    fi
    stop_pid "$GW_PID" 15
    WARN=$(grep -v '"access"' "$WORK/moongate-$N.log" | grep -c -E '"level":"(warn|error)"')
    NON200=$(grep '"access"' "$WORK/moongate-$N.log" | grep -vc '"status":200')
    if [ "$NON200" -gt 0 ] || [ "$WARN" -gt 0 ]; then
        say "    moongate log: $WARN warnings/errors, $NON200 requests not 200; first of them:"
        { grep -v '"access"' "$WORK/moongate-$N.log" | grep -m3 -E '"level":"(warn|error)"'
          grep '"access"' "$WORK/moongate-$N.log" | grep -m2 -v '"status":200'; } | cut -c1-400 | sed 's/^/      /' >&2
    fi
    ROWS+=("$N|$D|$G")
    TOTAL_DROPPED=$((TOTAL_DROPPED + $(field "$G" dropped) + $(field "$D" dropped) + 0$(field "$G" crashed)))
done

# ---- the table ----
added() { awk -v g="$1" -v d="$2" 'BEGIN { if (g == "" || d == "" || g < 0 || d < 0) print "n/a"; else printf "%+.2f", (g - d) / 1000 }'; }
mib() { awk -v k="$1" 'BEGIN { if (k == "" || k < 0) print "n/a"; else printf "%.1f", k / 1024 }'; }

echo
echo "| streams | dropped via moongate | dropped direct | moongate RSS idle | RSS at plateau (peak) | RSS per stream | per-event latency p50 / p99, direct (ms) | via moongate (ms) | added p50 / p99 (ms) | TTFT added p50 / p99 (ms) | moongate CPU: at plateau, whole run | machine busy before (direct / moongate) |"
echo "|---:|---:|---:|---:|---:|---:|---|---|---|---|---:|---:|"
for row in "${ROWS[@]}"; do
    IFS='|' read -r N D G <<<"$row"
    idle=$(field "$G" rss_idle_kb)
    plat=$(field "$G" rss_plateau_kb)
    mark=""
    if [ -z "$plat" ] || [ "$plat" -lt 0 ]; then plat=$(field "$G" rss_peak_kb) mark=" (no plateau: peak)"; fi
    per=$(awk -v p="$plat" -v i="$idle" -v n="$N" 'BEGIN { if (p < 0 || i < 0) print "n/a"; else printf "%.1f KiB", (p - i) / n }')
    drops=$(field "$G" dropped)
    reasons=$(tr ' ' '\n' <<<"$G" | awk -F= '/^drop_/ && $2 > 0 { sub("drop_", "", $1); printf "%s%s %s", sep, $1, $2; sep = ", " }')
    [ -n "$reasons" ] && drops="$drops ($reasons)"
    cpu=$(field "$G" plateau_cpu_pct)
    echo "| $N | $drops | $(field "$D" dropped) | $(mib "$idle") MiB | $(mib "$plat") MiB$mark ($(mib "$(field "$G" rss_peak_kb)")) | $per" \
        "| $(ms "$(field "$D" lat_p50_us)") / $(ms "$(field "$D" lat_p99_us)")" \
        "| $(ms "$(field "$G" lat_p50_us)") / $(ms "$(field "$G" lat_p99_us)")" \
        "| $(added "$(field "$G" lat_p50_us)" "$(field "$D" lat_p50_us)") / $(added "$(field "$G" lat_p99_us)" "$(field "$D" lat_p99_us)")" \
        "| $(added "$(field "$G" ttft_p50_us)" "$(field "$D" ttft_p50_us)") / $(added "$(field "$G" ttft_p99_us)" "$(field "$D" ttft_p99_us)")" \
        "| ${cpu:-n/a}% of a core, $(field "$G" cpu_s) s | $(field "$D" busy)% / $(field "$G" busy)% |"
done
echo

if [ "$SMOKE" = 1 ]; then
    if [ "$TOTAL_DROPPED" -ne 0 ]; then echo "smoke: FAILED, $TOTAL_DROPPED streams dropped" >&2; exit 1; fi
    echo "smoke: ok" >&2
fi
exit 0
