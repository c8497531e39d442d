#!/usr/bin/env bash
# The idle agent's footprint: one hoist-agent connected to a leading hoistd
# (throw-away Postgres), managing nothing, heartbeating and checking its
# inventory as it does in production. After a settling period it samples the
# agent's RSS and CPU time from /proc over FOOTPRINT_SECONDS (default 60) and
# prints key=value lines:
#   agent_idle_rss_mb, agent_idle_cpu_pct       (targets: < 15 MB, about 0 %)
#   agent_idle_pss_mb, agent_idle_private_mb    (RSS counts shared library pages in
#                                                full; PSS shares them out, private
#                                                is the agent's own memory)
#   hoistd_idle_rss_mb, hoistd_idle_cpu_pct     (the controller beside it, for reference)
# The build directory comes from $BUILD_DIR (default ./build).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR="${BUILD_DIR:-build}"
SECONDS_TO_SAMPLE="${FOOTPRINT_SECONDS:-60}"
HOISTD="$BUILD_DIR/controller/hoistd"
AGENT="$BUILD_DIR/agent/hoist-agent"
for b in "$HOISTD" "$AGENT"; do
  [[ -x "$b" ]] || { echo "agent_footprint: $b not built (cmake --build $BUILD_DIR)" >&2; exit 2; }
done

WORK="$(mktemp -d /tmp/hoist-footprint.XXXXXX)"
chmod 755 "$WORK"
PIDS=()
source deploy/lib/postgres.sh
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  pg_throwaway_stop
  rm -rf "$WORK"
}
trap cleanup EXIT

pg_throwaway_start "$WORK"
CONTROLLER="127.0.0.1:$(free_port)"
"$HOISTD" --replica-id footprint --listen "$CONTROLLER" --http-listen "127.0.0.1:0" --database-url "$PG_URL" \
  >"$WORK/hoistd.log" 2>&1 &
HOISTD_PID=$!
PIDS+=("$HOISTD_PID")
"$AGENT" --controller "$CONTROLLER" --insecure --agent-id footprint-agent --state-dir "$WORK/agent" \
  --deployments footprint-none >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
PIDS+=("$AGENT_PID")
for _ in $(seq 100); do grep -q "session open" "$WORK/agent.log" && break; sleep 0.1; done
grep -q "session open" "$WORK/agent.log" || { echo "agent_footprint: the agent never connected" >&2; cat "$WORK/agent.log" >&2; exit 1; }
sleep 5  # settle: first inventory, first heartbeats

TICKS="$(getconf CLK_TCK)"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
a0="$(cpu_ticks "$AGENT_PID")"; h0="$(cpu_ticks "$HOISTD_PID")"
a_rss_max=0; h_rss_max=0
end=$((SECONDS + SECONDS_TO_SAMPLE))
while (( SECONDS < end )); do
  a="$(rss_kb "$AGENT_PID")"; h="$(rss_kb "$HOISTD_PID")"
  (( a > a_rss_max )) && a_rss_max=$a
  (( h > h_rss_max )) && h_rss_max=$h
  sleep 1
done
a1="$(cpu_ticks "$AGENT_PID")"; h1="$(cpu_ticks "$HOISTD_PID")"
if sed -n '/session open/,$p' "$WORK/agent.log" | grep -q "session with .* ended"; then
  echo "agent_footprint: note: the agent's session was interrupted during the run" >&2
fi
smaps_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/smaps_rollup"; }
a_pss="$(smaps_kb "$AGENT_PID" Pss)"
a_private="$(( $(smaps_kb "$AGENT_PID" Private_Clean) + $(smaps_kb "$AGENT_PID" Private_Dirty) ))"

awk -v rss="$a_rss_max" 'BEGIN {printf "agent_idle_rss_mb=%.1f\n", rss / 1024}'
awk -v d="$((a1 - a0))" -v t="$TICKS" -v s="$SECONDS_TO_SAMPLE" 'BEGIN {printf "agent_idle_cpu_pct=%.2f\n", 100 * d / t / s}'
awk -v kb="$a_pss" 'BEGIN {printf "agent_idle_pss_mb=%.1f\n", kb / 1024}'
awk -v kb="$a_private" 'BEGIN {printf "agent_idle_private_mb=%.1f\n", kb / 1024}'
awk -v rss="$h_rss_max" 'BEGIN {printf "hoistd_idle_rss_mb=%.1f\n", rss / 1024}'
awk -v d="$((h1 - h0))" -v t="$TICKS" -v s="$SECONDS_TO_SAMPLE" 'BEGIN {printf "hoistd_idle_cpu_pct=%.2f\n", 100 * d / t / s}'
echo "agent_footprint_seconds=$SECONDS_TO_SAMPLE"
