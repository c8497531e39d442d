#!/usr/bin/env bash
# The fault matrix (tests/bench/chaos_bench.cc says what each case does and
# checks): five fault kinds (leader_kill9, leader_freeze, leader_cut,
# host_crash, pg_restart), each injected once right after step k of the
# reference upgrade for 7 values of k (the first step of every phase, dealt
# over the faults, then steps spread over the whole rollout), plus one
# reference run without a fault: 36 cases, about 15 s each. Root only
# (separate hosts). Prints a line per case, then chaos_phases and
# chaos_phases_hit (every phase hit at least once), chaos_cases, chaos_completed,
# chaos_stopped_safely, chaos_unsafe, chaos_steps_twice, chaos_rows_lost and
# chaos_proxy_failed; exits 1 when a case was unsafe, a step took effect twice
# or a row was lost.
#
#   bash tests/bench/chaos.sh                       # BUILD_DIR (default ./build)
#   bash tests/bench/chaos.sh --per-fault 2 --faults host_crash,pg_restart
#   bash tests/bench/chaos.sh --faults host_crash --steps 4,12   # these cases only
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR="${BUILD_DIR:-build}"
BENCH="$BUILD_DIR/tests/chaos_bench"
[[ -x "$BENCH" ]] || {
  echo "chaos: $BENCH is not built; run cmake --build $BUILD_DIR --target chaos_bench" >&2
  exit 2
}
exec "$BENCH" "$@"
