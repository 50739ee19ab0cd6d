#!/usr/bin/env bash
# iperf3 between two pods on one bridge: podmeter-wired (pm_ingress and
# pm_egress attached with TCX on both host veths) vs reference-bridge-wired
# (no programs), each pair in its own node network namespace.
#
#   bash scripts/bench/throughput.sh
#
# Runs alternate between the two (order swapped every run):
#   tcp:   RUNS x DUR s, one TCP stream           (Gbit/s, received)
#   tcp4:  RUNS4 x DUR4 s, -P 4                    (Gbit/s, received)
#   udp:   RUNS4 x DUR4 s, -u -l 64 -b 0           (1000 datagrams/s received)
# Then, podmeter only, with kernel.bpf_stats_enabled=1 (old value restored
# on exit): a TCP and a UDP run of STAT_DUR s each; the programs' run count
# and run time deltas from podmeter-exporter give ns per program run.
# The kfree_skb drop tracer podmeter attaches is machine-wide, so it is
# attached during the reference runs too (it only runs on dropped skbs).
#   rtt:   RUNS x PINGS pings 10 ms apart          (ms, mean round trip)
#
# COMPARE=bridge-netfilter compares podmeter with `bridgeNetfilter` (what the
# agent's conflist asks: bridged traffic passes netfilter through the
# bridge's own nf_call_iptables, for same-node Services) against podmeter
# without it ("l2only"); both nodes have net.bridge.bridge-nf-call-* = 0 (a
# host without br_netfilter loaded) and a kube-proxy-like nat table (a DNAT
# for a ClusterIP nobody uses), so conntrack runs as on a Kubernetes node.
source "$(dirname "$0")/lib.sh"

RUNS=${RUNS:-5}
DUR=${DUR:-5}
RUNS4=${RUNS4:-3}
DUR4=${DUR4:-3}
STAT_DUR=${STAT_DUR:-3}
PINGS=${PINGS:-300}
COMPARE=${COMPARE:-reference}
case $COMPARE in
  reference) VARIANTS=(podmeter reference) ;;
  bridge-netfilter) VARIANTS=(podmeter l2only) ;;
  *) echo "bench: COMPARE=$COMPARE: reference or bridge-netfilter" >&2; exit 2 ;;
esac

bench_init throughput
need iperf3 curl busybox
WORK=$(mktmp)
RAW=$WORK/raw # lines: test variant run value

declare -A NODE SERVER_IP
PIN=/sys/fs/bpf/$TAG
PINS+=("$PIN-podmeter" "$PIN-l2only")

# A node as COMPARE=bridge-netfilter wants it: no br_netfilter sysctls,
# conntrack and NAT hooks in use.
kube_proxy_like() {
  local node=$1 f
  for f in iptables ip6tables; do in_ns "$node" sysctl -qw "net.bridge.bridge-nf-call-$f=0"; done
  in_ns "$node" nft -f - <<'NFT'
table inet bench-kube-proxy {
  chain services {
    type nat hook prerouting priority dstnat;
    ip daddr 10.96.0.10 tcp dport 80 dnat ip to 10.90.0.250:8080
  }
}
NFT
}

# wire VARIANT: node netns with pods a and b, iperf3 server in b.
wire() {
  local v=$1 node=$TAG-$1 plugin conf p out
  NODE[$v]=$node
  mknetns "$node"
  [ "$COMPARE" = bridge-netfilter ] && kube_proxy_like "$node"
  for p in a b; do
    mknetns "$node-$p"
    if [ "$v" = podmeter ] || [ "$v" = l2only ]; then
      conf=$(pm_conf "$PIN-$v" "$WORK/ipam-$v")
      [ "$COMPARE" = bridge-netfilter ] && [ "$v" = podmeter ] &&
        conf=$(jq -c '.bridgeNetfilter = true' <<<"$conf")
      plugin=$BIN/podmeter
    else
      conf=$(ref_conf "$WORK/ipam-$v")
      plugin=$CNI_PATH/bridge
    fi
    out=$(cni_call "$node" "$plugin" ADD "$node-$p" <<<"$conf") ||
      { echo "bench: ADD $v $p failed: $out" >&2; exit 1; }
  done
  SERVER_IP[$v]=$(pod_ip "$out")
  nsenter --net="/run/netns/$node-b" iperf3 -s >/dev/null 2>&1 & # $! is iperf3 (nsenter execs)
  PIDS+=($!)
}
wire "${VARIANTS[0]}"
wire "${VARIANTS[1]}"
sleep 0.5 # servers listening

