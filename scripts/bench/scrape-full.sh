#!/usr/bin/env bash
# Scrape at a full node: podmeter-exporter's /metrics latency, response size
# and RSS against the number of registered pods, up to PM_MAX_PODS (8,192),
# then podmeter vs node_exporter's netdev collector on REAL_PODS pods wired
# by the real plugin.
#
#   SIZES="100 1000 8192" DROPS=16 SCRAPES=40 REAL_PODS=1000 bash scripts/bench/scrape-full.sh
#
# Part 1, registered pods (no veths): for each size N, a pin path of its own
# is filled by `pm-bench-fill` (tests/src/bin): programs and maps loaded with
# loader::ensure_loaded, N pods registered with PinnedMaps::register, traffic
# counters on every TRAFFIC_EVERY-th pod and DROPS drop entries per pod
# (directions x real reason names). 16 per pod fills the drops map
# (16 x PM_MAX_PODS entries) at 8,192. One exporter per size, all in one node
# netns on loopback; SCRAPES rounds, each scraping every size once in an
# order rotated per round. RSS is read from /proc after the scrapes.
#
# Part 2, wired pods: REAL_PODS pods wired with the podmeter plugin in a
# node netns (as scrape.sh, without the reference plugin), pinged twice each;
# then podmeter-exporter and `node_exporter --collector.disable-defaults
# --collector.netdev` (nsenter: netdev follows the netns, so it sees the
# same veths) scraped REAL_SCRAPES rounds, interleaved. REAL_PODS=0 skips it.
#
# BASE_EXPORTER=PATH also scrapes another podmeter-exporter build (e.g. one
# built from an earlier commit) on the same pins, interleaved, for a
# before/after ratio.
#
# GZIP=1 also scrapes every exporter (this build's and BASE_EXPORTER's) as
# "N-gz", in the same rounds: `curl --compressed`, which asks for gzip and
# decompresses as Prometheus does; its bytes are those on the wire. For a
# level against another, give BASE_EXPORTER a build with the other level.
#
# Floors, per size: `pm-bench-read` times the exporter's batched read of
# each map alone (SCRAPES rounds), and `pm-bench-static` serves the
# exporter's response from memory with the same HTTP stack (axum, hyper),
# fetched in the same rounds as "N-static": what a scrape of that size
# costs with nothing to read or encode.
#
# Latency is curl's time_total (the nsenter around curl is not counted);
# scrapes are PAUSE (0.2) seconds apart.
source "$(dirname "$0")/lib.sh"

SIZES=${SIZES:-"100 1000 8192"}
DROPS=${DROPS:-16}
TRAFFIC_EVERY=${TRAFFIC_EVERY:-4}
SCRAPES=${SCRAPES:-40}
REAL_PODS=${REAL_PODS:-1000}
REAL_SCRAPES=${REAL_SCRAPES:-20}
TARGET_MS=${TARGET_MS:-50}
BASE_EXPORTER=${BASE_EXPORTER:-}
PAUSE=${PAUSE:-0.2}
GZIP=${GZIP:-0}

bench_init scrape-full
need curl prometheus-node-exporter busybox
WORK=$(mktmp)
# Bodies go to tmpfs, as a scraper keeps them in memory: written to the
# disk, each scrape's time also held the write of up to 45 MB and the
# truncation of the last body.
BODIES=$(mktemp -d "/dev/shm/$TAG.XXXXXX")
TMPS+=("$BODIES")
NODE=$TAG-node
mknetns "$NODE"

echo "scrape-full: SIZES=\"$SIZES\" DROPS=$DROPS TRAFFIC_EVERY=$TRAFFIC_EVERY SCRAPES=$SCRAPES REAL_PODS=$REAL_PODS REAL_SCRAPES=$REAL_SCRAPES"
machine_line

# status_kib PID FIELD: VmRSS / VmHWM of a process, in KiB.
status_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }
# scrape NAME URL RAW [CURL_ARG...]: one scrape inside NODE, appended to RAW
# as "name seconds bytes" (bytes received: compressed ones with --compressed).
# It starts PAUSE seconds after the last one: back to back, a scrape shared
# the 2 CPUs of this machine with the previous target still freeing its
# tens of MB (Prometheus leaves 15 s or so between scrapes of a target).
scrape() {
  sleep "$PAUSE"
  echo "$1 $(in_ns "$NODE" curl -sf "${@:4}" -o "$BODIES/body.$1" -w '%{time_total} %{size_download}' "$2")" >>"$3"
}
# start_static NODE FILE: serves FILE with pm-bench-static inside NODE; sets
# STATIC_ADDR (host:port).
start_static() {
  start_server "$1" "$BIN/pm-bench-static" --file "$2"
  STATIC_ADDR=$SERVER_ADDR
}

