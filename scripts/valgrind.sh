#!/usr/bin/env bash
# The integration tests with every moongate process under valgrind memcheck (issue 9 item 3).
#
#   scripts/valgrind.sh                     build build-vg (Debug, no sanitizers), run every
#                                           tests/integration/NN-*.py, report findings per test
#   scripts/valgrind.sh 20-streaming 30-reload          only these test files
#   scripts/valgrind.sh --no-build --keep --scale 8
#   scripts/valgrind.sh --soak              also the kill and reload smokes of tests/soak/ (an
#                                           upstream SIGKILLed mid-stream, reloads under load)
#                                           with moongate under memcheck, 20 streams each
#
# How: MOONGATE_BIN points at a small generated script that execs valgrind on build-vg/moongate,
# so everything the tests start (serve, and the check/route/test commands) runs under memcheck,
# and MG_TIMEOUT_SCALE (tests/integration/mglib.py) gives each gateway --scale times longer to
# start and stop. valgrind writes one log per process (vg.<pid>.log, in a folder per test file);
# this script reads them: memory errors (invalid reads/writes, uninitialised values, bad frees),
# leaks (definitely, indirectly and possibly lost; "still reachable" is not a leak and not counted)
# and processes whose log has no final summary (killed: by the test on purpose, or a crash).
#
# Some tests check timings (a timeout fires within its value + 0.1 s, a stream pauses...) that a
# program running 20-50x slower cannot meet: a test that fails under valgrind is reported with its
# failing test names but is not a memory finding; such a file is run once more without valgrind
# (same binary) to tell "fails only under valgrind" from "fails anyway". The exit status is 1
# when valgrind found anything (errors or leaks) in any process, 0 otherwise; --strict also fails
# on test failures. Results and how to read them: docs/ROBUSTNESS.md.
#
# Suppressions: scripts/valgrind.supp (only code outside moongate; each entry says why).
# Options: --build-dir DIR (default build-vg), --no-build, --soak (above; --soak-only: those
# alone), --scale N (default 10), --keep (keep the logs; they are always kept when there is a
# finding), --strict, --track-origins (slower; on by default, --no-track-origins turns it off),
# --timeout S (per test file; default 1800).
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=$REPO/build-vg
BUILD=1
SCALE=10
KEEP=0
STRICT=0
ORIGINS=yes
FILE_TIMEOUT=1800
SOAK=0
TESTS=()

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
    case $1 in
    --build-dir) BUILD_DIR=$2; shift ;;
    --no-build) BUILD=0 ;;
    --scale) SCALE=$2; shift ;;
    --keep) KEEP=1 ;;
    --strict) STRICT=1 ;;
    --track-origins) ORIGINS=yes ;;
    --no-track-origins) ORIGINS=no ;;
    --timeout) FILE_TIMEOUT=$2; shift ;;
    --soak) SOAK=1 ;;
    --soak-only) SOAK=2 ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "valgrind.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) TESTS+=("$1") ;;
    esac
    shift
done

die() { echo "valgrind.sh: $*" >&2; exit 2; }
command -v valgrind >/dev/null || die "valgrind is not installed (apt-get install valgrind)"

if [ "$BUILD" = 1 ]; then
    # A plain Debug build: no sanitizer runtime (valgrind and ASan do not mix), -O0 -g for exact
    # stacks. Only the binary (the tests are Python) and the bench mock that --soak needs.
    cmake -S "$REPO" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Debug -DMG_SANITIZE=OFF -DMG_FUZZ=OFF \
        -DMG_BUILD_TESTS=OFF -DMG_BUILD_BENCH=ON >/dev/null || die "cmake configure failed"
    timeout 1200 cmake --build "$BUILD_DIR" -j"$(nproc)" --target moongate bench_mock_upstream >"${TMPDIR:-/tmp}/vg-build.$$.log" 2>&1 ||
        { tail -30 "${TMPDIR:-/tmp}/vg-build.$$.log" >&2; rm -f "${TMPDIR:-/tmp}/vg-build.$$.log"; die "build failed"; }
    rm -f "${TMPDIR:-/tmp}/vg-build.$$.log"
