#!/usr/bin/env bash
# Builds stackwright as a vendor ships it (the release profile, without the dev-root feature, with
# a root of the vendor's own embedded through STACKWRIGHT_VENDOR_ROOT) and checks what a
# customer relies on:
#   - a vendor root that names a development key fails the build;
#   - no development key ID is embedded in the binary, and the vendor's key IDs are;
#   - the binary refuses releases signed with the development keys, a trusted-root override and
#     an unsigned manifest, and verifies a release signed with the vendor's keys.
# The vendor's keys here are generated for the run, as a vendor generates its own once.
# scripts/test.sh runs this after the tests; it needs stackwright-release in STACKWRIGHT_BIN_DIR
# (default target/debug).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

tool="${STACKWRIGHT_BIN_DIR:-$root/target/debug}/stackwright-release"
work="$root/target/customer-build"
binary="$root/target/release/stackwright"
rm -rf "$work"
mkdir -p "$work"

ok() { echo "customer build: ok: $*"; }
fail() {
  echo "customer build: FAILED: $*" >&2
  exit 1
}
# expect_refusal TEXT COMMAND...: the command fails and says TEXT.
expect_refusal() {
  local text=$1
  shift
  local output
  if output=$("$@" 2>&1); then
    fail "\`$*\` succeeded, and must be refused:
$output"
  fi
  grep -qF -- "$text" <<<"$output" || fail "\`$*\` was refused without saying \"$text\":
$output"
}
key_ids() { python3 -c 'import json, sys; print("\n".join(json.load(open(sys.argv[1]))["signed"]["keys"]))' "$1"; }

[ -x "$tool" ] || fail "$tool is missing: build it first (cargo build --bin stackwright-release)"
"$tool" keygen --out "$work/vendor-keys" --expires 30d >/dev/null
"$tool" build --manifest manifests/releases/1.0.0.json --keys "$work/vendor-keys" \
  --out "$work/repository" --expires 7d >/dev/null

echo "customer build: a vendor root naming a development key must not build"
expect_refusal "names the development key" \
  env STACKWRIGHT_VENDOR_ROOT="$root/manifests/dev-keys/root.json" \
  cargo build --release --quiet --bin stackwright
ok "a build embedding the development root fails"

echo "customer build: building the release binary with the vendor's root (no dev-root feature)"
started=$(date +%s)
STACKWRIGHT_VENDOR_ROOT="$work/vendor-keys/root.json" cargo build --release --quiet --bin stackwright
ok "built in $(($(date +%s) - started)) s"

for key in $(key_ids manifests/dev-keys/root.json); do
  if grep -qaF "$key" "$binary"; then
    fail "the binary embeds the development key ID $key"
  fi
done
ok "no development key ID is embedded"
for key in $(key_ids "$work/vendor-keys/root.json"); do
  grep -qaF "$key" "$binary" || fail "the vendor's key ID $key is not embedded"
done
ok "the vendor's key IDs are embedded"

expect_refusal "not signed by any key the trusted root names" \
  "$binary" release verify --repository manifests/repository
ok "releases signed with the development keys are refused"
expect_refusal "this installer trusts only the release root it was built with" \
  env STACKWRIGHT_TRUSTED_ROOT="$root/manifests/dev-keys/root.json" \
  "$binary" release verify --repository manifests/repository
ok "STACKWRIGHT_TRUSTED_ROOT is refused"
expect_refusal "unexpected argument '--trusted-root'" \
  "$binary" release verify --repository manifests/repository --trusted-root manifests/dev-keys/root.json
ok "--trusted-root does not exist"
expect_refusal "is an unsigned release manifest, and this installer installs only releases the vendor signed" \
  "$binary" --config examples/demo.toml render --out "$work/rendered" \
  --manifest-file manifests/releases/1.0.0.json --allow-unsigned
ok "an unsigned manifest is refused"
verified=$("$binary" release verify --repository "$work/repository")
grep -qF "verified release 1.0.0" <<<"$verified" || fail "the vendor's release does not verify:
$verified"
ok "a release signed with the vendor's keys verifies"
