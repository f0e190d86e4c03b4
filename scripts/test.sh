#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs what it needs, then runs formatting and
# lint checks and every test (unit, CLI, snapshots, cfn-lint and checkov on every rendered
# template). CI runs exactly this.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

scripts/dev-tools.sh
export PATH="$root/.venv/bin:$PATH"

echo "test: formatting"
cargo fmt --all -- --check
echo "test: clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo "test: tests"
cargo nextest run --all-features --no-fail-fast --success-output=never --failure-output=final \
  --status-level=fail --final-status-level=slow "$@"
