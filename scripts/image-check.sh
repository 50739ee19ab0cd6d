#!/usr/bin/env bash
# Checks the image archive scripts/image.sh made, as a node would get it:
#
#   scripts/image-check.sh [ARCHIVE]     # default: <target dir>/image/podmeter.oci.tar
#
# 1. contents: the files of its layers are exactly rootfs/ and the binaries
#    kind-config/image/Containerfile copies, each executable and static;
# 2. it loads into a fresh isolated podman (scripts/image-lib.sh) under its
#    name, and every binary runs from it with no network: podmeter answers
#    CNI_COMMAND=VERSION with the spec versions, the others print --help;
# 3. if containerd is installed: a throwaway containerd (own root, state and
#    socket) imports it with the very command `kind load image-archive` runs
#    on a node, and the image is listed under its name in k8s.io.
# Not in scripts/test.sh: it needs the static release build of image.sh
# (minutes). This check itself takes ~10-20 s. Root only.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/image-lib.sh
source scripts/image-lib.sh

IMAGE=${PODMETER_IMAGE:-localhost/podmeter:dev}
CONTAINERFILE=kind-config/image/Containerfile

die() { echo "image-check: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (podman as root in a private mount namespace)"
for tool in podman runc jq tar readelf unshare nsenter; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (run scripts/setup.sh)"
done
if [ $# -gt 0 ]; then
  ARCHIVE=$1
else
  ARCHIVE=$(cargo metadata --no-deps --format-version 1 --locked | jq -r .target_directory)/image/podmeter.oci.tar
fi
[ -f "$ARCHIVE" ] || die "$ARCHIVE not found: build it with scripts/image.sh"
mapfile -t BINS < <(sh kind-config/image/binaries.sh "$CONTAINERFILE")

start=$SECONDS
WORK=$(mktemp -d /tmp/pmimage-check.XXXXXX)
CONTAINERD_PID=
cleanup() {
  set +e
  if [ -n "$CONTAINERD_PID" ]; then kill "$CONTAINERD_PID"; wait "$CONTAINERD_PID"; fi 2>/dev/null
  podman_cleanup
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

results=()
ok() { results+=("ok    $*"); }

# --- 1. What the archive holds -------------------------------------------------
mkdir "$WORK/oci" "$WORK/rootfs"
tar -xf "$ARCHIVE" -C "$WORK/oci"
blob() { echo "$WORK/oci/blobs/${1%%:*}/${1#*:}"; }
manifests=$(jq '.manifests | length' "$WORK/oci/index.json")
[ "$manifests" = 1 ] || die "index.json lists $manifests manifests, expected 1"
ref=$(jq -r '.manifests[0].annotations["org.opencontainers.image.ref.name"] // ""' "$WORK/oci/index.json")
[ "$ref" = "$IMAGE" ] || die "the archive is named '$ref', expected $IMAGE (kind and ctr take the name from it)"
manifest=$(blob "$(jq -r '.manifests[0].digest' "$WORK/oci/index.json")")
config=$(blob "$(jq -r .config.digest "$manifest")")
for layer in $(jq -r '.layers[].digest' "$manifest"); do
  tar -xf "$(blob "$layer")" -C "$WORK/rootfs" # gzip or plain: GNU tar detects it
done
ok "archive: one manifest named $ref, $(jq '.layers | length' "$manifest") layers, $(jq -r '.os + "/" + .architecture' "$config")"

expected=$( { (cd kind-config/image/rootfs && find . -type f)
              for b in "${BINS[@]}"; do
                case $b in
                  podmeter) echo ./opt/podmeter/bin/podmeter ;;
                  *) echo "./usr/local/bin/$b" ;;
                esac
              done; } | sort)
actual=$(cd "$WORK/rootfs" && find . -type f -o -type l | sort)
if [ "$expected" != "$actual" ]; then
  diff <(echo "$expected") <(echo "$actual") >&2 || true
  die "the image's files differ from the expected set (< expected, > in the image)"
fi
while read -r f; do
  [ -x "$WORK/rootfs/$f" ] || die "${f#.} is not executable"
  ! readelf -lW "$WORK/rootfs/$f" | grep -q INTERP || die "${f#.} is not static (has an ELF interpreter)"
done < <(grep /bin/ <<<"$actual")
ok "files: exactly $(wc -l <<<"$actual") ($(paste -sd ' ' <<<"${actual//.\//\/}")), binaries static"
echo "image-check: contents" >&2
(cd "$WORK/rootfs" && find . -type f -printf '  %M %6kK  /%P\n' | sort -k3) >&2

# --- 2. Load and run in an isolated podman -------------------------------------
podman_init "$WORK/podman"
pm load --quiet -i "$ARCHIVE" >/dev/null
pm image exists "$IMAGE" || die "podman load did not create $IMAGE"
ok "podman load: $IMAGE"

run_in_image() { # BINARY_PATH ARGS...: run one binary of the image, print its output
  local bin=$1; shift
  pm_run --entrypoint "$bin" "$IMAGE" "$@" 2>&1
}
for b in "${BINS[@]}"; do
  case $b in
    podmeter)
      # A runtime's VERSION call: CNI_COMMAND in the environment, JSON out.
      out=$(pm_run -e CNI_COMMAND=VERSION --entrypoint /opt/podmeter/bin/podmeter "$IMAGE" </dev/null 2>&1) \
        || die "podmeter (CNI_COMMAND=VERSION) failed in the image: $out"
      versions=$(jq -er '.supportedVersions | join(",")' <<<"$out") \
        || die "podmeter VERSION did not print the spec's JSON: $out"
      ok "podmeter CNI_COMMAND=VERSION: supportedVersions $versions"
      ;;
    podmeter-agent | podmeter-exporter | podmeterctl)
      out=$(run_in_image "/usr/local/bin/$b" --help) || die "$b --help failed in the image: $out"
      grep -q '^Usage:' <<<"$out" || die "$b --help printed no usage: $out"
      ver=$(run_in_image "/usr/local/bin/$b" --version) || die "$b --version failed in the image: $ver"
      ok "$b --help, --version: $ver"
      ;;
    *) die "no run check for $b: add one to scripts/image-check.sh" ;;
  esac
