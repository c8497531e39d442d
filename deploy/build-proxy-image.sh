#!/usr/bin/env bash
# Builds Hoist's proxy image FROM scratch out of this host's HAProxy: no public
# image can be pulled here, so the image holds /usr/sbin/haproxy, every shared
# library ldd names for it, and an empty /etc/haproxy that the agent fills
# (see deploy/manifest-reference.md, "The proxy").
#
#   bash deploy/build-proxy-image.sh TAG [LABEL=VALUE ...]
#
# Tags the image TAG (for example 127.0.0.1:5000/hoist/haproxy:2.6.12) and
# adds the given labels, so that callers can remove what they built. It does
# not push. Needs haproxy (deploy/install-deps.sh installs it) and docker.
set -euo pipefail
if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
  sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
TAG="$1"
shift
HAPROXY=/usr/sbin/haproxy
[[ -x $HAPROXY ]] || { echo "build-proxy-image: $HAPROXY is missing; run deploy/install-deps.sh" >&2; exit 1; }

STAGE="$(mktemp -d /tmp/hoist-proxy-image.XXXXXX)"
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/rootfs/usr/sbin" "$STAGE/rootfs/etc/haproxy" "$STAGE/rootfs/tmp" "$STAGE/rootfs/var/lib/haproxy"
chmod 1777 "$STAGE/rootfs/tmp"
cp "$HAPROXY" "$STAGE/rootfs/usr/sbin/haproxy"
# "libx.so => /lib/.../libx.so (0x...)" and "/lib64/ld-linux-x86-64.so.2 (0x...)".
ldd "$HAPROXY" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' | sort -u | while read -r lib; do
  mkdir -p "$STAGE/rootfs$(dirname "$lib")"
  cp -L "$lib" "$STAGE/rootfs$lib"
done
# A placeholder, replaced by the agent before the proxy starts.
printf 'global\n    maxconn 64\n' >"$STAGE/rootfs/etc/haproxy/haproxy.cfg"
tar --numeric-owner -C "$STAGE/rootfs" -cf "$STAGE/rootfs.tar" .

LABELS=()
for l in "$@"; do LABELS+=(--label "$l"); done
version="$("$HAPROXY" -v | awk 'NR == 1 { print $3 }')"
cat >"$STAGE/Dockerfile" <<EOF
FROM scratch
ADD rootfs.tar /
LABEL org.opencontainers.image.title="hoist-haproxy" org.opencontainers.image.version="$version"
STOPSIGNAL SIGUSR1
CMD ["/usr/sbin/haproxy", "-db", "-f", "/etc/haproxy/haproxy.cfg"]
EOF
# --no-cache: builds running side by side must not share layers that one of
# them may remove while another builds on them.
docker build -q --no-cache "${LABELS[@]}" -t "$TAG" "$STAGE" >/dev/null
echo "$TAG"
