#!/usr/bin/env bash
# Separate test hosts on one machine: each node is a network namespace with its
# own address on a private bridge this script creates (a veth per node), and a
# node marked `:docker` runs its own dockerd inside it (its own data root, exec
# root, socket and pidfile; the machine daemon's storage driver; the fleet's
# registry allowed as insecure). This is the one harness for separate hosts:
# the C++ e2e fixture (tests/fixtures/test_hosts) and the shell scripts
# (deploy/demo.sh, tests/bench) both call it. Root only.
#
#   hosts.sh available                    # exit 0 when it can run here, else says why
#   hosts.sh up DIR [--owner PID] [--registry NODE] NODE[:docker] ...
#   hosts.sh down DIR                     # stops and removes everything `up` made
#   hosts.sh sweep                        # `down` for every DIR whose owner died
#   hosts.sh leftovers DIR                # prints what of DIR's run still exists
#   hosts.sh cut DIR NODE | heal DIR NODE # the node's link down (off the network) / up
#   hosts.sh freeze DIR NODE | thaw DIR NODE   # SIGSTOP / SIGCONT everything in the node
#   hosts.sh crash DIR NODE | boot DIR NODE    # SIGKILL everything in the node (a power
#                                         # cut) / its dockerd again on the same data
#
# `up` writes DIR/nodes.tsv, one line per node:
#   NAME  ADDRESS  NETNS_PATH  DOCKER_HOST(or -)  ENGINE_ID(or -)
# and DIR/hosts.env for shells (HOSTS_GATEWAY, HOSTS_REGISTRY, and per node
# NODE_<NAME>_ADDR, _NETNS, _DOCKER with NAME upper-cased, '-' as '_').
# Processes are run inside a node with `nsenter --net=NETNS_PATH -- CMD`: unlike
# `ip netns exec`, nsenter keeps /sys (and so the cgroups dockerd needs).
# The registry, when asked for, is Debian's docker-registry listening on
# ADDRESS:5000 inside its node; a node can both hold it and run dockerd (the
# build host that pushes test images). `down` stops dockerd and the registry by
# pid, kills what still runs in the namespaces (processes the run started),
# unmounts what dockerd left under DIR, deletes the namespaces (their veths go
# with them), the bridge and its forwarding rule, then DIR.
set -euo pipefail

HOSTS_STATE_GLOB="${TMPDIR:-/tmp}/hoist-hosts.*"

die() { echo "hosts: $*" >&2; exit 1; }

hosts_available() {
  [[ "$(id -u)" == 0 ]] || { echo "hosts: separate hosts need root (network namespaces and dockerd)"; return 1; }
  local cmd
  for cmd in ip nsenter dockerd docker iptables; do
    command -v "$cmd" >/dev/null 2>&1 || { echo "hosts: $cmd is missing"; return 1; }
  done
  local probe="hhprobe$$"
  ip netns add "$probe" 2>/dev/null || { echo "hosts: cannot create a network namespace here"; return 1; }
  ip netns del "$probe"
  return 0
}

# The machine daemon's storage driver, so that nested daemons use what works
# on this kernel and filesystem (fuse-overlayfs where overlay cannot nest).
storage_driver() {
  local d
  d="$(docker info -f '{{.Driver}}' 2>/dev/null || true)"
  echo "${d:-vfs}"
}

# A /24 in 10.241.0.0/16 that no route of this machine covers yet.
free_subnet() {
  local n
  for _ in $(seq 200); do
    n=$((RANDOM % 250 + 2))
    if ! ip route show | grep -q "^10\.241\.$n\.0/24"; then echo "10.241.$n"; return 0; fi
  done
  die "no free /24 in 10.241.0.0/16"
}

upper() { echo "$1" | tr 'a-z-' 'A-Z_'; }