done
# The default entrypoint is the agent (or whatever the Containerfile says).
entry=$(jq -r '.config.Entrypoint | join(" ")' "$config")
out=$(pm_run "$IMAGE" --help 2>&1) || die "the entrypoint ($entry) --help failed: $out"
ok "entrypoint $entry runs"

# --- 3. As kind loads it: ctr import into a containerd -------------------------
if command -v containerd >/dev/null 2>&1 && command -v ctr >/dev/null 2>&1; then
  c=$WORK/containerd
  mkdir -p "$c"
  # CRI off: only the content store and the native snapshotter are needed.
  cat >"$c/config.toml" <<CONF
version = 2
root = "$c/root"
state = "$c/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$c/sock"
[ttrpc]
  address = "$c/sock.ttrpc"
CONF
  containerd --config "$c/config.toml" >"$c/log" 2>&1 &
  CONTAINERD_PID=$!
  for ((i = 0; i < 100; i++)); do [ -S "$c/sock" ] && break; sleep 0.1; done
  [ -S "$c/sock" ] || die "containerd did not start: $(tail -5 "$c/log")"
  # kind's LoadImageArchive (pkg/cluster/nodeutils) runs exactly this on each node.
  ctr -a "$c/sock" --namespace=k8s.io images import --all-platforms --digests --snapshotter=native - <"$ARCHIVE" >/dev/null \
    || die "ctr images import failed"
  ctr -a "$c/sock" --namespace=k8s.io images ls -q | grep -qx "$IMAGE" \
    || die "after ctr import, $IMAGE is not listed: $(ctr -a "$c/sock" --namespace=k8s.io images ls -q | tr '\n' ' ')"
  ok "ctr import as kind load does: $IMAGE listed in k8s.io (containerd $(containerd --version | awk '{print $3}'))"
else
  results+=("skip  ctr import (containerd/ctr not installed)")
fi

echo "image-check: $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1)), $((SECONDS - start)) s"
printf '  %s\n' "${results[@]}"
echo "image-check: all passed"
