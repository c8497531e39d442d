#!/usr/bin/env bash
# The controller as deploy/compose.yaml runs it, for real: deploy/package.sh
# builds the hoistd image from this build's binaries (no public image can be
# pulled here), then `docker-compose up` starts hoistd-1 and hoistd-2 from
# deploy/compose.yaml as written (its network and published ports, its
# advertise addresses, unprivileged with a read-only root and no capabilities,
# mTLS files mounted from a `hoist ca` directory, the image's health check).
# The Postgres image cannot be pulled either, so a small override points them
# at a throw-away Postgres on this host (password auth, as compose's is).
# Then the hoist CLI, with an operator certificate, talks to both over mTLS
# through the published ports, and a write sent to the follower reaches the
# leader at its advertised address.
#
#   compose_up_test.sh BUILD_DIR
# Exit 77 (skipped) without Docker, docker-compose or Postgres, unless CI=true.
set -uo pipefail

BUILD_DIR="$(cd "${1:?usage: compose_up_test.sh BUILD_DIR}" && pwd)"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HOIST="$BUILD_DIR/controller/cli/hoist"
PG_BIN=/usr/lib/postgresql/15/bin
RUN_ID="e2e$$"
PROJECT="hoist-compose-$RUN_ID"
IMAGE="hoist-test/hoistd:$RUN_ID"
LABEL="hoist.test=$PROJECT"
# shellcheck source=../fixtures/checks.sh
. "$REPO/tests/fixtures/checks.sh"

missing=""
docker info >/dev/null 2>&1 || missing="the Docker daemon"
command -v docker-compose >/dev/null 2>&1 || missing="${missing:+$missing, }docker-compose"
[[ -x "$PG_BIN/initdb" ]] || missing="${missing:+$missing, }Postgres 15 ($PG_BIN)"
require_or_skip "$missing"

