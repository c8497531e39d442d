#!/usr/bin/env bash
# Requests served and failed while a web service moves to a new version behind
# a reverse proxy, at a fixed 250 requests/s (RATE), four ways in one run:
#
#   compose          the seeds' way: docker-compose (v1, Debian's) `up -d` after the
#                    image tag changed; it recreates the one web container (stop,
#                    then start) behind an HAProxy service of the same project.
#   swarm            the peer: `docker service update --image ... --update-order
#                    start-first` of two replicas with a 200 ms health check.
#   hoist_rolling    `hoist upgrade 1.1.0`: two web replicas on two agents behind
#                    Hoist's HAProxy on a third, rolled one at a time. The three
#                    hosts are separate (deploy/lib/hosts.sh: each its own
#                    dockerd in its own network namespace, pulling from a
#                    registry node; hoistd and its Postgres in nodes of their
#                    own), so the proxy reaches web at each host's address; where
#                    that cannot be done (not root, no namespaces) they share
#                    this machine's Docker. The run prints which:
#                    hoist_hosts=separate|shared.
#   hoist_bluegreen  `hoist upgrade 1.2.0 --strategy blue-green` then
#                    `hoist cutover --back`: the switch and the switch back. While
#                    hoistd refuses blue-green, it prints hoist_bluegreen_error=.
#
# The peer setup, and why: Swarm is initialised on this node with
# --advertise-addr 127.0.0.1 when the node is in no swarm (and left again at
# the end). Its routing mesh does not work on this machine: the kernel has no
# IPVS (/proc/net/ip_vs is missing), so a published ingress port refuses
# connections and a service VIP has no route, while task-to-task traffic on an
# overlay network works. Host-mode publishing cannot hold two replicas (or a
# start-first update) on one node and one port.
# So the service runs with --endpoint-mode dnsrr on an attachable overlay
# network and the same HAProxy binary Hoist uses (the FROM-scratch image of
# deploy/build-proxy-image.sh) sits in front as a plain container published on
# 127.0.0.1, finding the tasks through Docker's DNS (tasks.SERVICE, re-resolved
# every 100 ms) with its own health checks (every 200 ms, down after two
# failures, up after one success). compose uses the same HAProxy
# and the same resolver and check settings on the project's network; both
# peers get the retry settings of Hoist's generated configuration. All three
# thus measure the orchestration, not the proxy.
#
# Every image is built FROM scratch from this build's static test service and
# HAProxy and pushed to a local registry; nothing is pulled from the internet.
# The load (build/tests/hoist-loadgen) starts as the change command starts and
# stops once the command has returned and the proxy answers the new version;
# a failure is any non-2xx answer or connection error. Per row it prints
#   NAME_served, NAME_failed, NAME_p50_ms, NAME_p99_ms, NAME_max_ms, NAME_load_s,
#   NAME_rate, NAME_wall_s
# (or NAME_error= when the row could not run), then ratios to the peers in the
# same run (the machine is shared and noisy): hoist_rolling_p99_vs_swarm,
# hoist_rolling_wall_vs_swarm, ..._vs_compose, and failed ratios where the
# peer failed some.
#
#   bash tests/bench/zero_downtime.sh      # BUILD_DIR (default ./build), RATE (250)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
BUILD_DIR="${BUILD_DIR:-build}"
[[ $BUILD_DIR == /* ]] || BUILD_DIR="$ROOT/$BUILD_DIR"
RATE="${RATE:-250}"
HOISTD="$BUILD_DIR/controller/hoistd"
AGENT="$BUILD_DIR/agent/hoist-agent"
HOIST="$BUILD_DIR/controller/cli/hoist"
TESTSVC="$BUILD_DIR/tests/testsvc"
LOADGEN="$BUILD_DIR/tests/hoist-loadgen"
for b in "$HOISTD" "$AGENT" "$HOIST" "$TESTSVC" "$LOADGEN"; do
  [[ -x "$b" ]] || {
    echo "zero_downtime: $b is not built; run cmake --build $BUILD_DIR --target hoistd hoist-agent hoist testsvc hoist-loadgen" >&2
    exit 2
  }
done
command -v docker-compose >/dev/null || { echo "zero_downtime: docker-compose is missing (apt-get install docker-compose)" >&2; exit 2; }

WORK="$(mktemp -d /tmp/hoist-zdbench.XXXXXX)"
chmod 755 "$WORK"
RUN="zdbench$$"  # names and labels of everything this run starts
LABEL="hoist.zdbench=$RUN"
DEPLOYMENT="$RUN"
PIDS=()
LOAD_PID=""
SWARM_INITIALISED=0
HOSTS_DIR=""
GWBRIDGE_EXISTED=1
source deploy/lib/postgres.sh
source deploy/lib/fleet.sh

log() { echo "zero_downtime: $*" >&2; }

cleanup() {
  local rc=$?
  set +e
  [[ -n "$LOAD_PID" ]] && kill "$LOAD_PID" 2>/dev/null && wait "$LOAD_PID" 2>/dev/null
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  if [[ -f "$WORK/compose/docker-compose.yml" ]]; then
    (cd "$WORK/compose" && WEB_VERSION=1.0.0 docker-compose -p "$RUN" down -t 1 >/dev/null 2>&1)
  fi
  docker service ls -q --filter "label=$LABEL" 2>/dev/null | xargs -r docker service rm >/dev/null 2>&1
  for filter in "label=$LABEL" "label=hoist.deployment=$DEPLOYMENT"; do
    docker ps -aq --filter "$filter" | xargs -r docker rm -f >/dev/null 2>&1
  done
  # Swarm removes a service's tasks asynchronously; the overlay network goes once they are gone.
  for _ in $(seq 50); do
    [[ -z "$(docker ps -aq --filter "label=com.docker.swarm.service.name=$RUN-web")" ]] && break
    sleep 0.2
  done
  for filter in "label=$LABEL" "label=hoist.deployment=$DEPLOYMENT"; do
    docker network ls -q --filter "$filter" | xargs -r docker network rm >/dev/null 2>&1
  done
  docker network inspect "${RUN}_default" >/dev/null 2>&1 && docker network rm "${RUN}_default" >/dev/null 2>&1
  if [[ $SWARM_INITIALISED == 1 ]]; then
    docker swarm leave --force >/dev/null 2>&1
    [[ $GWBRIDGE_EXISTED == 0 ]] && docker network rm docker_gwbridge >/dev/null 2>&1
  fi
  docker images -q --filter "label=$LABEL" | sort -u | xargs -r docker rmi -f >/dev/null 2>&1
  pg_throwaway_stop
  [[ -n "$HOSTS_DIR" ]] && bash deploy/lib/hosts.sh down "$HOSTS_DIR"
  if [[ $rc != 0 ]]; then
    log "failed (exit $rc); the last lines of each log:"
    for f in "$WORK"/*.log "$WORK"/pgrun/*.log; do [[ -f $f ]] && { echo "--- $f" >&2; tail -n 15 "$f" >&2; }; done
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }

# Where a proxy publishes its port: 127.0.0.1, or for the Hoist rows on
# separate hosts the proxy host's address.
PROXY_HOST=127.0.0.1

# The body the proxy on PORT answers for GET /, or nothing.
answer() { curl -fsS -m 2 "http://$PROXY_HOST:$1/" 2>/dev/null || true; }

# Waits up to SECONDS (default 60) until the proxy on PORT answers BODY.
wait_for_body() {
  local port="$1" body="$2" deadline=$((SECONDS + ${3:-60}))
  while ((SECONDS < deadline)); do
    [[ "$(answer "$port")" == "$body" ]] && return 0
    sleep 0.05
  done
  log "the proxy on $PROXY_HOST:$port did not answer \"$body\" within ${3:-60} s; last: \"$(answer "$port")\""
  return 1
}

# The load over one change window: load_start NAME PORT ... load_stop NAME T0.
load_start() {
  "$LOADGEN" --host "$PROXY_HOST" --port "$2" --rate "$RATE" --connections 8 --name "$1" >"$WORK/$1.load" 2>"$WORK/$1.load.log" &
  LOAD_PID=$!
}
load_stop() {
  local name="$1" t0="$2" t1
  t1="$(now)"
  kill -TERM "$LOAD_PID"
  wait "$LOAD_PID"
  LOAD_PID=""
  cat "$WORK/$name.load"
  awk -v a="$t0" -v b="$t1" -v n="$name" 'BEGIN { printf "%s_wall_s=%.2f\n", n, b - a }' | tee -a "$WORK/$name.load"
  grep -m 5 'failure:' "$WORK/$name.load.log" | sed 's/^/  /' >&2 || true
}
load_discard() {
  kill -TERM "$LOAD_PID" 2>/dev/null
  wait "$LOAD_PID" 2>/dev/null || true
  LOAD_PID=""
  rm -f "$WORK/$1.load"
}

# What the peer's HAProxy said during the row, on stderr, when requests failed:
# servers going down or up other than by DNS answers.
proxy_events() {
  local name="$1" container="$2"
  [[ "$(grep -m1 "^${name}_failed=" "$WORK/$name.load" | cut -d= -f2)" == 0 ]] && return 0
  docker logs "$container" 2>&1 | grep -v 'changed its IP\|administratively READY\|resolves again\|No IP for server' |
    head -n 10 | sed "s/^/  $name proxy: /" >&2 || true
}

# One line of an error message, for NAME_error=.
one_line() { tr '\n' ' ' <"$1" | sed 's/  */ /g; s/ $//' | cut -c1-300; }

# The HAProxy configuration the peers share: Hoist's defaults and retries
# (agent/haproxy.cc), plus what Hoist does itself and a plain HAProxy must be
# told: find the servers through Docker's DNS and health-check them.
peer_haproxy_cfg() {
  local name="$1"
  cat <<EOF
global
    maxconn 4096
    log stdout format raw local0 notice
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 10s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout
resolvers docker
    nameserver dns 127.0.0.11:53
    resolve_retries 3
    timeout resolve 100ms
    timeout retry 100ms
    hold valid 100ms
    hold other 100ms
    hold obsolete 0s
frontend fe_web
    bind :8080
    default_backend be_web
backend be_web
    balance roundrobin
    option httpchk GET /health
    server-template web 4 $name:8080 check inter 200ms fall 2 rise 1 resolvers docker init-addr none
EOF
}

log "starting a throw-away Postgres and a local registry; building the images"
pg_throwaway_start "$WORK"
fleet_registry_start
for version in 1.0.0 1.1.0 1.2.0; do
  fleet_testsvc_image "$TESTSVC" "$REGISTRY/zdbench/web:$version" web "$version" "$LABEL"
done
PROXY_IMAGE="$REGISTRY/zdbench/haproxy:2.6"
fleet_proxy_image "$PROXY_IMAGE" "$LABEL"

declare -A RESULT
record() {  # reads NAME.load into RESULT[NAME_key]
  local line
  while IFS= read -r line; do RESULT["${line%%=*}"]="${line#*=}"; done <"$WORK/$1.load"
}

# ---- compose: docker-compose up -d recreating web -------------------------
row_compose() {
  local port t0
  port="$(free_port)"
  mkdir -p "$WORK/compose"
  peer_haproxy_cfg web >"$WORK/compose/haproxy.cfg"
  cat >"$WORK/compose/docker-compose.yml" <<EOF
version: "3.7"
services:
  web:
    image: $REGISTRY/zdbench/web:\${WEB_VERSION}
    labels: {hoist.zdbench: "$RUN"}
    stop_grace_period: 5s
    healthcheck: {interval: 200ms, timeout: 1s, retries: 3}
  proxy:
    image: $PROXY_IMAGE
    labels: {hoist.zdbench: "$RUN"}
    ports: ["127.0.0.1:$port:8080"]
    volumes: ["./haproxy.cfg:/etc/haproxy/haproxy.cfg:ro"]
EOF
  cd "$WORK/compose"
  WEB_VERSION=1.0.0 docker-compose -p "$RUN" up -d >"$WORK/compose.log" 2>&1 || return 1
  wait_for_body "$port" "hello from web 1.0.0" || return 1
  # As the seeds do: pull first, then up -d; the window is up -d.
  WEB_VERSION=1.1.0 docker-compose -p "$RUN" pull web >>"$WORK/compose.log" 2>&1 || return 1
  load_start compose "$port"
  t0="$(now)"
  WEB_VERSION=1.1.0 docker-compose -p "$RUN" up -d >>"$WORK/compose.log" 2>&1 || return 1
  wait_for_body "$port" "hello from web 1.1.0" || return 1
  load_stop compose "$t0"
  proxy_events compose "${RUN}_proxy_1"
  cd "$ROOT"
  WEB_VERSION=1.1.0 docker-compose -f "$WORK/compose/docker-compose.yml" -p "$RUN" down -t 1 >>"$WORK/compose.log" 2>&1
}

# ---- swarm: docker service update --update-order start-first ---------------
row_swarm() {
  local port t0 state
  state="$(docker info --format '{{.Swarm.LocalNodeState}}')"
  if [[ $state == inactive ]]; then
    docker network inspect docker_gwbridge >/dev/null 2>&1 || GWBRIDGE_EXISTED=0
    docker swarm init --advertise-addr 127.0.0.1 >"$WORK/swarm.log" 2>&1 || return 1
    SWARM_INITIALISED=1
  elif [[ $state != active || "$(docker info --format '{{.Swarm.ControlAvailable}}')" != true ]]; then
    echo "this node is in swarm state \"$state\" and not a manager; leave that swarm or run elsewhere" >"$WORK/swarm.err"
    return 1
  fi
  docker network create -d overlay --attachable --label "$LABEL" "$RUN-swarm" >>"$WORK/swarm.log" 2>&1 || return 1
  docker service create -q --name "$RUN-web" --label "$LABEL" --container-label "$LABEL" --network "$RUN-swarm" \
    --endpoint-mode dnsrr --replicas 2 --health-interval 200ms --health-timeout 1s --health-retries 3 \
    --update-order start-first --update-parallelism 1 --stop-grace-period 5s \
    "$REGISTRY/zdbench/web:1.0.0" >>"$WORK/swarm.log" 2>&1 || return 1
  port="$(free_port)"
  peer_haproxy_cfg "tasks.$RUN-web" >"$WORK/swarm-haproxy.cfg"
  docker run -d --name "$RUN-swarm-proxy" --label "$LABEL" --network "$RUN-swarm" -p "127.0.0.1:$port:8080" \
    -v "$WORK/swarm-haproxy.cfg:/etc/haproxy/haproxy.cfg:ro" "$PROXY_IMAGE" >>"$WORK/swarm.log" 2>&1 || return 1
  wait_for_body "$port" "hello from web 1.0.0" || return 1
  load_start swarm "$port"
  t0="$(now)"
  docker service update -q --image "$REGISTRY/zdbench/web:1.1.0" "$RUN-web" >>"$WORK/swarm.log" 2>&1 || return 1
  wait_for_body "$port" "hello from web 1.1.0" || return 1
  load_stop swarm "$t0"
  proxy_events swarm "$RUN-swarm-proxy"
  docker service rm "$RUN-web" >/dev/null
  docker rm -f "$RUN-swarm-proxy" >/dev/null
}

# ---- hoist: rolling, then blue-green and back -------------------------------
HOIST_PORT=""
hoist_fleet() {
  local nodes=() hosts=(host-1 host-2 host-3) db_url="$PG_URL" registry="$REGISTRY" why
  if why="$(bash deploy/lib/hosts.sh available 2>&1)"; then
    HOSTS_DIR="$(mktemp -d /tmp/hoist-hosts.XXXXXX)"
    bash deploy/lib/hosts.sh up "$HOSTS_DIR" --owner $$ --registry registry \
      registry:docker db ctl host-1:docker host-2:docker host-3:docker >>"$WORK/hoist.log" 2>&1 || return 1
    source "$HOSTS_DIR/hosts.env"
    echo "hoist_hosts=separate"
    log "hoist rows on separate hosts: $(awk '$5 != "-" {printf "%s %s (engine %.12s) ", $1, $2, $5}' "$HOSTS_DIR/nodes.tsv")"
    # Hoist's hosts pull from the registry node: the web images again, built there.
    registry="$HOSTS_REGISTRY"
    for version in 1.0.0 1.1.0 1.2.0; do
      DOCKER_HOST="$NODE_REGISTRY_DOCKER" fleet_testsvc_image "$TESTSVC" "$registry/zdbench/web:$version" web \
        "$version" "$LABEL" >>"$WORK/hoist.log" 2>&1 || return 1
    done
    PROXY_IMAGE_HOIST="$registry/zdbench/haproxy:2.6"
    DOCKER_HOST="$NODE_REGISTRY_DOCKER" fleet_proxy_image "$PROXY_IMAGE_HOIST" "$LABEL" >>"$WORK/hoist.log" 2>&1 || return 1
    # hoistd's Postgres in a node of its own (the one on loopback serves nobody there).
    local pgdir="$WORK/pg-hosts"
    mkdir -p "$pgdir"
    pg_throwaway_stop
    pg_throwaway_start "$pgdir" "$NODE_DB_NETNS" "$NODE_DB_ADDR" >>"$WORK/hoist.log" 2>&1 || return 1
    db_url="$PG_URL"
    PROXY_HOST="$NODE_HOST_3_ADDR"
    nodes=(ctl)
  else
    echo "hoist_hosts=shared"
    log "separate hosts unavailable (${why:-no reason given}); the Hoist rows share this machine's Docker"
    PROXY_IMAGE_HOIST="$PROXY_IMAGE"
    hosts=("" "" "")
  fi
  FLEET_NODE="${nodes[0]:-}" fleet_hoistd_start "$HOISTD" hoistd-1 "$db_url"
  export HOIST_CONTROLLER="$HOISTD_ADDR" HOIST_INSECURE=true HOIST_DEPLOYMENT="$DEPLOYMENT"
  FLEET_DOMAIN=zdbench
  for i in 1 2 3; do
    local tier=app
    [[ $i == 3 ]] && tier=edge
    FLEET_NODE="${hosts[$((i - 1))]}" fleet_agent_start "$AGENT" "host-$i" "$HOISTD_ADDR" "tier=$tier" \
      --deployments "$DEPLOYMENT"
  done
  fleet_wait_agents "$HOIST" 3 || return 1
  HOIST_PORT="$(free_port)"
  cat >"$WORK/stack.yaml" <<EOF
deployment: $DEPLOYMENT
network: $DEPLOYMENT
hosts:
  - id: host-1
    labels: {tier: app}
  - id: host-2
    labels: {tier: app}
  - id: host-3
    labels: {tier: edge}
services:
  web:
    role: web
    repository: $registry/zdbench/web
    replicas: 2
    placement:
      labels: {tier: app}
      distinct_hosts: true
    ports:
      - container: 8080
    health:
      http: {path: /health, port: 8080, check_version: true}
      interval: 200ms
      deadline: 60s
    stop_timeout: 5s
  proxy:
    role: proxy
    image: $PROXY_IMAGE_HOIST
    placement:
      hosts: [host-3]
    ports:
      - "$PROXY_HOST:$HOIST_PORT:8080"
    routes:
      - {name: web, service: web, port: 8080, listen: 8080}
    drain_timeout: 5s
    health:
      tcp: {port: 8080}
      interval: 200ms
      deadline: 30s
    stop_timeout: 5s
EOF
  "$HOIST" apply "$WORK/stack.yaml" >>"$WORK/hoist.log" 2>&1 || return 1
  for version in 1.0.0 1.1.0 1.2.0; do
    printf 'deployment: %s\nversion: %s\nimages:\n  web: %s/zdbench/web:%s\n' \
      "$DEPLOYMENT" "$version" "$registry" "$version" >"$WORK/release-$version.yaml"
    "$HOIST" release create "$WORK/release-$version.yaml" >>"$WORK/hoist.log" 2>&1 || return 1
  done
  "$HOIST" upgrade 1.0.0 --yes >>"$WORK/hoist.log" 2>&1 || return 1
  wait_for_body "$HOIST_PORT" "hello from web 1.0.0"
}

row_hoist_rolling() {
  local t0
  load_start hoist_rolling "$HOIST_PORT"
  t0="$(now)"
  "$HOIST" upgrade 1.1.0 --yes >>"$WORK/hoist.log" 2>"$WORK/hoist_rolling.err" || return 1
  wait_for_body "$HOIST_PORT" "hello from web 1.1.0" || return 1
  load_stop hoist_rolling "$t0"
}

row_hoist_bluegreen() {
  local t0 t_back
  load_start hoist_bluegreen "$HOIST_PORT"
  t0="$(now)"
  "$HOIST" upgrade 1.2.0 --strategy blue-green --grace-period 10m --yes \
    >>"$WORK/hoist.log" 2>"$WORK/hoist_bluegreen.err" || return 1
  wait_for_body "$HOIST_PORT" "hello from web 1.2.0" || return 1
  t_back="$(now)"
  "$HOIST" cutover --back -d "$DEPLOYMENT" >>"$WORK/hoist.log" 2>"$WORK/hoist_bluegreen.err" || return 1
  wait_for_body "$HOIST_PORT" "hello from web 1.1.0" || return 1
  awk -v a="$t_back" -v b="$(now)" 'BEGIN { printf "hoist_bluegreen_back_s=%.2f\n", b - a }' >"$WORK/back.line"
  load_stop hoist_bluegreen "$t0"
  cat "$WORK/back.line" | tee -a "$WORK/hoist_bluegreen.load"
}

# Runs row NAME; on failure prints NAME_error= with the row's own message (or
# the last lines of its log) and goes on with the next row.
run_row() {
  local name="$1" fn="$2"
  rm -f "$WORK/$name.err"
  log "measuring $name"
  if "$fn"; then
    record "$name"
    return 0
  fi
  cd "$ROOT"
  [[ -n "$LOAD_PID" ]] && load_discard "$name"
  local msg=""
  [[ -s "$WORK/$name.err" ]] && msg="$(one_line "$WORK/$name.err")"
  [[ -z "$msg" && -f "$WORK/$name.log" ]] && msg="$(tail -n 3 "$WORK/$name.log" | tr '\n' ' ' | cut -c1-300)"
  echo "${name}_error=${msg:-failed; see the logs}"
  return 1
}

ROWS="${ROWS:-compose swarm hoist}"
[[ " $ROWS " == *" compose "* ]] && { run_row compose row_compose || true; }
[[ " $ROWS " == *" swarm "* ]] && { run_row swarm row_swarm || true; }
if [[ " $ROWS " == *" hoist "* ]]; then
  log "starting hoistd and three agents; deploying 1.0.0"
  if hoist_fleet; then
    run_row hoist_rolling row_hoist_rolling && run_row hoist_bluegreen row_hoist_bluegreen || true
  else
    for name in hoist_rolling hoist_bluegreen; do echo "${name}_error=hoistd and the agents did not start or deploy 1.0.0"; done
    tail -n 20 "$WORK"/hoist.log "$WORK"/hoistd-1.log "$WORK"/host-*.log >&2 2>/dev/null || true
  fi
fi
# Keeps the logs of the run (the work directory is removed at exit).
[[ -n "${KEEP_LOGS:-}" ]] && cp -r "$WORK" "$KEEP_LOGS"

# Ratios to the peers measured above (n/a when a side is missing or the peer's figure is 0).
ratio() {
  local a="${RESULT[$1]:-}" b="${RESULT[$2]:-}"
  awk -v a="$a" -v b="$b" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "n/a"; else printf "%.2f\n", a / b }'
}
for name in hoist_rolling hoist_bluegreen; do
  [[ -n "${RESULT[${name}_served]:-}" ]] || continue
  for peer in swarm compose; do
    [[ -n "${RESULT[${peer}_served]:-}" ]] || continue
    for key in p99_ms wall_s failed; do
      r="$(ratio "${name}_$key" "${peer}_$key")"
      [[ $key == failed && $r == n/a ]] && continue
      echo "${name}_${key%_*}_vs_${peer}=$r"
    done
  done
done
echo "zero_downtime_rate=$RATE"
