#!/usr/bin/env bash
# Packages hoistd (with the hoist CLI, and curl for the health check) from a
# build directory into a minimal root file system: the binaries plus exactly
# the shared libraries `ldd` says they load, a passwd entry for the unprivileged
# user 65532, and nothing else (no shell, no package manager). Optionally
# builds an image from it with the final stage of deploy/Dockerfile.hoistd,
# so the image made here from local binaries is the one that Dockerfile makes
# from source.
#
#   deploy/package.sh --rootfs /tmp/rootfs            # just the file system
#   deploy/package.sh --image hoist/hoistd:0.1.0       # and an image from it
#
# Flags:
#   --build-dir DIR   where hoistd and hoist were built (default: build)
#   --rootfs DIR      put the file system here (default: a temp dir)
#   --image TAG       build an image tagged TAG and check that it starts
#   --label K=V       add a label to the image (repeatable)
#   -h, --help        this text
#
# Exit codes: 0 done, 1 a step failed, 2 a bad flag.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BUILD_DIR="build"
ROOTFS=""
IMAGE=""
LABELS=()

usage_error() { echo "package: $*; see deploy/package.sh --help" >&2; exit 2; }
fail() { echo "package: $*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    --build-dir|--rootfs|--image|--label)
      [[ $# -ge 2 ]] || usage_error "$1 needs a value"
      case "$1" in
        --build-dir) BUILD_DIR="$2" ;;
        --rootfs) ROOTFS="$2" ;;
        --image) IMAGE="$2" ;;
        --label)
          [[ "$2" =~ ^[A-Za-z0-9._/-]+=[^[:space:]]*$ ]] || usage_error "--label \"$2\" is not key=value"
          LABELS+=("$2") ;;
      esac
      shift 2 ;;
    *) usage_error "unknown argument \"$1\"" ;;
  esac
done

HOISTD="$BUILD_DIR/controller/hoistd"
HOIST="$BUILD_DIR/controller/cli/hoist"
for bin in "$HOISTD" "$HOIST"; do
  [[ -x "$bin" ]] || usage_error "$bin is missing: build it first (cmake --build $BUILD_DIR --target hoistd hoist) or pass --build-dir"
done
CURL="$(command -v curl || true)"
[[ -n "$CURL" ]] || fail "curl is not installed: the image's health check needs it (apt-get install curl)"

WORK="$(mktemp -d /tmp/hoist-package.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
if [[ -z "$ROOTFS" ]]; then
  ROOTFS="$WORK/rootfs"
elif [[ -e "$ROOTFS" && -n "$(ls -A "$ROOTFS" 2>/dev/null)" ]]; then
  usage_error "--rootfs $ROOTFS exists and is not empty"
fi
mkdir -p "$ROOTFS"

# copy_with_libs BINARY DEST: the binary at DEST in the rootfs, and every
# library it loads at the path the loader will look for it.
copy_with_libs() {
  local bin="$1" dest="$2" out lib
  install -D -m 0755 "$bin" "$ROOTFS$dest"
  if ! out="$(ldd "$bin" 2>&1)"; then
    # A static binary needs nothing more.
    [[ "$out" == *"not a dynamic executable"* ]] && return 0
    fail "ldd $bin: $out"
  fi
  if grep -q "not found" <<<"$out"; then
    fail "$bin needs libraries this machine lacks: $(grep 'not found' <<<"$out" | tr -s ' \t' ' ')"
  fi
  # "libx.so.1 => /lib/.../libx.so.1 (0x...)" and "/lib64/ld-linux-x86-64.so.2 (0x...)".
  while read -r lib; do
    [[ -n "$lib" && -e "$lib" ]] || continue
    [[ -e "$ROOTFS$lib" ]] && continue
    mkdir -p "$ROOTFS$(dirname "$lib")"
    cp -L "$lib" "$ROOTFS$lib"
  done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$out")
}

copy_with_libs "$HOISTD" /usr/local/bin/hoistd
copy_with_libs "$HOIST" /usr/local/bin/hoist
copy_with_libs "$CURL" /usr/bin/curl

# Name lookups (libpq and gRPC resolve "postgres", "hoistd-1") use glibc's
# built-in files and dns sources; Docker provides /etc/hosts and resolv.conf.
mkdir -p "$ROOTFS/etc" "$ROOTFS/tmp"
chmod 1777 "$ROOTFS/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nhoist:x:65532:65532:hoist:/nonexistent:/sbin/nologin\n' \
  >"$ROOTFS/etc/passwd"
printf 'root:x:0:\nhoist:x:65532:\n' >"$ROOTFS/etc/group"
printf 'hosts: files dns\n' >"$ROOTFS/etc/nsswitch.conf"

files=$(find "$ROOTFS" -type f | wc -l)
size=$(du -sh "$ROOTFS" | cut -f1)
echo "package: $ROOTFS holds hoistd, hoist and curl with their libraries ($files files, $size)"

[[ -n "$IMAGE" ]] || exit 0

command -v docker >/dev/null 2>&1 || fail "docker is not installed: cannot build $IMAGE"
# The final stage of Dockerfile.hoistd, taking the rootfs from this context
# instead of from the build stage.
CONTEXT="$WORK/context"
mkdir -p "$CONTEXT"
[[ "$ROOTFS" == "$WORK/rootfs" ]] && mv "$ROOTFS" "$CONTEXT/rootfs" || cp -a "$ROOTFS" "$CONTEXT/rootfs"
awk '/^FROM /{stage=""} /^FROM scratch/{stage=1} stage' "$SCRIPT_DIR/Dockerfile.hoistd" |
  sed 's|^COPY --from=build /rootfs /$|COPY rootfs /|' >"$CONTEXT/Dockerfile"
grep -q '^COPY rootfs /$' "$CONTEXT/Dockerfile" ||
  fail "deploy/Dockerfile.hoistd has no final 'FROM scratch' stage with 'COPY --from=build /rootfs /'"
for label in "${LABELS[@]}"; do echo "LABEL ${label%%=*}=\"${label#*=}\"" >>"$CONTEXT/Dockerfile"; done
echo "package: building $IMAGE"
docker build -q -t "$IMAGE" "$CONTEXT" >"$WORK/build.log" 2>&1 || fail "docker build of $IMAGE failed: $(cat "$WORK/build.log")"
version="$(docker run --rm --network none "$IMAGE" --version 2>&1)" ||
  fail "$IMAGE does not start: $version"
echo "package: $IMAGE runs: $version"
