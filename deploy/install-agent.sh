#!/usr/bin/env bash
# Installs hoist-agent on this Docker host as a systemd service: the binary in
# /usr/local/bin, the unit (deploy/hoist-agent.service), the mTLS files in
# /etc/hoist/tls, the settings in /etc/hoist/agent.env and the state dir
# /var/lib/hoist-agent; then enables and (re)starts the service. It checks
# everything first and changes nothing when a check fails. Running it again
# with the same flags changes nothing; with other flags it updates what
# differs and restarts the agent.
#
#   sudo deploy/install-agent.sh --controller ctl.example.net:7443,ctl.example.net:7444 \
#     --agent-id web-1 --tls-ca hoist-ca/ca.crt \
#     --tls-cert hoist-ca/agent-web-1.crt --tls-key hoist-ca/agent-web-1.key
#
# Flags:
#   --controller ADDRS   hoistd replicas, host:port[,host:port...] (required)
#   --agent-id ID        this agent's id (default: the host name); it must be
#                        the certificate's name (hoist ca issue agent ID)
#   --tls-ca FILE        fleet CA certificate (hoist ca init)
#   --tls-cert FILE      this agent's certificate
#   --tls-key FILE       this agent's private key
#   --insecure           no mTLS (development only; instead of the three above)
#   --labels K=V,...     placement labels (HOIST_AGENT_LABELS)
#   --binary PATH        hoist-agent to install (default: build/agent/hoist-agent
#                        of this checkout, else hoist-agent on PATH)
#   --prefix DIR         install under DIR instead of / and leave systemd alone
#                        (for packaging and tests)
#   --no-start           install and enable, but do not (re)start the service
#   --dry-run            print what would change; change nothing
#   -h, --help           this text
#
# Exit codes: 0 done (or nothing to do), 1 an install step failed, 2 a bad flag
# or input (the message names it and what it expected).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
UNIT_SOURCE="$SCRIPT_DIR/hoist-agent.service"

CONTROLLER="" AGENT_ID="" TLS_CA="" TLS_CERT="" TLS_KEY="" LABELS="" BINARY="" PREFIX=""
INSECURE=0 DRY_RUN=0 NO_START=0

usage_error() {
  echo "install-agent: $*" >&2
  echo "install-agent: see deploy/install-agent.sh --help" >&2
  exit 2
}
fail() {
  echo "install-agent: $*" >&2
  exit 1
}
say() { echo "install-agent: $*"; }

# Flags take `--flag value` or `--flag=value`.
while [[ $# -gt 0 ]]; do
  flag="$1"
  value=""
  has_inline=0
  if [[ "$flag" == --*=* ]]; then
    value="${flag#*=}"
    flag="${flag%%=*}"
    has_inline=1
  fi
  case "$flag" in
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    --insecure|--dry-run|--no-start)
      [[ $has_inline == 1 ]] && usage_error "$flag takes no value"
      case "$flag" in
        --insecure) INSECURE=1 ;;
        --dry-run) DRY_RUN=1 ;;
        --no-start) NO_START=1 ;;
      esac
      shift
      continue
      ;;
    --controller|--agent-id|--tls-ca|--tls-cert|--tls-key|--labels|--binary|--prefix)
      if [[ $has_inline == 0 ]]; then
        [[ $# -ge 2 && "$2" != --* ]] || usage_error "$flag needs a value"
        value="$2"
        shift
      fi
      shift
      ;;
    *) usage_error "unknown flag \"$1\"" ;;
  esac
  case "$flag" in
    --controller) CONTROLLER="$value" ;;
    --agent-id) AGENT_ID="$value" ;;
    --tls-ca) TLS_CA="$value" ;;
    --tls-cert) TLS_CERT="$value" ;;
    --tls-key) TLS_KEY="$value" ;;
    --labels) LABELS="$value" ;;
    --binary) BINARY="$value" ;;
    --prefix) PREFIX="$value" ;;
  esac
done

# ---- checks: all of them before anything changes -------------------------

