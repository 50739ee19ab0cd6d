#!/usr/bin/env bash
# Flow tracking of a pod with policy, this build against a base build (the
# node-wide LRU of 65,536 flows that per-pod tables replaced), in one run:
# per-packet cost of a new flow and of an established one, and the memory
# of a pod's flow state.
#
#   BASE_BIN=/work/main/target/debug ROUNDS=5 COUNT=4000 bash scripts/bench/flows.sh
#
# BASE_BIN is the base build's binary directory (any profile: the programs
# are compiled by clang -O2 either way). Each build gets its own node netns
# and pin path, with one pod p0 whose policy is receive default deny (so
# its transmit flows are tracked). Its ingress program is run with
# BPF_PROG_TEST_RUN (flow_runs.py), rounds alternating between the builds:
#   new          COUNT TCP SYNs of distinct flows, once each: a new flow each
#   established  the same packets again: live flows, taking turns (each run
#                misses the per-CPU last-flow cache)
#   cached       one flow again and again (repeat 100,000): the cache hits
#   full         COUNT new flows when the table is full: the base evicts
#                (LRU, after 66,000 flows); this build refuses (budget spent
#                after 8,192; a sweep at most once a second)
#   sweep        (this build) one new flow a second after that: it sweeps the
#                8,192 live flows, deleting none
#   floor        an empty tc program, run the same ways
# The pod's policy is removed (flows and all) and made again between rounds.
# Memory: the pod's flow table (bpftool's memlock: the kernel's own account
# of the map's memory) empty, at its transmit budget, and at both budgets.
source "$(dirname "$0")/lib.sh"

ROUNDS=${ROUNDS:-5}
COUNT=${COUNT:-4000}
REPEAT=100000
BASE_BIN=${BASE_BIN:?set BASE_BIN to the binary directory of the base build}

bench_init flows
need bpftool clang-19 python3
WORK=$(mktmp)
RUNS=$(dirname "$0")/flow_runs.py
REMOTE=10.91.0.1

echo "flows: ROUNDS=$ROUNDS COUNT=$COUNT BASE_BIN=$BASE_BIN"
machine_line

cat >"$WORK/empty.bpf.c" <<'EOF'
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("tc") int empty(struct __sk_buff *skb) { return -1; }
char LICENSE[] SEC("license") = "GPL";
EOF
clang-19 -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu -c "$WORK/empty.bpf.c" -o "$WORK/empty.o"

# One node per build: NODE[b], PIN[b], PROG[b], IFX[b], POD_IP[b], CTL_<b>.
declare -A NODE PIN PROG IFX POD_IP BINOF=([base]=$BASE_BIN [new]=$BIN)
for b in base new; do
  NODE[$b]=$TAG-$b
  PIN[$b]=/sys/fs/bpf/$TAG-$b
  PINS+=("${PIN[$b]}")
  mknetns "${NODE[$b]}"
  mknetns "$TAG-$b-p0"
  conf=$(pm_conf "${PIN[$b]}" "$WORK/ipam-$b")
  result=$(cni_call "${NODE[$b]}" "${BINOF[$b]}/podmeter" ADD "$TAG-$b-p0" <<<"$conf")
  POD_IP[$b]=$(pod_ip "$result")
  IFX[$b]=$(ip -n "${NODE[$b]}" -j link show "$(jq -r '.interfaces[1].name' <<<"$result")" | jq '.[0].ifindex')
  PROG[$b]=$(echo "${PIN[$b]}"/v[0-9]*)/prog_pm_ingress
done
bpftool prog load "$WORK/empty.o" "${PIN[new]}/bench_empty" type classifier
ctl() { local b=$1; shift; "${BINOF[$b]}/podmeterctl" --bpf.pin-path "${PIN[$b]}" "$@"; }
policy() { ctl "$1" policy default "bench/$TAG-$1-p0" --direction receive --action "$2"; }
# runs BUILD PROG DIR FIRST COUNT PASSES [REPEAT]: medians, one per line.
runs() {
  local b=$1 prog=$2
  shift 2
  python3 "$RUNS" "$prog" "${IFX[$b]}" "$1" "${POD_IP[$b]}" "$REMOTE" "${@:2}"
}

