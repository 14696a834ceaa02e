#!/usr/bin/env bash
# Fuzzes every libFuzzer target for N minutes each (default 10), starting from its seed corpus and
# regression folder, with ASan+UBSan. New inputs go to build-fuzz/corpus/<target>/ (the seeds in the
# tree are not modified); crashers land in tests/fuzz/artifacts/. Prints the exec count per target.
#   scripts/fuzz.sh [MINUTES] [TARGET...]     (FUZZ_SECONDS=N overrides MINUTES, for a smoke run)
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
shift || true
./scripts/install-deps.sh --test
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMG_FUZZ=ON -DMG_SANITIZE=ON \
  -DMG_BUILD_TESTS=OFF -DMG_BUILD_BENCH=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)"
targets=("$@")
if ((${#targets[@]} == 0)); then
  for f in tests/fuzz/*.c; do
    n=$(basename "$f" .c)
    [[ $n == replay_main ]] || targets+=("$n")
  done
fi
mkdir -p tests/fuzz/artifacts
for t in "${targets[@]}"; do
  work=build-fuzz/corpus/$t
  mkdir -p "$work" tests/fuzz/regression/"$t" # a target may have no regression input yet
  log=build-fuzz/$t.log
  secs=${FUZZ_SECONDS:-$((minutes * 60))}
  ((secs > 0)) || secs=1
  echo "== $t: ${secs} s"
  build-fuzz/fuzz_"$t" -max_total_time="$secs" -print_final_stats=1 \
    -artifact_prefix=tests/fuzz/artifacts/"$t"- "$work" tests/fuzz/corpus/"$t" tests/fuzz/regression/"$t" \
    >"$log" 2>&1 || { echo "$t: FAILED (see $log)"; tail -30 "$log"; exit 1; }
  grep -E "stat::number_of_executed_units" "$log" | sed "s/^/$t: /"
done
