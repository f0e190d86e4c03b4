#!/usr/bin/env bash
# The main job on the embedded default configuration (examples/demo.toml), showing what a user
# sees. Today it validates the configuration, prints the connectivity the mode needs, and
# renders every stack of every networking mode; install, upgrade and teardown against the
# local emulators join as they are built.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "Building stackwright"
cargo build --release --quiet
stackwright="$root/target/release/stackwright"
config="$root/examples/demo.toml"
release="$root/manifests/releases/1.0.0.json"
out="$root/target/demo"
rm -rf "$out"

step "stackwright config validate"
"$stackwright" --config "$config" config validate

step "stackwright network requirements"
"$stackwright" --config "$config" network requirements

step "stackwright render (the demo configuration: all-private with public services)"
"$stackwright" --config "$config" render --out "$out/all-private-public-services" --release "$release"

for mode in public private; do
  step "stackwright render ($mode mode)"
  sed -e "s/^mode = .*/mode = \"$mode\"/" -e '/^public_services/d' "$config" >"$out/$mode.toml"
  "$stackwright" --config "$out/$mode.toml" render --out "$out/$mode" --release "$release"
done

step "A bad configuration is refused with the key and the fix"
sed -e 's/^availability_zones = 3/availability_zones = 4/' -e 's/^mode = .*/mode = "public"/' "$config" >"$out/bad.toml"
"$stackwright" --config "$out/bad.toml" config validate || echo "(exit code $?)"

step "Done"
echo "Templates and parameters are in target/demo/. Install, upgrade and teardown against the local AWS emulator are not built yet."
