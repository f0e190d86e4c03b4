#!/usr/bin/env bash
# The image mirroring benchmark, in one run, between the two local registries of
# scripts/dev-env.sh (Docker Distribution on 127.0.0.1, htpasswd logins):
#
#   1. a synthetic release of IMAGES images (default 12) sharing three base layers, several
#      hundred MiB of seeded pseudo-random data, pushed to the vendor registry;
#   2. copied to a fresh namespace of the customer registry three times: `stackwright mirror
#      --images`, `skopeo copy --all` image by image, and `skopeo sync`; each wall time, its
#      ratio to skopeo sync, the bytes the source sent, and peak memory (max RSS, GNU time);
#   3. an incremental release (a third of the images get new layers) copied on top of each:
#      bytes moved against bytes changed;
#   4. a no-op re-run of each;
#   5. peak memory while copying one image with a single 1 GiB layer.
#
# The figures go to stdout; the README records a run. Release builds; nothing leaves 127.0.0.1.
#   scripts/bench-mirror.sh              IMAGES=12 JOBS=8 by default; BENCH_SKIP_BUILD=1 to reuse
#                                        the release binaries already built
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

# The cargo features the release binaries are built with, in one place.
read -r -a cargo_features <<<"${STACKWRIGHT_CARGO_FEATURES:-}"
images=${IMAGES:-12}
jobs=${JOBS:-8}

# BENCH_SKIP_BUILD=1 measures the release binaries already built.
if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
  echo "bench: building release binaries"
  cargo build --quiet --release --bins "${cargo_features[@]}"
fi
# The local services run the same release binaries.
STACKWRIGHT_BIN_DIR="$root/target/release" scripts/dev-env.sh up >/dev/null
# shellcheck disable=SC1091
source target/dev-env/env.sh
stackwright=$root/target/release/stackwright
tool=$root/target/release/stackwright-release
vendor=$STACKWRIGHT_VENDOR_REGISTRY
customer=$STACKWRIGHT_CUSTOMER_REGISTRY
auth=$REGISTRY_AUTH_FILE
work=$root/target/bench-mirror
mkdir -p "$work"
# Every tool speaks HTTPS to the registries and verifies them against the local CA: ours
# through STACKWRIGHT_CA_BUNDLE (env.sh), skopeo through a certificate directory.
certs=$work/certs
mkdir -p "$certs"
cp "$STACKWRIGHT_CA_BUNDLE" "$certs/ca.crt"
run_id=$(date +%s)

now() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }
seconds() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2f", a / b }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

# Bytes the vendor registry has written (its sockets included): what a copy pulled from it.
registry_pid() { cat "target/dev-env/$1.pid"; }
written() { awk '/^wchar/ { print $2 }' "/proc/$(registry_pid vendor-registry)/io"; }

# skopeo remembers where it has seen each blob (a cache in /var/lib/containers/cache for root)
# and mounts from there, even from another tool's or an earlier run's namespace. stackwright keeps
# no such cache between runs, so skopeo starts each measurement without it too.
skopeo_cache=/var/lib/containers/cache/blob-info-cache-v1.boltdb
[ "$(id -u)" -eq 0 ] || skopeo_cache=${XDG_DATA_HOME:-$HOME/.local/share}/containers/cache/blob-info-cache-v1.boltdb

# measure NAME COMMAND...: runs it under GNU time; sets last_ms, last_rss_kib, last_bytes.
measure() {
  local name=$1 start before
  shift
  rm -f "$skopeo_cache"
  before=$(written)
  start=$(now)
  if ! /usr/bin/time -v -o "$work/$name.time" "$@" >"$work/$name.out" 2>"$work/$name.err"; then
    echo "bench: $name failed:" >&2
    tail -n 20 "$work/$name.err" >&2
    exit 1
  fi
  last_ms=$(($(now) - start))
  last_rss_kib=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$work/$name.time")
  last_bytes=$(($(written) - before))
}

row() { # LABEL
  printf '  %-34s %9s s  source sent %12s  peak %6s MiB\n' "$1" "$(seconds "$last_ms")" "$(mib "$last_bytes")" \
    "$(awk -v k="$last_rss_kib" 'BEGIN { printf "%.1f", k / 1024 }')"
}

skopeo_tls=(--src-cert-dir "$certs" --dest-cert-dir "$certs" --authfile "$auth")

# sync_yaml TAG FILE: the release's images as skopeo sync's YAML source.
sync_yaml() {
  {
    echo "$vendor:"
    echo "  tls-verify: true"
    echo "  cert-dir: $certs"
    echo "  images:"
    for ((number = 0; number < images; number++)); do
      printf '    bench/release/image-%02d: ["%s"]\n' "$number" "$1"
    done
  } >"$2"
}

