#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs what it needs, starts the local AWS
# emulator, then runs formatting and lint checks and every test (unit, CLI, snapshots,
# cfn-lint and checkov on every rendered template, installs against the emulator, replayed
# CloudFormation failures). CI runs exactly this.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

# The cargo features the tests are built with, in one place (the local services' binaries come
# from the same build).
features=(--all-features)

scripts/dev-tools.sh
export PATH="$root/.venv/bin:$PATH"

echo "test: formatting"
cargo fmt --all -- --check
echo "test: clippy"
cargo clippy --all-targets --quiet -- -D warnings

# One build serves the tests and the local services: the control plane and the release tool the
# environment runs are the binaries this build puts in target/debug (built with the tests'
# features; a separate `cargo build` would compile every dependency a second time).
echo "test: building the tests"
cargo nextest run "${features[@]}" --no-run
export STACKWRIGHT_BIN_DIR="$root/target/debug"

# Start the emulator unless it already runs, and stop it afterwards only if this run started it.
started_env=""
if ! scripts/dev-env.sh status >/dev/null 2>&1; then
  started_env=1
fi
cleanup() { [ -z "$started_env" ] || scripts/dev-env.sh down >/dev/null 2>&1 || true; }
trap cleanup EXIT
scripts/dev-env.sh up

echo "test: tests"
cargo nextest run "${features[@]}" --no-fail-fast --failure-output=final \
  --status-level=fail --final-status-level=slow "$@"

# The installer as a vendor ships it: a release build without dev-root, embedding a vendor root
# and no development key.
echo "test: the customer build"
scripts/check-customer-build.sh
