#!/usr/bin/env bash
# What the TCP programs (ebpf/bpf/tcp.h) cost: short TCP connections per
# second between two pods with the programs attached and with their links
# removed (detached), rounds alternating, in one run; and each program's
# run time per event from the kernel's bpf_stats during the attached rounds.
#
#   ROUNDS=5 COUNT=5000 bash scripts/bench/tcp.sh
#
# One node, pods p0 (client) and p1 (server, a Python accept loop). A
# connection: connect, send 1 byte, close; the server reads and closes.
# Each connection passes about ten state changes (five a side). "Detached"
# removes the four TCP link pins; the next ADD (of a throwaway pod, before
# each attached round) attaches them again. bpf_stats
# (kernel.bpf_stats_enabled, a node-wide sysctl) is on during the run and
# put back after; its two clock reads per run overstate a program's time.
source "$(dirname "$0")/lib.sh"

ROUNDS=${ROUNDS:-5}
COUNT=${COUNT:-5000}

bench_init tcp
need python3 bpftool
WORK=$(mktmp)
echo "tcp: ROUNDS=$ROUNDS COUNT=$COUNT"
machine_line

old_stats=$(cat /proc/sys/kernel/bpf_stats_enabled)
RESTORE+=("echo $old_stats >/proc/sys/kernel/bpf_stats_enabled")
echo 1 >/proc/sys/kernel/bpf_stats_enabled

NODE=$TAG-node
PIN=/sys/fs/bpf/$TAG
PINS+=("$PIN")
mknetns "$NODE"
CONF=$(pm_conf "$PIN" "$WORK/ipam")
for p in p0 p1; do
  mknetns "$TAG-$p"
  result=$(cni_call "$NODE" "$BIN/podmeter" ADD "$TAG-$p" <<<"$CONF")
  [ $p = p1 ] && SERVER_IP=$(pod_ip "$result")
done
DIR=$PIN/v$(grep -o 'PODMETER_ABI_VERSION [0-9]*' "$ROOT/ebpf/bpf/podmeter.h" | cut -d' ' -f2)
TCP_PROGS=(pm_tcp_state pm_tcp_retransmit pm_tcp_retransmit_synack pm_tcp_send_reset)
TCP_LINKS=(inet_sock_set_state tcp_retransmit_skb tcp_retransmit_synack tcp_send_reset)

cat >"$WORK/server.py" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7000)); s.listen(1024)
print("address=0.0.0.0:7000", file=sys.stderr, flush=True)
while True:
    c, _ = s.accept(); c.recv(16); c.close()
PY
cat >"$WORK/client.py" <<'PY'
import socket, sys, time
ip, n = sys.argv[1], int(sys.argv[2])
t = time.perf_counter()
for _ in range(n):
    c = socket.create_connection((ip, 7000)); c.sendall(b"x"); c.recv(16); c.close()
print(n / (time.perf_counter() - t))
PY
start_server "$TAG-p1" python3 "$WORK/server.py"

# run_stats: "run_cnt run_time_ns" summed over the TCP programs.
run_stats() {
  local p cnt=0 ns=0 j
  for p in "${TCP_PROGS[@]}"; do
    j=$(bpftool prog show pinned "$DIR/prog_$p" -j)
    cnt=$((cnt + $(jq '.run_cnt // 0' <<<"$j")))
    ns=$((ns + $(jq '.run_time_ns // 0' <<<"$j")))
  done
  echo "$cnt $ns"
}

for r in $(seq "$ROUNDS"); do
  # Attached: an ADD attaches what is missing.
  mknetns "$TAG-x$r"
  cni_call "$NODE" "$BIN/podmeter" ADD "$TAG-x$r" <<<"$CONF" >/dev/null
  cni_call "$NODE" "$BIN/podmeter" DEL "$TAG-x$r" <<<"$CONF" >/dev/null
  before=$(run_stats)
  in_ns "$TAG-p0" python3 "$WORK/client.py" "$SERVER_IP" "$COUNT" >>"$WORK/with"
  after=$(run_stats)
  read -r c0 t0 <<<"$before"
  read -r c1 t1 <<<"$after"
  echo "$(((c1 - c0) / COUNT)) $(((t1 - t0) / (c1 - c0)))" >>"$WORK/events"
  # Detached.
  for l in "${TCP_LINKS[@]}"; do rm -f "$DIR/links/$l"; done
  in_ns "$TAG-p0" python3 "$WORK/client.py" "$SERVER_IP" "$COUNT" >>"$WORK/without"
done

printf '%-34s %s\n' "" "n median p90 min max"
printf '%-34s %s\n' "connections/s, programs attached" "$(stats <"$WORK/with")"
printf '%-34s %s\n' "connections/s, detached" "$(stats <"$WORK/without")"
w=$(stats 50 <"$WORK/with" | cut -d' ' -f2)
wo=$(stats 50 <"$WORK/without" | cut -d' ' -f2)
echo "attached/detached (medians): $(ratio "$w" "$wo")"
printf '%-34s %s\n' "events per connection" "$(cut -d' ' -f1 "$WORK/events" | stats)"
printf '%-34s %s\n' "ns per event (bpf_stats)" "$(cut -d' ' -f2 "$WORK/events" | stats)"
