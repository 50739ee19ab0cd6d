#!/usr/bin/env bash
# Cost per packet of the tc programs, without the statistics' own overhead,
# and pod-to-pod throughput with and without policy rules.
#
#   ROUNDS=7 REPEAT=1000000 THROUGHPUT_ROUNDS=3 bash scripts/bench/per-packet.sh
#   BIN=/path/to/other/build/bin ... (another build's podmeter and podmeterctl)
#
# 1. BPF_PROG_TEST_RUN (`bpftool prog run ... repeat N`): the kernel runs the
#    pinned program N times on one 54-byte TCP packet and reports the mean
#    time per run, without bpf_stats' two clock reads per run. Its loop has a
#    floor of its own (skb set-up per run), so an empty tc program is run the
#    same way, interleaved, and "work" is the program minus that floor. The
#    packet's skb->ifindex is the pod's host veth (ctx_in), so the programs
#    find the pod's entries as on the real hook, and the transmitted packet
#    carries the pod's own MAC and address (source validation passes it).
#    Cases, by hook:
#      absent        a device that is no pod (lo): one failed lookup
#      counting      a pod without policy: count, one failed policy lookup
#      policy, N     a pod with policy and N rules that do not match the
#                    packet (distinct /32s elsewhere): flow lookup, rule walk,
#                    default; N = 0, 10, 1000
#      walk 3        the packet's address under three nested CIDRs whose
#                    rules do not match it (three trie lookups), 1000 rules
#      denied        a matching deny: also counts the drop
#      k8s-denied    (ABI 4) isolated by NetworkPolicy, no allow: a new flow
#      k8s-allowed   (ABI 4) isolated, a kubernetes allow: a new flow
# 2. iperf3 TCP, 3 s, between two pod pairs on one node: one pair with 1,000
#    rules on each side (sender's transmit, receiver's receive), one without;
#    runs alternate between the pairs.
source "$(dirname "$0")/lib.sh"

ROUNDS=${ROUNDS:-7}
REPEAT=${REPEAT:-1000000}
THROUGHPUT_ROUNDS=${THROUGHPUT_ROUNDS:-3}

bench_init per-packet
need bpftool clang-19 iperf3 python3
WORK=$(mktmp)
NODE=$TAG-node
PIN=/sys/fs/bpf/$TAG
PINS+=("$PIN")
mknetns "$NODE"
CTL=("$BIN/podmeterctl" --bpf.pin-path "$PIN")

echo "per-packet: ROUNDS=$ROUNDS REPEAT=$REPEAT THROUGHPUT_ROUNDS=$THROUGHPUT_ROUNDS"
machine_line

# Pods: p0 is measured with test runs; a1 -> b1 and a2 -> b2 carry iperf3.
conf=$(pm_conf "$PIN" "$WORK/ipam")
declare -A IP HOSTIF MAC
for pod in p0 a1 b1 a2 b2; do
  ns=$TAG-$pod
  mknetns "$ns"
  result=$(cni_call "$NODE" "$BIN/podmeter" ADD "$ns" <<<"$conf")
  IP[$pod]=$(pod_ip "$result")
  HOSTIF[$pod]=$(jq -r '.interfaces[1].name' <<<"$result")
  MAC[$pod]=$(jq -r '.interfaces[2].mac' <<<"$result")
done
pod_ref() { echo "bench/$TAG-$1"; }
ifindex() { ip -n "$NODE" -j link show "$1" | jq '.[0].ifindex'; }

# The empty program: the test loop's floor.
cat >"$WORK/empty.bpf.c" <<'EOF'
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("tc") int empty(struct __sk_buff *skb) { return -1; }
char LICENSE[] SEC("license") = "GPL";
EOF
clang-19 -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu -c "$WORK/empty.bpf.c" -o "$WORK/empty.o"
bpftool prog load "$WORK/empty.o" "$PIN/bench_empty" type classifier
PROG_DIR=$(echo "$PIN"/v[0-9]*) # the build's ABI version

# packet SRCMAC SRC DST SPORT DPORT FILE: Ethernet + IPv4 + TCP SYN, 54 bytes.
packet() {
  python3 - "$@" <<'EOF'
import ipaddress, struct, sys
srcmac, src, dst, sport, dport, path = sys.argv[1:]
eth = bytes.fromhex("020000000002" + srcmac.replace(":", "") + "0800")
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0,
                 ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed)
