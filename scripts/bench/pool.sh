#!/usr/bin/env bash
# The warm veth pool (issue #11, item 2) side by side: ADD and DEL wall time
# of podmeter under TCX without a pool, under TCX with a pool, with
# tcAttachMode=clsact, and of the reference `bridge` + `host-local`, each in
# its own node netns, same network as cni-latency.sh.
#
#   bash scripts/bench/pool.sh      # N=30 PAR=50 PAR_ROUNDS=3; ~2 min
#
# podmeter-pool8 (parallel only): a batch of PAR against a pool of 8 that a
# filler loop tops up during the batch, as the node agent would.
#
# podmeter-pool: before each timed ADD (and before each parallel batch, to
# PAR entries: every ADD of the batch finds one) `podmeterctl pool fill`
# tops the node's pool up, untimed, as the node agent does between pod
# starts. Sequential ADDs log their phases (PODMETER_LOG=podmeter::timing=debug,
# to tmpfs, every podmeter variant alike), which shows where the pool's ADD
# spends the time the attach no longer takes.
source "$(dirname "$0")/lib.sh"

N=${N:-30}
PAR=${PAR:-50}
PAR_ROUNDS=${PAR_ROUNDS:-3}
VARIANTS=(podmeter podmeter-pool podmeter-clsact reference)

bench_init pool
[ -x "$CNI_PATH/bridge" ] && [ -x "$CNI_PATH/host-local" ] ||
  { echo "bench: $CNI_PATH/bridge and host-local are missing (containernetworking-plugins)" >&2; exit 1; }
WORK=$(mktmp)
OUT=$(mktemp -d "/dev/shm/$TAG.XXXXXX")
TMPS+=("$OUT")
RAW=$WORK/raw   # variant phase microseconds
PH=$WORK/phases # variant phase ms

declare -A NODE PIN DATA
for v in "${VARIANTS[@]}"; do
  NODE[$v]=$TAG-$v
  mknetns "${NODE[$v]}"
  PIN[$v]=/sys/fs/bpf/$TAG-$v
  PINS+=("${PIN[$v]}")
  DATA[$v]=$WORK/ipam-$v
done

conf() {
  case $1 in
    reference) ref_conf "${DATA[$1]}" ;;
    podmeter | podmeter-pool*) pm_conf "${PIN[$1]}" "${DATA[$1]}" auto ;;
    podmeter-clsact) pm_conf "${PIN[$1]}" "${DATA[$1]}" clsact ;;
  esac
}
plugin() { if [ "$1" = reference ]; then echo "$CNI_PATH/bridge"; else echo "$BIN/podmeter"; fi; }
fill() { in_ns "${NODE[podmeter-pool]}" "$BIN/podmeterctl" --bpf.pin-path "${PIN[podmeter-pool]}" pool fill "$1" >/dev/null; }

