#!/usr/bin/env bash
# The main job on the embedded default configuration (examples/demo.toml), showing what a user
# sees: it validates the configuration, renders every stack, starts the local services on
# 127.0.0.1 (the AWS emulator, two registries and the reference control plane), installs
# release 1.0.0 (registering with the control plane), shows the status and what moving to
# release 1.1.0 would change, lets the control plane offer 1.1.0 and runs the unattended
# upgrade job, and tears the instance down. Nothing here connects anywhere but 127.0.0.1.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
show() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }

# The cargo features the demo's binaries are built with, in one place: a development build, which
# trusts the development root that signs the example releases.
features=(--features dev-root)

step "Building stackwright"
cargo build --release --quiet "${features[@]}"
export PATH="$root/target/release:$PATH"
# The local services run this build's control plane and release tool, not a second debug build.
export STACKWRIGHT_BIN_DIR="$root/target/release"
release1="1.0.0"
release2="1.1.0"
# Before the control plane serves the signed releases, they are verified in the example
# repository on disk.
export STACKWRIGHT_RELEASE_REPOSITORY=manifests/repository
out="target/demo"
rm -rf "$out"
mkdir -p "$out"

step "The configuration, and the connectivity its networking mode needs"
show stackwright --config examples/demo.toml config validate
show stackwright --config examples/demo.toml network requirements

step "Rendering every stack (all-private with public services, then the other modes)"
show stackwright --config examples/demo.toml render --out "$out/all-private" --release "$release1"
for mode in public private; do
  sed -e "s/^mode = .*/mode = \"$mode\"/" -e '/^public_services/d' examples/demo.toml >"$out/$mode.toml"
  show stackwright --config "$out/$mode.toml" --quiet render --out "$out/$mode" --release "$release1"
done

step "A mistake in the configuration is named with its fix"
sed -e 's/^availability_zones = 3/availability_zones = 4/' -e 's/^mode = .*/mode = "public"/' examples/demo.toml >"$out/bad.toml"
show stackwright --config "$out/bad.toml" config validate || echo "(exit code $?)"

step "Starting the local services (AWS emulator, registries, control plane on 127.0.0.1)"
# From here on releases are verified in the repository the control plane serves.
unset STACKWRIGHT_RELEASE_REPOSITORY
scripts/dev-env.sh up
# shellcheck source=/dev/null
source target/dev-env/env.sh
scripts/dev-env.sh reset >/dev/null
# The emulator cannot issue the certificate the platform stack would request; name one of its own.
certificate=$(scripts/dev-env.sh certificate cde.acme.example)
sed "s|^region = .*|&\ncertificate_arn = \"$certificate\"|" examples/demo.toml >"$out/demo.toml"
config="$out/demo.toml"
# The control plane offers 1.0.0 to every instance, and 1.1.0 only later in the demo.
stackwright-control-plane withdraw 1.1.0 >/dev/null 2>&1 || true
stackwright-control-plane rollout 1.0.0 --channel stable --percent 100 >/dev/null
# The vendor issues a one-time registration token; the install exchanges it for an identity.
(umask 077 && stackwright-control-plane registration-token 2>/dev/null >"$out/stackwright.token")

step "First install of release 1.0.0"
show stackwright --config "$config" --yes install --release "$release1"

step "Installing again changes nothing"
show stackwright --config "$config" --yes install --release "$release1"

step "Status"
show stackwright --config "$config" status

step "What moving to release 1.1.0 would change (exit code 2: changes pending)"
show stackwright --config "$config" plan --release "$release2" || echo "(exit code $?)"

step "The control plane now offers release 1.1.0 (the vendor's operator rolls it out)"
show stackwright-control-plane rollout 1.1.0 --channel stable --percent 100
show stackwright --config "$config" upgrade --check || echo "(exit code $?: an upgrade is available)"

step "The unattended upgrade job (what the schedule runs): JSON lines, no prompt"
show stackwright --config "$config" upgrade --unattended

step "What the control plane holds, and the instance's history"
show stackwright-control-plane instances
show stackwright --config "$config" history

step "The next run of the job finds nothing to do"
show stackwright --config "$config" upgrade --unattended

step "Teardown: data is kept"
show stackwright --config "$config" --yes teardown

step "Teardown with --delete-data"
show stackwright --config "$config" --yes teardown --delete-data

step "Done"
echo "The emulator keeps running for a look around (source target/dev-env/env.sh); stop it with scripts/dev-env.sh down."
