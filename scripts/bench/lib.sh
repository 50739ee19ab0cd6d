# Shared helpers for scripts/bench/*.sh (sourced, not run).
#
# Every benchmark works in namespaces, pins and temp dirs it creates itself,
# all named with the prefix "pmbench-<bench>-<pid>", and removes them on any
# exit. The root network namespace is never touched: plugins, exporters and
# traffic run inside the node namespaces (nsenter --net=...).

set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# BIN=dir runs other builds (the per-packet figures are the BPF object's,
# which clang builds the same way for debug and release).
BUILD_RELEASE=1
[ -n "${BIN:-}" ] && BUILD_RELEASE=0
BIN=${BIN:-$ROOT/target/release}
CNI_PATH=/usr/lib/cni

# bench_init NAME: the resource prefix, the cleanup trap, the release build
# (unless BIN names another build).
bench_init() {
  TAG="pmbench-$1-$$"
  NETNS=() # every netns we made (node and pod), removed on exit
  PIDS=()  # background processes we started, by pid
  PINS=()  # bpffs pin paths we made
  TMPS=()  # temp dirs
  BASE=$(mktemp -d "/tmp/$TAG.XXXXXX") # every temp file of this run lives here
  TMPS+=("$BASE")
  RESTORE=() # commands to run last (e.g. sysctl restores)
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM HUP
  need jq nsenter ip
  sweep_stale
  if ! mountpoint -q /sys/fs/bpf; then
    echo "bench: bpffs is not mounted at /sys/fs/bpf (scripts/setup.sh mounts it)" >&2
    exit 1
  fi
  if [ "$BUILD_RELEASE" = 1 ]; then
    (cd "$ROOT" && cargo build --release --workspace --bins --locked -q)
  fi
}

