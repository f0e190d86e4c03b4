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

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "dev-tools: installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