# timed VARIANT COMMAND POD PHASE: timed by a shell inside the node netns
# around fork, exec and wait (as cni-latency.sh), recorded in $RAW; the
# plugin's phase lines go to $PH.
timed() {
  local v=$1 cmd=$2 pod=$3 phase=$4 rc t0 t1
  conf "$v" >"$WORK/conf.$v"
  read -r rc t0 t1 < <(CNI_COMMAND="$cmd" CNI_CONTAINERID="$pod" CNI_NETNS="/run/netns/$pod" \
    CNI_IFNAME=eth0 CNI_PATH="$CNI_PATH" PODMETER_LOG=podmeter::timing=debug NO_COLOR=1 \
    CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=$pod;K8S_POD_UID=uid-$pod" \
    nsenter --net="/run/netns/${NODE[$v]}" bash -c '
      t0=${EPOCHREALTIME/./}; "$1" <"$2" >"$3" 2>"$3.err"; rc=$?; t1=${EPOCHREALTIME/./}
      echo "$rc $t0 $t1"' _ "$(plugin "$v")" "$WORK/conf.$v" "$OUT/out.$pod") || rc="nsenter failed"
  if [ "$rc" != 0 ]; then
    echo "bench: $v $cmd $pod failed:" >&2
    cat "$OUT/out.$pod" "$OUT/out.$pod.err" >&2
    exit 1
  fi
  echo "$v $phase $((t1 - t0))" >>"$RAW"
  sed 's/\x1b\[[0-9;]*m//g' "$OUT/out.$pod.err" |
    sed -n 's/.*phase="\([^"]*\)" ms=\([0-9.]*\).*/\1\t\2/p' |
    awk -F'\t' -v v="$v" -v c="$cmd" '{ print v "\t" c "\t" $1 "\t" $2 }' >>"$PH"
}
rotated() {
  local k=${#VARIANTS[@]} j
  for ((j = 0; j < k; j++)); do echo "${VARIANTS[(($1 + j) % k)]}"; done
}

echo "pool: variants ${VARIANTS[*]}; N=$N PAR=$PAR x$PAR_ROUNDS"
machine_line

# warm-up: every node loads its programs and makes its bridge.
for v in "${VARIANTS[@]}"; do
  mknetns "$TAG-$v-w"
  [ "$v" = podmeter-pool ] && fill 1
  timed "$v" ADD "$TAG-$v-w" warmup
done

# seq: N ADDs (the pool topped up to 1 entry before each, untimed), then N DELs.
for ((i = 0; i < N; i++)); do
  for v in $(rotated "$i"); do
    mknetns "$TAG-$v-s$i"
    [ "$v" = podmeter-pool ] && fill 1
    timed "$v" ADD "$TAG-$v-s$i" add
  done
done
for ((i = 0; i < N; i++)); do
  for v in $(rotated "$i"); do timed "$v" DEL "$TAG-$v-s$i" del; done
done

# parallel: PAR ADDs at once (the pool holding PAR entries), then PAR DELs;
# wall time of the batch from outside (nsenter included).
par() {
  local v=$1 cmd=$2 r=$3 j t0 t1 pids=()
  t0=${EPOCHREALTIME/./}
  for ((j = 0; j < PAR; j++)); do
    conf "$v" | cni_call "${NODE[$v]}" "$(plugin "$v")" "$cmd" "$TAG-$v-p$r-$j" >"$OUT/out.p$j" 2>&1 &
    pids+=($!)
  done
  for j in "${!pids[@]}"; do
    wait "${pids[j]}" || { echo "bench: parallel $cmd ($v) failed:" >&2; cat "$OUT/out.p$j" >&2; exit 1; }
  done
  t1=${EPOCHREALTIME/./}
  echo "$v par-$cmd $((t1 - t0))" >>"$RAW"
}
for ((r = 0; r < PAR_ROUNDS; r++)); do
  for v in $(rotated "$r"); do
    for ((j = 0; j < PAR; j++)); do mknetns "$TAG-$v-p$r-$j"; done
    [ "$v" = podmeter-pool ] && fill "$PAR"
    par "$v" ADD "$r"
    par "$v" DEL "$r"
    for ((j = 0; j < PAR; j++)); do ip netns del "$TAG-$v-p$r-$j"; done
  done
done
# burst: a batch larger than the pool, as a deployment's scale-up meets a
# node agent's pool of 8 that it refills meanwhile (a filler loop runs
# through the batch, as the agent's does): variant podmeter-pool8.
NODE[podmeter-pool8]=${NODE[podmeter-pool]} PIN[podmeter-pool8]=${PIN[podmeter-pool]} DATA[podmeter-pool8]=${DATA[podmeter-pool]}
for ((r = 0; r < PAR_ROUNDS; r++)); do
  for ((j = 0; j < PAR; j++)); do mknetns "$TAG-podmeter-pool8-p$r-$j"; done
  fill 8
  (while :; do fill 8; sleep 0.25; done) &
  filler=$!
  PIDS+=("$filler")
  par podmeter-pool8 ADD "$r"
  kill "$filler"
  wait "$filler" 2>/dev/null || true
  par podmeter-pool8 DEL "$r"
  for ((j = 0; j < PAR; j++)); do ip netns del "$TAG-podmeter-pool8-p$r-$j"; done
done
in_ns "${NODE[podmeter-pool]}" "$BIN/podmeterctl" --bpf.pin-path "${PIN[podmeter-pool]}" pool drain >/dev/null

# ---- report ----
col() { awk -v v="$1" -v p="$2" '$1 == v && $2 == p { print $3 / 1000 }' "$RAW"; }
median_of() { col "$1" "$2" | stats | cut -d' ' -f2; }
echo
echo "wall time per invocation (parallel: of the whole batch), ms"
echo "| phase | variant | n | median | p90 | min-max | / reference |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for phase in add del par-ADD par-DEL; do
  for v in "${VARIANTS[@]}" podmeter-pool8; do
    read -r n med p90 min max <<<"$(col "$v" "$phase" | stats)"
    [ "$n" = 0 ] && continue
    printf '| %s | %s | %s | %.1f | %.1f | %.1f-%.1f | %s |\n' "$phase" "$v" "$n" "$med" "$p90" "$min" "$max" \
      "$(ratio "$med" "$(median_of reference "$phase")")"
  done
done
echo
printf 'podmeter-pool / podmeter (TCX): ADD %s, %s ADD parallel %s, %s ADD parallel with a pool of 8 refilled meanwhile %s\n' \
  "$(ratio "$(median_of podmeter-pool add)" "$(median_of podmeter add)")" "$PAR" \
  "$(ratio "$(median_of podmeter-pool par-ADD)" "$(median_of podmeter par-ADD)")" "$PAR" \
  "$(ratio "$(median_of podmeter-pool8 par-ADD)" "$(median_of podmeter par-ADD)")"
echo
echo "sequential ADD phases above 1 ms (median ms):"
for v in podmeter podmeter-pool podmeter-clsact; do
  awk -F'\t' -v v="$v" '$1 == v && $2 == "ADD" { print $3 }' "$PH" | sort -u | while read -r p; do
    m=$(awk -F'\t' -v v="$v" -v p="$p" '$1 == v && $2 == "ADD" && $3 == p { print $4 }' "$PH" | stats | cut -d' ' -f2)
    if awk -v m="$m" 'BEGIN { exit !(m > 1) }'; then printf '  %-16s %-45s %6.1f\n' "$v" "$p" "$m"; fi
  done
done
exit 0