fi
REAL=$BUILD_DIR/moongate
[ -x "$REAL" ] || die "no $REAL (build first, or drop --no-build)"
grep -q -a "__asan_init" "$REAL" && die "$REAL is built with AddressSanitizer; valgrind needs a plain build"

if [ ${#TESTS[@]} -eq 0 ] && [ "$SOAK" != 2 ]; then
    for f in "$REPO"/tests/integration/[0-9]*.py; do TESTS+=("$(basename "$f" .py)"); done
fi
if [ "$SOAK" != 0 ]; then
    [ -x "$BUILD_DIR/bench/mock_upstream" ] || die "--soak needs $BUILD_DIR/bench/mock_upstream (drop --no-build)"
    TESTS+=(soak:kill soak:reload)
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/moongate-vg.XXXXXX")
cleanup() {
    if [ "$KEEP" = 1 ]; then echo "valgrind.sh: logs kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The wrapper: exec keeps the pid, so the tests' SIGTERM/SIGHUP reach moongate itself. VG_LOGDIR
# is read at each start so that every test file gets its own folder.
cat >"$WORK/moongate" <<EOF
#!/bin/sh
exec valgrind --tool=memcheck --error-exitcode=99 --leak-check=full \\
    --show-leak-kinds=definite,indirect,possible --errors-for-leak-kinds=definite,indirect,possible \\
    --track-origins=$ORIGINS --num-callers=40 --gen-suppressions=all \\
    --suppressions="$REPO/scripts/valgrind.supp" \\
    --log-file="\${VG_LOGDIR:-$WORK}/vg.%p.log" "$REAL" "\$@"
EOF
chmod +x "$WORK/moongate"

echo "valgrind.sh: $(valgrind --version), $REAL, scale x$SCALE, track-origins=$ORIGINS, $(nproc) CPUs" >&2
FOUND=0
TFAIL=0
ROWS=()
for t in "${TESTS[@]}"; do
    dir=$WORK/${t/:/-}
    mkdir -p "$dir"
    start=$(date +%s)
    if [ "${t%%:*}" = soak ]; then
        # A fault scenario of tests/soak/ with 20 streams; it prints RESULT ... pass=0|1.
        src=$REPO/tests/soak/run.sh
        VG_LOGDIR=$dir timeout -k 10 "$FILE_TIMEOUT" "$src" --smoke --no-build --build-dir "$BUILD_DIR" \
            --moongate "$WORK/moongate" "${t#soak:}" -- --streams 20 >"$dir/test.out" 2>&1
        rc=$?
        what="smoke, 20 streams"
        verdict=$(sed -n 's/^RESULT .*pass=\([01]\).*/\1/p' "$dir/test.out" | tail -1)
        case $verdict in 1) verdict=OK ;; 0) verdict="FAILED ($(grep -c '^  \[FAILED\]' "$dir/test.out") checks)" ;; esac
    else
        src=$REPO/tests/integration/$t.py
        [ -f "$src" ] || die "no test $src"
        VG_LOGDIR=$dir MOONGATE_BIN=$WORK/moongate MG_TIMEOUT_SCALE=$SCALE MG_SOURCE_DIR=$REPO \
            timeout -k 10 "$FILE_TIMEOUT" python3 "$src" >"$dir/test.out" 2>&1
        rc=$?
        # unittest's last lines: "Ran N tests in Xs" then "OK" or "FAILED (failures=1, errors=2)".
        ran=$(sed -n 's/^Ran \([0-9]*\) tests\{0,1\} in.*/\1/p' "$dir/test.out" | tail -1)
        what="${ran:-?} tests"
        verdict=$(grep -E '^(OK|FAILED)' "$dir/test.out" | tail -1)
    fi
    secs=$(($(date +%s) - start))
    [ -n "$verdict" ] || verdict="no result (exit $rc$([ $rc = 124 ] && echo ", timed out after ${FILE_TIMEOUT}s"))"
    failed_names=$(sed -n 's/^\(FAIL\|ERROR\): \([a-zA-Z0-9_]*\) .*/\2/p' "$dir/test.out" | sort -u | tr '\n' ' ')
    if [ "$rc" != 0 ]; then
        TFAIL=$((TFAIL + 1))
        # Same binary without valgrind: does the file fail anyway (not valgrind's doing), or only
        # 20-50x slower (a timing assertion)?
        if [ "${t%%:*}" = soak ]; then
            timeout -k 10 600 "$src" --smoke --no-build --build-dir "$BUILD_DIR" "${t#soak:}" -- --streams 20 \
                >"$dir/test-plain.out" 2>&1
        else
            MOONGATE_BIN=$REAL MG_SOURCE_DIR=$REPO timeout -k 10 600 python3 "$src" >"$dir/test-plain.out" 2>&1
        fi
        if [ $? = 0 ]; then
            verdict="$verdict; passes without valgrind"
        else
            verdict="$verdict; fails without valgrind too: $(grep -E '^(OK|FAILED)' "$dir/test-plain.out" | tail -1)"
        fi
    fi
    # Per process: errors (ERROR SUMMARY counts leaks too, with --errors-for-leak-kinds), bytes
    # lost by kind, and logs without a summary (the process was killed).
    procs=0 errs=0 errprocs=0 nosum=0 def=0 ind=0 pos=0
    for log in "$dir"/vg.*.log; do
        [ -f "$log" ] || continue
        procs=$((procs + 1))
        e=$(sed -n 's/.*ERROR SUMMARY: \([0-9,]*\) errors.*/\1/p' "$log" | tr -d , | tail -1)
        if [ -z "$e" ]; then nosum=$((nosum + 1)); e=$(grep -c '^==[0-9]*== \(Invalid\|Conditional\|Use of uninit\|Syscall param\|Mismatched\|Source and destination\)' "$log"); fi
        [ "${e:-0}" -gt 0 ] && errprocs=$((errprocs + 1))
        errs=$((errs + ${e:-0}))
        for kind in definitely indirectly possibly; do
            b=$(sed -n "s/.*$kind lost: \([0-9,]*\) bytes.*/\1/p" "$log" | tr -d , | tail -1)
            case $kind in definitely) def=$((def + ${b:-0})) ;; indirectly) ind=$((ind + ${b:-0})) ;; possibly) pos=$((pos + ${b:-0})) ;; esac
        done
    done
    [ "$errs" -gt 0 ] && FOUND=$((FOUND + 1))
    ROWS+=("| $t | $procs | $errs ($errprocs processes) | $def / $ind / $pos | $nosum | $what: $verdict${failed_names:+ — $failed_names} | ${secs}s |")
    printf 'valgrind.sh: %-16s %3d processes, %d valgrind errors, lost %d/%d/%d bytes, %s (%ds)\n' \
        "$t" "$procs" "$errs" "$def" "$ind" "$pos" "$verdict" "$secs" >&2
    if [ "$errs" -gt 0 ]; then
        KEEP=1
        # The first report of each log with findings, for the console; the logs hold the rest.
        for log in "$dir"/vg.*.log; do
            grep -q 'ERROR SUMMARY: [1-9]' "$log" || continue
            echo "---- $log" >&2
            awk '/^==[0-9]+== (Invalid|Conditional|Use of uninit|Syscall param|Mismatched|Source and|[0-9,]+ bytes in [0-9,]+ blocks are (definitely|indirectly|possibly))/ {p = 1}
                 p && /^==[0-9]+== $/ {exit} p' "$log" | head -40 >&2
        done
    fi
done

echo
echo "| test | processes | valgrind errors | lost bytes: definitely / indirectly / possibly | killed (no summary) | test result under valgrind | time |"
echo "|---|---:|---:|---|---:|---|---:|"
printf '%s\n' "${ROWS[@]}"
echo
echo "valgrind.sh: $FOUND test file(s) with valgrind findings; $TFAIL test file(s) failing under valgrind$([ "$KEEP" = 1 ] && echo "; logs in $WORK")" >&2
[ "$FOUND" -gt 0 ] && exit 1
[ "$STRICT" = 1 ] && [ "$TFAIL" -gt 0 ] && exit 1
exit 0
