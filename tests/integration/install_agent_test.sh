#!/usr/bin/env bash
# deploy/install-agent.sh into a temp root (--prefix): what it writes, with
# which modes; that a second run changes nothing; that --dry-run writes
# nothing; that bad input is refused with a message naming the flag; that the
# unit is valid (systemd-analyze verify when present, and parsed here either
# way); and that the real hoist-agent starts from what was installed.
#
#   install_agent_test.sh HOIST_AGENT HOIST
set -uo pipefail

AGENT_BIN="${1:?usage: install_agent_test.sh HOIST_AGENT HOIST}"
HOIST_BIN="${2:?usage: install_agent_test.sh HOIST_AGENT HOIST}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SCRIPT="$REPO/deploy/install-agent.sh"
UNIT="$REPO/deploy/hoist-agent.service"

T="$(mktemp -d /tmp/hoist-install-agent-test.XXXXXX)"
AGENT_PID=""
cleanup() {
  if [[ -n "$AGENT_PID" ]]; then kill "$AGENT_PID" 2>/dev/null; wait "$AGENT_PID" 2>/dev/null; fi
  rm -rf "$T"
}
trap cleanup EXIT

# shellcheck source=../fixtures/checks.sh
. "$REPO/tests/fixtures/checks.sh"
mode_is() { [[ "$(stat -c %a "$1" 2>/dev/null)" == "$2" ]] || { echo "     $1: mode $(stat -c %a "$1" 2>&1), expected $2"; return 1; }; }

# A fleet CA, a certificate for host-7 and one for another agent.
"$HOIST_BIN" ca init --dir "$T/ca" >/dev/null || { echo "FAIL hoist ca init"; exit 1; }
"$HOIST_BIN" ca issue agent host-7 --dir "$T/ca" >/dev/null || { echo "FAIL hoist ca issue"; exit 1; }
"$HOIST_BIN" ca issue agent host-8 --dir "$T/ca" >/dev/null || { echo "FAIL hoist ca issue"; exit 1; }
TLS=(--tls-ca "$T/ca/ca.crt" --tls-cert "$T/ca/agent-host-7.crt" --tls-key "$T/ca/agent-host-7.key")
ROOT="$T/root"
ARGS=(--controller ctl-1.example.net:7443,10.0.0.5:7444 --agent-id host-7 "${TLS[@]}" --labels tier=app,zone=b
      --binary "$AGENT_BIN" --prefix "$ROOT")

# ---- a first install ---------------------------------------------------------
out="$(bash "$SCRIPT" "${ARGS[@]}" 2>&1)"
rc=$?
check "first install exits 0 (got $rc)" [ "$rc" = 0 ]
[[ $rc == 0 ]] || echo "$out"
check "the binary is installed as is" cmp -s "$AGENT_BIN" "$ROOT/usr/local/bin/hoist-agent"
check "the binary is 0755" mode_is "$ROOT/usr/local/bin/hoist-agent" 755
check "hoist-forward is installed beside it" cmp -s "$(dirname "$AGENT_BIN")/hoist-forward" "$ROOT/usr/local/bin/hoist-forward"
check "the unit is deploy/hoist-agent.service" cmp -s "$UNIT" "$ROOT/etc/systemd/system/hoist-agent.service"
check "the unit is 0644" mode_is "$ROOT/etc/systemd/system/hoist-agent.service" 644
check "/etc/hoist exists" test -d "$ROOT/etc/hoist"
check "the state dir is 0700" mode_is "$ROOT/var/lib/hoist-agent" 700
check "the TLS dir is 0750" mode_is "$ROOT/etc/hoist/tls" 750
check "the CA is copied" cmp -s "$T/ca/ca.crt" "$ROOT/etc/hoist/tls/ca.crt"
check "the certificate is copied" cmp -s "$T/ca/agent-host-7.crt" "$ROOT/etc/hoist/tls/agent.crt"
check "the key is copied" cmp -s "$T/ca/agent-host-7.key" "$ROOT/etc/hoist/tls/agent.key"
check "the key is 0600" mode_is "$ROOT/etc/hoist/tls/agent.key" 600
check "the env file is 0640" mode_is "$ROOT/etc/hoist/agent.env" 640
check "systemd was left alone" contains "$out" "systemd left alone (--prefix)"

ENV_FILE="$ROOT/etc/hoist/agent.env"
settings="$(grep -v '^#' "$ENV_FILE" | grep -v '^$')"
expected="HOIST_CONTROLLER=ctl-1.example.net:7443,10.0.0.5:7444
HOIST_AGENT_ID=host-7
HOIST_TLS_CA=/etc/hoist/tls/ca.crt
HOIST_TLS_CERT=/etc/hoist/tls/agent.crt
HOIST_TLS_KEY=/etc/hoist/tls/agent.key
HOIST_AGENT_LABELS=tier=app,zone=b
HOIST_AGENT_STATE_DIR=/var/lib/hoist-agent"
check "the env file holds exactly the settings given" [ "$settings" = "$expected" ]
[[ "$settings" == "$expected" ]] || diff <(echo "$expected") <(echo "$settings")
# Every key it sets (or suggests) is one hoist-agent reads.
help="$("$AGENT_BIN" --help)"
while read -r key; do
  check "hoist-agent reads $key" contains "$help" "[env $key]"