hosts_up() {
  local dir="" owner="$PPID" registry_node="" nodes=()
  dir="$1"; shift
  while (($#)); do
    case "$1" in
      --owner) owner="$2"; shift 2 ;;
      --registry) registry_node="$2"; shift 2 ;;
      -*) die "up: unknown flag $1" ;;
      *) nodes+=("$1"); shift ;;
    esac
  done
  ((${#nodes[@]})) || die "up: name at least one node"
  ((${#nodes[@]} <= 60)) || die "up: at most 60 nodes"
  [[ -e "$dir" && -n "$(ls -A "$dir" 2>/dev/null)" ]] && die "up: $dir is not empty"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  local id subnet driver
  driver="$(storage_driver)"
  # Runs started side by side (ctest -j) must not pick the same id or
  # subnet: choose both and create the bridge under one host-wide lock.
  mkdir -p /run/lock
  exec 9>/run/lock/hoist-hosts.lock
  flock 9
  id="$(printf '%04x' $((RANDOM % 65536)))"
  while ip link show "hb$id" >/dev/null 2>&1; do id="$(printf '%04x' $((RANDOM % 65536)))"; done
  subnet="$(free_subnet)"
  local bridge="hb$id" prefix="hh$id"
  {
    echo "ID=$id"
    echo "BRIDGE=$bridge"
    echo "PREFIX=$prefix"
    echo "SUBNET=$subnet.0/24"
  } >"$dir/run"
  echo "$owner" >"$dir/owner"
  # From here on a failure (a failed command or die) tears down what was made.
  UP_DIR="$dir"
  trap 'rc=$?; if ((rc)); then echo "hosts: up failed; removing what it made" >&2; hosts_down "$UP_DIR" >/dev/null 2>&1 || true; fi; exit $rc' EXIT

  ip link add "$bridge" type bridge
  ip addr add "$subnet.1/24" dev "$bridge"
  ip link set "$bridge" up
  flock -u 9
  exec 9>&-
  # Docker sets the machine's FORWARD policy to DROP and bridged frames pass
  # through iptables (br_netfilter): let this bridge's nodes talk to each other.
  iptables -I FORWARD 1 -i "$bridge" -o "$bridge" -m comment --comment "hoist-hosts-$id" -j ACCEPT
  echo "FORWARD_RULE=1" >>"$dir/run"

  : >"$dir/nodes.tsv"
  {
    echo "HOSTS_DIR=$dir"
    echo "HOSTS_GATEWAY=$subnet.1"
  } >"$dir/hosts.env"
  local i=0 spec name want_docker addr ns
  local -a docker_nodes=()
  for spec in "${nodes[@]}"; do
    name="${spec%%:*}"
    want_docker=""
    [[ "$spec" == *:docker ]] && want_docker=1
    [[ "$name" =~ ^[a-z][a-z0-9-]{0,19}$ ]] || die "up: node name '$name' must be lower-case letters, digits and '-', at most 20"
    addr="$subnet.$((10 + i))"
    ns="$prefix-$name"
    ip netns add "$ns"
    ip link add "hv$id$i" type veth peer name eth0 netns "$ns"
    ip link set "hv$id$i" master "$bridge" up
    ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    mkdir -p "$dir/$name"
    echo "$name" >>"$dir/namespaces"
    local upname
    upname="$(upper "$name")"
    {
      echo "NODE_${upname}_ADDR=$addr"
      echo "NODE_${upname}_NETNS=/run/netns/$ns"
    } >>"$dir/hosts.env"
    if [[ -n "$want_docker" ]]; then docker_nodes+=("$name"); fi
    echo "$name $addr" >>"$dir/addresses"
    echo "$name hv$id$i" >>"$dir/veths"
    i=$((i + 1))
  done

  local registry=""
  if [[ -n "$registry_node" ]]; then
    addr="$(awk -v n="$registry_node" '$1 == n {print $2}' "$dir/addresses")"
    [[ -n "$addr" ]] || die "up: --registry $registry_node is not one of the nodes"
    registry="$addr:5000"
    cat >"$dir/$registry_node/registry.yml" <<EOF
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $dir/$registry_node/registry}}
http: {addr: $registry}
EOF
    nsenter --net="/run/netns/$prefix-$registry_node" -- /usr/bin/docker-registry serve \
      "$dir/$registry_node/registry.yml" >"$dir/$registry_node/registry.log" 2>&1 &
    echo "$!" >"$dir/$registry_node/registry.pid"
    echo "HOSTS_REGISTRY=$registry" >>"$dir/hosts.env"
  fi

  # Every dockerd starts at once; each is then waited for.
  for name in "${docker_nodes[@]}"; do
    local d="$dir/$name"
    mkdir -p "$d/data" "$d/exec"
    # A config file of its own: the machine's /etc/docker/daemon.json is for
    # the machine's daemon. The key file gives the engine its ID; shared with
    # the machine's, every daemon would report the same one.
    echo "{\"deprecated-key-path\": \"$d/key.json\"}" >"$d/daemon.json"
    local -a extra=()
    [[ -n "$registry" ]] && extra+=(--insecure-registry "$registry")
    # Kept, so that `boot` starts it again as it was after a `crash`.
    printf '%q ' nsenter --net="/run/netns/$prefix-$name" -- dockerd --config-file "$d/daemon.json" \
      --data-root "$d/data" --exec-root "$d/exec" --pidfile "$d/dockerd.pid" \
      -H "unix://$d/docker.sock" --storage-driver "$driver" --mtu 1400 \
      --log-driver json-file --log-opt max-size=10m "${extra[@]}" >"$d/dockerd.cmd"
    launch_dockerd "$d"
  done
  local engine
  for name in "${docker_nodes[@]}"; do
    local d="$dir/$name"
    engine="$(await_dockerd "$d")" || die "up: dockerd of $name did not answer within 60 s (log: $d/dockerd.log)"
    echo "$engine" >"$d/engine-id"
    echo "NODE_$(upper "$name")_DOCKER=unix://$d/docker.sock" >>"$dir/hosts.env"
  done
  if [[ -n "$registry" ]]; then
    local ok=""
    for _ in $(seq 100); do
      if curl -fs -m 1 "http://$registry/v2/" >/dev/null 2>&1; then ok=1; break; fi
      sleep 0.1
    done
    [[ -n "$ok" ]] || die "up: the registry at $registry did not answer within 10 s (log: $dir/$registry_node/registry.log)"
  fi
  while read -r name addr; do
    local host="-" eng="-"
    if [[ -f "$dir/$name/engine-id" ]]; then host="unix://$dir/$name/docker.sock"; eng="$(cat "$dir/$name/engine-id")"; fi
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$addr" "/run/netns/$prefix-$name" "$host" "$eng" >>"$dir/nodes.tsv"
  done <"$dir/addresses"
  trap - EXIT
}

# Starts the dockerd of node directory D as written in D/dockerd.cmd.
launch_dockerd() {
  local d="$1"
  bash -c "exec $(cat "$d/dockerd.cmd")" >>"$d/dockerd.log" 2>&1 &
  echo "$!" >"$d/dockerd.launch.pid"
}

# Waits up to 60 s for the dockerd of node directory D; prints its engine ID.
await_dockerd() {
  local d="$1" engine
  for _ in $(seq 600); do
    if [[ -S "$d/docker.sock" ]] && engine="$(docker -H "unix://$d/docker.sock" info -f '{{.ID}}' 2>/dev/null)"; then
      echo "$engine"
      return 0
    fi
    kill -0 "$(cat "$d/dockerd.launch.pid")" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 20 "$d/dockerd.log" >&2
  return 1
}

# Waits up to $2 seconds for pid $1 to exit.
wait_gone() {
  local pid="$1" secs="$2"
  for _ in $(seq $((secs * 10))); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  return 1
}

hosts_down() {
  local dir="$1"
  [[ -f "$dir/run" ]] || { rm -rf "$dir"; return 0; }
  local ID="" BRIDGE="" PREFIX="" FORWARD_RULE=""
  # shellcheck disable=SC1091
  source "$dir/run"
  local name pid
  # A test may end with a node frozen or cut off: thaw and reconnect first.
  if [[ -f "$dir/namespaces" ]]; then
    while read -r name; do
      pid="$(ip netns pids "$PREFIX-$name" 2>/dev/null || true)"
      # shellcheck disable=SC2086
      [[ -n "$pid" ]] && kill -CONT $pid 2>/dev/null || true
    done <"$dir/namespaces"
  fi
  if [[ -f "$dir/veths" ]]; then
    while read -r name pid; do ip link set "$pid" up 2>/dev/null || true; done <"$dir/veths"
  fi
  # Containers first, while their daemons still answer, so that dockerd's
  # shutdown has nothing to wait for.
  for d in "$dir"/*/; do
    d="${d%/}"
    [[ -S "$d/docker.sock" ]] || continue
    local ids
    ids="$(timeout 20 docker -H "unix://$d/docker.sock" ps -aq 2>/dev/null || true)"
    [[ -n "$ids" ]] && timeout 60 docker -H "unix://$d/docker.sock" rm -f $ids >/dev/null 2>&1 || true
  done
  # The daemons and the registry: all asked to stop at once, then waited for.
  local -a started=()
  for f in "$dir"/*/dockerd.launch.pid "$dir"/*/registry.pid; do
    [[ -f "$f" ]] && started+=("$(cat "$f")")
  done
  for pid in "${started[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${started[@]}"; do
    wait_gone "$pid" 20 || { kill -KILL "$pid" 2>/dev/null || true; wait_gone "$pid" 5 || true; }
  done
  # Whatever still runs in the run's namespaces was started by the run
  # (agents, controllers, a containerd left by a killed dockerd).
  if [[ -f "$dir/namespaces" ]]; then
    while read -r name; do
      local pids
      pids="$(ip netns pids "$PREFIX-$name" 2>/dev/null || true)"
      [[ -n "$pids" ]] && kill -KILL $pids 2>/dev/null || true
    done <"$dir/namespaces"
    while read -r name; do
      for _ in $(seq 50); do
        [[ -z "$(ip netns pids "$PREFIX-$name" 2>/dev/null || true)" ]] && break
        sleep 0.1
      done
    done <"$dir/namespaces"
  fi
  # dockerd's mounts (fuse-overlayfs layers, the exec root's netns files,
  # shm), deepest first.
  local m
  for _ in 1 2 3; do
    m="$(findmnt -rn -o TARGET | grep -F "$dir/" | sort -r || true)"
    [[ -z "$m" ]] && break
    while read -r t; do umount -l "$t" 2>/dev/null || true; done <<<"$m"
  done
  # Deleting the root-side end removes both ends at once; a namespace's own
  # veths would otherwise go only when its last process has let go of it.
  if [[ -f "$dir/veths" ]]; then
    while read -r name veth; do ip link del "$veth" 2>/dev/null || true; done <"$dir/veths"
  fi
  if [[ -f "$dir/namespaces" ]]; then
    while read -r name; do ip netns del "$PREFIX-$name" 2>/dev/null || true; done <"$dir/namespaces"
  fi
  if [[ -n "$FORWARD_RULE" ]]; then
    iptables -D FORWARD -i "$BRIDGE" -o "$BRIDGE" -m comment --comment "hoist-hosts-$ID" -j ACCEPT 2>/dev/null || true
  fi
  ip link del "$BRIDGE" 2>/dev/null || true
  # The kernel may take a moment to finish deleting them.
  for _ in $(seq 50); do
    ip -o link show | grep -q "hv$ID" || break
    sleep 0.1
  done
  rm -rf "$dir"
}

# What of DIR's run still exists (nothing printed: all gone). Reads the run's
# names from DIR/run, or from the arguments when DIR is already gone:
#   hosts.sh leftovers DIR [ID PREFIX NAMES...]
hosts_leftovers() {
  local dir="$1" id="${2:-}" prefix="${3:-}"
  shift $(($# < 3 ? $# : 3))
  local names=("$@")
  if [[ -f "$dir/run" ]]; then
    local ID="" PREFIX=""
    # shellcheck disable=SC1091
    source "$dir/run"
    id="$ID"; prefix="$PREFIX"
    mapfile -t names <"$dir/namespaces"
  fi
  [[ -d "$dir" ]] && echo "directory $dir"
  [[ -n "$id" ]] || return 0
  ip link show "hb$id" >/dev/null 2>&1 && echo "bridge hb$id"
  ip -o link show | grep -o "hv$id[0-9]*" | sed 's/^/veth /' || true
  local n
  for n in "${names[@]}"; do
    ip netns list | grep -qw "$prefix-$n" && echo "namespace $prefix-$n"
  done
  iptables -S FORWARD 2>/dev/null | grep -q "hoist-hosts-$id" && echo "iptables rule hoist-hosts-$id"
  findmnt -rn -o TARGET | grep -F "$dir/" | sed 's/^/mount /' || true
  pgrep -af -- "$dir/" | sed 's/^/process /' || true
}

# The root-side end of NODE's veth, or a failure naming the node.
node_veth() {
  local dir="$1" node="$2" v
  v="$(awk -v n="$node" '$1 == n {print $2}' "$dir/veths" 2>/dev/null)"
  [[ -n "$v" ]] || die "no node $node in $dir"
  echo "$v"
}

# Every process inside NODE's namespace (its dockerd, containerd, agent,
# controller, and the containers' processes).
node_pids() {
  local dir="$1" node="$2" PREFIX=""
  node_veth "$dir" "$node" >/dev/null
  # shellcheck disable=SC1091
  source "$dir/run"
  ip netns pids "$PREFIX-$node" 2>/dev/null || true
}

hosts_fault() {
  local op="$1" dir="$2" node="$3" pids
  case "$op" in
    cut) ip link set "$(node_veth "$dir" "$node")" down ;;
    heal) ip link set "$(node_veth "$dir" "$node")" up ;;
    freeze | thaw)
      pids="$(node_pids "$dir" "$node")"
      [[ -n "$pids" ]] || die "$op: nothing runs in node $node"
      # shellcheck disable=SC2086
      kill "-$([[ $op == freeze ]] && echo STOP || echo CONT)" $pids
      ;;
    crash)
      # Power cut: every process of the node dies at once, with no chance
      # to clean up (dockerd, containerd, the containers, the agent).
      pids="$(node_pids "$dir" "$node")"
      [[ -n "$pids" ]] || die "crash: nothing runs in node $node"
      # shellcheck disable=SC2086
      kill -KILL $pids 2>/dev/null || true
      for _ in $(seq 300); do
        [[ -z "$(node_pids "$dir" "$node")" ]] && return 0
        sleep 0.1
      done
      die "crash: processes of node $node outlived SIGKILL for 30 s: $(for p in $(node_pids "$dir" "$node"); do
        ps -o pid=,stat=,comm= -p "$p" 2>/dev/null; done | tr '\n' ';')"
      ;;
    boot)
      # The node's dockerd again, on the same data; Docker restarts the
      # containers whose restart policy says so.
      [[ -f "$dir/$node/dockerd.cmd" ]] || die "boot: node $node runs no dockerd"
      kill -0 "$(cat "$dir/$node/dockerd.launch.pid" 2>/dev/null)" 2>/dev/null && die "boot: the dockerd of $node runs"
      # A reboot starts without the mounts of before: the storage driver's
      # (fuse-overlayfs: its FUSE daemons died in the crash, leaving dead
      # mountpoints that fail every later mount there) and the containers'.
      local m
      for _ in 1 2 3; do
        m="$(findmnt -rn -o TARGET | grep -F "$dir/$node/" | sort -r || true)"
        [[ -z "$m" ]] && break
        while read -r t; do umount -l "$t" 2>/dev/null || true; done <<<"$m"
      done
      launch_dockerd "$dir/$node"
      await_dockerd "$dir/$node" >/dev/null || die "boot: dockerd of $node did not answer within 60 s"
      ;;
  esac
}

hosts_sweep() {
  local d owner
  for d in $HOSTS_STATE_GLOB; do
    [[ -d "$d" && -f "$d/owner" ]] || continue
    owner="$(cat "$d/owner")"
    if [[ -n "$owner" ]] && ! kill -0 "$owner" 2>/dev/null; then
      echo "hosts: removing $d (its owner $owner is gone)" >&2
      hosts_down "$d"
    fi
  done
}

case "${1:-}" in
  available) hosts_available ;;
  up) shift; (($#)) || die "usage: hosts.sh up DIR [--owner PID] [--registry NODE] NODE[:docker] ..."; hosts_up "$@" ;;
  down) shift; (($#)) || die "usage: hosts.sh down DIR"; hosts_down "$1" ;;
  sweep) hosts_sweep ;;
  leftovers) shift; (($#)) || die "usage: hosts.sh leftovers DIR"; hosts_leftovers "$@" ;;
  cut | heal | freeze | thaw | crash | boot) (($# == 3)) || die "usage: hosts.sh $1 DIR NODE"; hosts_fault "$@" ;;
  *) sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; [[ "${1:-}" == --help || "${1:-}" == -h ]] || exit 2 ;;
esac
