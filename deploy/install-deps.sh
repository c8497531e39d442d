#!/usr/bin/env bash
# Installs everything Hoist needs to build, test and run its demo on Debian 12.
# Idempotent: packages already present are left alone, and buf is only built when
# the pinned version is not already installed. Quiet on success; on failure the
# captured output is printed.
set -euo pipefail

BUF_VERSION="${BUF_VERSION:-v1.47.2}"
HOIST_TOOLS_DIR="${HOIST_TOOLS_DIR:-/opt/hoist-tools/bin}"

PACKAGES=(
  # build
  cmake ninja-build g++ pkg-config git
  protobuf-compiler protobuf-compiler-grpc libprotobuf-dev libgrpc++-dev libabsl-dev
  libpqxx-dev libpq-dev libspdlog-dev libfmt-dev libgtest-dev libgmock-dev
  libcurl4-openssl-dev libssl-dev nlohmann-json3-dev libyaml-cpp-dev prometheus-cpp-dev
  # the parsers' fuzz targets (tests/fuzz): clang with libFuzzer and the sanitizers
  clang-14 libclang-rt-14-dev
  # real parts used by tests, benchmarks and the demo
  postgresql postgresql-client docker-registry docker-compose haproxy wrk hyperfine
  iproute2 iptables openssl procps curl ca-certificates util-linux
  # the demo and benchmarks pick free ports with python3
  python3
)

log=$(mktemp)
trap 'rm -f "$log"' EXIT

sudo_if_needed() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! sudo_if_needed apt-get update -qq >"$log" 2>&1; then
    cat "$log" >&2; echo "install-deps: apt-get update failed" >&2; exit 1
  fi
  if ! sudo_if_needed apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
    cat "$log" >&2; echo "install-deps: apt-get install failed" >&2; exit 1
  fi
fi

# Debian starts a default cluster and a registry on install; Hoist's tests and demo
# run their own throw-away instances and need neither.
for svc in docker-registry; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    sudo_if_needed systemctl stop "$svc" >/dev/null 2>&1 || true
  fi
done

# buf, pinned. Built once and kept in HOIST_TOOLS_DIR.
have_buf=""
if [ -x "$HOIST_TOOLS_DIR/buf" ]; then
  have_buf=$("$HOIST_TOOLS_DIR/buf" --version 2>/dev/null || true)
fi
if [ "v${have_buf#v}" != "$BUF_VERSION" ]; then
  GO=$(command -v go || echo /usr/local/go/bin/go)
  if [ ! -x "$GO" ]; then
    echo "install-deps: Go is needed to build buf $BUF_VERSION (install Go, or put buf $BUF_VERSION at $HOIST_TOOLS_DIR/buf)" >&2
    exit 1
  fi
  echo "install-deps: building buf $BUF_VERSION"
  # Keep Go's module and build caches beside the tools, so that the build works
  # without a HOME and does not litter one.
  export GOPATH="${GOPATH:-/opt/hoist-tools/go}" GOCACHE="${GOCACHE:-/opt/hoist-tools/go-cache}"
  sudo_if_needed mkdir -p "$HOIST_TOOLS_DIR"
  if ! GOBIN="$HOIST_TOOLS_DIR" "$GO" install "github.com/bufbuild/buf/cmd/buf@$BUF_VERSION" >"$log" 2>&1; then
    cat "$log" >&2; echo "install-deps: go install buf failed" >&2; exit 1
  fi
fi
