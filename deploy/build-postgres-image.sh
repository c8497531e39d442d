#!/usr/bin/env bash
# Builds a PostgreSQL 15 image FROM scratch out of this host's Postgres (no
# public image can be pulled here), for the demo app's database and the tests:
# postgres, pg_dump, pg_restore and psql with every shared library ldd names,
# the share directory, the UTC zone, a passwd line for uid 999, and a data
# directory initialised with initdb (superuser USER, trust authentication,
# C locale, unix socket in /tmp, TCP on port 5432 from any address). Trust
# from any address is for the throw-away demo and tests only: a real
# installation uses its own database image.
#
#   bash deploy/build-postgres-image.sh TAG USER [LABEL=VALUE ...]
#
# Tags the image TAG and adds the given labels. It does not push. Runs
# `postgres -D /pgdata` as uid 999; psql in the image reaches the server with
# no flags (PGHOST=/tmp, PGUSER=USER, PGDATABASE=postgres). Needs root (initdb runs as the postgres
# user), Postgres 15 (deploy/install-deps.sh installs it) and docker.
set -euo pipefail
if [[ $# -lt 2 || $1 == -h || $1 == --help ]]; then
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
TAG="$1"
DB_USER="$2"
shift 2
PGBIN=/usr/lib/postgresql/15/bin
[[ -x $PGBIN/postgres ]] || { echo "build-postgres-image: $PGBIN/postgres is missing; run deploy/install-deps.sh" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || { echo "build-postgres-image: needs root (initdb runs as the postgres user)" >&2; exit 1; }
[[ $DB_USER =~ ^[a-z_][a-z0-9_]*$ ]] || { echo "build-postgres-image: USER \"$DB_USER\" must match [a-z_][a-z0-9_]*" >&2; exit 2; }

STAGE="$(mktemp -d /tmp/hoist-postgres-image.XXXXXX)"
trap 'rm -rf "$STAGE"' EXIT
ROOT="$STAGE/rootfs"
mkdir -p "$ROOT/etc" "$ROOT/tmp" "$ROOT/usr/share/postgresql" "$ROOT/usr/share/zoneinfo/Etc"
chmod 1777 "$ROOT/tmp"

stage_file() {  # copies a host file to the same path in the image, following symlinks
  mkdir -p "$ROOT$(dirname "$1")"
  cp -L "$1" "$ROOT$1"
}
for binary in postgres pg_dump pg_restore psql; do
  stage_file "$PGBIN/$binary"
  # "libx.so => /lib/.../libx.so (0x...)" and "/lib64/ld-linux-x86-64.so.2 (0x...)".
  ldd "$PGBIN/$binary" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }'
done | sort -u | while read -r lib; do stage_file "$lib"; done
stage_file /usr/lib/postgresql/15/lib/plpgsql.so
cp -r /usr/share/postgresql/15 "$ROOT/usr/share/postgresql/15"
cp -L /usr/share/zoneinfo/Etc/UTC "$ROOT/usr/share/zoneinfo/Etc/UTC"
cp -L /usr/share/zoneinfo/Etc/UTC "$ROOT/usr/share/zoneinfo/UTC"

# initdb runs as postgres, which must be able to enter the stage directory.
chmod 0711 "$STAGE"
mkdir "$STAGE/pgdata"
chown postgres:postgres "$STAGE/pgdata"
runuser -u postgres -- "$PGBIN/initdb" -D "$STAGE/pgdata" --auth=trust --username="$DB_USER" \
  --locale=C --encoding=UTF8 >/dev/null
cat >>"$STAGE/pgdata/postgresql.conf" <<EOF
listen_addresses = '*'
unix_socket_directories = '/tmp'
timezone = 'UTC'
log_timezone = 'UTC'
shared_buffers = 16MB
EOF
echo "host all all all trust" >>"$STAGE/pgdata/pg_hba.conf"
cp -a "$STAGE/pgdata" "$ROOT/pgdata"
chown -R 999:999 "$ROOT/pgdata"
echo "postgres:x:999:999:postgres:/pgdata:/nonexistent" >"$ROOT/etc/passwd"
echo "postgres:x:999:" >"$ROOT/etc/group"
chmod 0644 "$ROOT/etc/passwd" "$ROOT/etc/group"
tar --numeric-owner -C "$ROOT" -cf "$STAGE/rootfs.tar" .

LABELS=()
for l in "$@"; do LABELS+=(--label "$l"); done
cat >"$STAGE/Dockerfile" <<EOF
FROM scratch
ADD rootfs.tar /
LABEL org.opencontainers.image.title="hoist-postgres" org.opencontainers.image.version="15"
ENV LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu PGHOST=/tmp PGUSER=$DB_USER PGDATABASE=postgres PATH=$PGBIN
USER 999:999
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["$PGBIN/postgres", "-D", "/pgdata"]
EOF
# --no-cache: builds running side by side must not share layers that one of
# them may remove while another builds on them.
docker build -q --no-cache "${LABELS[@]}" -t "$TAG" "$STAGE" >/dev/null
echo "$TAG"