# ---- part 1: registered pods ----
declare -A URL PID
for n in $SIZES; do
  pin=/sys/fs/bpf/$TAG-n$n
  PINS+=("$pin")
  a=${EPOCHREALTIME/./}
  "$BIN/pm-bench-fill" --pin-path "$pin" --pods "$n" --drops "$DROPS" --traffic-every "$TRAFFIC_EVERY" >"$WORK/fill.$n"
  b=${EPOCHREALTIME/./}
  echo "n=$n: $(cat "$WORK/fill.$n") in $(((b - a) / 1000)) ms"
  start_exporter "$NODE" "$pin"
  URL[$n]=http://$EXPORTER_ADDR/metrics
  PID[$n]=${PIDS[-1]}
  up "$NODE" "${URL[$n]}" || exit 1
  if [ -n "$BASE_EXPORTER" ]; then
    BIN=$(dirname "$BASE_EXPORTER") start_exporter "$NODE" "$pin"
    URL[$n-base]=http://$EXPORTER_ADDR/metrics
    PID[$n-base]=${PIDS[-1]}
    up "$NODE" "${URL[$n-base]}" || exit 1
  fi
  # What the exporter serves must be what was filled: every pod, no error.
  in_ns "$NODE" curl -sf -o "$WORK/static.$n" "${URL[$n]}"
  body=$(cat "$WORK/static.$n")
  got=$(metric "$body" podmeter_pods '')
  errs=$(metric "$body" podmeter_exporter_scrape_errors_total '')
  if [ "$got" != "$n" ] || [ "$errs" != 0 ]; then
    echo "bench: the exporter of n=$n serves $got pods, $errs scrape errors" >&2
    exit 1
  fi
  "$BIN/pm-bench-read" --pin-path "$pin" --rounds "$SCRAPES" >"$WORK/reads.$n"
  start_static "$NODE" "$WORK/static.$n"
  URL[$n-static]=http://$STATIC_ADDR/metrics
  PID[$n-static]=${PIDS[-1]}
  up "$NODE" "${URL[$n-static]}" || exit 1
done
# Prometheus asks for gzip: does the exporter compress?
encoding=$(in_ns "$NODE" curl -sf -o /dev/null -D - -H 'Accept-Encoding: gzip' "${URL[${SIZES%% *}]}" |
  tr -d '\r' | awk -F': ' 'tolower($1) == "content-encoding" { print $2 }')
echo "Accept-Encoding: gzip is answered with Content-Encoding: ${encoding:-none (identity)}"
SIZE_LIST=($SIZES)
SCRAPED=()
for n in $SIZES; do
  SCRAPED+=("$n" "$n-static")
  [ -n "$BASE_EXPORTER" ] && SCRAPED+=("$n-base")
  if [ "$GZIP" = 1 ]; then
    URL[$n-gz]=${URL[$n]} PID[$n-gz]=${PID[$n]}
    SCRAPED+=("$n-gz")
    if [ -n "$BASE_EXPORTER" ]; then
      URL[$n-base-gz]=${URL[$n-base]} PID[$n-base-gz]=${PID[$n-base]}
      SCRAPED+=("$n-base-gz")
    fi
  fi
done
RAW=$WORK/raw
for ((r = 0; r < SCRAPES; r++)); do
  k=${#SCRAPED[@]}
  for ((j = 0; j < k; j++)); do
    t=${SCRAPED[(r + j) % k]}
    case $t in
      *-gz) scrape "$t" "${URL[$t]}" "$RAW" --compressed ;;
      *) scrape "$t" "${URL[$t]}" "$RAW" ;;
    esac
  done
done

