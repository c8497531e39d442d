#!/usr/bin/env bash
# deploy/compose.yaml parses (docker-compose config), has two hoistd replicas
# and a Postgres, refuses to start without its required settings (naming
# them), builds from deploy/Dockerfile.hoistd at the repository's root, and
# passes hoistd only flags and env vars that hoistd knows.
#
#   compose_config_test.sh HOISTD
# Exit 77 (skipped) without docker-compose, unless CI=true.
set -uo pipefail

HOISTD="${1:?usage: compose_config_test.sh HOISTD}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
COMPOSE_FILE="$REPO/deploy/compose.yaml"

# shellcheck source=../fixtures/checks.sh
. "$REPO/tests/fixtures/checks.sh"
command -v docker-compose >/dev/null 2>&1 || require_or_skip "docker-compose (deploy/install-deps.sh installs it)"

T="$(mktemp -d /tmp/hoist-compose-test.XXXXXX)"
trap 'rm -rf "$T"' EXIT

cat >"$T/compose.env" <<EOF
POSTGRES_PASSWORD=0123456789abcdef
HOIST_PUBLIC_HOST=ctl.example.net
HOIST_CA_DIR=/etc/hoist/ca
EOF
compose() { docker-compose --project-directory "$REPO/deploy" -f "$COMPOSE_FILE" "$@"; }

config="$(compose --env-file "$T/compose.env" config 2>"$T/err")"
rc=$?
check "docker-compose config accepts deploy/compose.yaml (exit $rc)" [ "$rc" = 0 ]
[[ $rc == 0 ]] || cat "$T/err"
services="$(compose --env-file "$T/compose.env" config --services 2>/dev/null | sort | tr '\n' ' ')"
check "the services are hoistd-1, hoistd-2 and postgres (got: $services)" [ "$services" = "hoistd-1 hoistd-2 postgres " ]

# Without its settings it refuses to start, saying which one is missing.
for name in POSTGRES_PASSWORD HOIST_PUBLIC_HOST HOIST_CA_DIR; do
  grep -v "^$name=" "$T/compose.env" >"$T/partial.env"
  err="$(compose --env-file "$T/partial.env" config 2>&1 >/dev/null)"
  rc=$?
  check "without $name it refuses (exit $rc)" [ "$rc" != 0 ]
  check "without $name it says to set it" contains "$err" "set $name in the env file"
done

# The normalized config, as JSON, for the checks below.
python3 -c 'import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), open(sys.argv[1], "w"))' \
  "$T/config.json" <<<"$config"
check "the config is YAML" [ -s "$T/config.json" ]
q() { python3 -c "import json,sys; c=json.load(open('$T/config.json')); print($1)"; }

check "the image is built from the repository's root" [ "$(q "c['services']['hoistd-1']['build']['context']")" = "$REPO" ]
dockerfile="$(q "c['services']['hoistd-1']['build']['dockerfile']")"
check "the Dockerfile $dockerfile exists" test -f "$REPO/$dockerfile"
for s in hoistd-1 hoistd-2; do
  check "$s waits for a healthy Postgres" \
    [ "$(q "c['services']['$s']['depends_on']['postgres']['condition']")" = service_healthy ]
  check "$s runs unprivileged" [ "$(q "c['services']['$s']['user']")" = "65532:65532" ]
  check "$s has a read-only root" [ "$(q "c['services']['$s']['read_only']")" = True ]
  check "$s drops every capability" [ "$(q "c['services']['$s']['cap_drop']")" = "['ALL']" ]
  check "$s mounts the CA, its certificate, its key and the secrets key read-only" \
    [ "$(q "sorted(v.split(':')[1] for v in c['services']['$s']['volumes'] if v.endswith(':ro'))")" = \
      "['/etc/hoist/tls/ca.crt', '/etc/hoist/tls/controller.crt', '/etc/hoist/tls/controller.key', '/etc/hoist/tls/secrets.key']" ]
  check "$s mounts its own certificate from HOIST_CA_DIR" \
    contains "$(q "c['services']['$s']['volumes']")" "/etc/hoist/ca/controller-$s.crt:/etc/hoist/tls/controller.crt:ro"
  check "$s advertises the public host" \
    contains "$(q "c['services']['$s']['command']")" "--advertise-address=ctl.example.net:744"
done
check "Postgres keeps its data in a volume" contains "$(q "c['services']['postgres']['volumes']")" "pgdata"
check "Postgres has a health check" contains "$(q "c['services']['postgres']['healthcheck']['test']")" "pg_isready"

# hoistd knows every env var and flag compose gives it.
help="$("$HOISTD" --help)"
for key in $(q "' '.join(sorted(c['services']['hoistd-1']['environment']))"); do
  check "hoistd reads $key" contains "$help" "[env $key]"
done
mapfile -t command < <(q "'\n'.join(c['services']['hoistd-1']['command'])")
out="$("$HOISTD" "${command[@]}" --help 2>&1)"
check "hoistd accepts the command's flags (${command[*]})" [ $? = 0 ]
url="$(q "c['services']['hoistd-1']['environment']['HOIST_DATABASE_URL']")"
check "the database URL points at the postgres service" [ "$url" = "postgresql://hoist:0123456789abcdef@postgres:5432/hoist" ]

finish
