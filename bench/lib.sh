# shellcheck shell=bash disable=SC2034 # the variables it sets are read by the script that sources it
# Shell pieces shared by bench/compare.sh and bench/streams.sh; sourced, not run. Builds the tools,
# keeps the processes a run starts (ours only, in PIDS, killed by pid on exit) and its work
# directory, waits for files and ports, starts the mock upstream and moongate, and reads figures:
# CPU busy, key=value fields of RESULT lines.
# The script sets REPO and BUILD_DIR, defines say() (progress on stderr), and sets KEEP=1 to keep
# the work directory; MOCK, MOONGATE and PIN_LOAD are needed by the functions that start them.

ME=${0##*/}

die() { echo "$ME: $*" >&2; exit 2; }

# The script's opening comment, without the #! line.
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

# ---- building ----
# build_tools WHAT SECONDS LOG TARGET...: configures BUILD_DIR (Release) if it has no CMake cache
# yet, then builds the targets within SECONDS, the output in LOG (its last 30 lines on failure).
build_tools() {
    local what=$1 secs=$2 log=$3
    shift 3
    if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
        say "configuring $BUILD_DIR (Release)"
        cmake -S "$REPO" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null || die "cmake configure failed"
    fi
    say "building $what in $BUILD_DIR"
    timeout "$secs" cmake --build "$BUILD_DIR" -j"$(nproc)" --target "$@" >"$log" 2>&1 ||
        { tail -30 "$log" >&2; die "build failed"; }
}

# need_built BINARY...: dies unless each is executable; sets BUILD_TYPE from BUILD_DIR's cache.
need_built() {
    local b
    for b in "$@"; do [ -x "$b" ] || die "missing $b (build first, or drop --no-build)"; done
    BUILD_TYPE=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null)
}

# with_prio ARRAY...: puts PRIO_CMD (default `chrt -r 1`, real-time round-robin priority 1; also
# left in PRIO_ARGV) in front of each named command-prefix array. Dies if it is not permitted.
with_prio() {
    read -r -a PRIO_ARGV <<<"${PRIO_CMD:-chrt -r 1}"
    "${PRIO_ARGV[@]}" true 2>/dev/null || die "--prio: '${PRIO_ARGV[*]}' is not permitted here (needs root)"
    local -n prefix
    for prefix in "$@"; do prefix=("${PRIO_ARGV[@]}" "${prefix[@]}"); done
}

# ---- processes: ours only, killed on exit ----
# work_dir NAME GRACE: makes WORK (moongate-NAME.XXXXXX in TMPDIR) and empties PIDS. On exit
# (Ctrl-C and SIGTERM exit 130 through it too) every pid in PIDS gets SIGTERM, then after GRACE
# seconds SIGKILL, and WORK is removed unless KEEP=1.
work_dir() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/moongate-$1.XXXXXX")
    PIDS=()
    TERM_GRACE_S=$2
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}

cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    sleep "$TERM_GRACE_S"
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    if [ "$KEEP" = 1 ]; then echo "$ME: logs kept in $WORK" >&2; else rm -rf "$WORK"; fi
}

# spawn COMMAND...: runs it in the background (with the caller's redirections) -> SPAWNED, its pid,
# also added to PIDS.
spawn() {
    "$@" &
    SPAWNED=$!
    PIDS+=("$SPAWNED")
}

# run_waited COMMAND...: spawn, then wait for it; returns its exit status. In the background plus
# `wait`, so that a signal to this script is handled at once.
run_waited() {
    spawn "$@"
    wait "$SPAWNED"
}

stop_pid() { # pid [seconds to wait after SIGTERM, default 5]: TERM, then KILL
    local p=$1 i
    kill -TERM "$p" 2>/dev/null || return 0
    for ((i = 0; i < ${2:-5} * 10; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null
    return 0
}

wait_for() { # file, pattern, seconds
    local i
    for ((i = 0; i < $3 * 10; i++)); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    return 1
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_mock EVENTS PACING_MS: bench/mock_upstream on an ephemeral port, run by PIN_LOAD, streaming
# EVENTS events PACING_MS apart -> MOCK_PID, MOCK_PORT (its output in WORK/mock.out, .err).
start_mock() {
    spawn "${PIN_LOAD[@]}" "$MOCK" --port 0 --events "$1" --pacing-ms "$2" >"$WORK/mock.out" 2>"$WORK/mock.err"
    MOCK_PID=$SPAWNED
    wait_for "$WORK/mock.out" READY 5 || die "mock_upstream did not start: $(cat "$WORK/mock.err")"
    MOCK_PORT=$(awk '/^READY/{print $2}' "$WORK/mock.out")
}

# bench_config FILE ORIGIN_URL POLICY: the moongate config of the throughput runs. Two providers on
# the same origin so the fallback policy has a chain to walk; "default" in the request body
# resolves to it. Everything else is moongate's defaults (compaction on, health tracking, the JSON
# access log on stderr).
bench_config() {
    cat >"$1" <<EOF
{
  models: { mode: "replace", providers: {
    origin: { baseUrl: "$2", apiKey: "bench", api: "openai-completions", models: [{ id: "m", contextWindow: 128000 }] },
    backup: { baseUrl: "$2", apiKey: "bench", api: "openai-completions", models: [{ id: "m2", contextWindow: 128000 }] },
  } },
  agents: { defaults: { model: { primary: "origin/m", fallbacks: ["backup/m2"] } } },
  gateway: { policy: "$3" },
}
EOF
}

# serve_moongate CONFIG LOG [command prefix...]: `moongate serve` on an ephemeral loopback port, its
# log (stderr) in LOG -> MG_PID, MG_PORT once it says "listening" (dies if not within 10 s).
serve_moongate() {
    local cfg=$1 log=$2
    shift 2
    spawn "$@" "$MOONGATE" serve --config "$cfg" --listen 127.0.0.1:0 2>"$log"
    MG_PID=$SPAWNED
    wait_for "$log" '"listening"' 10 || die "moongate did not start: $(tail -5 "$log")"
    MG_PORT=$(grep -m1 '"listening"' "$log" | sed -E 's/.*"addr":"[^"]*:([0-9]+)".*/\1/')
}

# ---- figures ----
# Percentage of all CPUs busy over the next $1 seconds (other work on the machine skews latency).
busy_pct() {
    local a b
    a=$(awk '/^cpu /{b = $2 + $3 + $4 + $7 + $8 + $9; print b, b + $5 + $6}' /proc/stat)
    sleep "$1"
    b=$(awk '/^cpu /{b = $2 + $3 + $4 + $7 + $8 + $9; print b, b + $5 + $6}' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " "); t = y[2] - x[2];
        printf "%d", (t > 0 ? 100 * (y[1] - x[1]) / t : 0) }'
}

field() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"; } # key=value field of a RESULT line

ms() { awk -v u="$1" 'BEGIN { if (u == "" || u < 0) print "n/a"; else printf "%.2f", u / 1000 }'; } # us -> ms
