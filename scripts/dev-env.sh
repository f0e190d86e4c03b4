#!/usr/bin/env bash
# The local services the tests and the demo run against, started in the background on free
# ports of 127.0.0.1 and nothing else: moto, the AWS emulator, two Docker Distribution
# registries (the vendor's and the customer's, with htpasswd logins) and the reference control
# plane. The registries and the control plane serve HTTPS with a certificate for 127.0.0.1 and
# localhost from a local CA made at the first `up` (target/dev-env/tls/); env.sh points
# STACKWRIGHT_CA_BUNDLE at the CA, as a customer behind a TLS-inspecting proxy would.
#
#   scripts/dev-env.sh up       install the tools if needed (scripts/dev-tools.sh), start what is
#                               not running, write target/dev-env/env.sh; safe to run again
#   scripts/dev-env.sh down     stop what `up` started (TERM, then KILL); safe when nothing runs
#   scripts/dev-env.sh status   print what runs; exit 0 if everything runs, 3 if not
#   scripts/dev-env.sh env      print the path of env.sh: source "$(scripts/dev-env.sh env)"
#   scripts/dev-env.sh reset    forget everything moto holds (POST /moto-api/reset)
#   scripts/dev-env.sh seed     push the example releases' images to the vendor registry (up does)
#
# STACKWRIGHT_BIN_DIR, when set, names a directory holding this project's binaries already built
# (the test suite and the demo build first); otherwise `up` builds what it runs.
#
# STACKWRIGHT_CARGO_FEATURES, when set, replaces the cargo features the binaries are built with
# when `up` builds them (default: --all-features).
#
# State lives in target/dev-env/: NAME.pid, NAME.log and NAME.info (port, readiness URL, and
# the program name used to make sure a PID still belongs to the service) for each service.
# A service is one `start_NAME` function calling `start_service`, plus an optional `env_NAME`
# printing its lines of env.sh; list it in SERVICES.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

state="$root/target/dev-env"
venv="$root/.venv"
env_file="$state/env.sh"
tls_dir="$state/tls"
# The cargo features this script builds the project's binaries with, in one place.
read -r -a cargo_features <<<"${STACKWRIGHT_CARGO_FEATURES:---all-features}"
# Seconds a service may take to answer its readiness URL after it starts.
ready_timeout="${DEV_ENV_READY_TIMEOUT:-30}"
# Start order; `down` stops them in reverse.
SERVICES=(moto vendor-registry customer-registry control-plane)

say() { echo "dev-env: $*"; }
err() { echo "dev-env: $*" >&2; }

now_ms() {
  if [ -n "${EPOCHREALTIME:-}" ]; then
    local t=${EPOCHREALTIME/[.,]/}
    echo $((t / 1000))
  else
    echo $(($(date +%s) * 1000))
  fi
}
elapsed() { # START_MS -> "1.2 s"
  local ms=$(($(now_ms) - $1))
  printf '%d.%d s' $((ms / 1000)) $((ms % 1000 / 100))
}

# HTTP(S) to our own services only: never through a proxy, short timeouts, the local CA trusted.
http_ok() {
  local ca=()
  [ -s "$tls_dir/ca.pem" ] && ca=(--cacert "$tls_dir/ca.pem")
  curl --noproxy '*' -fsS -o /dev/null --connect-timeout 2 --max-time 5 "${ca[@]}" "$1" 2>/dev/null
}

# --- tls: a local CA and a certificate for 127.0.0.1 and localhost ---------------------------
# Made once with the openssl command line and kept, so that a sourced env.sh and running
# services stay valid across `up`; remade when the certificate is about to expire. The keys
# stay in target/dev-env/tls/ (mode 0600). Delete the directory for new ones.

