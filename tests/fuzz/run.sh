#!/usr/bin/env bash
# Fuzzes Hoist's stack manifest and release file parsers with libFuzzer
# (clang-14 from Debian, with the address and undefined-behaviour
# sanitizers): builds the two targets in build-fuzz/ (only they and the
# sources they need), then runs each for RUNS executions, starting from the
# seeds in tests/fuzz/corpus/<target>/ (inputs it finds go to a scratch copy;
# the seeds in the repository are left as they are). Prints each target's
# executions, executions per second and corpus size.
#
#   bash tests/fuzz/run.sh                  # 1,000,000 executions each
#   bash tests/fuzz/run.sh --runs 20000     # the short run deploy/test.sh does
#
# Exit codes: 0 nothing found; 1 a crash, a hang or a sanitizer report (the
# input is saved as build-fuzz/crashes/<target>-*, replay it with
# build-fuzz/tests/fuzz/<target>_fuzz FILE); 2 a bad flag.
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNS=1000000
BUILD_DIR="${FUZZ_BUILD_DIR:-build-fuzz}"
JOBS="${JOBS:-2}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || { echo "fuzz: --runs needs a number" >&2; exit 2; }; RUNS="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "fuzz: unknown argument \"$1\"; see tests/fuzz/run.sh --help" >&2; exit 2 ;;
  esac
done
command -v clang++-14 >/dev/null || { echo "fuzz: clang++-14 is missing; run bash deploy/install-deps.sh" >&2; exit 1; }

cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++-14 \
  -DHOIST_FUZZ=ON -DHOIST_WERROR=OFF >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS" --target manifest_fuzz release_fuzz >/dev/null

mkdir -p "$BUILD_DIR/crashes"
status=0
for target in manifest release; do
  work="$(mktemp -d)"
  cp tests/fuzz/corpus/"$target"/* "$work"/
  log="$BUILD_DIR/$target-fuzz.log"
  start=$(date +%s.%N)
  if "$BUILD_DIR/tests/fuzz/${target}_fuzz" -runs="$RUNS" -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$BUILD_DIR/crashes/$target-" "$work" >"$log" 2>&1; then
    result=ok
  else
    result=FAILED
    status=1
  fi
  end=$(date +%s.%N)
  executed=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  corpus=$(ls "$work" | wc -l)
  rm -rf "$work"
  awk -v t="$target" -v r="$result" -v n="${executed:-0}" -v s="$start" -v e="$end" -v c="$corpus" \
    'BEGIN { printf "fuzz_%s: %s, %d executions in %.0f s (%.0f/s), corpus %d inputs\n", t, r, n, e - s, n / (e - s), c }'
  if [[ $result != ok ]]; then
    grep -E "ERROR|SUMMARY|Test unit written|deadly signal|timeout" "$log" | head -n 20 >&2
  fi
done
exit "$status"