tcp = struct.pack("!HHIIBBHHH", int(sport), int(dport), 0, 0, 5 << 4, 0x02, 65535, 0, 0)
open(path, "wb").write(eth + ip + tcp)
EOF
}
# ctx IFINDEX FILE: a struct __sk_buff with only ifindex set (offset 40).
ctx() {
  python3 -c 'import struct,sys; b=bytearray(192); struct.pack_into("<I",b,40,int(sys.argv[1])); open(sys.argv[2],"wb").write(b)' "$1" "$2"
}
REMOTE=10.90.200.1
packet "${MAC[p0]}" "${IP[p0]}" "$REMOTE" 40000 8080 "$WORK/tx.pkt" # p0 sends (host ingress)
packet 02:00:00:00:00:01 "$REMOTE" "${IP[p0]}" 40000 8080 "$WORK/rx.pkt" # p0 receives (host egress)
ctx 1 "$WORK/lo.ctx"
ctx "$(ifindex "${HOSTIF[p0]}")" "$WORK/pod.ctx"

# run PROG PKT CTX: mean ns per run of one test run of REPEAT.
run() {
  in_ns "$NODE" bpftool -j prog run pinned "$1" data_in "$2" ctx_in "$3" repeat "$REPEAT" | jq .duration
}

# measure LABEL PROG PKT CTX: ROUNDS runs, each next to an empty-program run.
RESULTS=$WORK/results # label median_ns floor_ns
measure() {
  local label=$1 prog=$2 pkt=$3 ctxf=$4 i
  : >"$WORK/prog" && : >"$WORK/floor"
  for ((i = 0; i < ROUNDS; i++)); do
    run "$PIN/bench_empty" "$pkt" "$ctxf" >>"$WORK/floor"
    run "$prog" "$pkt" "$ctxf" >>"$WORK/prog"
  done
  echo "$label $(stats <"$WORK/prog" | cut -d' ' -f2) $(stats <"$WORK/floor" | cut -d' ' -f2)" >>"$RESULTS"
}

# rules POD DIRECTION N: N deny rules for UDP to distinct /32s in 10.200/16
# (none matches the TCP test packet).
rules() {
  local i
  for ((i = 0; i < $3; i++)); do
    "${CTL[@]}" policy add "$(pod_ref "$1")" --direction "$2" --action deny --proto udp \
      --cidr "10.200.$((i / 250)).$((i % 250 + 1))/32" >/dev/null
  done
}
clear_policy() {
  local id
  for id in $("${CTL[@]}" policy list "$(pod_ref "$1")" -o json | jq '.rules[].id'); do
    "${CTL[@]}" policy delete "$(pod_ref "$1")" "$id"
  done
  for d in receive transmit; do "${CTL[@]}" policy default "$(pod_ref "$1")" --direction "$d" --action allow; done
}

# The kubernetes tier (ABI 4 builds; podmeterctl does not write it, the
# agent does): p0 isolated in the hook's direction, written into the pinned
# maps as the agent's store would, without a flow table, so every run is a
# new flow: k8s-denied (no allow: one pm_rules, one pm_peers, one
# pm_sources and two pm_k8s_rules lookups, the drop counted) and
# k8s-allowed (a rule for any peer, TCP 8080: the packet's port).
le32() { printf '%02x %02x %02x %02x' $(($1 & 255)) $(($1 >> 8 & 255)) $(($1 >> 16 & 255)) $(($1 >> 24 & 255)); }
k8s_cases() {
  local hook=$1 dir=$2 prog=$3 pkt=$4 idx d isolated rule
  idx=$(ifindex "${HOSTIF[p0]}")
  d=1 isolated="00 01"
  [ "$dir" = receive ] && d=0 isolated="01 00"
  bpftool map update pinned "$PROG_DIR/pm_policy" key hex $(le32 "$idx") \
    value hex 00 00 $isolated $(le32 7) 00 00 00 00 00 00 00 00
  measure "$hook:k8s-denied" "$prog" "$pkt" "$WORK/pod.ctx"
  # 112 bits: ifindex, direction, TCP, pad, identity 0 (any), port 8080.
  rule="$(le32 112) $(le32 "$idx") 0$d 06 00 00 00 00 00 00 1f 90 00 00"
  bpftool map update pinned "$PROG_DIR/pm_k8s_rules" key hex $rule value hex 01 00 00 00
  measure "$hook:k8s-allowed" "$prog" "$pkt" "$WORK/pod.ctx"
  bpftool map delete pinned "$PROG_DIR/pm_k8s_rules" key hex $rule
  bpftool map delete pinned "$PROG_DIR/pm_policy" key hex $(le32 "$idx")
}