# skopeo copy, one image after the other, as a script so that GNU time measures it whole.
cat >"$work/copy-each.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
for ((number = 0; number < $images; number++)); do
  image=\$(printf 'image-%02d' "\$number")
  skopeo copy --all --preserve-digests --quiet ${skopeo_tls[*]} \\
    "docker://$vendor/bench/release/\$image:\$1" "docker://$customer/\$2/\$image:\$1"
done
EOF

echo "bench: pushing the synthetic releases to the vendor registry (seeded; a second run finds them there)"
"$tool" synthetic --push-to "$vendor" --prefix bench/release --images "$images" \
  --tag 1 --list "$work/release-1.txt" >/dev/null
"$tool" synthetic --push-to "$vendor" --prefix bench/release --images "$images" \
  --tag 2 --change-every 3 --generation 2 --list "$work/release-2.txt" >"$work/release-2.digests"
changed_bytes=$(awk '/^# changed bytes/ { print $4 }' "$work/release-2.digests")
"$tool" synthetic --push-to "$vendor" --prefix bench/big --images 1 --base-mib 1024 \
  --own-mib 0 --tag 1 --list "$work/big.txt" >/dev/null
sync_yaml 1 "$work/sync-1.yaml"
sync_yaml 2 "$work/sync-2.yaml"

ours=run$run_id-stackwright
each=run$run_id-skopeo-copy
sync=run$run_id-skopeo-sync
mirror_args() { # LIST NAMESPACE
  echo --output json mirror --images "$1" --from "$vendor/bench/release" --to "$customer/$2" --jobs "$jobs"
}
skopeo_sync=(skopeo sync --all --preserve-digests --src yaml --dest docker --src-authfile "$auth"
  --dest-authfile "$auth" --dest-cert-dir "$certs")
bytes_of() { sed -n 's/.*"bytes_copied": *\([0-9]*\).*/\1/p' "$work/$1.out"; }

echo
echo "Full release: $images images, tag 1, each tool into a fresh namespace of the customer registry"
# shellcheck disable=SC2046
measure full-stackwright "$stackwright" $(mirror_args "$work/release-1.txt" "$ours")
full_ours_ms=$last_ms
row "stackwright mirror --images"
measure full-skopeo-copy bash "$work/copy-each.sh" 1 "$each"
full_each_ms=$last_ms
row "skopeo copy --all, image by image"
measure full-skopeo-sync "${skopeo_sync[@]}" "$work/sync-1.yaml" "$customer/$sync"
full_sync_ms=$last_ms
row "skopeo sync"
echo "  time, stackwright / skopeo sync: $(ratio "$full_ours_ms" "$full_sync_ms");  skopeo copy / skopeo sync: $(ratio "$full_each_ms" "$full_sync_ms")"
echo "  stackwright pushed $(mib "$(bytes_of full-stackwright)")"

echo
echo "Incremental release: tag 2 on top of tag 1, every third image with new layers"
# shellcheck disable=SC2046
measure incremental-stackwright "$stackwright" $(mirror_args "$work/release-2.txt" "$ours")
incremental_ours_ms=$last_ms
row "stackwright mirror --images"
measure incremental-skopeo-copy bash "$work/copy-each.sh" 2 "$each"
row "skopeo copy --all, image by image"
measure incremental-skopeo-sync "${skopeo_sync[@]}" "$work/sync-2.yaml" "$customer/$sync"
incremental_sync_ms=$last_ms
row "skopeo sync"
echo "  time, stackwright / skopeo sync: $(ratio "$incremental_ours_ms" "$incremental_sync_ms")"
echo "  bytes changed between the releases: $(mib "$changed_bytes") ($changed_bytes); stackwright pushed $(bytes_of incremental-stackwright)"

echo
echo "No-op re-run of tag 2 (everything is there)"
# shellcheck disable=SC2046
measure noop-stackwright "$stackwright" $(mirror_args "$work/release-2.txt" "$ours")
noop_ours_ms=$last_ms
row "stackwright mirror --images"
measure noop-skopeo-sync "${skopeo_sync[@]}" "$work/sync-2.yaml" "$customer/$sync"
row "skopeo sync"
echo "  time, stackwright / skopeo sync: $(ratio "$noop_ours_ms" "$last_ms")"

echo
echo "Peak memory copying one image with a single 1 GiB layer"
measure big-stackwright "$stackwright" --output json mirror --images "$work/big.txt" \
  --from "$vendor/bench/big" --to "$customer/run$run_id-big-stackwright" --jobs "$jobs"
big_ours_rss=$last_rss_kib
row "stackwright mirror --images"
measure big-skopeo skopeo copy --all --preserve-digests --quiet "${skopeo_tls[@]}" \
  "docker://$vendor/bench/big/image-00:1" "docker://$customer/run$run_id-big-skopeo/image-00:1"
row "skopeo copy --all"
echo "  peak memory, stackwright / skopeo: $(ratio "$big_ours_rss" "$last_rss_kib")"
echo
echo "bench: outputs in ${work#"$root"/}/ (namespaces run$run_id-*)"