done < <(sed -n 's/^#\{0,1\}\([A-Z_]*\)=.*/\1/p' "$ENV_FILE")

# ---- the unit ------------------------------------------------------------------
unit_value() { sed -n "s/^$1=//p" "$UNIT"; }
check "ExecStart runs the installed binary" [ "$(unit_value ExecStart)" = /usr/local/bin/hoist-agent ]
check "EnvironmentFile is /etc/hoist/agent.env" [ "$(unit_value EnvironmentFile)" = /etc/hoist/agent.env ]
check "Restart=always" [ "$(unit_value Restart)" = always ]
check "it starts after Docker" contains "$(unit_value After)" docker.service
check "it is wanted by multi-user.target" [ "$(unit_value WantedBy)" = multi-user.target ]
check "the state dir stays writable" contains "$(unit_value ReadWritePaths)" /var/lib/hoist-agent
check "the state dir is the agent's" [ "$(unit_value StateDirectory)" = hoist-agent ]
check "the file system is read-only otherwise" [ "$(unit_value ProtectSystem)" = strict ]
check "no new privileges" [ "$(unit_value NoNewPrivileges)" = yes ]
# The hardening must leave the Docker socket reachable.
check "unix sockets are allowed" contains "$(unit_value RestrictAddressFamilies)" AF_UNIX
check "the network is not private" [ "$(unit_value PrivateNetwork)" != yes ]
check "/run is not hidden" bash -c "! grep -E '^(InaccessiblePaths|TemporaryFileSystem)=.*(/run|/var/run)' '$UNIT'"
check "it runs as root, owner of the Docker socket's group" [ -z "$(unit_value User)" ]
# Only known sections, and every line is a comment, a section or Key=Value.
check "the unit parses as [Unit], [Service], [Install] of Key=Value lines" \
  bash -c "grep -vE '^(#.*|\[(Unit|Service|Install)\]|[A-Za-z]+=.*|)$' '$UNIT' | { ! grep -q .; }"
if command -v systemd-analyze >/dev/null 2>&1; then
  sed "s|^ExecStart=/usr/local/bin/hoist-agent|ExecStart=$ROOT/usr/local/bin/hoist-agent|" "$UNIT" \
    >"$T/hoist-agent.service"
  verify="$(systemd-analyze verify "$T/hoist-agent.service" 2>&1)"
  check "systemd-analyze verify accepts the unit" [ $? = 0 ]
  [[ -z "$verify" ]] || echo "$verify"
  check "install-agent.sh verified it too" contains "$out" "systemd-analyze verify: the unit is valid"
else
  echo "skip systemd-analyze verify: not installed"
fi

# ---- the installed agent starts from what was installed ------------------------
# Paths in the env file are the target system's: map them into the temp root.
# The controller is a closed port: the agent starts and keeps retrying.
(
  set -a
  # shellcheck disable=SC1090
  . <(sed -e "s|=/etc/hoist/|=$ROOT/etc/hoist/|" -e "s|=/var/lib/hoist-agent|=$ROOT/var/lib/hoist-agent|" \
          -e "s|^HOIST_CONTROLLER=.*|HOIST_CONTROLLER=127.0.0.1:1|" "$ENV_FILE")
  set +a
  exec "$ROOT/usr/local/bin/hoist-agent" --docker-socket "$T/no-docker.sock"
) >"$T/agent.log" 2>&1 &
AGENT_PID=$!
started=0
for _ in $(seq 200); do
  if grep -q "hoist-agent .* (host-7) started" "$T/agent.log"; then started=1; break; fi
  kill -0 "$AGENT_PID" 2>/dev/null || break
  sleep 0.05
done
check "hoist-agent starts with the installed env file and TLS files" [ "$started" = 1 ]
[[ $started == 1 ]] || cat "$T/agent.log"
kill "$AGENT_PID" 2>/dev/null; wait "$AGENT_PID" 2>/dev/null; AGENT_PID=""

# ---- a second run with the same flags changes nothing --------------------------
touch -d '1 minute ago' "$T/marker"
find "$ROOT" -exec touch -h -d '2 minutes ago' {} +
out="$(bash "$SCRIPT" "${ARGS[@]}" 2>&1)"
check "a second run exits 0" [ $? = 0 ]
check "a second run says nothing changed" contains "$out" "nothing to change"
check "a second run touches no file" [ -z "$(find "$ROOT" -newer "$T/marker")" ]

# ---- other flags update what differs, keeping the previous settings ------------
cp "$ENV_FILE" "$T/env.before"
out="$(bash "$SCRIPT" "${ARGS[@]/tier=app,zone=b/tier=edge}" 2>&1)"
check "a run with other labels exits 0" [ $? = 0 ]
check "the labels changed" grep -qx "HOIST_AGENT_LABELS=tier=edge" "$ENV_FILE"
check "the previous settings are kept" cmp -s "$T/env.before" "$ENV_FILE.previous"
check "only the env file was rewritten" [ "$(find "$ROOT" -newer "$T/marker" -type f)" = "$ENV_FILE" ]