# client VARIANT ARGS...: one iperf3 run from a to b, JSON on stdout.
client() {
  local v=$1
  shift
  local try
  for try in 1 2 3; do # the server may still be busy tearing down the last test
    if in_ns "${NODE[$v]}-a" iperf3 -c "${SERVER_IP[$v]}" -J "$@" >"$WORK/last.json" 2>&1 &&
      jq -e '.end.sum_received' "$WORK/last.json" >/dev/null 2>&1; then
      cat "$WORK/last.json"
      return
    fi
    sleep 1
  done
  echo "bench: iperf3 ($v $*) failed:" >&2
  cat "$WORK/last.json" >&2
  exit 1
}

tcp_gbps() { jq '.end.sum_received.bits_per_second / 1e9'; }
udp_kpps() { jq '.end.sum_received.bytes / 64 / .end.sum_received.seconds / 1000'; }

# series TEST COUNT DURATION CONVERTER IPERF_ARGS...
series() {
  local test=$1 count=$2 dur=$3 conv=$4 r v
  shift 4
  for ((r = 1; r <= count; r++)); do
    for v in $(order "$r"); do
      echo "$test $v $r $(client "$v" -t "$dur" "$@" | $conv)" >>"$RAW"
    done
  done
}

# order RUN: the variants, swapped every other run.
order() {
  if [ $(($1 % 2)) = 0 ]; then echo "${VARIANTS[1]} ${VARIANTS[0]}"; else echo "${VARIANTS[*]}"; fi
}

# rtt_series COUNT: busybox ping from a to b, PINGS pings 10 ms apart; the
# mean round trip in ms.
rtt_series() {
  local r v
  for ((r = 1; r <= $1; r++)); do
    for v in $(order "$r"); do
      echo "rtt $v $r $(in_ns "${NODE[$v]}-a" busybox ping -q -c "$PINGS" -i 0.01 "${SERVER_IP[$v]}" |
        awk -F/ '/round-trip/ { print $4 }')" >>"$RAW"
    done
  done
}

echo "throughput: ${VARIANTS[0]} vs ${VARIANTS[1]} (COMPARE=$COMPARE); RUNS=$RUNS x ${DUR}s (tcp), RUNS4=$RUNS4 x ${DUR4}s (tcp -P 4, udp 64 B), RUNS x $PINGS pings (rtt)"
machine_line
series tcp "$RUNS" "$DUR" tcp_gbps
series tcp4 "$RUNS4" "$DUR4" tcp_gbps -P 4
series udp "$RUNS4" "$DUR4" udp_kpps -u -l 64 -b 0
rtt_series "$RUNS"

