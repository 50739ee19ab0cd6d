#!/usr/bin/env bash
# How often one plugin invocation opens podmeter's pins and checks its pin
# directory, counted with strace (issue 19: "pins opened and checked once
# per process"). Counts, not times: they do not depend on the machine's
# load, so one run of each verb is enough.
#
#   bash scripts/bench/map-opens.sh            # the debug build (default)
#   BIN=target/release bash scripts/bench/map-opens.sh
#   BASE_BIN=/path/to/an/older/podmeter bash scripts/bench/map-opens.sh
#                                              # that plugin too, same run
#
# In its own node netns, pin path and IPAM dir: a first ADD loads and pins
# the programs (not counted); then, counted, a warm ADD (a second pod on a
# node where the programs are loaded), with and without a policy in the
# config, its DEL, and a GC. For each:
#   map opens        bpf(BPF_OBJ_GET) of a map pin (pm_*)
#   program opens    bpf(BPF_OBJ_GET) of a program pin (prog_*)
#   info reads       bpf(BPF_OBJ_GET_INFO_BY_FD) (the map spec checks, and
#                    the programs' reopening)
#   dir checks       stats of the versioned pin directory (<pin>/v<ABI>):
#                    each pin-directory check (or creation) stats it once
#   pin-path stats   every stat-like call on a path under the pin path
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# Counting needs no optimised build: the debug one makes the same calls.
BIN=${BIN:-$ROOT/target/debug}
case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac
source "$(dirname "$0")/lib.sh"

bench_init map-opens
need strace
if [ "$BIN" = "$ROOT/target/debug" ]; then
  (cd "$ROOT" && cargo build -q --locked -p podmeter-cni --bins)
fi
WORK=$(mktmp)
POLICY='{"transmit":{"default":"deny","rules":[{"action":"allow","proto":"tcp","cidr":"10.0.0.0/8","ports":"80"}]}}'

# conf NODE [POLICY_JSON]: the network config of NODE's pin path and IPAM dir.
conf() {
  local c
  c=$(pm_conf "/sys/fs/bpf/$1" "$WORK/ipam-$1")
  if [ -n "${2:-}" ]; then c=$(jq -c --argjson p "$2" '. + {policy: $p}' <<<"$c"); fi
  echo "$c"
}

# traced VARIANT PLUGIN NODE LABEL COMMAND POD [CONF]: one invocation under
# strace, and its counts.
traced() {
  local v=$1 plugin=$2 node=$3 label=$4 cmd=$5 pod=$6 c=${7:-$(conf "$3")}
  local log=$WORK/$v-${label// /-}.strace pin=/sys/fs/bpf/$node
  cni_call "$node" "$plugin" "$cmd" "$pod" strace -f -qq -o "$log" \
    -e trace=bpf,stat,lstat,newfstatat,statx,statfs,fstatfs,access,faccessat,faccessat2 \
    <<<"$c" >/dev/null
  local maps progs infos dirs stats
  maps=$(grep -c 'BPF_OBJ_GET, {pathname="[^"]*/pm_' "$log" || true)
  progs=$(grep -c 'BPF_OBJ_GET, {pathname="[^"]*/prog_' "$log" || true)
  infos=$(grep -c 'BPF_OBJ_GET_INFO_BY_FD' "$log" || true)
  dirs=$(grep -v '^[0-9]* bpf(' "$log" | grep -cE "\"$pin/v[0-9]+\"" || true)
  stats=$(grep -v '^[0-9]* bpf(' "$log" | grep -c "\"$pin" || true)
  printf '%-8s %-22s %9s %13s %10s %10s %14s\n' "$v" "$label" "$maps" "$progs" "$infos" "$dirs" "$stats"
}

# measure VARIANT PLUGIN: a node of its own; a first ADD loads and pins
# (not counted), then the counted invocations.
measure() {
  local v=$1 plugin=$2 node=$TAG-$1 p
  mknetns "$node"
  PINS+=("/sys/fs/bpf/$node")
  for p in p1 p2 p3; do mknetns "$node-$p"; done
  cni_call "$node" "$plugin" ADD "$node-p1" <<<"$(conf "$node")" >/dev/null
  traced "$v" "$plugin" "$node" "warm ADD" ADD "$node-p2"
  traced "$v" "$plugin" "$node" "warm ADD with policy" ADD "$node-p3" "$(conf "$node" "$POLICY")"
  traced "$v" "$plugin" "$node" "DEL" DEL "$node-p2"
  traced "$v" "$plugin" "$node" "DEL with policy" DEL "$node-p3" "$(conf "$node" "$POLICY")"
  local gc
  gc=$(jq -c --arg id "$node-p1" '. + {cniVersion: "1.1.0", "cni.dev/valid-attachments": [{"containerID": $id, "ifname": "eth0"}]}' <<<"$(conf "$node")")
  traced "$v" "$plugin" "$node" "GC" GC "$node-p1" "$gc"
  cni_call "$node" "$plugin" DEL "$node-p1" <<<"$(conf "$node")" >/dev/null
}

machine_line
printf '%-8s %-22s %9s %13s %10s %10s %14s\n' plugin invocation "map opens" "program opens" "info reads" "dir checks" "pin-path stats"
measure head "$BIN/podmeter"
if [ -n "${BASE_BIN:-}" ]; then measure base "$BASE_BIN"; fi
