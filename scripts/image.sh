#!/usr/bin/env bash
# Builds the podmeter container image without Docker and saves it as an OCI
# archive that `kind load image-archive` and `ctr images import` take:
#
#   scripts/image.sh            # -> target/image/podmeter.oci.tar, localhost/podmeter:dev
#   scripts/image.sh --debug    # the same from a static debug build: what
#                               # scripts/test.sh runs (half the release build's time)
#
# 1. the binaries: those kind-config/image/Containerfile copies (its COPY
#    lines are the list), each a bin target of this workspace, built as
#    static release executables (glibc static-pie) for the host's arch
#    (--debug: the dev profile without debug info; same Containerfile, name,
#    archive path and checks);
# 2. each is checked to be static (no ELF interpreter, no needed libraries):
#    the image has no libc;
# 3. `podman build` of that Containerfile (FROM scratch, COPY only) in a
#    podman isolated from the machine's (scripts/image-lib.sh), then
#    `podman save --format oci-archive`.
# Idempotent: every run starts from fresh podman storage and replaces the
# archive atomically; its temporary state is removed on any exit.
# Environment: PODMETER_IMAGE (default localhost/podmeter:dev, the name the
# manifests use), PODMETER_IMAGE_ARCHIVE (default <target dir>/image/podmeter.oci.tar).
# Root only (podman as root, a private mount namespace). With Docker instead:
# kind-config/image/Containerfile.build. Check the result: scripts/image-check.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/image-lib.sh
source scripts/image-lib.sh

PROFILE=release
case "${1:-}" in
  '') ;;
  --debug) PROFILE=debug ;;
  *) echo "usage: scripts/image.sh [--debug]" >&2; exit 2 ;;
esac
IMAGE=${PODMETER_IMAGE:-localhost/podmeter:dev}
CONTAINERFILE=kind-config/image/Containerfile
CONTAINERFILE_BUILD=kind-config/image/Containerfile.build

die() { echo "image: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (podman as root in a private mount namespace); with Docker, build $CONTAINERFILE_BUILD instead"
for tool in cargo rustc podman runc jq readelf unshare nsenter; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (run scripts/setup.sh)"
done

# --- What goes in --------------------------------------------------------------
mapfile -t BINS < <(sh kind-config/image/binaries.sh "$CONTAINERFILE")
[ ${#BINS[@]} -gt 0 ] || die "no binaries listed in $CONTAINERFILE"

# Containerfile.build must end with the same stage, so that Docker users get
# the same image: compare the two final stages, instructions only, after
# mapping the build stage's /out/ to this build context's root
# (--from=build /out/bin/x is bin/x).
final_stage() { # FILE [SED]: the instructions from the last FROM on
  awk '/^FROM /{buf = ""} {buf = buf $0 "\n"} END {printf "%s", buf}' "$1" |
    grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' | sed -e "${2:-}"
}
if ! diff <(final_stage "$CONTAINERFILE") <(final_stage "$CONTAINERFILE_BUILD" 's|--from=build ||; s|/out/||g') >/dev/null; then
  diff <(final_stage "$CONTAINERFILE") <(final_stage "$CONTAINERFILE_BUILD" 's|--from=build ||; s|/out/||g') >&2 || true
  die "the final stage of $CONTAINERFILE_BUILD differs from $CONTAINERFILE (above: < scratch, > multi-stage)"
fi

META=$(cargo metadata --no-deps --format-version 1 --locked) || die "cargo metadata failed"
TARGET_DIR=$(jq -r .target_directory <<<"$META")
missing=()
for b in "${BINS[@]}"; do
  jq -e --arg b "$b" '[.packages[].targets[] | select(.kind | index("bin")) | .name] | index($b)' \
    <<<"$META" >/dev/null || missing+=("$b")
done
if [ ${#missing[@]} -gt 0 ]; then
  die "$CONTAINERFILE copies ${missing[*]}, but no crate of this workspace has such a binary (is its crate a workspace member yet?)"
fi

# --- Static build (release, or debug) -------------------------------------------
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
bin_args=()
for b in "${BINS[@]}"; do bin_args+=(--bin "$b"); done
echo "image: building ${BINS[*]} ($PROFILE, static, $TRIPLE)" >&2
profile_args=(--release)
# No debug info: the archive is 23 MB rather than 115 (vfs copies it, ctr
# imports it) and the build takes a third less; backtraces still name
# functions. Only this build uses target/<triple>/debug, so the setting
# invalidates nothing else.
[ "$PROFILE" = release ] || { profile_args=(); export CARGO_PROFILE_DEV_DEBUG=0; }
start=$SECONDS
# --target makes RUSTFLAGS apply to the binaries only (not to build scripts,
# which must stay dynamic), and keeps these objects apart from target/release
# and target/debug.
RUSTFLAGS='-C target-feature=+crt-static' \
  cargo build "${profile_args[@]}" --locked --target "$TRIPLE" "${bin_args[@]}"
echo "image: build took $((SECONDS - start)) s" >&2
OUT_DIR=$TARGET_DIR/$TRIPLE/$PROFILE

# Static: no program interpreter (PT_INTERP) and no needed shared libraries.
for b in "${BINS[@]}"; do
  f=$OUT_DIR/$b
  [ -x "$f" ] || die "$f was not built"
  if readelf -lW "$f" | grep -q 'INTERP'; then die "$b has an ELF interpreter: not static ($(readelf -lW "$f" | grep -A1 INTERP | tail -1))"; fi
  if readelf -dW "$f" | grep -q '(NEEDED)'; then die "$b needs shared libraries: $(readelf -dW "$f" | grep '(NEEDED)' | tr -s ' ')"; fi
done

# --- Image ---------------------------------------------------------------------
ARCHIVE=${PODMETER_IMAGE_ARCHIVE:-$TARGET_DIR/image/podmeter.oci.tar}
mkdir -p "$TARGET_DIR/image" "$(dirname "$ARCHIVE")"
# Under /tmp, not the target dir: podman refuses a --runroot longer than 50
# characters, and the target dir's path is as long as the checkout's.
WORK=$(mktemp -d /tmp/pmimage.XXXXXX)
cleanup() {
  podman_cleanup
  rm -rf "$WORK" "$ARCHIVE.tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# The build context: the Containerfile, rootfs/ and bin/, nothing else.
mkdir -p "$WORK/context/bin"
cp "$CONTAINERFILE" "$WORK/context/Containerfile"
cp -a kind-config/image/rootfs "$WORK/context/rootfs"
for b in "${BINS[@]}"; do cp "$OUT_DIR/$b" "$WORK/context/bin/$b"; done

podman_init "$WORK/podman"
# --timestamp 0: layers and config carry no build time, so the same binaries
# give the same image digest. --pull=never: FROM scratch needs no registry.
pm build --quiet --pull=never --network none --timestamp 0 \
  -f "$WORK/context/Containerfile" -t "$IMAGE" "$WORK/context" >/dev/null
pm save --quiet --format oci-archive -o "$ARCHIVE.tmp" "$IMAGE"
ID=$(pm image inspect --format '{{.Id}}' "$IMAGE")
mv "$ARCHIVE.tmp" "$ARCHIVE"

echo "image: $IMAGE (id ${ID:0:12}, $PROFILE build) with ${BINS[*]}"
echo "image: $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1), $(stat -c %s "$ARCHIVE") bytes)"
