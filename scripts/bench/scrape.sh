#!/usr/bin/env bash
# Scrape latency with PODS pods: podmeter-exporter vs prometheus-node-exporter
# (what operators otherwise read veth counters from), all in one node
# network namespace holding PODS podmeter-wired pods.
#
#   PODS=200 SCRAPES=20 bash scripts/bench/scrape.sh
#
# Wiring the pods is measured too: podmeter ADDs alternate with reference
# bridge + host-local ADDs into a second node netns (removed before the
# scrapes), reported per quarter of the pod count.
#
# Targets (each on loopback inside the node namespace):
#   podmeter          podmeter-exporter: per-pod counters from the pinned maps
#   ne-netdev         node_exporter --collector.disable-defaults --collector.netdev
#                     (netlink / /proc/net/dev: follow the netns, so it sees the
#                     node namespace's devices: the comparable one)
#   ne-netdev+class   ... --collector.netclass too, started with nsenter: /sys is
#                     still the root netns' sysfs, so netclass reports the ROOT
#                     namespace's devices (not the pods'): shown, not compared
#   ne-netclass-own   the same started with `ip netns exec`, which mounts a
#                     sysfs of the node netns in a private mount namespace: what
#                     a node_exporter in the node's netns would really cost
# SCRAPES rounds; every round scrapes each target once, in an order rotated
# per round. Latency is curl's time_total (the nsenter around curl is not
# counted).
source "$(dirname "$0")/lib.sh"

PODS=${PODS:-200}
SCRAPES=${SCRAPES:-20}

bench_init scrape
need curl prometheus-node-exporter busybox
WORK=$(mktmp)
NODE=$TAG-node
PIN=/sys/fs/bpf/$TAG
PINS+=("$PIN")
mknetns "$NODE"

echo "scrape: PODS=$PODS SCRAPES=$SCRAPES"
machine_line

# Wiring: PODS ADDs with podmeter, alternating with PODS ADDs of the
# reference bridge + host-local into a second node netns (removed before the
# scrapes), to see how ADD time grows with the number of pods on the node.
REF=$TAG-ref
mknetns "$REF"
conf=$(pm_conf "$PIN" "$WORK/ipam")
ref=$(ref_conf "$WORK/ipam-ref")
ADDS=$WORK/adds # lines: variant index microseconds
t0=${EPOCHREALTIME/./}
IPS=()
for ((i = 0; i < PODS; i++)); do
  pod=$NODE-p$i
  mknetns "$pod"
  mknetns "$REF-p$i"
  for v in podmeter reference; do
    [ $((i % 2)) = 1 ] && v=$([ $v = podmeter ] && echo reference || echo podmeter)
    a=${EPOCHREALTIME/./}
    if [ $v = podmeter ]; then
      cni_call "$NODE" "$BIN/podmeter" ADD "$pod" <<<"$conf" >"$WORK/pm.out" 2>&1 ||
        { echo "bench: ADD $pod failed: $(cat "$WORK/pm.out")" >&2; exit 1; }
    else
      cni_call "$REF" "$CNI_PATH/bridge" ADD "$REF-p$i" <<<"$ref" >"$WORK/ref.out" 2>&1 ||
        { echo "bench: reference ADD $i failed: $(cat "$WORK/ref.out")" >&2; exit 1; }
    fi
    b=${EPOCHREALTIME/./}
    echo "$v $i $((b - a))" >>"$ADDS"
  done
  IPS+=("$(pod_ip "$(cat "$WORK/pm.out")")")
done
t1=${EPOCHREALTIME/./}
echo "wired $PODS + $PODS pods in $(((t1 - t0) / 1000)) ms (incl. netns creation)"
for ((i = 0; i < PODS; i++)); do ip netns del "$REF-p$i"; done
ip netns del "$REF"

# Small traffic: the node pings every pod twice, 25 at a time (bounded: -c 2 -W 1).
for ((i = 0; i < PODS; i += 25)); do
  in_ns "$NODE" sh -c 'for ip; do busybox ping -q -c 2 -W 1 "$ip" >/dev/null 2>&1 & done; wait' sh "${IPS[@]:i:25}" || true
done