make_tls() {
  if [ -s "$tls_dir/ca.pem" ] && [ -s "$tls_dir/server.pem" ] && [ -s "$tls_dir/server.key" ] &&
    openssl x509 -checkend 86400 -noout -in "$tls_dir/server.pem" >/dev/null 2>&1; then
    return 0
  fi
  if ! command -v openssl >/dev/null 2>&1; then
    err "tls: the openssl command is missing (Debian package openssl; scripts/dev-tools.sh installs it)"
    return 1
  fi
  mkdir -p "$tls_dir"
  (
    umask 077
    cd "$tls_dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
      -subj "/CN=stackwright local development CA" \
      -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -subj "/CN=127.0.0.1" -keyout server.key -out server.csr 2>/dev/null
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
      "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost" >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
      -extfile server.ext -out server.pem 2>/dev/null
    rm -f server.csr server.ext ca.srl
    chmod 644 ca.pem server.pem
  ) || {
    err "tls: cannot make the local CA and certificate in $tls_dir"
    return 1
  }
  say "tls: made a local CA and a certificate for 127.0.0.1 and localhost in ${tls_dir#"$root"/}"
}

env_tls() {
  echo "export STACKWRIGHT_CA_BUNDLE=$tls_dir/ca.pem"
  echo "export STACKWRIGHT_DEV_TLS_CERT=$tls_dir/server.pem"
  echo "export STACKWRIGHT_DEV_TLS_KEY=$tls_dir/server.key"
}

# A free TCP port of 127.0.0.1, the one given if it is free (to keep a sourced env.sh valid
# across a restart), else one the OS picks.
free_port() {
  "$venv/bin/python" -c '
import socket, sys
for port in [int(p) for p in sys.argv[1:] if p] + [0]:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(s.getsockname()[1])
        break
' "${1:-}"
}

# Whether PID is a live process: a zombie (killed, not yet reaped by its new parent) is not.
alive() {
  local stat
  kill -0 "$1" 2>/dev/null || return 1
  stat=$(ps -p "$1" -o stat= 2>/dev/null) || return 1
  [[ "$stat" != Z* ]]
}

pid_file() { echo "$state/$1.pid"; }
# scheme://127.0.0.1:port of a service whose info was just read (moto speaks plain HTTP).
service_origin() { echo "${svc_url%%://*}://127.0.0.1:$svc_port"; }
log_file() { echo "$state/$1.log"; }
info_file() { echo "$state/$1.info"; }

# Reads NAME.info into the globals svc_port, svc_url, svc_match; fails if there is none.
read_info() {
  local info
  info=$(info_file "$1")
  svc_port="" svc_url="" svc_match=""
  [ -f "$info" ] || return 1
  { read -r svc_port && read -r svc_url && read -r svc_match; } <"$info" || return 1
}

# Whether NAME's PID file names a live process that is still that service's program; sets
# svc_pid (and, through read_info, svc_port, svc_url, svc_match).
live_pid() {
  local pidf pid cmd
  svc_pid=""
  pidf=$(pid_file "$1")
  [ -f "$pidf" ] || return 1
  pid=$(<"$pidf")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  read_info "$1" || return 1
  cmd=$(ps -p "$pid" -o command= 2>/dev/null) || return 1
  [[ "$cmd" == *"$svc_match"* ]] || return 1
  svc_pid=$pid
}

# Whether NAME runs and answers its readiness URL.
running() {
  live_pid "$1" && http_ok "$svc_url"
}

log_tail() {
  local log
  log=$(log_file "$1")
  if [ -s "$log" ]; then
    err "last lines of ${log#"$root"/}:"
    tail -n 30 "$log" | sed 's/^/    /' >&2
  fi
}

forget() { rm -f "$(pid_file "$1")" "$(info_file "$1")"; }

# Stops NAME by its PID: TERM, then KILL after 5 s. Forgets its state either way.
stop_service() {
  local name=$1 pid i
  if ! live_pid "$name"; then
    if [ -f "$(pid_file "$name")" ]; then
      say "$name: not running (removed a stale PID file)"
    else
      say "$name: not running"
    fi
    forget "$name"
    return 0
  fi
  pid=$svc_pid
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    kill -KILL "$pid" 2>/dev/null || true
    say "$name: stopped (pid $pid did not end on TERM within 5 s; killed)"
  else
    say "$name: stopped (pid $pid)"
  fi
  forget "$name"
}

