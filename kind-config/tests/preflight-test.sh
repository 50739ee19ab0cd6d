#!/usr/bin/env bash
# kind-config/up.sh's preflight, run for real (up.sh itself) with stub
# commands on PATH and a fake /proc and /sys (PODMETER_PREFLIGHT_ROOT): for
# each broken workstation it must stop before building anything and name the
# fix; on a sound one (with no htpasswd or python3-bcrypt: the exporter
# hashes the password) it must go on to the build. Run by
# scripts/check-assets.sh; needs nothing but bash and coreutils.
# The stubs' bodies are scripts of their own: their $ expand when they run.
# shellcheck disable=SC2016
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# Only these real tools, so that the machine's own kind/docker/openssl/
# htpasswd are never found.
mkdir -p "$TMP/bin"
for tool in bash env cat grep awk id dirname tr mktemp sed rm mkdir head; do
  ln -s "$(command -v "$tool")" "$TMP/bin/$tool"
done
stub() { # NAME BODY
  printf '#!/bin/bash\n%s\n' "$2" >"$TMP/bin/$1"
  chmod +x "$TMP/bin/$1"
}
# With STUB_CLUSTER set, a cluster podmeter exists (one node), made with
# pod subnet STUB_SUBNET and holding the conflists STUB_CONFS.
KIND='echo "kind $*" >>"$STUB_LOG"
case "$1 $2" in
  "get clusters") [ -n "${STUB_CLUSTER:-}" ] && echo podmeter; exit 0 ;;
  "get nodes") echo podmeter-worker; exit 0 ;;
  "export kubeconfig") exit 0 ;;
esac
exit 1'
stub kind "$KIND"
stub kubectl 'printf "networking:\n  podSubnet: %s\n" "${STUB_SUBNET:-10.244.0.0/16,fd00:10:244::/56}"'
stub openssl 'exit 0'
stub uname 'echo "${STUB_RELEASE:-6.1.0-27-amd64}"'
stub docker '
echo "docker $*" >>"$STUB_LOG"
case "$1 $2" in
  "info "*) exit 0 ;;
  "exec podmeter-worker") printf "%s\n" ${STUB_CONFS:-10-podmeter.conflist}; exit 0 ;;
  "buildx version") exit "${STUB_BUILDX:-0}" ;;
  "network inspect")
    [ "${STUB_NETWORK:-none}" = none ] && exit 1
    [ "$#" -gt 3 ] && echo "$STUB_NETWORK"; exit 0 ;;
esac
exit 1'

fake_root() { # [no-btf] [no-br-netfilter] [low-inotify]
  local r=$TMP/root
  rm -rf "$r"
  mkdir -p "$r/sys/kernel/btf" "$r/proc/sys/net/bridge" "$r/proc/sys/fs/inotify"
  touch "$r/sys/kernel/btf/vmlinux"
  echo 524288 >"$r/proc/sys/fs/inotify/max_user_watches"
  echo 512 >"$r/proc/sys/fs/inotify/max_user_instances"
  for broken in "$@"; do
    case $broken in
      no-btf) rm "$r/sys/kernel/btf/vmlinux" ;;
      no-br-netfilter) rmdir "$r/proc/sys/net/bridge" ;;
      low-inotify) echo 128 >"$r/proc/sys/fs/inotify/max_user_instances" ;;
    esac
  done
}

failed=0
# up NAME WANT [VAR=VALUE...]: runs up.sh; WANT is a text its output must
# contain; unless WANT is "building", up.sh must fail before any build.
up() {
  local name=$1 want=$2 out rc=0; shift 2
  : >"$TMP/log"
  out=$(env -i PATH="$TMP/bin" HOME="$TMP" STUB_LOG="$TMP/log" PODMETER_IMAGE_BUILD=docker \
    PODMETER_PREFLIGHT_ROOT="$TMP/root" "$@" bash "$ROOT/kind-config/up.sh" 2>&1) || rc=$?
  local built=0
  grep -q '^docker build ' "$TMP/log" && built=1
  if [ "$want" = building ]; then
    if [ "$built" = 1 ]; then echo "ok    $name"; return; fi
  elif [ "$rc" != 0 ] && [ "$built" = 0 ] && ! grep -q '^kind create' "$TMP/log" && [[ $out == *"$want"* ]]; then
    echo "ok    $name"; return
  fi
  echo "FAIL  $name (exit $rc, built $built; wanted: $want)"; printf '      %s\n' "${out//$'\n'/$'\n'      }"
  failed=1
}

fake_root
up "sound workstation without htpasswd: goes on to build" building
up "old kernel" "Linux 5.15.0-91-generic is too old: podmeter needs Linux 5.17 or later" \
  STUB_RELEASE=5.15.0-91-generic
up "kind network without IPv6" "docker network rm kind" STUB_NETWORK=false
up "kind network with IPv6 passes" building STUB_NETWORK=true
up "no BuildKit" "install the docker-buildx-plugin package" STUB_BUILDX=1
rm "$TMP/bin/openssl"
up "no openssl" "openssl not found" 
stub openssl 'exit 0'
rm "$TMP/bin/kind"
up "no kind" "kind not found: https://kind.sigs.k8s.io"
stub kind "$KIND"
up "rerun on this script's cluster: goes on to build" building STUB_CLUSTER=1
up "rerun on a cluster made with kindnet" "has another CNI's config in /etc/cni/net.d (10-kindnet.conflist )" \
  STUB_CLUSTER=1 STUB_CONFS="10-kindnet.conflist 10-podmeter.conflist"
up "rerun on a cluster with another pod subnet" "has pod subnet '10.100.0.0/16'" \
  STUB_CLUSTER=1 STUB_SUBNET=10.100.0.0/16
fake_root no-btf
up "no BTF" "has no BTF (/sys/kernel/btf/vmlinux)"
fake_root no-br-netfilter
up "no br_netfilter" "sudo modprobe br_netfilter"
fake_root low-inotify
up "low inotify limits" "fs.inotify.max_user_instances=512"
fake_root no-btf
up "every problem at once" "Linux 4.19.0 is too old" STUB_RELEASE=4.19.0
exit "$failed"