# Targets.
start_exporter "$NODE" "$PIN"
declare -A URL
URL[podmeter]=http://$EXPORTER_ADDR/metrics
ne() { # ne NAME PORT LAUNCHER... -- FLAGS...: a node_exporter on 127.0.0.1:PORT in the node netns
  local name=$1 port=$2
  shift 2
  local launcher=()
  while [ "$1" != -- ]; do launcher+=("$1"); shift; done
  shift
  "${launcher[@]}" prometheus-node-exporter --web.listen-address="127.0.0.1:$port" \
    --collector.disable-defaults "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  URL[$name]=http://127.0.0.1:$port/metrics
}
# The ports are the node netns' own loopback: nothing else listens there.
ne ne-netdev 9101 nsenter --net="/run/netns/$NODE" -- --collector.netdev
ne ne-netdev+class 9102 nsenter --net="/run/netns/$NODE" -- --collector.netdev --collector.netclass
ne ne-netclass-own 9103 ip netns exec "$NODE" -- --collector.netdev --collector.netclass
TARGETS=(podmeter ne-netdev ne-netdev+class ne-netclass-own)
for t in "${TARGETS[@]}"; do
  up "$NODE" "${URL[$t]}" || { cat "$WORK/$t.log" >&2 2>/dev/null; exit 1; }
done

RAW=$WORK/raw # lines: target seconds bytes
for ((r = 0; r < SCRAPES; r++)); do
  k=${#TARGETS[@]}
  for ((j = 0; j < k; j++)); do
    t=${TARGETS[(r + j) % k]}
    echo "$t $(in_ns "$NODE" curl -sf -o "$WORK/body.$t" -w '%{time_total} %{size_download}' "${URL[$t]}")" >>"$RAW"
  done
done

# ---- report ----
# devices TARGET: what the body is about (pods for podmeter, devices for node_exporter).
devices() {
  local body=$WORK/body.$1
  if [ "$1" = podmeter ]; then
    echo "$(metric "$(cat "$body")" podmeter_pods '') pods"
  else
    echo "$(grep -c '^node_network_receive_bytes_total{' "$body") devs (netdev)," \
      "$(grep -o '^node_network_info{[^}]*' "$body" | wc -l) (netclass)"
  fi
}
echo
echo "ADD wall time by pods already on the node, ms (median [min-max] of each quarter of the $PODS ADDs)"
echo "| pods before | podmeter               | reference              | ratio |"
echo "| ----------- | ---------------------- | ---------------------- | ----- |"
q=$(((PODS + 3) / 4))
for ((lo = 0; lo < PODS; lo += q)); do
  hi=$((lo + q - 1 < PODS - 1 ? lo + q - 1 : PODS - 1))
  declare -A QM=()
  cells=()
  for v in podmeter reference; do
    read -r n med p90 min max <<<"$(awk -v v="$v" -v lo="$lo" -v hi="$hi" '$1 == v && $2 >= lo && $2 <= hi { print $3 / 1000 }' "$ADDS" | stats)"
    QM[$v]=$med
    cells+=("$(printf '%6.1f [%5.1f-%6.1f]' "$med" "$min" "$max")")
  done
  printf '| %4d-%-6d | %-22s | %-22s | %5s |\n' "$lo" "$hi" "${cells[0]}" "${cells[1]}" "$(ratio "${QM[podmeter]}" "${QM[reference]}")"
done

echo
echo "scrape latency, ms (curl time_total; $SCRAPES scrapes each, interleaved)"
echo "| target          |   median |      p90 | spread (min-max)  |   bytes | samples | sees                             |"
echo "| --------------- | -------- | -------- | ----------------- | ------- | ------- | -------------------------------- |"
declare -A MED
for t in "${TARGETS[@]}"; do
  read -r n med p90 min max <<<"$(awk -v t="$t" '$1 == t { print $2 * 1000 }' "$RAW" | stats)"
  MED[$t]=$med
  bytes=$(awk -v t="$t" '$1 == t { print $3 }' "$RAW" | stats | cut -d' ' -f2)
  printf '| %-15s | %8.2f | %8.2f | %7.2f-%-9.2f | %7.0f | %7s | %-32s |\n' "$t" "$med" "$p90" "$min" "$max" "$bytes" \
    "$(grep -vc '^#' "$WORK/body.$t")" "$(devices "$t")"
done
echo
echo "ratios of medians:"
echo "  podmeter / ne-netdev (comparable: same netns view):   $(ratio "${MED[podmeter]}" "${MED[ne-netdev]}")"
echo "  podmeter / ne-netclass-own (netdev + own sysfs):       $(ratio "${MED[podmeter]}" "${MED[ne-netclass-own]}")"
echo "  (ne-netdev+class reads the root netns' sysfs: $(grep -o '^node_network_info{[^}]*' "$WORK/body.ne-netdev+class" | grep -c 'device="pmb0"') of its netclass devices is the node's bridge pmb0)"
