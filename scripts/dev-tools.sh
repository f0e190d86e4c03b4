#!/usr/bin/env bash
# Installs the tools the tests and the demo need, each only if missing or out of date:
# the Python tools pinned in scripts/python-requirements.txt into .venv (ignored by git),
# cargo-nextest, and the Debian packages for the local registries and the mirror benchmark.
# Safe to run again; prints what it does.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

venv="$root/.venv"
requirements="$root/scripts/python-requirements.txt"
stamp="$venv/.requirements"

if [ ! -x "$venv/bin/python" ]; then
  echo "dev-tools: creating the Python virtual environment in .venv"
  python3 -m venv "$venv"
fi
if ! cmp -s "$requirements" "$stamp"; then
  echo "dev-tools: installing $(grep -cv '^\s*#' "$requirements") pinned Python tools (first run takes about a minute)"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
fi

# The API fuzzer the control plane tests run, in a virtual environment of its own
# (scripts/python-fuzz-requirements.txt), so that its dependencies never meet the others'.
fuzz_venv="$root/.venv-fuzz"
fuzz_requirements="$root/scripts/python-fuzz-requirements.txt"
if [ ! -x "$fuzz_venv/bin/python" ]; then
  echo "dev-tools: creating the Python virtual environment in .venv-fuzz"
  python3 -m venv "$fuzz_venv"
fi
if ! cmp -s "$fuzz_requirements" "$fuzz_venv/.requirements"; then
  echo "dev-tools: installing the API fuzzer (schemathesis) into .venv-fuzz"
  "$fuzz_venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$fuzz_requirements"
  cp "$fuzz_requirements" "$fuzz_venv/.requirements"
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "dev-tools: installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

# Docker Distribution (the local registries), htpasswd for their logins, skopeo and GNU time
# (the mirror benchmark's peer and its memory figures). apt only when one is missing.
missing=()
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
[ -x /usr/bin/time ] || missing+=(time)
# strace shows the preflight test every connection the binary opens.
command -v strace >/dev/null 2>&1 || missing+=(strace)
# openssl makes the local environment's CA and certificate (scripts/dev-env.sh up).
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  echo "dev-tools: installing ${missing[*]} (Debian packages)"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo -n)
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
fi