echo
echo "registered pods: /metrics latency, ms (curl time_total; $SCRAPES scrapes each, interleaved), size, exporter RSS"
echo "| pods      | samples | median ms |   p99 ms | min-max ms        |    bytes | RSS MiB | peak RSS MiB | us/pod (median) |"
echo "| --------- | ------- | --------- | -------- | ----------------- | -------- | ------- | ------------ | --------------- |"
declare -A MED
for t in "${SCRAPED[@]}"; do
  n=${t%%-*}
  read -r _ med p99 min max <<<"$(awk -v t="$t" '$1 == t { print $2 * 1000 }' "$RAW" | stats 99)"
  MED[$t]=$med
  bytes=$(awk -v t="$t" '$1 == t { print $3 }' "$RAW" | stats | cut -d' ' -f2)
  rss=$(status_kib "${PID[$t]}" VmRSS)
  hwm=$(status_kib "${PID[$t]}" VmHWM)
  printf '| %-9s | %7d | %9.2f | %8.2f | %7.2f-%-9.2f | %8.0f | %7.1f | %12.1f | %15.2f |\n' "$t" \
    "$(grep -vc '^#' "$BODIES/body.$t")" "$med" "$p99" "$min" "$max" "$bytes" \
    "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" "$(awk -v k="$hwm" 'BEGIN { print k / 1024 }')" \
    "$(awk -v m="$med" -v n="$n" 'BEGIN { print m * 1000 / n }')"
done
# Not the samples that move between two scrapes: the scrape's duration and
# the programs' run stats (while kernel.bpf_stats_enabled=1).
moving='^podmeter_(exporter_scrape_duration_seconds|bpf_program_run_[a-z]*_total)[{ ]'
if [ -n "$BASE_EXPORTER" ]; then
  echo
  echo "this build / BASE_EXPORTER ($BASE_EXPORTER), medians:"
  for n in $SIZES; do
    same=$(cmp -s <(grep -Ev "$moving" "$BODIES/body.$n") <(grep -Ev "$moving" "$BODIES/body.$n-base") &&
      echo identical || echo DIFFER)
    echo "  $n pods: x$(ratio "${MED[$n]}" "${MED[$n-base]}") time; last bodies $same (but for duration and program stats)"
  done
fi
if [ "$GZIP" = 1 ]; then
  echo
  echo "gzip (curl --compressed) / uncompressed, same exporter, medians:"
  bytes() { awk -v t="$1" '$1 == t { print $3 }' "$RAW" | stats | cut -d' ' -f2; }
  for t in "${SCRAPED[@]}"; do
    case $t in *-gz) ;; *) continue ;; esac
    plain=${t%-gz}
    same=$(cmp -s <(grep -Ev "$moving" "$BODIES/body.$t") <(grep -Ev "$moving" "$BODIES/body.$plain") &&
      echo identical || echo DIFFER)
    echo "  $plain: x$(ratio "${MED[$t]}" "${MED[$plain]}") time, x$(ratio "$(bytes "$t")" "$(bytes "$plain")") bytes; decompressed body $same (but for duration and program stats)"
  done
fi
echo
echo "floors: N-static above is the same body served from memory (transfer alone); the exporter's batched map reads alone (pm-bench-read, $SCRAPES rounds):"
for n in $SIZES; do
  echo "  $n pods: $(paste -sd';' "$WORK/reads.$n" | sed 's/;/; /g')"
done
echo
echo "growth against the smallest size (linear: time ratio <= pods ratio):"
first=${SIZE_LIST[0]}
prev=
for n in $SIZES; do
  if [ -n "$prev" ]; then
    printf '  %5d -> %5d pods: x%-6s pods, x%-6s time (from %d: x%s pods, x%s time)\n' "$prev" "$n" \
      "$(ratio "$n" "$prev")" "$(ratio "${MED[$n]}" "${MED[$prev]}")" "$first" "$(ratio "$n" "$first")" \
      "$(ratio "${MED[$n]}" "${MED[$first]}")"
  fi
  prev=$n
done
last=${SIZE_LIST[-1]}
verdict=$(awk -v m="${MED[$last]}" -v t="$TARGET_MS" 'BEGIN { print (m < t) ? "met" : "MISSED" }')
echo "  target: median < $TARGET_MS ms at $last pods: $verdict (${MED[$last]} ms)"

# Free part 1's exporters and pins before wiring (their memory and maps).
for t in "${SCRAPED[@]}"; do kill "${PID[$t]}" 2>/dev/null || true; wait "${PID[$t]}" 2>/dev/null || true; done
for n in $SIZES; do rm -rf "/sys/fs/bpf/$TAG-n$n"; done

