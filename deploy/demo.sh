#!/usr/bin/env bash
# The main job in one command: Hoist upgrades a multi-service app across three
# Docker hosts. It installs what is missing, builds, and starts three hosts
# that are really separate (a network namespace, an address and a dockerd
# each, by deploy/lib/hosts.sh; run as root) or, where that cannot be done,
# three agents on this machine's Docker; then a throw-away Postgres, a
# registry, two hoistd replicas (a leader and a standby), builds the demo
# app's images at 1.0.0 and 1.1.0, deploys 1.0.0, upgrades to 1.1.0 with live
# progress, prints the version matrix, and removes everything it started.
#
#   bash deploy/demo.sh                  # run the demo and clean up
#   bash deploy/demo.sh --keep           # leave it running and print how to use it
#   bash deploy/demo.sh --shared-docker  # the three agents on this machine's Docker
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
BUILD_DIR="${BUILD_DIR:-build}"
KEEP=0
SHARED=0
for arg in "$@"; do
  case "$arg" in
    --keep) KEEP=1 ;;
    --shared-docker) SHARED=1 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "installing what is missing and building"
bash deploy/install-deps.sh
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j "${JOBS:-2}" --target hoistd hoist-agent hoist testsvc
HOISTD="$ROOT/$BUILD_DIR/controller/hoistd"
AGENT="$ROOT/$BUILD_DIR/agent/hoist-agent"
HOIST="$ROOT/$BUILD_DIR/controller/cli/hoist"
TESTSVC="$ROOT/$BUILD_DIR/tests/testsvc"

WORK="$(mktemp -d /tmp/hoist-demo.XXXXXX)"
chmod 755 "$WORK"
PIDS=()
source deploy/lib/postgres.sh
source deploy/lib/fleet.sh

