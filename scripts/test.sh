#!/usr/bin/env bash
# The second set-up command, and exactly what CI runs (.ci/run): installs what is missing, builds
# with warnings as errors, and runs the whole suite (unit, fuzz-corpus replay, integration against
# the real binary, official-SDK clients) with ctest; checks that an optimised build is warning-free
# too; then runs the suite again under ASan+UBSan.
# MG_SKIP_SANITIZE=1 skips the sanitizer pass (for a quick local run).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh --test
if [[ -f tests/sdk/package.json ]]; then
  (cd tests/sdk && npm ci --no-audit --no-fund --loglevel=error)
fi
jobs=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Debug -DMG_WERROR=ON >/dev/null
cmake --build build -j"$jobs"
# The micro-benchmarks are outside `all` (bench/CMakeLists.txt): built here so that a change to
# the core library's interface cannot break them unseen.
cmake --build build -j"$jobs" --target bench_sse bench_compact bench_policy
ctest --test-dir build --output-on-failure -j"$jobs"
# An optimised build too: some warnings (-Wformat-truncation, -Wmaybe-uninitialized) only show there.
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DMG_WERROR=ON -DMG_BUILD_TESTS=OFF -DMG_BUILD_BENCH=OFF >/dev/null
cmake --build build-release -j"$jobs"
if [[ ${MG_SKIP_SANITIZE:-0} != 1 ]]; then
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DMG_WERROR=ON -DMG_SANITIZE=ON >/dev/null
  cmake --build build-asan -j"$jobs"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j"$jobs"
fi