: >"$RESULTS"
for hook in ingress egress; do
  pkt=$WORK/tx.pkt dir=transmit
  [ $hook = egress ] && pkt=$WORK/rx.pkt dir=receive
  prog=$PROG_DIR/prog_pm_$hook
  measure "$hook:absent" "$prog" "$pkt" "$WORK/lo.ctx"
  measure "$hook:counting" "$prog" "$pkt" "$WORK/pod.ctx"
  # A policy entry without rules: the other direction's default is deny.
  other=receive && [ $dir = receive ] && other=transmit
  "${CTL[@]}" policy default "$(pod_ref p0)" --direction $other --action deny
  measure "$hook:policy,0" "$prog" "$pkt" "$WORK/pod.ctx"
  rules p0 $dir 10
  measure "$hook:policy,10" "$prog" "$pkt" "$WORK/pod.ctx"
  rules p0 $dir 990
  measure "$hook:policy,1000" "$prog" "$pkt" "$WORK/pod.ctx"
  for cidr in 10.0.0.0/8 10.90.0.0/16 10.90.200.0/24; do
    "${CTL[@]}" policy add "$(pod_ref p0)" --direction $dir --action deny --proto udp --cidr $cidr >/dev/null
  done
  measure "$hook:walk3,1000" "$prog" "$pkt" "$WORK/pod.ctx"
  "${CTL[@]}" policy add "$(pod_ref p0)" --direction $dir --action deny --proto tcp --cidr "$REMOTE/32" >/dev/null
  measure "$hook:denied,1000" "$prog" "$pkt" "$WORK/pod.ctx"
  clear_policy p0
  [ -e "$PROG_DIR/pm_k8s_rules" ] && k8s_cases "$hook" "$dir" "$prog" "$pkt"
done

echo
echo "1. BPF_PROG_TEST_RUN, mean ns per run (median of $ROUNDS runs of $REPEAT), work = program - empty program"
printf '%-8s %-16s %10s %10s %10s %14s\n' hook case program empty work "work/counting"
declare -A WORKNS
while read -r label prog floor; do
  WORKNS[$label]=$(awk -v a="$prog" -v b="$floor" 'BEGIN { printf "%.1f", a - b }')
done <"$RESULTS"
while read -r label prog floor; do
  hook=${label%%:*} case=${label#*:}
  printf '%-8s %-16s %10s %10s %10s %14s\n' "$hook" "$case" "$prog" "$floor" "${WORKNS[$label]}" \
    "$(ratio "${WORKNS[$label]}" "${WORKNS[$hook:counting]}")"
done <"$RESULTS"

# 2. Throughput: pair 2 gets 1,000 rules on each side, pair 1 none.
rules a2 transmit 1000
rules b2 receive 1000
"${CTL[@]}" policy add "$(pod_ref b2)" --direction receive --action allow --proto tcp --cidr "${IP[a2]}/32" >/dev/null
"${CTL[@]}" policy default "$(pod_ref b2)" --direction receive --action deny
for pair in 1 2; do
  nsenter --net="/run/netns/$TAG-b$pair" iperf3 -s >/dev/null 2>&1 &
  PIDS+=($!)
done
sleep 0.5
: >"$WORK/tp1" && : >"$WORK/tp2"
for ((i = 0; i < THROUGHPUT_ROUNDS; i++)); do
  for pair in 1 2; do
    [ $((i % 2)) = 1 ] && pair=$((3 - pair))
    in_ns "$TAG-a$pair" iperf3 -J -t 3 -O 1 -c "${IP[b$pair]}" |
      jq '.end.sum_received.bits_per_second / 1e9' >>"$WORK/tp$pair"
  done
done
echo
echo "2. iperf3 TCP a -> b, 3 s, Gbit/s (median of $THROUGHPUT_ROUNDS, pairs alternating)"
printf '%-28s %8s %8s %8s\n' variant median min max
for pair in 1 2; do
  read -r _ med _ min max < <(stats <"$WORK/tp$pair")
  label="no rules"
  [ $pair = 2 ] && label="1000 rules each side"
  printf '%-28s %8.2f %8.2f %8.2f\n' "$label" "$med" "$min" "$max"
  [ $pair = 1 ] && base=$med
done
echo "ratio (1000 rules / none): $(ratio "$med" "$base")"

# Every pod leaves through the plugin (DEL), so the run also exercises it.
for pod in p0 a1 b1 a2 b2; do cni_call "$NODE" "$BIN/podmeter" DEL "$TAG-$pod" <<<"$conf" >/dev/null; done
