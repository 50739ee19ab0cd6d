#!/usr/bin/env bash
# Fault sweep: kills or fails ADD (or DEL) of podmeter at every system call
# it makes, then runs DEL and GC as a runtime would and counts what is left
# (links, addresses, routes, leases, map entries, link pins, nft rules,
# processes). Prints a table; exits 1 on any leftover, any failed DEL
# afterwards, or any failure that is not a CNI error JSON. A panic inside a
# library (tokio's I/O driver on an impossible epoll error, std's closedir
# assert) that the plugin answers with its internal-error JSON (code 199)
# is listed, not failed: the plugin cannot catch it earlier.
#
#   bash scripts/faults.sh [--quick] [--verb add|del] [--mode kill|error|both]
#                          [--limit N] [--out FILE]
#
# --quick: only the calls that change something (netlink requests, map
#   updates and pins, IPAM file operations, nft); the full sweep takes minutes.
# --out: also write the table as TSV.
#
# How points are enumerated: strace 6.1's `-e inject=S:...:when=K` counts the
# calls of S per tracee (thread or process; a new thread starts from 0), so
# it fires at the K-th S of *each* thread that makes K of them. One fault-free
# call is recorded with `strace -f`; every (S, K) it contains is one fault
# point, expected to fire at the first call in time that is some thread's
# K-th S (shown in the table). A kill ends the process there; an error goes
# into that call and into any later thread's K-th S as well.
#
# Everything runs in namespaces, a pin path and a temp dir named
# pmbench-faults-<pid>, removed on any exit (scripts/bench/lib.sh).
set -euo pipefail
# shellcheck source=scripts/bench/lib.sh
source "$(dirname "$0")/bench/lib.sh"
BIN=$ROOT/target/debug # faults need no optimised build

QUICK=0 VERBS=(add del) MODES=(kill error) LIMIT=0 OUT=
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=1 ;;
    --verb) VERBS=("$2"); shift ;;
    --mode) [ "$2" = both ] || MODES=("$2"); shift ;;
    --limit) LIMIT=$2; shift ;;
    --out) OUT=$2; shift ;;
    *) echo "usage: $0 [--quick] [--verb add|del] [--mode kill|error|both] [--limit N] [--out FILE]" >&2; exit 2 ;;
  esac
  shift
done

# Not bench_init: it builds a release; the rest of its set-up is ours too.
TAG="pmbench-faults-$$"
NETNS=() PIDS=() PINS=() TMPS=() RESTORE=()
BASE=$(mktemp -d "/tmp/$TAG.XXXXXX")
TMPS+=("$BASE")
trap bench_cleanup EXIT
trap 'exit 130' INT TERM HUP
need jq nsenter ip strace nft timeout
sweep_stale
(cd "$ROOT" && cargo build --workspace --bins --locked -q)

NETWORK=pmfault
# Error numbers a real failure of each call would give.
errno_for() {
  case $1 in
    sendto | sendmsg | recvfrom | recvmsg) echo ENOBUFS ;;
    socket | socketpair | pipe2 | eventfd2 | epoll_create1) echo EMFILE ;;
    bpf) echo ENOMEM ;;
    clone | clone3 | vfork) echo EAGAIN ;;
    execve) echo EACCES ;;
    *) echo EIO ;;
  esac
}
# Calls whose failure the plugin can meet on a healthy-looking node; memory,
# signal and thread plumbing (mmap, futex, rt_sigaction, ...) are left out
# of error injection (their failure aborts any Rust program), not of kills.
ERROR_CALLS='^(openat|read|write|close|fsync|linkat|rename|renameat2|unlink|unlinkat|mkdir|flock|getdents64|statx|newfstatat|fstatfs|statfs|ioctl|socket|socketpair|bind|connect|getsockname|setsockopt|sendto|sendmsg|recvfrom|recvmsg|pipe2|eventfd2|epoll_create1|epoll_ctl|epoll_wait|poll|bpf|setns|clone|clone3|execve|wait4|dup2|pread64)$'
# --quick: calls that change the node (or hand off to nft), by their decoded arguments.
QUICK_CALLS='^(sendto|write|linkat|rename|unlink|flock|wait4|clone3) |^bpf .*(UPDATE_ELEM|DELETE_ELEM|OBJ_PIN|LINK_CREATE)'