T="$(mktemp -d /tmp/hoist-compose-up.XXXXXX)"
chmod 755 "$T"
PG_DATA="$T/pgdata"
compose() {
  docker-compose --project-name "$PROJECT" --project-directory "$REPO/deploy" \
    -f "$REPO/deploy/compose.yaml" -f "$T/override.yaml" "$@"
}
cleanup() {
  local rc=$?
  if [[ $rc != 0 && -f "$T/override.yaml" ]]; then
    echo "--- hoistd logs"
    compose logs --no-color --tail 20 2>&1
  fi
  [[ -f "$T/override.yaml" ]] && compose down --volumes --remove-orphans >/dev/null 2>&1
  docker ps -aq --filter "label=$LABEL" | xargs -r docker rm -f >/dev/null 2>&1
  docker images -q --filter "label=$LABEL" | sort -u | xargs -r docker rmi -f >/dev/null 2>&1
  if [[ -f "$PG_DATA/postmaster.pid" ]]; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate stop >/dev/null 2>&1
  fi
  rm -rf "$T"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ---- the image -----------------------------------------------------------------
if ! out="$(bash "$REPO/deploy/package.sh" --build-dir "$BUILD_DIR" --image "$IMAGE" --label "$LABEL" 2>&1)"; then
  echo "$out"
  echo "FAIL deploy/package.sh"
  exit 1
fi
echo "$out" | sed 's/^/     /'
check "the image runs as 65532" [ "$(docker image inspect "$IMAGE" --format '{{.Config.User}}')" = 65532:65532 ]
check "the image has no shell" bash -c "! docker run --rm --network none --entrypoint /bin/sh '$IMAGE' -c true >/dev/null 2>&1"
version="$(docker run --rm --network none --entrypoint /usr/local/bin/hoist "$IMAGE" --version 2>&1)"
check "the image holds the hoist CLI ($version)" contains "$version" "hoist"

# ---- Postgres, reachable from the containers with a password ---------------------
PG_PORT="$(free_port)"
PG_PASSWORD="$(openssl rand -hex 16)"
mkdir -p "$PG_DATA" "$T/pg" && chown postgres "$PG_DATA" "$T/pg"
runuser -u postgres -- "$PG_BIN/initdb" -D "$PG_DATA" -A trust -U postgres >"$T/initdb.log" 2>&1 ||
  { cat "$T/initdb.log"; echo "FAIL initdb"; exit 1; }
echo "host all hoist 0.0.0.0/0 scram-sha-256" >>"$PG_DATA/pg_hba.conf"
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$T/pg/postgres.log" -w \
  -o "-p $PG_PORT -k $T/pg -c listen_addresses=*" start >/dev/null ||
  { cat "$T/pg/postgres.log"; echo "FAIL Postgres did not start"; exit 1; }
psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 \
  -c "CREATE ROLE hoist LOGIN PASSWORD '$PG_PASSWORD'" -c "CREATE DATABASE hoist OWNER hoist" ||
  { echo "FAIL creating the hoist role and database"; exit 1; }

# ---- the fleet CA, as the README's Installing section makes it ------------------
CA="$T/hoist-ca"
"$HOIST" ca init --dir "$CA" >/dev/null
for r in hoistd-1 hoistd-2; do "$HOIST" ca issue controller "$r" --dir "$CA" --san 127.0.0.1 >/dev/null; done
"$HOIST" ca issue operator alice --level admin --dir "$CA" >/dev/null
(umask 077 && openssl rand -hex 32 >"$CA/secrets.key")
# hoistd runs as 65532 (HOIST_UID's default): its keys must be readable by it.
chmod 755 "$CA"
chown 65532:65532 "$CA"/controller-hoistd-*.key "$CA/secrets.key"

# ---- docker-compose up -----------------------------------------------------------
cat >"$T/override.yaml" <<EOF
# Test only: the Postgres on this host instead of the postgres service, and labels.
services:
  hoistd-1:
    extra_hosts: ["host.docker.internal:host-gateway"]
    environment:
      HOIST_DATABASE_URL: postgresql://hoist:$PG_PASSWORD@host.docker.internal:$PG_PORT/hoist
    labels: {hoist.test: $PROJECT}
  hoistd-2:
    extra_hosts: ["host.docker.internal:host-gateway"]
    environment:
      HOIST_DATABASE_URL: postgresql://hoist:$PG_PASSWORD@host.docker.internal:$PG_PORT/hoist
    labels: {hoist.test: $PROJECT}
EOF
G1="$(free_port)" H1="$(free_port)" G2="$(free_port)" H2="$(free_port)"
export HOIST_IMAGE="$IMAGE" HOIST_CA_DIR="$CA" HOIST_PUBLIC_HOST=127.0.0.1 POSTGRES_PASSWORD=unused \
  HOIST_PORT_1="$G1" HOIST_HTTP_PORT_1="$H1" HOIST_PORT_2="$G2" HOIST_HTTP_PORT_2="$H2"
if ! out="$(compose up -d --no-deps --no-build hoistd-1 2>&1)"; then
  echo "$out"; echo "FAIL docker-compose up hoistd-1"; exit 1
fi
role_is() { curl -fsS "http://127.0.0.1:$1/health" 2>/dev/null | grep -q "\"role\":\"$2\""; }
# The follower redirects once it has read who leads: a non-zero epoch.
follower_ready() { curl -fsS "http://127.0.0.1:$1/health" 2>/dev/null | grep -q '"epoch":[1-9][0-9]*,.*"role":"follower"'; }
check "hoistd-1 leads (/health on its published port)" wait_for 30 role_is "$H1" leader
if ! out="$(compose up -d --no-deps --no-build hoistd-2 2>&1)"; then
  echo "$out"; echo "FAIL docker-compose up hoistd-2"; exit 1
fi
check "hoistd-2 follows" wait_for 30 follower_ready "$H2"

c1="$(compose ps -q hoistd-1)"
check "hoistd-1 runs as 65532" [ "$(docker inspect "$c1" --format '{{.Config.User}}')" = 65532:65532 ]
check "hoistd-1 has a read-only root" [ "$(docker inspect "$c1" --format '{{.HostConfig.ReadonlyRootfs}}')" = true ]
check "hoistd-1 has no capabilities" [ "$(docker inspect "$c1" --format '{{.HostConfig.CapDrop}}')" = "[ALL]" ]
check "hoistd-1 restarts unless stopped" \
  [ "$(docker inspect "$c1" --format '{{.HostConfig.RestartPolicy.Name}}')" = unless-stopped ]
check "hoistd-1 serves mTLS from the mounted files" contains "$(compose logs --no-color hoistd-1 2>&1)" "serving on"
check "hoistd-1 does not warn about a missing TLS" bash -c "! docker logs '$c1' 2>&1 | grep -q 'without TLS'"
healthy() { [ "$(docker inspect "$1" --format '{{.State.Health.Status}}')" = healthy ]; }
check "the image's health check passes in hoistd-1" wait_for 60 healthy "$c1"
check "the image's health check passes in hoistd-2" wait_for 60 healthy "$(compose ps -q hoistd-2)"

# ---- the CLI over mTLS ------------------------------------------------------------
TLS=(--tls-ca "$CA/ca.crt" --tls-cert "$CA/operator-alice.crt" --tls-key "$CA/operator-alice.key")
export HOIST_CONFIG=/dev/null
out="$("$HOIST" agents --controller "127.0.0.1:$G1" "${TLS[@]}" 2>&1)"
check "hoist agents over mTLS (exit $?)" contains "$out" "No agents have registered yet"
out="$("$HOIST" agents --controller "127.0.0.1:$G1" --insecure 2>&1)"
check "a plaintext client is refused (exit $?)" [ $? = 69 ]
cat >"$T/stack.yaml" <<'EOF'
deployment: shop
hosts:
  - id: host-1
services:
  api:
    role: api
    repository: registry.local/shop/api
EOF
out="$("$HOIST" apply "$T/stack.yaml" --controller "127.0.0.1:$G2" --debug "${TLS[@]}" 2>&1)"
rc=$?
check "a write sent to the follower succeeds (exit $rc)" [ "$rc" = 0 ]
check "the follower redirected it to the leader" contains "$out" "retrying ApplyStack on the leader at 127.0.0.1:$G1"
out="$("$HOIST" audit --output json --controller "127.0.0.1:$G2" "${TLS[@]}" 2>&1)"
check "the audit log names the operator's certificate" contains "$out" '"actor":"alice"'
[[ $failures == 0 ]] || echo "$out"

finish