# ---- per-program cost, from the kernel's BPF stats ----
old_stats=$(sysctl -n kernel.bpf_stats_enabled)
RESTORE+=("sysctl -q -w kernel.bpf_stats_enabled=$old_stats")
sysctl -q -w kernel.bpf_stats_enabled=1
start_exporter "${NODE[podmeter]}" "$PIN-podmeter"
scrape() { in_ns "${NODE[podmeter]}" curl -sf "http://$EXPORTER_ADDR/metrics"; }
# The two tc programs and the drop tracer (ebpf/src/object.rs).
PROGS=(pm_ingress pm_egress pm_kfree_skb)
declare -A STAT
for test in tcp udp; do
  before=$(scrape)
  if [ $test = tcp ]; then client podmeter -t "$STAT_DUR" >/dev/null; else client podmeter -t "$STAT_DUR" -u -l 64 -b 0 >/dev/null; fi
  after=$(scrape)
  for p in "${PROGS[@]}"; do
    m='program="'$p'"'
    dc=$(awk -v a="$(metric "$after" podmeter_bpf_program_run_count_total "$m")" -v b="$(metric "$before" podmeter_bpf_program_run_count_total "$m")" 'BEGIN { print a - b }')
    ds=$(awk -v a="$(metric "$after" podmeter_bpf_program_run_seconds_total "$m")" -v b="$(metric "$before" podmeter_bpf_program_run_seconds_total "$m")" 'BEGIN { print a - b }')
    STAT[$test,$p]="$dc $ds"
  done
  # What the programs counted for the pods, as a cross-check of run counts.
  STAT[$test,pkts]=$(awk -v a="$(metric "$after" podmeter_pod_receive_packets_total '')" -v b="$(metric "$before" podmeter_pod_receive_packets_total '')" \
    -v c="$(metric "$after" podmeter_pod_transmit_packets_total '')" -v d="$(metric "$before" podmeter_pod_transmit_packets_total '')" 'BEGIN { print a - b + c - d }')
done

# ---- report ----
echo
summary() { # summary TEST UNIT LABEL
  local test=$1 unit=$2 label=$3 v vals s n med p90 min max
  for v in "${VARIANTS[@]}"; do
    vals=$(awk -v t="$test" -v v="$v" '$1 == t && $2 == v { printf "%s%.3g", sep, $4; sep = " " }' "$RAW")
    s=$(awk -v t="$test" -v v="$v" '$1 == t && $2 == v { print $4 }' "$RAW" | stats)
    read -r n med p90 min max <<<"$s"
    printf '| %-22s | %-9s | %-34s | %9.4g | %9.4g-%-9.4g |\n' "$label ($unit)" "$v" "$vals" "$med" "$min" "$max"
    eval "MED_$v=$med"
  done
  printf '| %-22s | ratio     | %-34s | %9s |                     |\n' "$label" "${VARIANTS[0]} / ${VARIANTS[1]}" \
    "$(ratio "$(eval "echo \$MED_${VARIANTS[0]}")" "$(eval "echo \$MED_${VARIANTS[1]}")")"
}
echo "| test                   | variant   | runs (in order)                    |    median | spread (min-max)    |"
echo "| ---------------------- | --------- | ---------------------------------- | --------- | ------------------- |"
summary tcp Gbit/s "TCP 1 stream"
summary tcp4 Gbit/s "TCP -P 4"
summary udp kpkt/s "UDP 64 B"
summary rtt ms "ping round trip"

echo
echo "per program run, with kernel.bpf_stats_enabled=1 (podmeter pair, ${STAT_DUR}s each; one run = one skb;"
echo "TCP skbs are GSO aggregates of many MSS, UDP 64 B ones are single datagrams):"
echo "| traffic | program        |      runs | run time s |  ns / run |"
echo "| ------- | -------------- | --------- | ---------- | --------- |"
for test in tcp udp; do
  for p in "${PROGS[@]}"; do
    read -r dc ds <<<"${STAT[$test,$p]}"
    printf '| %-7s | %-14s | %9s | %10.6f | %9s |\n' "$test" "$p" "$dc" "$ds" \
      "$(awk -v c="$dc" -v s="$ds" 'BEGIN { if (c > 0) printf "%.1f", s * 1e9 / c; else print "-" }')"
  done
done
for test in tcp udp; do
  read -r ci _ <<<"${STAT[$test,pm_ingress]}"
  read -r ce _ <<<"${STAT[$test,pm_egress]}"
  echo "$test: pod rx+tx packets added to the maps: ${STAT[$test,pkts]} (pm_ingress + pm_egress runs: $((ci + ce)))"
done
echo "pm_kfree_skb runs on every kfree_skb of the machine (all namespaces, other users' traffic too)."
