#!/usr/bin/env bash
# How often one plugin invocation opens podmeter's pins and checks its pin
# directory, counted with strace (issue 19: "pins opened and checked once
# per process"). Counts, not times: they do not depend on the machine's
# load, so one run of each verb is enough.
#
#   bash scripts/bench/map-opens.sh            # the debug build (default)
#   BIN=target/release bash scripts/bench/map-opens.sh
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
PLUGIN=$BIN/podmeter
WORK=$(mktmp)
NODE=$TAG-node
PIN=/sys/fs/bpf/$TAG
PINS+=("$PIN")
mknetns "$NODE"

conf() { # conf [POLICY_JSON]
  local c
  c=$(pm_conf "$PIN" "$WORK/ipam")
  if [ -n "${1:-}" ]; then c=$(jq -c --argjson p "$1" '. + {policy: $p}' <<<"$c"); fi
  echo "$c"
}
POLICY='{"transmit":{"default":"deny","rules":[{"action":"allow","proto":"tcp","cidr":"10.0.0.0/8","ports":"80"}]}}'

# traced LABEL COMMAND POD [CONF]: runs one invocation under strace and
# prints its counts.
traced() {
  local label=$1 cmd=$2 pod=$3 c=${4:-$(conf)} log=$WORK/$1.strace
  cni_call "$NODE" "$PLUGIN" "$cmd" "$pod" strace -f -qq -o "$log" \
    -e trace=bpf,stat,lstat,newfstatat,statx,statfs,fstatfs,access,faccessat,faccessat2 \
    <<<"$c" >/dev/null
  local maps progs infos dirs stats
  maps=$(grep -c 'BPF_OBJ_GET, {pathname="[^"]*/pm_' "$log" || true)
  progs=$(grep -c 'BPF_OBJ_GET, {pathname="[^"]*/prog_' "$log" || true)
  infos=$(grep -c 'BPF_OBJ_GET_INFO_BY_FD' "$log" || true)
  dirs=$(grep -v '^[0-9]* bpf(' "$log" | grep -cE "\"$PIN/v[0-9]+\"" || true)
  stats=$(grep -v '^[0-9]* bpf(' "$log" | grep -c "\"$PIN" || true)
  printf '%-22s %9s %13s %10s %10s %14s\n' "$label" "$maps" "$progs" "$infos" "$dirs" "$stats"
}

for p in p1 p2 p3; do mknetns "$TAG-$p"; done
# The first ADD loads and pins (not counted).
cni_call "$NODE" "$PLUGIN" ADD "$TAG-p1" <<<"$(conf)" >/dev/null

machine_line
printf '%-22s %9s %13s %10s %10s %14s\n' invocation "map opens" "program opens" "info reads" "dir checks" "pin-path stats"
traced "warm ADD" ADD "$TAG-p2"
traced "warm ADD with policy" ADD "$TAG-p3" "$(conf "$POLICY")"
traced "DEL" DEL "$TAG-p2"
traced "DEL with policy" DEL "$TAG-p3" "$(conf "$POLICY")"
GC_CONF=$(jq -c --arg id "$TAG-p1" '. + {cniVersion: "1.1.0", "cni.dev/valid-attachments": [{"containerID": $id, "ifname": "eth0"}]}' <<<"$(conf)")
traced "GC" GC "$TAG-p1" "$GC_CONF"
cni_call "$NODE" "$PLUGIN" DEL "$TAG-p1" <<<"$(conf)" >/dev/null