# One node: namespace, pin path, IPAM dir, conflist (dual stack, gateway,
# masquerading, so nft is exercised).
new_node() {
  # A node a fault left dirty goes now, not at exit: a long sweep replaces many.
  if [ -n "${NODE:-}" ]; then
    ip netns del "$NODE"
    rm -rf "$PIN"
  fi
  NODE="$TAG-n$((++NODES))"
  mknetns "$NODE"
  PIN=/sys/fs/bpf/$NODE
  PINS+=("$PIN")
  DATA=$(mktmp)
  CONF=$(jq -nc --arg pin "$PIN" --arg data "$DATA" --arg net "$NETWORK" '{
    cniVersion: "1.1.0", name: $net, type: "podmeter", bridge: "pm0",
    isGateway: true, ipMasq: true, pinPath: $pin,
    ipam: {type: "builtin", dataDir: $data,
           ranges: [[{subnet: "10.79.0.0/24"}], [{subnet: "fd00:79::/64"}]]}}')
  # The first ADD loads the programs, a sequence no later ADD repeats.
  new_pod
  plugin ADD "$POD"
  plugin DEL "$POD"
  drop_pod "$POD"
}
NODES=0 PODS=0

# new_pod: a pod namespace, named in $POD (not echoed: mknetns must
# remember it in this shell for the cleanup).
new_pod() {
  POD="$TAG-p$((++PODS))"
  mknetns "$POD"
}
drop_pod() { ip netns del "$1"; }

