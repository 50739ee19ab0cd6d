#!/usr/bin/env bash
# podmeter demo: a node network namespace, pods wired by the real plugin,
# traffic between them, and each pod's counters next to the kernel's.
# Everything lives in namespaces it creates; Ctrl-C or exit removes them all.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo build --workspace --bins --locked -q

NODE=pmdemo-node
PIN=/sys/fs/bpf/podmeter-demo
DATA=$(mktemp -d /tmp/podmeter-demo.XXXXXX)
PODS=(frontend backend db)
BIN=$PWD/target/debug

cleanup() {
  for p in "${PODS[@]}"; do ip netns del "pmdemo-$p" 2>/dev/null || true; done
  ip netns del "$NODE" 2>/dev/null || true
  rm -rf "$PIN" "$DATA"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cleanup # a previous run killed hard may have left some behind
DATA=$(mktemp -d /tmp/podmeter-demo.XXXXXX)

conf() {
  cat <<JSON
{"cniVersion":"1.1.0","name":"demo","type":"podmeter","bridge":"pm0","isGateway":true,
 "pinPath":"$PIN",
 "ipam":{"type":"builtin","dataDir":"$DATA","ranges":[[{"subnet":"10.88.0.0/24"}],[{"subnet":"fd00:88::/64"}]]}}
JSON
}

cni() { # cni COMMAND POD
  conf | env CNI_COMMAND="$1" CNI_CONTAINERID="demo-$2" CNI_NETNS="/run/netns/pmdemo-$2" \
    CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni \
    CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=$2;K8S_POD_UID=uid-$2" \
    nsenter --net=/run/netns/$NODE "$BIN/podmeter"
}

cni_host() { "$BIN/podmeter-stat" --bpf.pin-path "$PIN" --json |
  jq -r --arg p "$1" 'select(.pod == $p) | .host_interface'; }

ip netns add "$NODE"
declare -A IP
for p in "${PODS[@]}"; do
  ip netns add "pmdemo-$p"
  IP[$p]=$(cni ADD "$p" | jq -r '.ips[0].address | split("/")[0]')
  echo "ADD $p -> ${IP[$p]}"
done

echo; echo "traffic: frontend -> backend (100 x 1000 B), backend -> db (50 x 200 B), db -> gateway"
nsenter --net=/run/netns/pmdemo-frontend busybox ping -q -c 100 -i 0.01 -s 1000 "${IP[backend]}" | tail -1
nsenter --net=/run/netns/pmdemo-backend busybox ping -q -c 50 -i 0.01 -s 200 "${IP[db]}" | tail -1
nsenter --net=/run/netns/pmdemo-db busybox ping -q -c 5 -i 0.01 10.88.0.1 | tail -1

echo; echo "per-pod counters (podmeter-stat --bpf.pin-path $PIN):"
"$BIN/podmeter-stat" --bpf.pin-path "$PIN"

# Side by side with the kernel's own counters of each host veth (its RX is
# what the pod transmitted). Pods still send the odd IPv6 neighbour or MLD
# packet, so a snapshot is taken when the kernel's counters did not move
# while podmeter's were read.
kernel() { nsenter --net=/run/netns/$NODE ip -j -s link show "$1" |
  jq -r '.[0].stats64 | "\(.tx.packets) \(.tx.bytes) \(.rx.packets) \(.rx.bytes)"'; }
echo; printf '%-10s %-34s %-34s\n' POD "podmeter rx/tx packets, bytes" "kernel (host veth tx/rx)"
for p in "${PODS[@]}"; do
  for _ in $(seq 20); do
    before=$(kernel "$(cni_host "$p")")
    ours=$("$BIN/podmeter-stat" --bpf.pin-path "$PIN" --json | jq -r --arg p "$p" \
      'select(.pod == $p) | "\(.receive_packets) \(.receive_bytes) \(.transmit_packets) \(.transmit_bytes)"')
    [ "$before" = "$(kernel "$(cni_host "$p")")" ] && break
  done
  verdict=$([ "$ours" = "$before" ] && echo "equal" || echo "DIFFERENT")
  printf '%-10s %-34s %-34s %s\n' "$p" "$ours" "$before" "$verdict"
done

for p in "${PODS[@]}"; do cni DEL "$p"; done
echo; echo "DEL done; registered pods left: $("$BIN/podmeter-stat" --bpf.pin-path "$PIN" --json | wc -l)"