HOSTS_DIR=""
cleanup() {
  local rc=$?
  if [[ $KEEP == 1 && $rc == 0 ]]; then return; fi
  say "cleaning up"
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ $rc != 0 ]]; then
    echo "demo: failed (exit $rc); the last lines of each log:" >&2
    for log in "$WORK"/*.log "$WORK"/pgrun/*.log; do echo "--- $log" >&2; tail -n 15 "$log" >&2; done
  fi
  pg_throwaway_stop
  if [[ -n "$HOSTS_DIR" ]]; then
    # The hosts' daemons, containers, images, namespaces and bridge.
    bash deploy/lib/hosts.sh down "$HOSTS_DIR" || true
    rm -rf "$WORK"
    return
  fi
  docker ps -aq --filter label=hoist.deployment=demo | xargs -r docker rm -f >/dev/null 2>&1 || true
  docker network ls -q --filter label=hoist.deployment=demo | xargs -r docker network rm >/dev/null 2>&1 || true
  docker images -q --filter label=hoist.demo="$WORK" | sort -u | xargs -r docker rmi -f >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# Where the demo's parts run: separate hosts when this machine allows it.
DOCKER_AT_DB=(docker)   # the Docker that runs the app's database
PROXY_IP=127.0.0.1       # where the proxy publishes its port
if [[ $SHARED == 1 ]]; then
  echo "demo: --shared-docker: the three hosts share this machine's Docker"
elif why="$(bash deploy/lib/hosts.sh available 2>&1)"; then
  say "starting three Docker hosts, a registry node and nodes for Postgres and the controllers"
  HOSTS_DIR="$(mktemp -d /tmp/hoist-hosts.XXXXXX)"
  started=$(date +%s%N)
  bash deploy/lib/hosts.sh up "$HOSTS_DIR" --owner $$ --registry registry \
    registry:docker db ctl-1 ctl-2 host-1:docker host-2:docker host-3:docker
  source "$HOSTS_DIR/hosts.env"
  echo "  up in $(( ($(date +%s%N) - started) / 1000000 )) ms: each a network namespace with its own address" \
    "on a private bridge; the hosts and the registry node run a dockerd each"
  awk -F'\t' '{ printf "  %-9s %-15s %s\n", $1, $2, ($4 == "-" ? "" : "dockerd, engine " substr($5, 1, 14) "...") }' \
    "$HOSTS_DIR/nodes.tsv"
  DOCKER_AT_DB=(docker -H "$NODE_HOST_1_DOCKER")
  PROXY_IP="$NODE_HOST_3_ADDR"
else
  echo "demo: separate hosts unavailable (${why:-no reason given}); the three hosts share this machine's Docker"
fi

say "starting a throw-away Postgres"
if [[ -n "$HOSTS_DIR" ]]; then
  pg_throwaway_start "$WORK" "$NODE_DB_NETNS" "$NODE_DB_ADDR"
else
  pg_throwaway_start "$WORK"
fi
DB="$PG_URL"

if [[ -n "$HOSTS_DIR" ]]; then
  REGISTRY="$HOSTS_REGISTRY"
  echo "the registry runs on its own node at $REGISTRY; images are built there and each host pulls its own"
  export DOCKER_HOST="$NODE_REGISTRY_DOCKER"
else
  say "starting a local registry"
  fleet_registry_start
fi

say "building the demo app's images (FROM scratch) at 1.0.0 and 1.1.0"
echo "  building the database image (FROM scratch, this host's Postgres 15)"
bash deploy/build-postgres-image.sh "$REGISTRY/demo/postgres:15" demo "hoist.demo=$WORK" >/dev/null
docker push -q "$REGISTRY/demo/postgres:15" >/dev/null
echo "  $REGISTRY/demo/postgres:15"
# Each api release carries its migrations and sits on the database image for
# psql: 1.0.0 creates the orders table, 1.1.0 adds a column (expand only).
cat >"$WORK/migrations-1.0.0.sql" <<'SQL'
CREATE TABLE IF NOT EXISTS orders (id serial PRIMARY KEY, item text NOT NULL);
INSERT INTO orders (item) SELECT 'first order' WHERE NOT EXISTS (SELECT 1 FROM orders);
SQL
cat >"$WORK/migrations-1.1.0.sql" <<'SQL'
ALTER TABLE orders ADD COLUMN IF NOT EXISTS shipped boolean NOT NULL DEFAULT false;
SQL
for version in 1.0.0 1.1.0; do
  for service in api worker scheduler web; do
    extra=()
    [[ $service == api ]] && extra=("$REGISTRY/demo/postgres:15" "$WORK/migrations-$version.sql=/migrations.sql")
    fleet_testsvc_image "$TESTSVC" "$REGISTRY/demo/$service:$version" "$service" "$version" "hoist.demo=$WORK" \
      "${extra[@]}"
  done
  echo "  $REGISTRY/demo/{api,worker,scheduler,web}:$version"
done
docker rmi "$REGISTRY/demo/postgres:15" >/dev/null

echo "  building the proxy image (FROM scratch, this host's HAProxy)"
fleet_proxy_image "$REGISTRY/demo/haproxy:2.6" "hoist.demo=$WORK"
echo "  $REGISTRY/demo/haproxy:2.6"
unset DOCKER_HOST

ctl=(); hosts=()
[[ -n "$HOSTS_DIR" ]] && ctl=(ctl-1 ctl-2) && hosts=(host-1 host-2 host-3)
say "making the demo's fleet CA (throw-away, in $WORK/ca): every connection is mTLS"
CA="$WORK/ca"
"$HOIST" ca init --dir "$CA" >/dev/null
for i in 1 2; do
  san=()
  [[ -n "$HOSTS_DIR" ]] && san=(--san "$(fleet_node "ctl-$i" ADDR)")
  "$HOIST" ca issue controller "hoistd-$i" --dir "$CA" "${san[@]}" | head -1
done
for i in 1 2 3; do "$HOIST" ca issue agent "host-$i" --dir "$CA" | head -1; done
"$HOIST" ca issue operator demo-admin --level admin --dir "$CA" | head -1
# The key hoistd seals env values with in Postgres (every replica reads the same file).
(umask 077 && openssl rand -hex 32 >"$CA/secrets.key")
echo "Made the secrets key $CA/secrets.key (mode 0600): env values are sealed at rest"
export FLEET_TLS_DIR="$CA"

say "starting two hoistd replicas and three agents"
FLEET_NODE="${ctl[0]:-}" fleet_hoistd_start "$HOISTD" hoistd-1 "$DB"
C1="$HOISTD_ADDR"
sleep 1  # the first replica applies the schema and takes the lead
FLEET_NODE="${ctl[1]:-}" fleet_hoistd_start "$HOISTD" hoistd-2 "$DB"
C2="$HOISTD_ADDR"
FLEET_DOMAIN=demo
for i in 1 2 3; do
  tier=app; [[ $i == 3 ]] && tier=edge
  FLEET_NODE="${hosts[$((i - 1))]:-}" fleet_agent_start "$AGENT" "host-$i" "$C2,$C1" "tier=$tier"
done
export HOIST_CONTROLLER="$C1,$C2" HOIST_DEPLOYMENT=demo HOIST_TLS_CA="$CA/ca.crt" \
  HOIST_TLS_CERT="$CA/operator-demo-admin.crt" HOIST_TLS_KEY="$CA/operator-demo-admin.key"
fleet_wait_agents "$HOIST" 3
"$HOIST" agents

say "applying the stack and recording releases 1.0.0 and 1.1.0"
PROXY_PORT="$(free_port)"
sed "s|REGISTRY|$REGISTRY|g; s|PROXY_IP|$PROXY_IP|g; s|PROXY_PORT|$PROXY_PORT|g" deploy/demo/stack.yaml >"$WORK/stack.yaml"
"$HOIST" apply "$WORK/stack.yaml"
for version in 1.0.0 1.1.0; do
  sed "s|REGISTRY|$REGISTRY|g; s|VERSION|$version|g" deploy/demo/release.yaml >"$WORK/release-$version.yaml"
  "$HOIST" release create "$WORK/release-$version.yaml"
done

say "deploying 1.0.0"
"$HOIST" upgrade 1.0.0 --yes
"$HOIST" matrix

echo "through the proxy: $(curl -fsS "http://$PROXY_IP:$PROXY_PORT/")"

say "the plan for 1.1.0"
"$HOIST" plan 1.1.0

say "upgrading to 1.1.0"
"$HOIST" upgrade 1.1.0 --yes

echo "through the proxy: $(curl -fsS "http://$PROXY_IP:$PROXY_PORT/")"

db="$("${DOCKER_AT_DB[@]}" ps -q --filter label=hoist.deployment=demo --filter label=hoist.service=db | head -1)"
echo "the database after 1.1.0's migration: $("${DOCKER_AT_DB[@]}" exec "$db" psql -At -c "SELECT 'orders(' ||
  string_agg(column_name, ', ' ORDER BY ordinal_position) || ')' FROM information_schema.columns
  WHERE table_name = 'orders'")"

say "the version matrix after the upgrade"
"$HOIST" matrix
if "$HOIST" matrix --output json | grep -q '"skew": *true'; then
  echo "demo: the matrix still shows skew after the upgrade" >&2
  exit 1
fi

if [[ $KEEP == 1 ]]; then
  say "left running; try:"
  echo "  export HOIST_CONTROLLER=$C1,$C2 HOIST_DEPLOYMENT=demo HOIST_TLS_CA=$CA/ca.crt \\"
  echo "    HOIST_TLS_CERT=$CA/operator-demo-admin.crt HOIST_TLS_KEY=$CA/operator-demo-admin.key"
  echo "  $HOIST status; $HOIST matrix; $HOIST audit; $HOIST rollback"
  echo "  logs: $WORK; stop: kill ${PIDS[*]}"
  [[ -n "$HOSTS_DIR" ]] && echo "  then: bash deploy/lib/hosts.sh down $HOSTS_DIR"
fi
say "done: demo upgraded from 1.0.0 to 1.1.0"
