#!/usr/bin/env bash
# Leader failover of hoistd, two ways.
#
# 1. The election (failover_bench): over TRIALS (default 10) trials per way of
#    ending the leader, kill -9, SIGSTOP (frozen) and SIGTERM (graceful), three
#    real replicas on a throw-away Postgres; the time from the signal to a new
#    leader holding the lock with a bumped epoch. For comparison, Kubernetes'
#    default leader lease is 15 s.
# 2. As users feel it (chaos_bench's leader faults, on separate hosts, root
#    only): during the reference upgrade, the leader is killed (kill -9), its
#    host frozen, or its host cut off from Postgres and the agents, DISPATCH_TRIALS
#    (default 3) times each at different steps; the time from the fault to the
#    first step an agent began for the new leader (a higher epoch):
#    failover_dispatch_kill9_median_s and _max_s, failover_dispatch_freeze_*,
#    failover_dispatch_partition_*, and until every agent was in session with
#    the new leader: failover_agents_reconnected_median_s. The old leader
#    changing nothing after the new epoch is checked by the fence (see
#    tests/integration/executor_test.cc, StaleLeaderCannotFinishStepsOnceTheEpochMoved).
#
#   BUILD_DIR=./build bash tests/bench/failover.sh [TRIALS] [DISPATCH_TRIALS]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR="${BUILD_DIR:-./build}"
for b in failover_bench chaos_bench; do
  if [ ! -x "$BUILD_DIR/tests/$b" ]; then
    echo "failover.sh: $BUILD_DIR/tests/$b is missing; build first (cmake --build $BUILD_DIR)" >&2
    exit 1
  fi
done
"$BUILD_DIR/tests/failover_bench" "${1:-10}"
if why="$(bash deploy/lib/hosts.sh available 2>&1)"; then
  "$BUILD_DIR/tests/chaos_bench" --faults leader_kill9,leader_freeze,leader_cut --per-fault "${2:-3}" |
    grep -E '^(failover_|case )' | sed 's/^case /dispatch case /'
else
  echo "failover_dispatch_error=separate hosts unavailable: $why"
fi
