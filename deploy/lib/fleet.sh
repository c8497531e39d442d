# Sourced by deploy/demo.sh and tests/bench/*.sh, after deploy/lib/postgres.sh
# (for free_port): a local registry, hoistd replicas and agents on loopback,
# and FROM-scratch images of the test service and of the proxy pushed to that
# registry. The caller owns $WORK (logs and the registry's storage go there)
# and a PIDS array: every process started here is appended to it, and the
# caller's cleanup stops them by pid.
#
#   fleet_registry_start                          # sets REGISTRY (127.0.0.1:PORT)
#   fleet_testsvc_image TESTSVC TAG ROLE VERSION LABEL=VALUE [BASE [SRC=DEST ...]]
#   fleet_proxy_image TAG LABEL=VALUE
#   fleet_hoistd_start HOISTD REPLICA_ID DATABASE_URL   # sets HOISTD_ADDR
#   fleet_agent_start AGENT AGENT_ID CONTROLLERS LABELS [more agent flags]
#   fleet_wait_agents HOIST COUNT                 # needs HOIST_CONTROLLER etc. exported
#
# On separate hosts (deploy/lib/hosts.sh, its hosts.env sourced): set
# FLEET_NODE=<node> for a call and hoistd or the agent runs inside that
# node's network namespace, hoistd listening on the node's address and the
# agent on the node's own dockerd, reporting the node's address.

FLEET_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

fleet_registry_start() {
  REGISTRY="127.0.0.1:$(free_port)"
  cat >"$WORK/registry.yml" <<EOF
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $WORK/registry}}
http: {addr: $REGISTRY}
EOF
  /usr/bin/docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do
    curl -fs "http://$REGISTRY/v2/" >/dev/null && return 0
    sleep 0.1
  done
  echo "fleet: the registry at $REGISTRY did not answer within 10 s; see $WORK/registry.log" >&2
  return 1
}

# Builds the static test service into an image answering "hello from ROLE
# VERSION" on :8080, with a Docker health check (exec form: FROM scratch there
# is no shell), pushes it and removes the local tag so that whoever runs it
# pulls it. BASE (default scratch) is the image it sits on; each SRC=DEST
# copies a file of the caller's to DEST in the image. ENTRYPOINT is cleared so
# that a manifest's command (a migration's [/testsvc, job, ...]) replaces CMD
# whole, whatever BASE sets.
fleet_testsvc_image() {
  local testsvc="$1" tag="$2" role="$3" version="$4" label="$5" base="${6:-scratch}" dir copies="" f i=0
  shift $(($# < 6 ? $# : 6))
  dir="$(mktemp -d "$WORK/image.XXXXXX")"
  cp "$testsvc" "$dir/testsvc"
  for f in "$@"; do
    cp "${f%%=*}" "$dir/extra-$i"
    copies+="COPY extra-$i ${f#*=}"$'\n'
    i=$((i + 1))
  done
  cat >"$dir/Dockerfile" <<EOF
FROM $base
COPY testsvc /testsvc
$copies
ENV TESTSVC_VERSION=$version TESTSVC_ROLE=$role TESTSVC_PORT=8080
LABEL $label
EXPOSE 8080
HEALTHCHECK --interval=1s --timeout=2s --retries=3 CMD ["/testsvc", "probe", "http://127.0.0.1:8080/health"]
ENTRYPOINT []
CMD ["/testsvc", "serve"]
EOF
  docker build -q -t "$tag" "$dir" >/dev/null 2>"$dir/build.log" || { cat "$dir/build.log" >&2; return 1; }
  docker push -q "$tag" >/dev/null || return 1
  docker rmi "$tag" >/dev/null
  rm -rf "$dir"
}

# Hoist's proxy image (deploy/build-proxy-image.sh), pushed; the local tag is removed.
fleet_proxy_image() {
  local tag="$1" label="$2"
  bash "$FLEET_LIB_DIR/../build-proxy-image.sh" "$tag" "$label" >/dev/null || return 1
  docker push -q "$tag" >/dev/null || return 1
  docker rmi "$tag" >/dev/null
}

# The node's "<NODE>_<FIELD>" value from hosts.env (FIELD: ADDR, NETNS, DOCKER).
fleet_node() {
  local var
  var="NODE_$(echo "$1" | tr 'a-z-' 'A-Z_')_$2"
  echo "${!var:?fleet: node $1 has no $2 (is hosts.env sourced?)}"
}

fleet_hoistd_start() {
  local hoistd="$1" id="$2" db="$3"
  local -a wrap=()
  if [[ -n "${FLEET_NODE:-}" ]]; then
    HOISTD_ADDR="$(fleet_node "$FLEET_NODE" ADDR):7443"
    wrap=(nsenter "--net=$(fleet_node "$FLEET_NODE" NETNS)" --)
  else
    HOISTD_ADDR="127.0.0.1:$(free_port)"
  fi
  local -a tls=()
  [[ -n "${FLEET_TLS_DIR:-}" ]] && tls=(--tls-ca "$FLEET_TLS_DIR/ca.crt" --tls-cert "$FLEET_TLS_DIR/controller-$id.crt"
    --tls-key "$FLEET_TLS_DIR/controller-$id.key" --secrets-key-file "$FLEET_TLS_DIR/secrets.key")
  "${wrap[@]}" "$hoistd" --replica-id "$id" --listen "$HOISTD_ADDR" --http-listen "127.0.0.1:$(free_port)" \
    --database-url "$db" "${tls[@]}" >"$WORK/$id.log" 2>&1 &
  PIDS+=($!)
}

fleet_agent_start() {
  local agent="$1" id="$2" controllers="$3" labels="$4"
  shift 4
  local -a wrap=()
  if [[ -n "${FLEET_NODE:-}" ]]; then
    local sock
    sock="$(fleet_node "$FLEET_NODE" DOCKER)"
    set -- --docker-socket "${sock#unix://}" --address "$(fleet_node "$FLEET_NODE" ADDR)" "$@"
    wrap=(nsenter "--net=$(fleet_node "$FLEET_NODE" NETNS)" --)
  fi
  mkdir -p "$WORK/$id"
  local -a tls=(--insecure)
  [[ -n "${FLEET_TLS_DIR:-}" ]] && tls=(--tls-ca "$FLEET_TLS_DIR/ca.crt" --tls-cert "$FLEET_TLS_DIR/agent-$id.crt"
    --tls-key "$FLEET_TLS_DIR/agent-$id.key")
  "${wrap[@]}" "$agent" --controller "$controllers" "${tls[@]}" --agent-id "$id" --labels "$labels" \
    --host-name "$id.${FLEET_DOMAIN:-local}" --state-dir "$WORK/$id" "$@" >"$WORK/$id.log" 2>&1 &
  PIDS+=($!)
}

# Waits up to 30 s until `hoist agents` shows COUNT connected agents.
fleet_wait_agents() {
  local hoist="$1" count="$2"
  for _ in $(seq 150); do
    [[ "$("$hoist" agents --output json 2>/dev/null | grep -o '"connected": *true' | wc -l)" == "$count" ]] && return 0
    sleep 0.2
  done
  echo "fleet: $count agents did not connect within 30 s; see $WORK/*.log" >&2
  return 1
}