# ---- --dry-run ------------------------------------------------------------------
out="$(bash "$SCRIPT" "${ARGS[@]/$ROOT/$T/fresh}" --dry-run 2>&1)"
check "--dry-run exits 0" [ $? = 0 ]
check "--dry-run creates nothing" [ ! -e "$T/fresh" ]
check "--dry-run says what it would write" contains "$out" "would write $T/fresh/etc/hoist/agent.env"
cp "$ENV_FILE" "$T/env.before"
out="$(bash "$SCRIPT" "${ARGS[@]/10.0.0.5:7444/10.0.0.6:7444}" --dry-run 2>&1)"
check "--dry-run over an install exits 0" [ $? = 0 ]
check "--dry-run over an install would replace the env file" contains "$out" "would replace $ENV_FILE"
check "--dry-run over an install leaves it alone" cmp -s "$T/env.before" "$ENV_FILE"

# ---- --insecure -------------------------------------------------------------------
out="$(bash "$SCRIPT" --controller 127.0.0.1:7443 --agent-id dev-1 --insecure --binary "$AGENT_BIN" \
       --prefix "$T/dev" 2>&1)"
check "--insecure installs (exit 0)" [ $? = 0 ]
check "--insecure writes HOIST_INSECURE=true" grep -qx "HOIST_INSECURE=true" "$T/dev/etc/hoist/agent.env"
check "--insecure writes no TLS settings" bash -c "! grep -q '^HOIST_TLS' '$T/dev/etc/hoist/agent.env'"
check "--insecure installs no TLS dir" [ ! -e "$T/dev/etc/hoist/tls" ]

# ---- bad input: exit 2, the flag named, nothing written ---------------------------
refused() {  # refused MESSAGE ARGS...: exit 2 and MESSAGE on stderr, $T/bad untouched
  local message="$1"
  shift
  local err rc
  err="$(bash "$SCRIPT" "$@" --binary "$AGENT_BIN" --prefix "$T/bad" 2>&1 >/dev/null)"
  rc=$?
  if [[ $rc != 2 ]] || ! contains "$err" "$message" || [[ -e "$T/bad" ]]; then
    echo "     exit $rc, stderr: $err"
    return 1
  fi
}
check "no --controller" refused "--controller is required" --agent-id host-7 "${TLS[@]}"
check "a controller without a port" refused '"ctl.example.net" is not host:port' \
  --controller ctl.example.net --agent-id host-7 "${TLS[@]}"
check "a port out of range" refused '"ctl:70000" is not host:port' --controller ctl:70000 --agent-id host-7 "${TLS[@]}"
check "a bad agent id" refused '--agent-id "host 7"' --controller ctl:7443 --agent-id "host 7" "${TLS[@]}"
check "a bad label" refused '--labels: "tier"' --controller ctl:7443 --agent-id host-7 --labels tier "${TLS[@]}"
check "a certificate of another agent" refused 'is for "host-7", not agent id "host-8"' \
  --controller ctl:7443 --agent-id host-8 "${TLS[@]}"
check "a key of another certificate" refused "is not the private key of --tls-cert" \
  --controller ctl:7443 --agent-id host-7 --tls-ca "$T/ca/ca.crt" --tls-cert "$T/ca/agent-host-7.crt" \
  --tls-key "$T/ca/agent-host-8.key"
"$HOIST_BIN" ca init --dir "$T/other-ca" >/dev/null
check "a certificate from another CA" refused "is not signed by --tls-ca" \
  --controller ctl:7443 --agent-id host-7 --tls-ca "$T/other-ca/ca.crt" --tls-cert "$T/ca/agent-host-7.crt" \
  --tls-key "$T/ca/agent-host-7.key"
check "a missing TLS file" refused "--tls-key $T/ca/nope.key: no such file" \
  --controller ctl:7443 --agent-id host-7 --tls-ca "$T/ca/ca.crt" --tls-cert "$T/ca/agent-host-7.crt" \
  --tls-key "$T/ca/nope.key"
check "only some TLS flags" refused "--tls-key is missing" \
  --controller ctl:7443 --agent-id host-7 --tls-ca "$T/ca/ca.crt" --tls-cert "$T/ca/agent-host-7.crt"
check "neither TLS nor --insecure" refused "or --insecure for development" --controller ctl:7443 --agent-id host-7
check "TLS and --insecure" refused "contradict" --controller ctl:7443 --agent-id host-7 --insecure "${TLS[@]}"
check "an unknown flag" refused 'unknown flag "--bogus"' --bogus
err="$(bash "$SCRIPT" --controller ctl:7443 --agent-id host-7 --insecure --binary /bin/true --prefix "$T/bad" 2>&1)"
check "a binary that is not hoist-agent" [ $? = 2 ]
check "a binary that is not hoist-agent is named" contains "$err" "--binary /bin/true does not answer --version as hoist-agent"

finish