for case in new established cached full floor1 floorR sweep; do : >"$WORK/$case.base" && : >"$WORK/$case.new"; done
for ((r = 0; r < ROUNDS; r++)); do
  for b in base new; do
    [ $((r % 2)) = 1 ] && b=$([ $b = base ] && echo new || echo base)
    policy "$b" deny
    { read -r n; read -r e; } < <(runs "$b" "${PROG[$b]}" transmit 0 "$COUNT" 2)
    echo "$n" >>"$WORK/new.$b" && echo "$e" >>"$WORK/established.$b"
    runs "$b" "${PROG[$b]}" transmit 0 1 1 $REPEAT >>"$WORK/cached.$b"
    fill=66000 && [ "$b" = new ] && fill=8192
    runs "$b" "${PROG[$b]}" transmit "$COUNT" "$fill" 1 >/dev/null
    runs "$b" "${PROG[$b]}" transmit $((COUNT + fill)) "$COUNT" 1 >>"$WORK/full.$b"
    if [ "$b" = new ]; then # one more a second later: it sweeps 8,192 live flows
      sleep 1.1
      runs new "${PROG[new]}" transmit $((2 * COUNT + fill)) 1 1 >>"$WORK/sweep.new"
    fi
    policy "$b" allow
    runs "$b" "${PIN[new]}/bench_empty" transmit 0 "$COUNT" 1 >>"$WORK/floor1.$b"
    runs "$b" "${PIN[new]}/bench_empty" transmit 0 1 1 $REPEAT >>"$WORK/floorR.$b"
  done
done

echo
echo "1. ns per run, median of $ROUNDS rounds (each the 10-90% trimmed mean over its packets); work = run - empty program"
printf '%-34s %9s %9s %9s %9s %9s\n' case "base" "new" "base wk" "new wk" "new/base"
row() { # row LABEL CASE FLOORCASE
  local base new fb fn
  base=$(stats <"$WORK/$2.base" | cut -d' ' -f2) new=$(stats <"$WORK/$2.new" | cut -d' ' -f2)
  fb=$(stats <"$WORK/$3.base" | cut -d' ' -f2) fn=$(stats <"$WORK/$3.new" | cut -d' ' -f2)
  local wb wn
  wb=$(awk -v a="$base" -v b="$fb" 'BEGIN { printf "%.1f", a - b }')
  wn=$(awk -v a="$new" -v b="$fn" 'BEGIN { printf "%.1f", a - b }')
  printf '%-34s %9s %9s %9s %9s %9s\n' "$1" "$base" "$new" "$wb" "$wn" "$(ratio "$wn" "$wb")"
}
row "new flow" new floor1
row "established, cache miss" established floor1
row "established, cache hit" cached floorR
row "new flow, table full" full floor1
printf '%-34s %9s %9s\n' "new flow, full, sweeping 8,192" - "$(stats <"$WORK/sweep.new" | cut -d' ' -f2)"

# 2. Memory of the flow state (new build): the pod's table by its id in
# pm_flow_tables, as the kernel accounts it.
memlock() {
  local key id
  key=$(printf '%08x' "${IFX[new]}" | sed 's/\(..\)\(..\)\(..\)\(..\)/\4 \3 \2 \1/')
  # shellcheck disable=SC2086
  id=$(bpftool -j map lookup pinned "$(echo "${PIN[new]}"/v[0-9]*)/pm_flow_tables" key hex $key |
    jq -r '.value | map(ltrimstr("0x")) | reverse | join("")')
  bpftool -j map show id $((16#$id)) | jq '.bytes_memlock'
}
policy new deny
empty=$(memlock)
runs new "${PROG[new]}" transmit 0 8192 1 >/dev/null
tx=$(memlock)
# Receive flows too: the pod receives only from REMOTE's addresses, by a rule.
ctl new policy add "bench/$TAG-new-p0" --direction receive --action allow --cidr 10.91.0.0/16 >/dev/null
runs new "$(echo "${PIN[new]}"/v[0-9]*)/prog_pm_egress" receive 0 8192 1 >/dev/null
both=$(memlock)
state=$(bpftool -j map show pinned "$(echo "${PIN[new]}"/v[0-9]*)/pm_flow_state" | jq '.bytes_memlock')
outer=$(bpftool -j map show pinned "$(echo "${PIN[new]}"/v[0-9]*)/pm_flow_tables" | jq '.bytes_memlock')
lru=$(bpftool -j map show pinned "$(echo "${PIN[base]}"/v[0-9]*)/pm_flows" | jq '.bytes_memlock')
echo
echo "2. Memory, bytes (bpftool memlock)"
printf '%-44s %12s\n' "new: a pod's table, empty" "$empty" \
  "new: at its transmit budget (8,192 flows)" "$tx" \
  "new: at both budgets (16,384 flows)" "$both" \
  "new: pm_flow_state + pm_flow_tables (node)" "$((state + outer))" \
  "base: pm_flows, the node's LRU (65,536)" "$lru"
awk -v e="$empty" -v t="$tx" -v b="$both" -v n=8192 'BEGIN {
  printf "per flow: %.0f B; a node of 8,192 pods with policy: %.2f GiB empty, %.2f GiB at both budgets\n",
    (b - e) / 16384, n * e / 2^30, n * b / 2^30 }'

for b in base new; do
  cni_call "${NODE[$b]}" "${BINOF[$b]}/podmeter" DEL "$TAG-$b-p0" <<<"$(pm_conf "${PIN[$b]}" "$WORK/ipam-$b")" >/dev/null
done
