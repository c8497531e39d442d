# Sourced by deploy/demo.sh and tests/bench/*.sh: a throw-away PostgreSQL 15
# cluster on a free loopback port, with trust auth, in a directory of the
# caller's. initdb refuses to run as root, so the cluster runs as postgres.
#
#   source deploy/lib/postgres.sh
#   pg_throwaway_start DIR [NETNS ADDRESS]   # sets PG_URL and PG_DATA_DIR
#
# With NETNS and ADDRESS (a node of deploy/lib/hosts.sh) the postmaster runs
# inside that network namespace and listens on ADDRESS, reachable from the
# other nodes of the private test network.
#   pg_throwaway_stop          # immediate stop; the caller removes DIR

PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

as_postgres() {
  if [[ "$(id -u)" == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_throwaway_start() {
  local dir="$1" netns="${2:-}" addr="${3:-127.0.0.1}" port
  local -a wrap=()
  port="$(free_port)"
  [[ -n "$netns" ]] && wrap=(nsenter "--net=$netns" --)
  [[ "$(id -u)" == 0 ]] && wrap+=(runuser -u postgres --)
  PG_DATA_DIR="$dir/pgdata"
  mkdir -p "$PG_DATA_DIR" "$dir/pgrun"
  if [[ "$(id -u)" == 0 ]]; then chown postgres "$PG_DATA_DIR" "$dir/pgrun"; fi
  as_postgres "$PG_BIN/initdb" -D "$PG_DATA_DIR" -A trust -U postgres >"$dir/pgrun/initdb.log" 2>&1 || {
    cat "$dir/pgrun/initdb.log" >&2
    return 1
  }
  # initdb's trust lines cover loopback only; the test network is private.
  [[ "$addr" != 127.0.0.1 ]] && echo "host all all 0.0.0.0/0 trust" >>"$PG_DATA_DIR/pg_hba.conf"
  "${wrap[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA_DIR" -l "$dir/pgrun/postgres.log" -w \
    -o "-p $port -k $dir/pgrun -c listen_addresses=$addr" start >/dev/null || {
    cat "$dir/pgrun/postgres.log" >&2
    return 1
  }
  PG_URL="postgresql://postgres@$addr:$port/postgres"
}

pg_throwaway_stop() {
  if [[ -n "${PG_DATA_DIR:-}" && -d "$PG_DATA_DIR" ]]; then
    as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA_DIR" -m immediate stop >/dev/null 2>&1 || true
  fi
}