bench_cleanup() {
  set +e
  local pid i p t cmd
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  wait 2>/dev/null # plugin invocations still running in the background (bounded)
  # Pods first, node last: deleting a pod netns deletes its veth end.
  for ((i = ${#NETNS[@]} - 1; i >= 0; i--)); do ip netns del "${NETNS[i]}" 2>/dev/null; done
  for p in "${PINS[@]}"; do rm -rf "$p"; done
  for t in "${TMPS[@]}"; do rm -rf "$t"; done
  for cmd in "${RESTORE[@]}"; do eval "$cmd"; done
}

# A run killed hard (SIGKILL) leaves its pmbench-<bench>-<pid>* namespaces,
# pins and temp dirs (/tmp, /dev/shm) behind: remove those whose pid is gone. Only names with
# our prefix are looked at.
sweep_stale() {
  local name pid
  for name in $(ls /run/netns 2>/dev/null) $(ls /sys/fs/bpf) $(ls /tmp) $(ls /dev/shm); do
    [[ $name =~ ^pmbench-[a-z-]+-([0-9]+)([-.]|$) ]] || continue
    pid=${BASH_REMATCH[1]}
    kill -0 "$pid" 2>/dev/null && continue
    if [ -e "/run/netns/$name" ]; then ip netns del "$name" 2>/dev/null || true; fi
    if [ -d "/sys/fs/bpf/$name" ]; then rm -rf "/sys/fs/bpf/$name"; fi
    if [ -d "/tmp/$name" ]; then rm -rf "/tmp/$name"; fi
    if [ -d "/dev/shm/$name" ]; then rm -rf "/dev/shm/$name"; fi
  done
}

need() {
  local c missing=()
  for c in "$@"; do command -v "$c" >/dev/null 2>&1 || missing+=("$c"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "bench: missing ${missing[*]} (scripts/setup.sh installs them)" >&2
    exit 1
  fi
}

# mknetns NAME: creates a netns (remembered for cleanup) with lo up.
mknetns() {
  ip netns add "$1"
  NETNS+=("$1")
  ip -n "$1" link set lo up
}

# mktmp: a new temp dir under this run's $BASE (removed with it on exit; safe
# to call in $(...)).
mktmp() { mktemp -d "$BASE/XXXXXX"; }

# in_ns NETNS CMD...: runs CMD in NETNS (nsenter keeps the root mount ns,
# so /sys is the root netns' sysfs). Foreground only: to keep a background
# process's pid, call nsenter directly (it execs CMD).
in_ns() { local ns=$1; shift; nsenter --net="/run/netns/$ns" "$@"; }

# stats [P]: reads numbers (one a line) and prints "n median pP min max"
# (nearest-rank percentile; P defaults to 90).
stats() {
  sort -g | awk -v p="${1:-90}" '{v[NR] = $1}
    END {
      if (NR == 0) { print "0 - - - -"; exit }
      m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      r = int(p / 100 * NR + 0.999999); if (r < 1) r = 1
      printf "%d %.6g %.6g %.6g %.6g\n", NR, m, v[r], v[1], v[NR]
    }'
}

# ratio A B: A/B with 2 decimals.
ratio() {
  case "$1$2" in *-*|"") echo "-"; return ;; esac
  awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2f\n", a / b }'
}

# up NODE URL: waits (up to 10 s) for URL to answer from inside NODE.
up() {
  for _ in $(seq 100); do
    in_ns "$1" curl -sf -o /dev/null "$2" && return 0
    sleep 0.1
  done
  echo "bench: $2 did not come up" >&2
  return 1
}

# start_server NODE CMD...: runs CMD (a server that logs `address=host:port`
# to stderr once it listens) inside NODE; sets SERVER_ADDR (host:port).
start_server() {
  local node=$1 log
  shift
  log=$(mktmp)/server.log
  # Not through in_ns: a backgrounded function is a subshell, and $! would
  # be that subshell's pid rather than the server's (nsenter execs it).
  nsenter --net="/run/netns/$node" "$@" 2>"$log" >/dev/null &
  PIDS+=($!)
  SERVER_ADDR=
  for _ in $(seq 100); do
    SERVER_ADDR=$(grep -o 'address=[0-9.:]*' "$log" 2>/dev/null | head -1 | cut -d= -f2 || true)
    [ -n "$SERVER_ADDR" ] && return 0
    sleep 0.1
  done
  echo "bench: $1 did not start:" >&2
  cat "$log" >&2
  exit 1
}
# start_exporter NODE PIN: starts podmeter-exporter inside NODE on an
# ephemeral loopback port; sets EXPORTER_ADDR (host:port).
start_exporter() {
  start_server "$1" "$BIN/podmeter-exporter" --web.listen-address 127.0.0.1:0 --bpf.pin-path "$2"
  EXPORTER_ADDR=$SERVER_ADDR
}

machine_line() {
  local rev dirty
  rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  # Uncommitted changes outside scripts/bench would change what was measured.
  dirty=$(git -C "$ROOT" status --porcelain -- . ':!scripts/bench' ':!BENCHMARKS.md' 2>/dev/null | head -1)
  echo "machine: $(nproc) cores, $(uname -sr), $(date -u +%Y-%m-%dT%H:%MZ), load avg $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "podmeter: commit $rev${dirty:+ + uncommitted changes}, binaries in $BIN"
}

# Network configs, the same shape for both plugins: bridge pmb0, isGateway,
# one v4 range (no ipMasq: that would fork nft in podmeter only).
# pm_conf PIN DATA [MODE] / ref_conf DATA
pm_conf() {
  printf '{"cniVersion":"1.0.0","name":"pmbench","type":"podmeter","bridge":"pmb0","isGateway":true,"pinPath":"%s","tcAttachMode":"%s","ipam":{"type":"builtin","dataDir":"%s","ranges":[[{"subnet":"10.90.0.0/16"}]]}}' "$1" "${3:-auto}" "$2"
}
ref_conf() {
  printf '{"cniVersion":"1.0.0","name":"pmbench","type":"bridge","bridge":"pmb0","isGateway":true,"ipam":{"type":"host-local","dataDir":"%s","ranges":[[{"subnet":"10.90.0.0/16"}]]}}' "$1"
}

# cni_call NODE PLUGIN COMMAND POD [WRAPPER...]: one plugin invocation inside
# NODE for the pod netns POD (container ID = POD); config on stdin.
cni_call() {
  local node=$1 plugin=$2 cmd=$3 pod=$4
  shift 4
  env CNI_COMMAND="$cmd" CNI_CONTAINERID="$pod" CNI_NETNS="/run/netns/$pod" \
    CNI_IFNAME=eth0 CNI_PATH="$CNI_PATH" \
    CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=$pod;K8S_POD_UID=uid-$pod" \
    nsenter --net="/run/netns/$node" "$@" "$plugin"
}

# pod_ip RESULT_JSON: the pod's first address without prefix.
pod_ip() { jq -r '.ips[0].address | split("/")[0]' <<<"$1"; }

# metric TEXT NAME LABEL_MATCH: sum of the samples of NAME whose line
# contains LABEL_MATCH (e.g. 'program="pm_ingress"').
metric() {
  awk -v n="$2" -v m="$3" '$1 ~ "^" n "({|$)" && (m == "" || index($0, m)) { s += $NF } END { printf "%.9g\n", s }' <<<"$1"
}
