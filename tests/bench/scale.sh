#!/usr/bin/env bash
# Scale of one controller: for each size in SIZES (default "100 300 1000"),
# that many simulated hosts (tests/sim: real agent sessions, each with its
# own certificate, on in-memory Docker Engines that take realistic times)
# against two real hoistd replicas on a throw-away Postgres, over mTLS. Prints
# scale_<N>_* key=value lines (tests/bench/scale_bench.cc says what each one
# is), then, for the largest size, each target of the scale issue and whether
# it was met:
#   connect < 10 s, reconnect after failover < 15 s, push+ack p99 < 1 s,
#   idle leader CPU < 20 % of a core, leader RSS < 500 MB,
#   rollout wall <= 1.2 x its critical path.
# There is no peer row: neither Swarm nor compose can be given a thousand
# nodes on one machine.
#
# One command from a fresh clone (installs what is missing, builds what it needs):
#   bash tests/bench/scale.sh
#   SIZES="100 300" bash tests/bench/scale.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR="${BUILD_DIR:-./build}"
SIZES="${SIZES:-100 300 1000}"
bash deploy/install-deps.sh
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$BUILD_DIR" -j 2 --target scale_bench hoistd hoist hoist-simhosts >/dev/null
# A thousand sessions hold a few thousand threads and sockets on each side.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
# shellcheck disable=SC2086
"$BUILD_DIR/tests/scale_bench" $SIZES 2>"$out.log" | tee "$out" || true
largest="$(echo "$SIZES" | tr ' ' '\n' | sort -n | tail -1)"
awk -F= -v n="$largest" '
  { v[$1] = $2 }
  function check(key, op, limit,   k) {
    k = "scale_" n "_" key
    if (!(k in v)) { printf "target_%s=not measured\n", key; return }
    ok = (op == "<" ? v[k] + 0 < limit : v[k] + 0 <= limit)
    printf "target_%s%s%s=%s (%s)\n", key, op, limit, ok ? "met" : "missed", v[k]
  }
  END {
    check("connect_s", "<", 10); check("reconnect_s", "<", 15); check("push_ack_p99_ms", "<", 1000)
    check("idle_cpu_pct", "<", 20); check("rss_mb", "<", 500); check("rollout_over_critical", "<=", 1.2)
  }' "$out"
if grep -q '_error=' "$out"; then
  echo "scale.sh: some sizes did not finish; the fleet logs are in $out.log" >&2
  trap - EXIT
  exit 1
fi
rm -f "$out.log"