[[ -n "$CONTROLLER" ]] || usage_error "--controller is required: the hoistd replicas as host:port[,host:port], e.g. ctl.example.net:7443"
IFS=',' read -r -a controllers <<<"$CONTROLLER"
for c in "${controllers[@]}"; do
  if [[ ! "$c" =~ ^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?):([0-9]{1,5})$ ]] ||
     (( 10#${BASH_REMATCH[3]} < 1 || 10#${BASH_REMATCH[3]} > 65535 )); then
    usage_error "--controller: \"$c\" is not host:port (a host name or IP, a port from 1 to 65535), e.g. ctl.example.net:7443"
  fi
done

if [[ -z "$AGENT_ID" ]]; then
  AGENT_ID="$(hostname)"
  say "--agent-id not given: using the host name \"$AGENT_ID\""
fi
[[ "$AGENT_ID" =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$ ]] ||
  usage_error "--agent-id \"$AGENT_ID\": use 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit"

if [[ -n "$LABELS" ]]; then
  IFS=',' read -r -a labels <<<"$LABELS"
  for l in "${labels[@]}"; do
    [[ "$l" =~ ^[A-Za-z0-9][A-Za-z0-9._/-]*=[A-Za-z0-9._/-]*$ ]] ||
      usage_error "--labels: \"$l\" is not key=value (letters, digits, '.', '_', '/', '-'), e.g. tier=app"
  done
fi

tls_given=0
[[ -n "$TLS_CA$TLS_CERT$TLS_KEY" ]] && tls_given=1
if [[ $tls_given == 1 && $INSECURE == 1 ]]; then
  usage_error "--insecure and --tls-* contradict each other: drop --insecure to use mTLS"
fi
if [[ $tls_given == 0 && $INSECURE == 0 ]]; then
  usage_error "give --tls-ca, --tls-cert and --tls-key (from hoist ca init and hoist ca issue agent $AGENT_ID), or --insecure for development"
fi
if [[ $tls_given == 1 ]]; then
  for pair in "--tls-ca:$TLS_CA" "--tls-cert:$TLS_CERT" "--tls-key:$TLS_KEY"; do
    name="${pair%%:*}" path="${pair#*:}"
    [[ -n "$path" ]] || usage_error "$name is missing: --tls-ca, --tls-cert and --tls-key go together"
    [[ -f "$path" && -r "$path" ]] || usage_error "$name $path: no such file or not readable"
  done
  grep -q -- '-----BEGIN CERTIFICATE-----' "$TLS_CA" || usage_error "--tls-ca $TLS_CA is not a PEM certificate (expected the fleet CA's ca.crt)"
  grep -q -- '-----BEGIN CERTIFICATE-----' "$TLS_CERT" || usage_error "--tls-cert $TLS_CERT is not a PEM certificate"
  grep -q -- 'PRIVATE KEY-----' "$TLS_KEY" || usage_error "--tls-key $TLS_KEY is not a PEM private key"
  if command -v openssl >/dev/null 2>&1; then
    openssl verify -CAfile "$TLS_CA" "$TLS_CERT" >/dev/null 2>&1 ||
      usage_error "--tls-cert $TLS_CERT is not signed by --tls-ca $TLS_CA (or has expired): issue it with hoist ca issue agent $AGENT_ID from that CA"
    subject="$(openssl x509 -in "$TLS_CERT" -noout -subject -nameopt multiline 2>/dev/null |
               sed -n 's/^ *commonName *= *//p')"
    [[ "$subject" == "$AGENT_ID" ]] ||
      usage_error "--tls-cert $TLS_CERT is for \"$subject\", not agent id \"$AGENT_ID\": the controller refuses a session whose certificate names another agent; pass --agent-id $subject or issue hoist ca issue agent $AGENT_ID"
    cert_key="$(openssl x509 -in "$TLS_CERT" -noout -pubkey 2>/dev/null)"
    key_key="$(openssl pkey -in "$TLS_KEY" -pubout 2>/dev/null || true)"
    [[ -n "$key_key" && "$cert_key" == "$key_key" ]] ||
      usage_error "--tls-key $TLS_KEY is not the private key of --tls-cert $TLS_CERT"
  else
    say "openssl not found: not checking that the certificate is signed by the CA and names $AGENT_ID"
  fi
fi

if [[ -z "$BINARY" ]]; then
  if [[ -x "$SCRIPT_DIR/../build/agent/hoist-agent" ]]; then
    BINARY="$SCRIPT_DIR/../build/agent/hoist-agent"
  elif command -v hoist-agent >/dev/null 2>&1; then
    BINARY="$(command -v hoist-agent)"
  else
    usage_error "no hoist-agent binary: build it (cmake --build build --target hoist-agent) or pass --binary PATH"
  fi
fi
[[ -f "$BINARY" && -x "$BINARY" ]] || usage_error "--binary $BINARY: no such executable file"
BINARY="$(cd "$(dirname "$BINARY")" && pwd)/$(basename "$BINARY")"
version="$("$BINARY" --version 2>/dev/null | head -n 1 || true)"
[[ "$version" == hoist-agent\ * ]] ||
  usage_error "--binary $BINARY does not answer --version as hoist-agent (it printed \"${version:0:60}\")"
# The static relay the agent runs for services of other hosts (next to it).
FORWARD_BINARY="$(dirname "$BINARY")/hoist-forward"
[[ -f "$FORWARD_BINARY" && -x "$FORWARD_BINARY" ]] ||
  usage_error "no hoist-forward next to $BINARY: build it (cmake --build build --target hoist-forward) and keep it beside hoist-agent"
[[ -f "$UNIT_SOURCE" ]] || fail "$UNIT_SOURCE is missing: run the script from a Hoist checkout or release tarball"

if [[ -n "$PREFIX" ]]; then
  if [[ $DRY_RUN == 0 ]]; then
    mkdir -p -- "$PREFIX" 2>/dev/null || usage_error "--prefix $PREFIX: cannot create it"
  fi
  if [[ -d "$PREFIX" ]]; then PREFIX="$(cd "$PREFIX" && pwd)"; fi
  if [[ "$PREFIX" == "/" ]]; then PREFIX=""; fi
fi
if [[ -z "$PREFIX" && $DRY_RUN == 0 && "$(id -u)" != 0 ]]; then
  usage_error "installing into / needs root: run it with sudo (or try --dry-run, or --prefix DIR)"
fi

# ---- what to write --------------------------------------------------------

ETC_DIR="/etc/hoist"
TLS_DIR="/etc/hoist/tls"
STATE_DIR="/var/lib/hoist-agent"
BIN_PATH="/usr/local/bin/hoist-agent"
UNIT_PATH="/etc/systemd/system/hoist-agent.service"
ENV_PATH="/etc/hoist/agent.env"

env_text() {
  echo "# hoist-agent's settings, read by hoist-agent.service (EnvironmentFile=)."
  echo "# Written by deploy/install-agent.sh; re-run it to change them, or edit here"
  echo "# and run systemctl restart hoist-agent. Every hoist-agent flag has an env"
  echo "# var: hoist-agent --help lists them."
  echo "HOIST_CONTROLLER=$CONTROLLER"
  echo "HOIST_AGENT_ID=$AGENT_ID"
  if [[ $tls_given == 1 ]]; then
    echo "HOIST_TLS_CA=$TLS_DIR/ca.crt"
    echo "HOIST_TLS_CERT=$TLS_DIR/agent.crt"
    echo "HOIST_TLS_KEY=$TLS_DIR/agent.key"
  else
    echo "# No mTLS: development only."
    echo "HOIST_INSECURE=true"
  fi
  if [[ -n "$LABELS" ]]; then
    echo "HOIST_AGENT_LABELS=$LABELS"
  else
    echo "#HOIST_AGENT_LABELS=tier=app"
  fi
  echo "HOIST_AGENT_STATE_DIR=$STATE_DIR"
  echo "#HOIST_AGENT_DEPLOYMENTS=shop"
  echo "# Directories whose env files stacks may name (none by default: env files are refused)."
  echo "#HOIST_ENV_FILE_DIRS=/etc/shop"
  echo "#HOIST_LOG_FORMAT=json"
}

changed=0

# ensure_dir PATH MODE
ensure_dir() {
  local path="$PREFIX$1" mode="$2"
  if [[ -d "$path" ]]; then
    if [[ "$(stat -c %a "$path")" != "$mode" ]]; then
      if [[ $DRY_RUN == 1 ]]; then say "would chmod $mode $path"; else chmod "$mode" "$path"; say "chmod $mode $path"; fi
      changed=1
    fi
    return
  fi
  if [[ $DRY_RUN == 1 ]]; then say "would create $path (mode $mode)"; changed=1; return; fi
  mkdir -p -m "$mode" -- "$path" || fail "cannot create $path"
  chmod "$mode" "$path"
  say "created $path (mode $mode)"
  changed=1
}

# put_file SOURCE DEST MODE: DEST gets SOURCE's bytes and MODE, atomically;
# an equal file is left alone. A replaced env file is kept as DEST.previous.
put_file() {
  local source="$1" dest="$PREFIX$2" mode="$3"
  if [[ -f "$dest" ]] && cmp -s "$source" "$dest"; then
    if [[ "$(stat -c %a "$dest")" == "$mode" ]]; then
      say "unchanged $dest"
      return
    fi
    if [[ $DRY_RUN == 1 ]]; then say "would chmod $mode $dest"; else chmod "$mode" "$dest"; say "chmod $mode $dest"; fi
    changed=1
    return
  fi
  changed=1
  if [[ $DRY_RUN == 1 ]]; then
    say "would $( [[ -e "$dest" ]] && echo replace || echo write ) $dest (mode $mode)"
    return
  fi
  local tmp="$dest.install-tmp.$$"
  install -m "$mode" -- "$source" "$tmp" || fail "cannot write $tmp"
  if [[ "$2" == "$ENV_PATH" && -f "$dest" ]]; then
    cp -p -- "$dest" "$dest.previous"
    say "kept the previous settings in $dest.previous"
  fi
  mv -f -- "$tmp" "$dest" || fail "cannot move $tmp to $dest"
  say "wrote $dest (mode $mode)"
}

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
env_text >"$WORK/agent.env"

[[ $DRY_RUN == 1 ]] && say "dry run: nothing is changed"
ensure_dir /usr/local/bin 755
ensure_dir /etc/systemd/system 755
ensure_dir "$ETC_DIR" 755
ensure_dir "$STATE_DIR" 700
put_file "$BINARY" "$BIN_PATH" 755
put_file "$FORWARD_BINARY" "$(dirname "$BIN_PATH")/hoist-forward" 755
put_file "$UNIT_SOURCE" "$UNIT_PATH" 644
if [[ $tls_given == 1 ]]; then
  ensure_dir "$TLS_DIR" 750
  put_file "$TLS_CA" "$TLS_DIR/ca.crt" 644
  put_file "$TLS_CERT" "$TLS_DIR/agent.crt" 644
  put_file "$TLS_KEY" "$TLS_DIR/agent.key" 600
fi
put_file "$WORK/agent.env" "$ENV_PATH" 640

# The unit must load: systemd-analyze checks it, with ExecStart pointed at the
# binary just installed (it lives under --prefix in a test).
if command -v systemd-analyze >/dev/null 2>&1; then
  installed_bin="$PREFIX$BIN_PATH"
  [[ $DRY_RUN == 1 ]] && installed_bin="$BINARY"
  sed "s|^ExecStart=$BIN_PATH|ExecStart=$installed_bin|" "$UNIT_SOURCE" >"$WORK/hoist-agent.service"
  if ! out="$(systemd-analyze verify "$WORK/hoist-agent.service" 2>&1)"; then
    fail "systemd-analyze verify rejects the unit: $out"
  fi
  say "systemd-analyze verify: the unit is valid"
else
  say "systemd-analyze not found: the unit was not verified"
fi

# ---- systemd --------------------------------------------------------------

if [[ -n "$PREFIX" ]]; then
  say "$( [[ $DRY_RUN == 1 ]] && echo "would install" || echo installed ) under $PREFIX; systemd left alone (--prefix)"
elif [[ $DRY_RUN == 1 ]]; then
  say "would run: systemctl daemon-reload; systemctl enable hoist-agent; systemctl $( [[ $changed == 1 ]] && echo restart || echo start ) hoist-agent"
elif ! command -v systemctl >/dev/null 2>&1 || [[ ! -d /run/systemd/system ]]; then
  say "systemd is not running here: start the agent yourself with: set -a; . $ENV_PATH; set +a; $BIN_PATH"
else
  systemctl daemon-reload || fail "systemctl daemon-reload failed"
  systemctl enable --quiet hoist-agent || fail "systemctl enable hoist-agent failed"
  if [[ $NO_START == 1 ]]; then
    say "enabled hoist-agent; not started (--no-start): systemctl start hoist-agent"
  elif [[ $changed == 1 ]]; then
    systemctl restart hoist-agent || fail "systemctl restart hoist-agent failed: journalctl -u hoist-agent -n 50"
    say "restarted hoist-agent"
  else
    systemctl start hoist-agent || fail "systemctl start hoist-agent failed: journalctl -u hoist-agent -n 50"
    say "hoist-agent is running (nothing changed)"
  fi
  say "follow it: journalctl -u hoist-agent -f; from the operator's machine: hoist agents"
fi
if [[ $changed == 0 ]]; then
  say "nothing to change"
fi
