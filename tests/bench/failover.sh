#!/usr/bin/env bash
# Leader failover of hoistd, over TRIALS (default 10) trials per way of ending
# the leader: kill -9, SIGSTOP (frozen) and SIGTERM (graceful). Three real
# replicas share a throw-away Postgres; the time runs from the signal to a new
# leader holding the lock with a bumped epoch. For comparison, Kubernetes'
# default leader lease is 15 s.
#
#   BUILD_DIR=./build bash tests/bench/failover.sh [TRIALS]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR="${BUILD_DIR:-./build}"
if [ ! -x "$BUILD_DIR/tests/failover_bench" ]; then
  echo "failover.sh: $BUILD_DIR/tests/failover_bench is missing; build first (cmake --build $BUILD_DIR)" >&2
  exit 1
fi
exec "$BUILD_DIR/tests/failover_bench" "${1:-10}"