# start_service NAME PORT READY_URL COMMAND...
# Starts COMMAND in the background (its own session, no stdin, output in NAME.log), records
# its PID and state, and waits until READY_URL answers. On failure, stops it, shows the log
# tail and returns 1. COMMAND may begin with `env VAR=VALUE...`.
start_service() {
  local name=$1 port=$2 url=$3
  shift 3
  local log pid match word deadline start
  log=$(log_file "$name")
  # The program's name, to tell later that a PID is still this service.
  match=""
  for word in "$@"; do
    case "$word" in
      env | *=*) continue ;;
      *) match=$(basename "$word") && break ;;
    esac
  done
  # An interpreted service is known by its script, not by the interpreter.
  for word in "$@"; do
    case "$word" in
      *.py) match=$(basename "$word") ;;
    esac
  done
  mkdir -p "$state"
  : >"$log"
  start=$(now_ms)
  # Close the lock descriptor in the child, or the service would hold the lock forever.
  if command -v setsid >/dev/null 2>&1; then
    setsid "$@" </dev/null >>"$log" 2>&1 9>&- &
  else
    "$@" </dev/null >>"$log" 2>&1 9>&- &
  fi
  pid=$!
  echo "$pid" >"$(pid_file "$name")"
  printf '%s\n%s\n%s\n' "$port" "$url" "$match" >"$(info_file "$name")"
  deadline=$(($(now_ms) + ready_timeout * 1000))
  until http_ok "$url"; do
    if ! alive "$pid"; then
      err "$name: exited during start-up (command: $*)"
      log_tail "$name"
      forget "$name"
      return 1
    fi
    if [ "$(now_ms)" -ge "$deadline" ]; then
      err "$name: did not answer $url within $ready_timeout s (command: $*)"
      log_tail "$name"
      stop_service "$name" >/dev/null
      return 1
    fi
    sleep 0.2
  done
  # Something else may have taken the port in between: the answer must come from our process.
  if ! live_pid "$name"; then
    err "$name: $url answers but pid $pid is gone (port taken by another process?)"
    log_tail "$name"
    forget "$name"
    return 1
  fi
  svc_started_in=$(elapsed "$start")
}

# ensure NAME: leaves a running NAME alone, clears a dead or hung one, then start_NAME.
ensure() {
  local name=$1
  if running "$name"; then
    say "$name: already running on $(service_origin "$name") (pid $svc_pid)"
    return 0
  fi
  if live_pid "$name"; then
    say "$name: pid $svc_pid is alive but does not answer $svc_url; restarting it"
    stop_service "$name" >/dev/null
  elif [ -f "$(pid_file "$name")" ]; then
    say "$name: removing a stale PID file (the process is gone); starting it again"
  fi
  local previous_port=""
  read_info "$name" && previous_port=$svc_port
  forget "$name"
  "start_$name" "$previous_port"
}

# --- moto: the AWS emulator ----------------------------------------------------------------

start_moto() {
  local port url
  port=$(free_port "${1:-}")
  # The request recorder appends for ever; a new server starts a new recording.
  rm -f "$state/moto_recording"
  url="http://127.0.0.1:$port"
  # MOTO_ACM_VALIDATION_WAIT=0: a certificate the emulator issues (`certificate` below) is
  # ISSUED at once, as a DNS-validated one whose records exist, so that preflight accepts it.
  # MOTO_ECS_SERVICE_RUNNING=2: a new ECS service runs 2 tasks (the example releases want at
  # most 2), so its deployment is COMPLETED, as a real service's is once it is stable; without
  # it every service stays IN_PROGRESS with nothing running and the upgrade's health check waits.
  start_service moto "$port" "$url/moto-api/" \
    env MOTO_IAM_LOAD_MANAGED_POLICIES=true MOTO_ACM_VALIDATION_WAIT=0 MOTO_ECS_SERVICE_RUNNING=2 MOTO_ENABLE_RECORDING=true MOTO_RECORDER_FILEPATH="$state/moto_recording" "$venv/bin/python" "$root/scripts/moto_server.py" -H 127.0.0.1 -p "$port"
  local warm
  warm=$(now_ms)
  # The first call to a service loads its backend; pay for it here rather than in a test.
  if ! env -u AWS_PROFILE -u AWS_SESSION_TOKEN AWS_CONFIG_FILE=/dev/null \
    AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true \
    NO_PROXY=127.0.0.1 no_proxy=127.0.0.1 \
    "$venv/bin/python" -c '
import sys, boto3
from botocore.config import Config
kw = dict(endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="testing",
          aws_secret_access_key="testing", config=Config(retries={"max_attempts": 1}))
boto3.client("cloudformation", **kw).list_stacks()
boto3.client("ec2", **kw).describe_vpcs()
' "$url"; then
    err "moto: the warm-up calls (CloudFormation ListStacks, EC2 DescribeVpcs) failed"
    log_tail moto
    stop_service moto >/dev/null
    return 1
  fi
  say "moto: started on $url (pid $(<"$(pid_file moto)"), ready in $svc_started_in, warmed in $(elapsed "$warm"))"
}

