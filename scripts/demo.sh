#!/usr/bin/env bash
# podmeter demo: a node network namespace, pods wired by the real plugin,
# traffic between them, podmeter-exporter serving their counters and a real
# Prometheus scraping it on loopback; prints the per-pod rates from
# Prometheus' query API every few seconds until Ctrl-C (or DEMO_ROUNDS runs).
# Everything lives in namespaces, pins and temp dirs it creates; any exit
# removes them all.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo build --workspace --bins --locked -q

NODE=pmdemo-node
PIN=/sys/fs/bpf/podmeter-demo
PODS=(frontend backend db)
BIN=$PWD/target/debug
EXPORTER=127.0.0.1:${DEMO_EXPORTER_PORT:-19977}
PROM=127.0.0.1:${DEMO_PROMETHEUS_PORT:-19090}
ROUNDS=${DEMO_ROUNDS:-0} # 0: until Ctrl-C
PIDS=()
DATA=

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for p in "${PODS[@]}"; do ip netns del "pmdemo-$p" 2>/dev/null || true; done
  ip netns del "$NODE" 2>/dev/null || true
  rm -rf "$PIN"
  if [ -n "$DATA" ]; then rm -rf "$DATA"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cleanup # a run killed hard may have left some behind
DATA=$(mktemp -d /tmp/podmeter-demo.XXXXXX)

conf() {
  cat <<JSON
{"cniVersion":"1.1.0","name":"demo","type":"podmeter","bridge":"pm0","isGateway":true,
 "pinPath":"$PIN",
 "ipam":{"type":"builtin","dataDir":"$DATA/ipam","ranges":[[{"subnet":"10.88.0.0/24"}],[{"subnet":"fd00:88::/64"}]]}}
JSON
}

cni() { # cni COMMAND POD
  conf | env CNI_COMMAND="$1" CNI_CONTAINERID="demo-$2" CNI_NETNS="/run/netns/pmdemo-$2" \
    CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni \
    CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=$2;K8S_POD_UID=uid-$2" \
    nsenter --net=/run/netns/$NODE "$BIN/podmeter"
}
# bg [POD] CMD...: runs CMD in the background (inside POD's netns), remembered
# for cleanup. nsenter execs CMD, so the remembered PID is CMD's own.
bg() { "$@" >/dev/null 2>&1 & PIDS+=($!); }
in_pod() { local p=$1; shift; echo nsenter --net="/run/netns/pmdemo-$p" "$@"; }
promql() { # promql QUERY -> "pod value" lines
  curl -sf "http://$PROM/api/v1/query" --data-urlencode "query=$1" |
    jq -r '.data.result[] | "\(.metric.pod // .metric.reason) \(.value[1])"'
}
wait_for() { # wait_for URL
  for _ in $(seq 100); do curl -sf "$1" >/dev/null && return; sleep 0.2; done
  echo "demo: $1 did not come up" >&2; exit 1
}

ip netns add "$NODE"
declare -A IP
for p in "${PODS[@]}"; do
  ip netns add "pmdemo-$p"
  IP[$p]=$(cni ADD "$p" | jq -r '.ips[0].address | split("/")[0]')
  echo "pod shop/$p: ${IP[$p]} (netns pmdemo-$p, wired by $BIN/podmeter)"
done

bg "$BIN/podmeter-exporter" --web.listen-address "$EXPORTER" --bpf.pin-path "$PIN"
sed -e "s/127.0.0.1:9977/$EXPORTER/" -e "s/interval: 15s/interval: 1s/" \
  -e "s|rules/\*.yml|$PWD/prometheus/rules/*.yml|" prometheus/prometheus.yml >"$DATA/prometheus.yml"
bg prometheus --config.file="$DATA/prometheus.yml" --storage.tsdb.path="$DATA/tsdb" \
  --web.listen-address="$PROM" --log.level=warn
wait_for "http://$EXPORTER/metrics"
wait_for "http://$PROM/-/ready"

# Traffic: frontend streams to backend at 20 Mbit/s (iperf3), backend
# queries db (ping), db talks to its gateway.
bg $(in_pod backend iperf3 -s)
sleep 1
bg $(in_pod frontend iperf3 -c "${IP[backend]}" -b 20M -t 86400)
bg $(in_pod backend busybox ping -s 400 -i 0.05 "${IP[db]}")
bg $(in_pod db busybox ping -i 0.5 10.88.0.1)

# Policy, enforced by the same programs: db takes pings from backend only.
# frontend's pings are denied (counted as POLICY_DENIED drops); db's own
# pings to its gateway still get their replies.
ctl() { "$BIN/podmeterctl" --bpf.pin-path "$PIN" "$@"; }
ctl policy default shop/db --direction receive --action deny
ctl policy add shop/db --direction receive --action allow --cidr "${IP[backend]}/32" --proto icmp >/dev/null
bg $(in_pod frontend busybox ping -i 0.2 "${IP[db]}")
echo; echo "policy of shop/db (podmeterctl policy list shop/db):"; ctl policy list shop/db | sed 's/^/  /'

cat <<INFO

exporter:   http://$EXPORTER/metrics      (curl it, or: $BIN/podmeterctl --bpf.pin-path $PIN pods)
prometheus: http://$PROM/graph             (try: rate(podmeter_pod_receive_bytes_total[10s]))
dashboard:  dashboards/podmeter.json (import into Grafana with this Prometheus as datasource)
INFO

round=0
sleep 6
while :; do
  echo; echo "per-pod rates over the last 5s, from Prometheus ($(date +%T)):"
  printf '  %-10s %14s %14s\n' POD "RECEIVE B/s" "TRANSMIT B/s"
  join <(promql 'sum by (pod) (rate(podmeter_pod_receive_bytes_total{namespace="shop"}[5s]))' | sort) \
       <(promql 'sum by (pod) (rate(podmeter_pod_transmit_bytes_total{namespace="shop"}[5s]))' | sort) |
    while read -r pod rx tx; do printf '  %-10s %14.0f %14.0f\n' "$pod" "$rx" "$tx"; done
  echo "  drops/s by reason (kernel, and POLICY_DENIED): $(promql 'sum by (reason) (rate(podmeter_pod_drop_packets_total{namespace="shop"}[5s]))' | tr '\n' ' ')"
  round=$((round + 1))
  [ "$ROUNDS" -gt 0 ] && [ "$round" -ge "$ROUNDS" ] && break
  sleep 5
done

for p in "${PODS[@]}"; do cni DEL "$p"; done
echo; echo "DEL done; pods left registered: $("$BIN/podmeterctl" --bpf.pin-path "$PIN" pods --output json | wc -l)"