# ---- part 2: wired pods vs node_exporter netdev ----
if [ "$REAL_PODS" -gt 0 ]; then
  PIN=/sys/fs/bpf/$TAG
  PINS+=("$PIN")
  conf=$(pm_conf "$PIN" "$WORK/ipam")
  IPS=()
  t0=${EPOCHREALTIME/./}
  for ((i = 0; i < REAL_PODS; i++)); do
    pod=$NODE-p$i
    mknetns "$pod"
    cni_call "$NODE" "$BIN/podmeter" ADD "$pod" <<<"$conf" >"$WORK/pm.out" 2>&1 ||
      { echo "bench: ADD $pod failed: $(cat "$WORK/pm.out")" >&2; exit 1; }
    IPS+=("$(pod_ip "$(cat "$WORK/pm.out")")")
  done
  t1=${EPOCHREALTIME/./}
  echo
  echo "wired $REAL_PODS pods in $(((t1 - t0) / 1000)) ms ($(awk -v t=$((t1 - t0)) -v n="$REAL_PODS" 'BEGIN { printf "%.1f", t / 1000 / n }') ms per pod, netns creation and ADD)"
  for ((i = 0; i < REAL_PODS; i += 25)); do
    in_ns "$NODE" sh -c 'for ip; do busybox ping -q -c 2 -W 1 "$ip" >/dev/null 2>&1 & done; wait' sh "${IPS[@]:i:25}" || true
  done

  start_exporter "$NODE" "$PIN"
  URL[podmeter]=http://$EXPORTER_ADDR/metrics
  PID[podmeter]=${PIDS[-1]}
  # The node netns' own loopback: nothing else listens there.
  nsenter --net="/run/netns/$NODE" prometheus-node-exporter --web.listen-address=127.0.0.1:9101 \
    --collector.disable-defaults --collector.netdev >"$WORK/ne.log" 2>&1 &
  PIDS+=($!)
  URL[ne-netdev]=http://127.0.0.1:9101/metrics
  PID[ne-netdev]=$!
  TARGETS=(podmeter ne-netdev)
  for t in "${TARGETS[@]}"; do up "$NODE" "${URL[$t]}" || exit 1; done
  RAW2=$WORK/raw2
  for ((r = 0; r < REAL_SCRAPES; r++)); do
    for ((j = 0; j < 2; j++)); do
      t=${TARGETS[(r + j) % 2]}
      scrape "$t" "${URL[$t]}" "$RAW2"
    done
  done
  echo
  echo "$REAL_PODS wired pods: podmeter-exporter vs node_exporter netdev ($REAL_SCRAPES scrapes each, interleaved)"
  echo "| target            | median ms |   p99 ms | min-max ms        |    bytes | samples | RSS MiB | sees                 |"
  echo "| ----------------- | --------- | -------- | ----------------- | -------- | ------- | ------- | -------------------- |"
  declare -A MED2 BYTES2
  for t in "${TARGETS[@]}"; do
    read -r _ med p99 min max <<<"$(awk -v t="$t" '$1 == t { print $2 * 1000 }' "$RAW2" | stats 99)"
    MED2[$t]=$med
    BYTES2[$t]=$(awk -v t="$t" '$1 == t { print $3 }' "$RAW2" | stats | cut -d' ' -f2)
    if [ "$t" = podmeter ]; then
      sees="$(metric "$(cat "$BODIES/body.$t")" podmeter_pods '') pods"
    else
      sees="$(grep -c '^node_network_receive_bytes_total{' "$BODIES/body.$t") devices"
    fi
    printf '| %-17s | %9.2f | %8.2f | %7.2f-%-9.2f | %8.0f | %7d | %7.1f | %-20s |\n' "$t" "$med" "$p99" "$min" "$max" \
      "${BYTES2[$t]}" "$(grep -vc '^#' "$BODIES/body.$t")" \
      "$(awk -v k="$(status_kib "${PID[$t]}" VmRSS)" 'BEGIN { print k / 1024 }')" "$sees"
  done
  echo
  echo "ratios podmeter / ne-netdev at $REAL_PODS pods: latency $(ratio "${MED2[podmeter]}" "${MED2[ne-netdev]}"), bytes $(ratio "${BYTES2[podmeter]}" "${BYTES2[ne-netdev]}")"
fi
