#!/usr/bin/env bash
# Fault and load runs against the real moongate binary (issue 9 item 4). Opt-in, except the short
# smoke of each that ctest runs (tests/CMakeLists.txt: soak.<name>-smoke).
#
#   tests/soak/run.sh [--smoke] [options] [soak|kill|slow|reload|all] [-- scenario options]
#
#   soak     200 concurrent streams for 10 minutes, every stream checked complete and byte-exact,
#            RSS growth after warm-up < 10 MB                                   (tests/soak/soak.py)
#   kill     the upstream SIGKILLed mid-stream under load, again and again: every stream it was
#            serving ends with a well-formed error event, the gateway keeps serving (kill.py)
#   slow     slowloris / slow body / slow read (slowhttptest) and slow stream readers while a normal
#            client's latency is measured                                        (slow.py)
#   reload   a reload every second (file watch, POST /admin/reload, SIGHUP; alternating policies)
#            under streaming load: zero failed requests                         (reload.py)
#   all      the four, one after another (default)
#
# --smoke runs each for a few seconds (all four in about 50 s). Each scenario prints its checks,
# its numbers and one `RESULT scenario=... pass=0|1` line; the exit status is 1 if any failed.
# Durations and sizes: pass scenario options after `--`, e.g. `run.sh soak -- --duration 120`
# (see `python3 tests/soak/soak.py --help`).
#
# Options: --build-dir DIR (default build-soak, configured Release if missing), --no-build,
# --moongate BIN (another binary; the bench mock is still taken from the build dir), --keep (keep
# each scenario's work directory: moongate's log, configs, slowhttptest reports).
# Loopback only. Every process started is killed on exit, by pid.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD_DIR=${BUILD_DIR:-$REPO/build-soak}
BUILD=1
SMOKE=()
KEEP=()
MOONGATE=
SCENARIOS=()
EXTRA=()

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
    case $1 in
    --smoke) SMOKE=(--smoke) ;;
    --build-dir) BUILD_DIR=$2; shift ;;
    --no-build) BUILD=0 ;;
    --moongate) MOONGATE=$2; shift ;;
    --keep) KEEP=(--keep) ;;
    soak | kill | slow | reload) SCENARIOS+=("$1") ;;
    all) SCENARIOS+=(soak kill slow reload) ;;
    --) shift; EXTRA=("$@"); break ;;
    -h | --help) usage; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(soak kill slow reload)

if [ "$BUILD" = 1 ]; then
    if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
        cmake -S "$REPO" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null || { echo "run.sh: cmake failed" >&2; exit 2; }
    fi
    log=$(mktemp "${TMPDIR:-/tmp}/soak-build.XXXXXX")
    timeout 900 cmake --build "$BUILD_DIR" -j"$(nproc)" --target moongate bench_mock_upstream >"$log" 2>&1 ||
        { tail -30 "$log" >&2; rm -f "$log"; echo "run.sh: build failed" >&2; exit 2; }
    rm -f "$log"
fi
MOONGATE=${MOONGATE:-$BUILD_DIR/moongate}
MOCK=$BUILD_DIR/bench/mock_upstream
# Raise the descriptor limit as far as allowed: 1,000 slow connections plus 200 streams.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null

rc=0
RESULTS=()
for s in "${SCENARIOS[@]}"; do
    echo "==== $s $(date -u +%FT%TZ)" >&2
    # In the background plus `wait`, so that a signal to this script reaches the scenario, which
    # then kills what it started.
    python3 "$REPO/tests/soak/$s.py" --moongate "$MOONGATE" --mock "$MOCK" "${SMOKE[@]}" "${KEEP[@]}" "${EXTRA[@]}" &
    pid=$!
    trap 'kill -TERM $pid 2>/dev/null; wait $pid; exit 130' INT TERM
    wait "$pid"
    st=$?
    trap - INT TERM
    RESULTS+=("$s: $([ $st = 0 ] && echo PASS || echo "FAIL (exit $st)")")
    [ $st = 0 ] || rc=1
done
printf 'run.sh: %s\n' "${RESULTS[@]}" >&2
exit $rc
