#!/usr/bin/env bash
# The chaos load (tests/soak/chaos.py) against a ThreadSanitizer build, once per serving-thread
# count. Opt-in: not part of scripts/test.sh or ctest's default set.
#
#   scripts/tsan.sh                        build build-tsan (clang, -DMG_TSAN=ON, -O1 -g), then
#                                          chaos.py with 2 and with 4 serving threads, 60 s each
#   scripts/tsan.sh --seconds 45           shorter (per thread count)
#   scripts/tsan.sh --minutes 30           a long run: 30 minutes per thread count
#   scripts/tsan.sh --threads "2 4 8" --no-build -- --clients 32 --sigterm-at 40
#                                          (after `--`: chaos.py's own options; see its --help)
#
# Each run gets a directory under the kept output directory (default
# build-tsan/tsan-runs/<UTC time>/threads-N): chaos.py's output (chaos.out), its work directory
# (moongate's logs, configs, results.json) and ThreadSanitizer's reports. TSAN_OPTIONS is
# log_path=<that directory>/tsan (one tsan.<pid> file per report-writing process) halt_on_error=0
# (every race is reported and the run goes on; moongate then exits 66), second_deadlock_stack=1,
# plus anything already in TSAN_OPTIONS. A run passes when chaos.py passes: every request answered
# well-formed, no hang, access log and metrics agree, no sanitizer report, exit 0 after SIGTERM.
# The exit status is 1 if any run failed, 2 on a usage or build problem.
#
# Options: --build-dir DIR (default build-tsan), --no-build, --moongate BIN (another binary; no
# build), --seconds N (default 60), --minutes N, --threads "LIST" (default "2 4"), --out DIR.
# Results and how to read them: docs/ROBUSTNESS.md, "ThreadSanitizer".
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=$REPO/build-tsan
BUILD=1
MOONGATE=
SECONDS_EACH=60
THREADS="2 4"
OUT=
EXTRA=()

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }
die() { echo "tsan.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case $1 in
    --build-dir) BUILD_DIR=$2; shift ;;
    --no-build) BUILD=0 ;;
    --moongate) MOONGATE=$2; BUILD=0; shift ;;
    --seconds) SECONDS_EACH=$2; shift ;;
    --minutes) SECONDS_EACH=$(($2 * 60)); shift ;;
    --threads) THREADS=$2; shift ;;
    --out) OUT=$2; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    -h | --help) usage; exit 0 ;;
    *) echo "tsan.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
case $SECONDS_EACH in '' | *[!0-9]*) die "--seconds / --minutes take a whole number" ;; esac

if [ "$BUILD" = 1 ]; then
    command -v clang >/dev/null || die "ThreadSanitizer needs clang (apt-get install clang)"
    # Debug keeps the asserts; -O1 makes the instrumented binary bearable (TSan's advice), -g
    # comes with Debug. Only the binary: the chaos load uses tests/mock_upstream.py.
    CC=clang cmake -S "$REPO" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS=-O1 \
        -DMG_TSAN=ON -DMG_SANITIZE=OFF -DMG_FUZZ=OFF -DMG_BUILD_TESTS=OFF -DMG_BUILD_BENCH=OFF \
        >/dev/null || die "cmake configure failed (a build dir configured with gcc: remove $BUILD_DIR)"
    log=$(mktemp "${TMPDIR:-/tmp}/tsan-build.XXXXXX")
    timeout 1200 cmake --build "$BUILD_DIR" -j"$(nproc)" --target moongate >"$log" 2>&1 ||
        { tail -30 "$log" >&2; rm -f "$log"; die "build failed"; }
    rm -f "$log"
fi
MOONGATE=${MOONGATE:-$BUILD_DIR/moongate}
[ -x "$MOONGATE" ] || die "no $MOONGATE (build first, or drop --no-build)"
grep -q -a "__tsan_init" "$MOONGATE" ||
    echo "tsan.sh: warning: $MOONGATE has no ThreadSanitizer runtime; only chaos.py's own checks apply" >&2

OUT=${OUT:-$BUILD_DIR/tsan-runs/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT" || die "cannot make $OUT"
OUT=$(cd "$OUT" && pwd)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null

echo "tsan.sh: $MOONGATE, threads: $THREADS, ${SECONDS_EACH} s each, $(nproc) CPUs; output in $OUT" >&2
rc=0
ROWS=()
for n in $THREADS; do
    dir=$OUT/threads-$n
    mkdir -p "$dir"
    echo "==== $n serving threads, ${SECONDS_EACH} s, $(date -u +%FT%TZ)" >&2
    start=$(date +%s)
    # In the background plus `wait`, so that a signal to this script reaches chaos.py, which then
    # kills what it started. TMPDIR puts chaos.py's work directory beside the reports.
    TMPDIR=$dir TSAN_OPTIONS="log_path=$dir/tsan halt_on_error=0 second_deadlock_stack=1 ${TSAN_OPTIONS:-}" \
        python3 "$REPO/tests/soak/chaos.py" --moongate "$MOONGATE" --threads "$n" \
        --duration "$SECONDS_EACH" --keep --sanitizer-dir "$dir" "${EXTRA[@]}" >"$dir/chaos.out" 2>&1 &
    pid=$!
    trap 'kill -TERM $pid 2>/dev/null; wait $pid; exit 130' INT TERM
    wait "$pid"
    st=$?
    trap - INT TERM
    secs=$(($(date +%s) - start))
    sed -n '/^== chaos/,$p' "$dir/chaos.out" | grep -E '^(== |  \[|  requests:|  verdicts:|  bad:|  exit:|RESULT)' >&2
    reports=$(find "$dir" -maxdepth 1 -name 'tsan.*' -size +0 | wc -l)
    # One line per distinct report: "SUMMARY: ThreadSanitizer: data race src/x.c:12 in f".
    summaries=$(cat "$dir"/tsan.* 2>/dev/null | sed -n 's/^SUMMARY: ThreadSanitizer: //p' | sort | uniq -c | sort -rn)
    [ -n "$summaries" ] && printf '%s\n' "$summaries" | sed 's/^/    /' >&2
    if grep -q "unexpected memory mapping" "$dir/chaos.out" "$dir"/tsan.* 2>/dev/null; then
        echo "tsan.sh: ThreadSanitizer could not map its shadow memory: lower ASLR entropy" \
            "(sysctl vm.mmap_rnd_bits=28) or run under setarch -R" >&2
    fi
    requests=$(sed -n 's/^RESULT .* requests=\([0-9]*\).*/\1/p' "$dir/chaos.out" | tail -1)
    if [ "$st" = 0 ]; then verdict=PASS; else verdict="FAIL (exit $st)"; rc=1; fi
    ROWS+=("| $n | ${requests:-?} | $reports | $verdict | ${secs}s |")
done

echo
echo "| serving threads | requests | TSan report files | chaos.py | time |"
echo "|---:|---:|---:|---|---:|"
printf '%s\n' "${ROWS[@]}"
echo
echo "tsan.sh: $([ $rc = 0 ] && echo "clean" || echo "FAILED"); reports and logs in $OUT" >&2
exit $rc
