#!/usr/bin/env bash
# Regenerates the signed example release repository (manifests/repository/) from the example
# manifests (manifests/releases/*.json) with the development keys (manifests/dev-keys/), valid for
# two years. Run it after changing an example manifest, or before the metadata expires (the tests
# say when). With --new-keys it first replaces the development keys and their root.json, which
# every installer built for development pins; do that only if they leaked or expired.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

keys=manifests/dev-keys
repository=manifests/repository
expires=${EXPIRES:-730d}

cargo build --quiet --bin stackwright-release
tool=target/debug/stackwright-release

if [ "${1:-}" = "--new-keys" ]; then
  rm -f "$keys"/{root,targets,snapshot,timestamp}.pem "$keys"/root.json
fi
if [ ! -f "$keys/root.pem" ]; then
  "$tool" keygen --out "$keys" --expires "$expires"
fi

# A fresh repository rather than an update: the example history stays two steps long, one
# release per metadata version.
rm -rf "$repository"
for manifest in $(ls manifests/releases/*.json | sort -V); do
  # Committed metadata cannot be re-signed daily, so the example's timestamp and snapshot live as
  # long as its targets; the local environment serves a copy whose timestamp the control plane
  # keeps re-signing for a day at a time, as a vendor's would.
  "$tool" build --manifest "$manifest" --keys "$keys" --out "$repository" --expires "$expires" \
    --timestamp-expires "$expires" --snapshot-expires "$expires"
done
"$tool" verify --repository "$repository" --root "$keys/root.json"