env_moto() {
  local url="http://127.0.0.1:$1"
  cat <<EOF
export AWS_ENDPOINT_URL=$url
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
unset AWS_SESSION_TOKEN AWS_PROFILE
export AWS_EC2_METADATA_DISABLED=true
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
export STACKWRIGHT_MOTO_URL=$url
EOF
}

# --- registries: Docker Distribution with htpasswd auth --------------------------------------
# vendor-registry stands in for the vendor's source ECR, customer-registry for the customer's.
# Each keeps its configuration, storage and generated password in target/dev-env/NAME/;
# target/dev-env/registry-auth.json (mode 0600) holds both logins as a docker-style auth file.

registry_user=stackwright

start_registry() { # NAME [PREVIOUS_PORT]
  local name=$1 port dir
  port=$(free_port "${2:-}")
  dir="$state/$name"
  mkdir -p "$dir/storage"
  if [ ! -s "$dir/password" ]; then
    (umask 077 && head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$dir/password")
  fi
  # The password goes through stdin, never a command line; cost 4 keeps each request's bcrypt
  # check cheap (these are throwaway local logins).
  htpasswd -iBn -C 4 "$registry_user" <"$dir/password" >"$dir/htpasswd" 2>/dev/null
  (
    umask 077
    cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
  secret: $(head -c 24 /dev/urandom | base64 | tr -d '/+=\n')
  tls:
    certificate: $tls_dir/server.pem
    key: $tls_dir/server.key
auth:
  htpasswd:
    realm: stackwright-dev
    path: $dir/htpasswd
EOF
  )
  start_service "$name" "$port" "https://127.0.0.1:$port/" docker-registry serve "$dir/config.yml" || return 1
  say "$name: started on https://127.0.0.1:$port (pid $(<"$(pid_file "$name")"), ready in $svc_started_in)"
}

start_vendor-registry() { start_registry vendor-registry "${1:-}"; }
start_customer-registry() { start_registry customer-registry "${1:-}"; }

# The auth file with every running registry's login, written whole each time.
write_registry_auth() {
  local file="$state/registry-auth.json" name entries="" auth
  for name in vendor-registry customer-registry; do
    read_info "$name" && [ -s "$state/$name/password" ] || continue
    auth=$(printf '%s:%s' "$registry_user" "$(<"$state/$name/password")" | base64 -w0)
    entries="$entries${entries:+,}\"127.0.0.1:$svc_port\":{\"auth\":\"$auth\"}"
  done
  (umask 077 && echo "{\"auths\":{$entries}}" >"$file.tmp")
  chmod 600 "$file.tmp"
  mv "$file.tmp" "$file"
}

env_vendor-registry() {
  write_registry_auth
  cat <<EOF
export REGISTRY_AUTH_FILE=$state/registry-auth.json
export STACKWRIGHT_VENDOR_REGISTRY=127.0.0.1:$1
export STACKWRIGHT_VENDOR_REGISTRY_STORAGE=$state/vendor-registry/storage
EOF
}

env_customer-registry() {
  local port=$1 vendor_port=""
  read_info vendor-registry && vendor_port=$svc_port
  write_registry_auth
  # The example releases name the vendor's ECR; moto's account is 123456789012.
  cat <<EOF
export STACKWRIGHT_CUSTOMER_REGISTRY=127.0.0.1:$port
export STACKWRIGHT_CUSTOMER_REGISTRY_STORAGE=$state/customer-registry/storage
export STACKWRIGHT_REGISTRY_OVERRIDES=111122223333.dkr.ecr.us-east-1.amazonaws.com=127.0.0.1:$vendor_port,123456789012.dkr.ecr.us-east-1.amazonaws.com=127.0.0.1:$port
EOF
}

# --- control-plane: the reference control plane ---------------------------------------------
# Built from this repository (or taken from STACKWRIGHT_BIN_DIR), serving a copy of the releases
# and the signed repository in manifests/ (target/dev-env/control-plane/catalog/), whose timestamp
# it re-signs with the development timestamp key for a day at a time, as a vendor's release
# service does. Its database, signing key and admin credential (mode 0600) live in
# target/dev-env/control-plane/; the credential is new at every start.

# Prints the path of one of this project's binaries. With STACKWRIGHT_BIN_DIR set (the test
# suite and the demo build first and point it at their build), the binary comes from there;
# otherwise it is built here, with the test suite's features.
project_binary() {
  local name=$1
  if [ -n "${STACKWRIGHT_BIN_DIR:-}" ]; then
    if [ ! -x "$STACKWRIGHT_BIN_DIR/$name" ]; then
      err "$name is not in STACKWRIGHT_BIN_DIR ($STACKWRIGHT_BIN_DIR): build it first, or unset the variable"
      return 1
    fi
    printf '%s\n' "$STACKWRIGHT_BIN_DIR/$name"
    return 0
  fi
  say "building $name (a first run compiles the project: minutes)" >&2
  if ! cargo build --quiet "${cargo_features[@]}" --bin "$name"; then
    err "cannot build $name"
    return 1
  fi
  printf '%s\n' "$root/target/debug/$name"
}

start_control-plane() {
  local port dir
  port=$(free_port "${1:-}")
  dir="$state/control-plane"
  mkdir -p "$dir"
  local bin
  bin=$(project_binary stackwright-control-plane) || return 1
  rm -rf "$dir/catalog"
  mkdir -p "$dir/catalog"
  cp -R "$root/manifests/releases" "$root/manifests/repository" "$dir/catalog/"
  start_service control-plane "$port" "https://127.0.0.1:$port/healthz" \
    "$bin" serve --listen "127.0.0.1:$port" --tls-cert "$tls_dir/server.pem" --tls-key "$tls_dir/server.key" \
    --releases "$dir/catalog" --timestamp-key "$root/manifests/dev-keys/timestamp.pem" \
    --database "$dir/control-plane.sqlite" || return 1
  say "control-plane: started on https://127.0.0.1:$port (pid $(<"$(pid_file control-plane)"), ready in $svc_started_in)"
}

env_control-plane() {
  cat <<EOF
export STACKWRIGHT_CONTROL_PLANE_URL=https://127.0.0.1:$1/
export STACKWRIGHT_CONTROL_PLANE_ADMIN_TOKEN_FILE=$state/control-plane/admin-token
EOF
}

# --- commands ------------------------------------------------------------------------------

write_env() {
  local name tmp
  tmp="$env_file.tmp"
  {
    echo "# Written by scripts/dev-env.sh up: points the AWS SDK and the tests at the local services."
    env_tls
    for name in "${SERVICES[@]}"; do
      if declare -F "env_$name" >/dev/null && read_info "$name"; then
        "env_$name" "$svc_port"
      fi
    done
    # Preflight dials loopback addresses only: a destination with no local stand-in (an
    # override in STACKWRIGHT_DIAL_OVERRIDES, or AWS_ENDPOINT_URL for AWS) is reported as
    # skipped, never dialled.
    echo "export STACKWRIGHT_DIAL_ONLY_LOOPBACK=1"
  } >"$tmp"
  mv "$tmp" "$env_file"
}

lock() {
  mkdir -p "$state"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$state/lock"
    flock -w 900 9 || {
      err "another scripts/dev-env.sh is still at work (lock $state/lock)"
      exit 1
    }
  fi
}

cmd_up() {
  lock
  local start name
  start=$(now_ms)
  scripts/dev-tools.sh
  say "tools ready in $(elapsed "$start")"
  make_tls
  for name in "${SERVICES[@]}"; do
    ensure "$name"
  done
  write_env
  # The example releases' images, which the tests and the demo mirror and upgrade between.
  local seeded
  seeded=$(now_ms)
  cmd_seed >/dev/null
  say "vendor-registry: the example releases' images are in place ($(elapsed "$seeded"))"
  echo
  for name in "${SERVICES[@]}"; do
    read_info "$name"
    say "$name runs on $(service_origin "$name"), log target/dev-env/$name.log"
  done
  say "to use it: source target/dev-env/env.sh   (or: source \"\$(scripts/dev-env.sh env)\")"
  say "reset moto: scripts/dev-env.sh reset; stop everything: scripts/dev-env.sh down"
}

cmd_down() {
  lock
  local i
  for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
    stop_service "${SERVICES[i]}"
  done
  rm -f "$env_file"
}

cmd_status() {
  local name all=0
  for name in "${SERVICES[@]}"; do
    if live_pid "$name"; then
      if http_ok "$svc_url"; then
        say "$name: running on $(service_origin "$name") (pid $svc_pid, log target/dev-env/$name.log)"
      else
        say "$name: pid $svc_pid is alive but does not answer $svc_url"
        all=3
      fi
    elif [ -f "$(pid_file "$name")" ]; then
      say "$name: not running (stale PID file; \`up\` starts it again)"
      all=3
    else
      say "$name: not running"
      all=3
    fi
  done
  return "$all"
}

cmd_env() {
  if [ ! -f "$env_file" ]; then
    err "no $env_file yet: run scripts/dev-env.sh up"
    return 1
  fi
  echo "$env_file"
}

cmd_reset() {
  if ! running moto; then
    err "moto is not running: run scripts/dev-env.sh up"
    return 3
  fi
  curl --noproxy '*' -fsS -o /dev/null --max-time 30 -X POST "http://127.0.0.1:$svc_port/moto-api/reset"
  say "moto: state reset (http://127.0.0.1:$svc_port)"
}

# A certificate for DOMAIN and its wildcard, requested from moto's ACM; prints its ARN. The
# emulator cannot create the certificate a template requests, so local installs name one.
cmd_certificate() {
  local domain=${1:-}
  if [ -z "$domain" ]; then
    err "usage: scripts/dev-env.sh certificate DOMAIN"
    return 2
  fi
  if ! running moto; then
    err "moto is not running: run scripts/dev-env.sh up"
    return 3
  fi
  env -u AWS_PROFILE -u AWS_SESSION_TOKEN AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
    AWS_EC2_METADATA_DISABLED=true NO_PROXY=127.0.0.1 no_proxy=127.0.0.1 \
    "$venv/bin/python" -c '
import sys, boto3
acm = boto3.client("acm", endpoint_url=sys.argv[1], region_name=sys.argv[3], aws_access_key_id="testing",
                   aws_secret_access_key="testing")
domain = sys.argv[2]
for summary in acm.list_certificates()["CertificateSummaryList"]:
    if summary["DomainName"] == domain:
        print(summary["CertificateArn"])
        sys.exit(0)
print(acm.request_certificate(DomainName=domain, SubjectAlternativeNames=["*." + domain],
                              ValidationMethod="DNS")["CertificateArn"])
' "http://127.0.0.1:$svc_port" "$domain" "${AWS_REGION:-us-east-1}"
}

# Pushes the example releases' images (manifests/releases/*.json pin their digests) to the
# vendor registry, where `stackwright mirror --release` finds them through the overrides.
cmd_seed() {
  if ! running vendor-registry; then
    err "vendor-registry is not running: run scripts/dev-env.sh up"
    return 3
  fi
  local port=$svc_port
  local tool
  tool=$(project_binary stackwright-release) || return 1
  REGISTRY_AUTH_FILE="$state/registry-auth.json" STACKWRIGHT_CA_BUNDLE="$tls_dir/ca.pem" "$tool" images \
    --push-to "127.0.0.1:$port"
}

usage() {
  sed -n '2,/^# State lives/{/^# State lives/d;s/^# \{0,1\}//;p;}' "${BASH_SOURCE[0]}" >&2
  exit 2
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  reset) cmd_reset ;;
  certificate) cmd_certificate "${2:-}" ;;
  seed) cmd_seed ;;
  *) usage ;;
esac
