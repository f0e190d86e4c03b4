#!/usr/bin/env bash
# Installs the tools the tests and the demo need, each only if missing or out of date:
# the Python tools pinned in scripts/python-requirements.txt into .venv (ignored by git),
# and cargo-nextest. Safe to run again; prints what it does.
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
