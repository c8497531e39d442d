#!/usr/bin/env bash
# Runs every test of Hoist from a fresh clone: installs what is missing, builds
# (Release, -Wall -Wextra -Werror), lints the protocol with buf, checks it for
# breaking changes against the previous commit, runs the parsers' fuzz targets
# briefly (tests/fuzz/run.sh) and runs ctest (unit, integration and e2e; the
# last two use a real Postgres and the machine's Docker Engine).
#
#   bash deploy/test.sh              # everything
#   bash deploy/test.sh -L unit      # extra arguments go to ctest
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR="${BUILD_DIR:-build}"
JOBS="${JOBS:-2}"

bash deploy/install-deps.sh
export PATH="/opt/hoist-tools/bin:$PATH"

cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS"

echo "== buf lint"
buf lint
# hoist.v1 must never break once it has landed: compare with the previous commit.
if git rev-parse -q --verify HEAD~1 >/dev/null 2>&1 &&
   git cat-file -e HEAD~1:proto/hoist/v1/agent.proto 2>/dev/null; then
  echo "== buf breaking (against HEAD~1)"
  buf breaking --against ".git#ref=HEAD~1"
else
  echo "== buf breaking skipped: no earlier commit with proto/hoist/v1"
fi

if [[ $# -eq 0 ]]; then
  # The parsers under libFuzzer, briefly (a million runs each: bash tests/fuzz/run.sh).
  echo "== fuzz (short run)"
  bash tests/fuzz/run.sh --runs "${FUZZ_RUNS:-20000}"
fi

echo "== ctest"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS" --timeout 900 "$@"
