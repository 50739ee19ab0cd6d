# shellcheck shell=bash
# The checks that end kind-config/up.sh, each reported by name as
# "  ok: NAME" or "  FAILED: NAME: ...". Sourced; the caller defines
#   pod_fetch POD URL   prints what URL answers from inside POD
# (up.sh: kubectl exec ... wget; the simulated cluster of
# tests/tests/services.rs: nsenter ... curl), calls the checks, and ends
# with CHECKS_FAILED (1 if any failed). The Service checks are the ones the
# simulated cluster runs too: what breaks Services on a real node (no
# br_netfilter, no hairpin) breaks them there.

CHECKS_FAILED=0

# check NAME POD URL: ok if URL answers something from POD.
check() {
  local out
  if out=$(pod_fetch "$2" "$3" 2>&1) && [ -n "$out" ]; then
    echo "  ok: $1"
  else
    echo "  FAILED: $1: $3 from $2: ${out:-no answer}"
    CHECKS_FAILED=1
  fi
}

# url IP PORT [PATH]: an http URL, IPv6 addresses bracketed.
url() {
  local host=$1
  [[ $host == *:* ]] && host="[$host]"
  echo "http://$host:$2${3:-/}"
}

# service_checks SERVER SAME_NODE OTHER_NODE PORT PATH CLUSTER_IP...: the
# Service whose only endpoint is pod SERVER, over each ClusterIP, from a pod
# on SERVER's node (its reply is bridged: kube-proxy must see it to un-NAT
# it), from a pod on another node (routed), and from SERVER itself
# (DNATed back to where it came from: hairpin).
service_checks() {
  local server=$1 same=$2 other=$3 port=$4 path=$5 ip
  shift 5
  for ip in "$@"; do
    check "Service $ip from a pod on the same node" "$same" "$(url "$ip" "$port" "$path")"
    check "Service $ip from a pod on another node" "$other" "$(url "$ip" "$port" "$path")"
    check "Service $ip from its own endpoint (hairpin)" "$server" "$(url "$ip" "$port" "$path")"
  done
}