# plugin VERB POD [WRAPPER...]: runs the plugin in the node as a runtime
# would (container ID = the pod netns' name); stdout to $W/out, stderr to
# $W/err; returns its exit code. Bounded: an injected error may hang it.
plugin() {
  local verb=$1 pod=$2
  shift 2
  # The outer 2>/dev/null silences bash's "Killed" notice, not the plugin.
  { env CNI_COMMAND="$verb" CNI_CONTAINERID="$pod" CNI_NETNS="/run/netns/$pod" CNI_IFNAME=eth0 \
    CNI_PATH=/usr/lib/cni CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=faults;K8S_POD_NAME=$pod" \
    timeout -s KILL 30 nsenter --net="/run/netns/$NODE" "$@" "$BIN/podmeter" \
    <<<"$CONF" >"$W/out" 2>"$W/err"; } 2>/dev/null
}

gc() {
  jq -c '. + {"cni.dev/valid-attachments": []}' <<<"$CONF" |
    env CNI_COMMAND=GC CNI_PATH=/usr/lib/cni nsenter --net="/run/netns/$NODE" "$BIN/podmeter" >"$W/gc" 2>&1
}

leftovers() {
  "$BIN/pm-leftovers" --netns "$NODE" --pin-path "$PIN" --data-dir "$DATA" \
    --network "$NETWORK" "$@"
}

# points TRACE: one line per fault point, "SYSCALL K ROLE WHAT", in the order
# they fire: the first call in time that is some thread's K-th SYSCALL. ROLE
# is "main", "tN" (other threads, by first appearance) or the program a
# child executed (nft).
points() {
  awk '
    $2 ~ /^(<|---|\+\+\+)/ { next }
    {
      tid = $1; call = $2; sub(/\(.*/, "", call)
      if (!(tid in role)) role[tid] = (++n == 1) ? "main" : "t" n
      if (call == "execve" && role[tid] != "main" && match($0, /execve\("[^"]*"/)) {
        prog = substr($0, RSTART + 8, RLENGTH - 9); sub(/.*\//, "", prog); role[tid] = prog
      }
      k = ++count[tid, call]
      if ((call, k) in seen) { later++; next }
      seen[call, k] = 1
      what = $0; sub(/^[0-9]+ +/, "", what); gsub(/[\t ]+/, " ", what)
      lines[++m] = call " " k " " tid " " substr(what, 1, 150)
    }
    END {
      for (i = 1; i <= m; i++) { split(lines[i], f, " "); sub(f[3], role[f[3]], lines[i]); print lines[i] }
      print later " calls are some thread'\''s K-th call of a kind that another thread made earlier" > "/dev/stderr"
    }' "$1"
}

# Runs one fault point; prints its table row; returns 1 if it found something.
# Leftovers poison the node for the next point, so a fresh one is made then.
fault() {
  local verb=$1 mode=$2 call=$3 k=$4 role=$5 what=$6 action pod rc json del gcrc left fired t0 finding=0
  if [ "$mode" = kill ]; then action=signal=KILL; else action=error=$(errno_for "$call"); fi
  new_pod
  pod=$POD
  if [ "$verb" = DEL ]; then plugin ADD "$pod" || true; fi
  rc=0
  t0=$SECONDS
  plugin "$verb" "$pod" strace -f -qq -o "$W/trace" -e "inject=$call:$action:when=$k" || rc=$?
  cp "$W/err" "$W/fault.err" # the DEL below overwrites it
  fired=no
  if grep -qE 'INJECTED|killed by SIGKILL' "$W/trace"; then fired=yes; fi
  json=-
  if [ "$rc" != 0 ] && [ "$mode" = error ]; then
    if [[ $call == write && $what == "write(1, "* ]]; then
      # The fault is in writing the answer itself: nothing can answer.
      json=stdout
    elif jq -e '.code == 199' "$W/out" >/dev/null 2>&1; then
      # A library panicked (tokio's I/O driver, std's closedir assert) and
      # main answered with the internal-error JSON: reported, not failed.
      json=199
      PANICS+=("$verb $mode $call:$k: $(grep -m1 -A1 panicked "$W/fault.err" | tr '\n' ' ')")
    elif jq -e '.code and .msg' "$W/out" >/dev/null 2>&1 && ! grep -q panicked "$W/fault.err"; then
      json=ok
    else
      json=NO
      finding=1
    fi
  fi
  # A DEL that reports success must have removed everything already.
  if [ "$verb" = DEL ] && [ "$rc" = 0 ]; then
    left=$(leftovers --baseline "$W/baseline.json")
    if [ "$(jq -c 'with_entries(select(.value != 0 and .value != []))' <<<"$left")" != '{}' ]; then
      json=LEFT finding=1
      FINDINGS+=("$verb $mode $call:$k: DEL succeeded but left $left")
    fi
  fi
  # The runtime's cleanup: DEL (again, after a failed DEL), then GC.
  del=0
  plugin DEL "$pod" || del=$?
  [ "$del" = 0 ] || finding=1
  gcrc=0
  gc || gcrc=$?
  [ "$gcrc" = 0 ] || finding=1
  left=$(leftovers --pod-netns "$pod" --baseline "$W/baseline.json")
  drop_pod "$pod"
  local counts
  counts=$(jq -r '[.links, .addrs, .routes, .leases, .registry, .counters, .devices, .drops, .pins, .nft, .procs]
    | map(if type == "array" then length else . end) | @tsv' <<<"$left")
  if [ -n "$(tr -d '0\t' <<<"$counts")" ]; then finding=1; fi
  local exit=$rc
  if [ "$rc" = 137 ]; then exit=KILL; fi
  if [ $((SECONDS - t0)) -ge 30 ]; then exit=HANG finding=1; fi
  row "$verb" "$mode" "$call:$k" "$role" "$fired" "$exit" "$json" "$del/$gcrc" "$counts" "${what:0:70}"
  if [ "$finding" = 1 ]; then
    FINDINGS+=("$verb $mode $call:$k ($role) exit=$exit json=$json del/gc=$del/$gcrc left=$(jq -c 'with_entries(select(.value != 0 and .value != []))' <<<"$left"): $what")
    if grep -q panicked "$W/fault.err"; then FINDINGS+=("    $(grep -m1 -A1 panicked "$W/fault.err" | tr '\n' ' ')"); fi
    new_node
    baseline
  fi
  return "$finding"
}

row() {
  local line
  line=$(printf '%s\t' "$@")
  # shellcheck disable=SC2086 # the counts are split into columns on purpose
  printf '%-4s %-5s %-16s %-5s %-5s %-6s %-4s %-7s %s %s\n' "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8" \
    "$(printf '%-3s ' $9)" "${10}"
  [ -z "$OUT" ] || echo "${line%$'\t'}" >>"$OUT"
}

# What a node keeps after a fault-free ADD, DEL and GC: its bridge, the
# gateway addresses and their routes.
baseline() {
  new_pod
  plugin ADD "$POD"
  plugin DEL "$POD"
  gc
  drop_pod "$POD"
  leftovers >"$W/baseline.json"
  local clean
  clean=$(leftovers --baseline "$W/baseline.json")
  if [ "$(jq -c 'with_entries(select(.value != 0 and .value != []))' <<<"$clean")" != '{}' ]; then
    echo "faults: a fault-free ADD, DEL and GC leave $clean" >&2
    exit 1
  fi
}

W=$(mktmp)
[ -z "$OUT" ] || printf 'verb\tmode\tpoint\trole\tfired\texit\tjson\tdel/gc\t%s\twhat\n' \
  "$(tr " " "\t" <<<"links addrs routes leases registry counters devices drops pins nft procs")" >"$OUT"
new_node
baseline
# The recorded calls: one ADD and its DEL on the warm node.
new_pod
plugin ADD "$POD" strace -f -qq -o "$W/ADD.trace"
plugin DEL "$POD" strace -f -qq -o "$W/DEL.trace"
drop_pod "$POD"
gc

FINDINGS=() PANICS=()
start=$SECONDS
total=0
printf '%-4s %-5s %-16s %-5s %-5s %-6s %-4s %-7s %s %s\n' verb mode point role fired exit json del/gc \
  "lnk adr rte lse reg cnt dev drp pin nft prc" "what the call was in the recorded run"
for verb in "${VERBS[@]}"; do
  VERB=${verb^^}
  points "$W/$VERB.trace" >"$W/$VERB.points" 2>"$W/$VERB.clashes"
  echo "$VERB: $(wc -l <"$W/$VERB.points") fault points; $(cat "$W/$VERB.clashes")"
  for mode in "${MODES[@]}"; do
    n=0
    while read -r call k role what; do
      if [ "$mode" = error ] && ! [[ $call =~ $ERROR_CALLS ]]; then continue; fi
      if [ "$QUICK" = 1 ] && ! [[ "$call $what" =~ $QUICK_CALLS && $role == main ]]; then continue; fi
      if [ "$LIMIT" -gt 0 ] && [ "$n" -ge "$LIMIT" ]; then break; fi
      n=$((n + 1))
      fault "$VERB" "$mode" "$call" "$k" "$role" "$what" || true
    done <"$W/$VERB.points"
    total=$((total + n))
  done
done

echo
echo "faults: $total fault points in $((SECONDS - start)) s; ${#FINDINGS[@]} finding lines; ${#PANICS[@]} library panics answered as error JSON (code 199)"
for p in "${PANICS[@]}"; do echo "  panic: ${p:0:240}"; done
for f in "${FINDINGS[@]}"; do echo "  $f"; done
[ ${#FINDINGS[@]} -eq 0 ]
