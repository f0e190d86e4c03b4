#!/usr/bin/env bash
# Runs the benchmarks and prints their figures: start-up and render time, and a full install
# against the local emulator beside `aws cloudformation deploy` deploying the same templates
# one after another. Installs the AWS CLI (the peer) into .venv-bench and starts the emulator.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

scripts/dev-tools.sh
requirements="$root/scripts/python-bench-requirements.txt"
if ! cmp -s "$requirements" "$root/.venv-bench/.requirements" 2>/dev/null; then
  echo "bench: installing the AWS CLI into .venv-bench"
  python3 -m venv "$root/.venv-bench"
  "$root/.venv-bench/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$root/.venv-bench/.requirements"
fi
scripts/dev-env.sh up >/dev/null

# The benchmarks run the development build: they install the example releases, which are
# signed with the development keys (or read unsigned).
cargo bench --features dev-root --bench render
cargo bench --features dev-root --bench install
cargo bench --features dev-root --bench control_plane
