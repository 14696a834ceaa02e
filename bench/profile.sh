#!/usr/bin/env bash
# Where moongate's CPU goes per request, in one command: the throughput set-up of compare.sh
# (bench/mock_upstream and wrk on CPU 0, moongate alone on CPU 1, policies/fallback.lua over a
# two-model chain, 64 connections, the 655-byte Chat body of bench/wrk/chat.lua), measured three
# times over:
#   1. plain: requests/s and moongate's CPU time per request (utime+stime from /proc/PID/stat);
#   2. `perf stat` of its system calls: how many of each per request;
#   3. `perf record --call-graph dwarf`: the CPU by owner (moongate, libcurl, libmicrohttpd, Lua,
#      cJSON; user space or the system calls each makes) and the kernel time by system call,
#      attributed by bench/perf_attr.py, in µs per request using the figure of run 1.
# Prints markdown on stdout (progress on stderr). The recording slows moongate down; the shares
# are what the page reports, the absolute figures come from run 1.
#
#   bench/profile.sh                 (~1 min; builds build-compare/ (Release) first)
#   bench/profile.sh --seconds 10 --conns 64 --no-build --keep
#
# Needs perf (apt-get install -y linux-perf) and wrk (apt-get install -y wrk), installed if
# missing. Loopback only. Everything it starts is killed on exit.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
BUILD_DIR=${BUILD_DIR:-$REPO/build-compare}
SECONDS_RUN=5
CONNS=64
BUILD=1
KEEP=0
POLICY=$REPO/policies/fallback.lua

while [ $# -gt 0 ]; do
    case $1 in
    --seconds) SECONDS_RUN=$2; shift ;;
    --conns) CONNS=$2; shift ;;
    --policy) POLICY=$(realpath "$2"); shift ;;
    --build-dir) BUILD_DIR=$(realpath -m "$2"); shift ;;
    --no-build) BUILD=0 ;;
    --keep) KEEP=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "$ME: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

say() { echo "[$(date +%H:%M:%S)] $*" >&2; }

for tool in wrk:wrk perf:linux-perf; do
    command -v "${tool%%:*}" >/dev/null && continue
    say "installing ${tool#*:} (apt-get)"
    timeout 600 apt-get install -y "${tool#*:}" >/dev/null 2>&1 || die "apt-get install -y ${tool#*:} failed"
done
[ "$BUILD" = 1 ] && build_tools "moongate and the mock upstream" 900 "$BUILD_DIR/profile-build.log" \
    moongate bench_mock_upstream
MOCK=$BUILD_DIR/bench/mock_upstream
MOONGATE=$BUILD_DIR/moongate
need_built "$MOCK" "$MOONGATE"

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null
if [ "$(nproc)" -ge 2 ]; then LOAD_CPU=0 PEER_CPU=1; else LOAD_CPU=0 PEER_CPU=0; say "warning: one CPU: everything shares it"; fi
PIN_LOAD=(taskset -c "$LOAD_CPU")
HZ=$(getconf CLK_TCK)
work_dir profile 0.3

start_mock 1 0
bench_config "$WORK/moongate.json5" "http://127.0.0.1:$MOCK_PORT/v1" "$POLICY"
serve_moongate "$WORK/moongate.json5" "$WORK/moongate.log" taskset -c "$PEER_CPU"
URL=http://127.0.0.1:$MG_PORT/v1/chat/completions

load() { # seconds -> the number of requests wrk completed
    "${PIN_LOAD[@]}" wrk -t1 -c"$CONNS" -d"$1"s -s "$REPO/bench/wrk/chat.lua" "$URL" >"$WORK/wrk.out" 2>&1 ||
        die "wrk failed: $(tail -3 "$WORK/wrk.out")"
    awk '/requests in/ {print $1; exit}' "$WORK/wrk.out"
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$MG_PID/stat"; }

say "warm-up (2 s)"
load 2 >/dev/null

say "run 1: throughput and CPU per request ($SECONDS_RUN s)"
t0=$(cpu_ticks)
reqs=$(load "$SECONDS_RUN")
t1=$(cpu_ticks)
[ "${reqs:-0}" -gt 0 ] || die "no requests completed: $(cat "$WORK/wrk.out")"
US=$(awk -v t="$((t1 - t0))" -v hz="$HZ" -v r="$reqs" 'BEGIN { printf "%.1f", t / hz * 1e6 / r }')
RPS=$(awk -v r="$reqs" -v s="$SECONDS_RUN" 'BEGIN { printf "%.0f", r / s }')

say "run 2: system calls per request (perf stat, $SECONDS_RUN s)"
events=()
for s in recvfrom sendto sendmsg writev write read epoll_wait epoll_ctl poll accept4 futex; do
    events+=(-e "syscalls:sys_enter_$s")
done
perf stat "${events[@]}" -p "$MG_PID" -o "$WORK/stat.txt" -- sleep "$SECONDS_RUN" >/dev/null 2>&1 &
STAT_PID=$!
reqs2=$(load "$SECONDS_RUN")
wait "$STAT_PID" || die "perf stat failed: $(tail -3 "$WORK/stat.txt")"

say "run 3: perf record --call-graph dwarf ($SECONDS_RUN s)"
perf record -F 999 --call-graph dwarf,16384 -p "$MG_PID" -o "$WORK/perf.data" -- sleep "$SECONDS_RUN" \
    >"$WORK/record.out" 2>&1 &
REC_PID=$!
load "$SECONDS_RUN" >/dev/null
wait "$REC_PID" || die "perf record failed: $(tail -3 "$WORK/record.out")"

echo "## moongate per request ($(date -u '+%Y-%m-%d %H:%M UTC'), $(git -C "$REPO" rev-parse --short HEAD), $BUILD_TYPE build)"
echo
echo "Command: \`bench/profile.sh --seconds $SECONDS_RUN --conns $CONNS\`; $(nproc) CPUs, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)."
echo
echo "Run 1: $RPS requests/s, **$US µs of CPU per request** (wrk -t1 -c$CONNS, ${SECONDS_RUN} s)."
echo
echo "| system call (run 2) | per request |"
echo "|---|---:|"
awk -v r="$reqs2" '/syscalls:sys_enter_/ { n = $1; gsub(/,/, "", n); name = $2; sub(/.*sys_enter_/, "", name);
    if (n > 0) { t += n; printf "| %s | %.2f |\n", name, n / r } }
    END { printf "| **all** | **%.2f** |\n", t / r }' "$WORK/stat.txt"
echo
perf script -i "$WORK/perf.data" -F ip,sym,dso 2>/dev/null | python3 "$REPO/bench/perf_attr.py" --per-request-us "$US"
