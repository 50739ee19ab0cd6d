#!/usr/bin/env bash
# ADD/DEL wall time: podmeter (builtin IPAM) vs the reference `bridge` +
# `host-local`, same network shape (bridge pmb0, isGateway, one v4 range),
# each in its own node network namespace. Also podmeter with
# tcAttachMode=clsact, to separate the cost of TCX attaching.
#
#   N=50 bash scripts/bench/cni-latency.sh
#
# Phases, every one alternating the variants (the order rotates each
# iteration, so drift in machine load hits all of them alike):
#   cold:     COLD fresh node namespaces (and pin paths) per variant: first
#             ADD (podmeter loads, verifies and pins its programs here; every
#             variant creates its bridge here) and the second ADD.
#   seq:      N sequential ADDs per variant, then N sequential DELs.
#   parallel: PAR ADDs started at once (then PAR DELs), PAR_ROUNDS rounds.
#   phases:   PHASES ADDs and DELs of every variant, the podmeter ones with
#             PODMETER_LOG=podmeter::timing=debug: their wall time split into
#             exec and start (until main), the plugin's own phases, and exit.
#   profile:  PROFILE ADDs and DELs of each podmeter variant under `strace -ff -T`:
#             which syscalls the time goes to (strace slows the process
#             itself; the kernel-side waits it shows are real), fsyncs, and
#             aya's feature probes.
# Sequential times are taken by a shell inside the node netns around the
# fork, exec and wait of the plugin, as a runtime runs it: neither nsenter
# nor the benchmark's own pipes and helpers are in them. Parallel batches
# are timed from outside and include nsenter's exec (the same for every
# variant).
#
# The podmeter variants run the plugin as the image ships it: a static
# executable (glibc static-pie, as scripts/image.sh builds it), which starts
# without ld.so loading libraries and relocating against them.
#
# BASE_BIN=/path/to/an/older/podmeter adds the variants base and base-clsact:
# that binary, measured in the same run (e.g. before and after a change;
# target/release/podmeter is the dynamic build of the same source).
source "$(dirname "$0")/lib.sh"

N=${N:-50}
COLD=${COLD:-5}
PAR=${PAR:-50}
PAR_ROUNDS=${PAR_ROUNDS:-4}
PROFILE=${PROFILE:-5}
PHASES=${PHASES:-20}
BASE_BIN=${BASE_BIN:-}
DEFAULT_VARIANTS="podmeter reference podmeter-clsact${BASE_BIN:+ base base-clsact}"
VARIANTS=(${VARIANTS:-$DEFAULT_VARIANTS})

bench_init cni-latency
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
(cd "$ROOT" && RUSTFLAGS='-C target-feature=+crt-static' \
  cargo build --release --locked -q --target "$TRIPLE" -p podmeter-cni)
PLUGIN=$ROOT/target/$TRIPLE/release/podmeter
command -v strace >/dev/null || PROFILE=0
[ -x "$CNI_PATH/bridge" ] && [ -x "$CNI_PATH/host-local" ] ||
  { echo "bench: $CNI_PATH/bridge and host-local are missing (containernetworking-plugins)" >&2; exit 1; }
WORK=$(mktmp)
# The plugins' stdout and stderr go to tmpfs, as a runtime reads them from
# pipes: a file on the disk that holds the IPAM data would make a log line
# wait behind the journal commit of an fsync (only this script would pay).
# The IPAM data dirs stay on the disk, under $WORK.
OUT=$(mktemp -d "/dev/shm/$TAG.XXXXXX")
TMPS+=("$OUT")
RAW=$WORK/raw # lines: variant phase microseconds

declare -A NODE PIN DATA
# new_node VARIANT: a fresh node netns, pin path and IPAM dir for VARIANT.
new_node() {
  local v=$1 n=$((${NODE_SERIAL:-0} + 1))
  NODE_SERIAL=$n
  NODE[$v]=$TAG-$v-n$n
  mknetns "${NODE[$v]}"
  PIN[$v]=/sys/fs/bpf/$TAG-$v-n$n
  PINS+=("${PIN[$v]}")
  DATA[$v]=$WORK/ipam-$v-n$n
}
drop_node() {
  ip netns del "${NODE[$1]}"
  rm -rf "${PIN[$1]}" "${DATA[$1]}"
}

conf() {
  case $1 in
    reference) ref_conf "${DATA[$1]}" ;;
    podmeter) pm_conf "${PIN[$1]}" "${DATA[$1]}" auto ;;
    podmeter-clsact | base-clsact) pm_conf "${PIN[$1]}" "${DATA[$1]}" clsact ;;
    base) pm_conf "${PIN[$1]}" "${DATA[$1]}" auto ;;
  esac
}
plugin() {
  case $1 in
    reference) echo "$CNI_PATH/bridge" ;;
    base*) echo "$BASE_BIN" ;;
    *) echo "$PLUGIN" ;;
  esac
}

# cni VARIANT COMMAND POD [WRAPPER...]: one invocation; output in $OUT/out.POD.
cni() {
  local v=$1 cmd=$2 pod=$3
  shift 3
  conf "$v" | cni_call "${NODE[$v]}" "$(plugin "$v")" "$cmd" "$pod" "$@" >"$OUT/out.$pod" 2>&1
}
# cni_timed VARIANT COMMAND POD: one invocation, output in $OUT/out.POD,
# timed by a shell already inside the node netns: it forks and execs the
# plugin (config from a file) and waits for it, as a runtime does. Sets
# T0 and T1 (microseconds since the epoch); fails the benchmark if the
# plugin fails.
cni_timed() {
  local v=$1 cmd=$2 pod=$3 rc
  conf "$v" >"$WORK/conf.$v"
  read -r rc T0 T1 < <(CNI_COMMAND="$cmd" CNI_CONTAINERID="$pod" CNI_NETNS="/run/netns/$pod" \
    CNI_IFNAME=eth0 CNI_PATH="$CNI_PATH" \
    CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=$pod;K8S_POD_UID=uid-$pod" \
    nsenter --net="/run/netns/${NODE[$v]}" bash -c '
      t0=${EPOCHREALTIME/./}; "$1" <"$2" >"$3" 2>&1; rc=$?; t1=${EPOCHREALTIME/./}
      echo "$rc $t0 $t1"' _ "$(plugin "$v")" "$WORK/conf.$v" "$OUT/out.$pod") || rc="nsenter failed"
  if [ "$rc" != 0 ]; then
    echo "bench: $v $cmd $pod failed:" >&2
    cat "$OUT/out.$pod" >&2
    exit 1
  fi
}
# timed VARIANT COMMAND POD PHASE: one timed invocation, recorded in $RAW.
timed() {
  cni_timed "$1" "$2" "$3"
  echo "$1 $4 $((T1 - T0))" >>"$RAW"
}
# rotated I: the variants, rotated by I.
rotated() {
  local k=${#VARIANTS[@]} j
  for ((j = 0; j < k; j++)); do echo "${VARIANTS[(($1 + j) % k)]}"; done
}

echo "cni-latency: variants ${VARIANTS[*]}; N=$N COLD=$COLD PAR=$PAR x$PAR_ROUNDS PHASES=$PHASES PROFILE=$PROFILE"
machine_line
echo "plugin: $PLUGIN (static, $(sha256sum "$PLUGIN" | cut -c1-12))"
[ -n "$BASE_BIN" ] && echo "base: $BASE_BIN ($(sha256sum "$BASE_BIN" | cut -c1-12))"

# cold: first and second ADD on a fresh node.
for ((r = 0; r < COLD; r++)); do
  for v in $(rotated "$r"); do
    new_node "$v"
    for k in 1 2; do
      pod=$TAG-$v-c$r-$k
      mknetns "$pod"
      phase=first-add
      [ $k = 2 ] && phase=second-add
      timed "$v" ADD "$pod" "$phase"
    done
    drop_node "$v"
    ip netns del "$TAG-$v-c$r-1"
    ip netns del "$TAG-$v-c$r-2"
  done
done

# seq: N ADDs, then N DELs, on one node per variant (loaded by its first ADD,
# which is recorded as seq-first-add and left out of add).
for v in "${VARIANTS[@]}"; do new_node "$v"; done
for ((i = 0; i < N; i++)); do
  for v in $(rotated "$i"); do
    pod=$TAG-$v-s$i
    mknetns "$pod"
    phase=add
    [ "$i" = 0 ] && phase=seq-first-add
    timed "$v" ADD "$pod" "$phase"
    jq -e '.ips[0].address' "$OUT/out.$pod" >/dev/null
  done
done
for ((i = 0; i < N; i++)); do
  for v in $(rotated "$i"); do timed "$v" DEL "$TAG-$v-s$i" del; done
done
for ((i = 0; i < N; i++)); do
  for v in "${VARIANTS[@]}"; do ip netns del "$TAG-$v-s$i"; done
done

# parallel: PAR at once, wall time of the batch.
par() { # par VARIANT COMMAND ROUND
  local v=$1 cmd=$2 r=$3 j t0 t1 pids=() failed=()
  local phase=par-$(tr '[:upper:]' '[:lower:]' <<<"$cmd")
  t0=${EPOCHREALTIME/./}
  for ((j = 0; j < PAR; j++)); do
    cni "$v" "$cmd" "$TAG-$v-p$r-$j" &
    pids+=($!)
  done
  for j in "${!pids[@]}"; do wait "${pids[j]}" || failed+=("$j"); done
  t1=${EPOCHREALTIME/./}
  echo "$v $phase $((t1 - t0))" >>"$RAW"
  echo "$v $phase-failed ${#failed[@]}" >>"$RAW"
  # A failed DEL is what a runtime retries: retry it once, untimed, and keep
  # the first error for the report. A failed ADD ends the benchmark.
  for j in "${failed[@]}"; do
    cp "$OUT/out.$TAG-$v-p$r-$j" "$WORK/failed.$v.$phase.$r.$j"
    if [ "$cmd" = ADD ] || ! cni "$v" "$cmd" "$TAG-$v-p$r-$j"; then
      echo "bench: parallel $cmd ($v) failed:" >&2
      cat "$OUT/out.$TAG-$v-p$r-$j" >&2
      exit 1
    fi
  done
}
for ((r = 0; r < PAR_ROUNDS; r++)); do
  for v in $(rotated "$r"); do
    for ((j = 0; j < PAR; j++)); do mknetns "$TAG-$v-p$r-$j"; done
    par "$v" ADD "$r"
    par "$v" DEL "$r"
    for ((j = 0; j < PAR; j++)); do ip netns del "$TAG-$v-p$r-$j"; done
  done
done

# phases: every variant alternating as above (the seq node of each is
# reused), the podmeter ones logging their phases. Lines of $PH:
# variant<TAB>command<TAB>phase<TAB>ms
PH=$WORK/phases
: >"$PH"
for ((i = 0; i < PHASES; i++)); do
  for v in "${VARIANTS[@]}"; do mknetns "$TAG-$v-t$i"; done
  for cmd in ADD DEL; do
    for v in $(rotated "$i"); do
      pod=$TAG-$v-t$i
      PODMETER_LOG=podmeter::timing=debug NO_COLOR=1 cni_timed "$v" "$cmd" "$pod"
      # exec and start: from before the fork to main; exit: from the
      # plugin's last line to the shell seeing it gone.
      perl -ne '
        BEGIN { ($v, $c, $t0, $t1) = splice @ARGV, 0, 4 }
        s/\e\[[0-9;]*m//g;
        next unless /podmeter::timing/;
        if (/ main epoch_us=(\d+)/) { printf "%s\t%s\texec and start\t%.3f\n", $v, $c, ($1 - $t0) / 1000 }
        elsif (/ phase phase="([^"]*)" ms=([\d.]+)/) { print "$v\t$c\t$1\t$2\n" }
        elsif (/ end epoch_us=(\d+)/) { printf "%s\t%s\texit\t%.3f\n", $v, $c, ($t1 - $1) / 1000 }
        END { printf "%s\t%s\ttotal (wall)\t%.3f\n", $v, $c, ($t1 - $t0) / 1000 }
      ' "$v" "$cmd" "$T0" "$T1" "$OUT/out.$pod" >>"$PH"
    done
  done
  for v in "${VARIANTS[@]}"; do ip netns del "$TAG-$v-t$i"; done
done

# profile: the podmeter variants' slow syscalls (> 1 ms), by kind.
PROF_VARIANTS=()
for v in "${VARIANTS[@]}"; do [ "$v" != reference ] && PROF_VARIANTS+=("$v"); done
if [ "$PROFILE" -gt 0 ]; then
  for ((i = 0; i < PROFILE; i++)); do
    for v in "${PROF_VARIANTS[@]}"; do
      pod=$TAG-$v-f$i
      mknetns "$pod"
      for cmd in ADD DEL; do
        cni "$v" "$cmd" "$pod" strace -ff -T -qq -o "$WORK/strace.$v.$cmd.$i"
      done
      ip netns del "$pod"
    done
  done
fi

# ---- report ----
ms() { awk '{printf "%.1f\n", $1 / 1000}'; }
col() { awk -v v="$1" -v p="$2" '$1 == v && $2 == p { print $3 }' "$RAW"; }
row() { # row LABEL PHASE: one table row per variant
  local label=$1 phase=$2 v s n med p90 min max
  for v in "${VARIANTS[@]}"; do
    s=$(col "$v" "$phase" | awk '{print $1 / 1000}' | stats)
    read -r n med p90 min max <<<"$s"
    [ "$n" = 0 ] && continue
    printf '| %-16s | %-16s | %3s | %8.1f | %8.1f | %8.1f-%-8.1f |\n' "$label" "$v" "$n" "$med" "$p90" "$min" "$max"
  done
}
median_of() { col "$1" "$2" | stats | cut -d' ' -f2; }

echo
echo "wall time per invocation (parallel: of the whole batch), ms; n = samples"
echo "| phase            | variant          |   n |   median |      p90 | spread (min-max)  |"
echo "| ---------------- | ---------------- | --- | -------- | -------- | ----------------- |"
row "ADD"        add
row "DEL"        del
row "first ADD"  first-add
row "second ADD" second-add
row "ADD #1 of seq" seq-first-add
row "${PAR} ADD parallel" par-add
row "${PAR} DEL parallel" par-del

echo
echo "ratios of medians (variant / reference):"
for v in "${VARIANTS[@]}"; do
  [ "$v" = reference ] && continue
  printf '  %-16s ADD %s  DEL %s  first ADD %s  %s ADD parallel %s  %s DEL parallel %s\n' "$v" \
    "$(ratio "$(median_of "$v" add)" "$(median_of reference add)")" \
    "$(ratio "$(median_of "$v" del)" "$(median_of reference del)")" \
    "$(ratio "$(median_of "$v" first-add)" "$(median_of reference first-add)")" \
    "$PAR" "$(ratio "$(median_of "$v" par-add)" "$(median_of reference par-add)")" \
    "$PAR" "$(ratio "$(median_of "$v" par-del)" "$(median_of reference par-del)")"
done
for v in "${VARIANTS[@]}"; do
  for phase in par-add par-del; do
    f=$(awk -v v="$v" -v p="$phase-failed" '$1 == v && $2 == p { s += $3 } END { print s + 0 }' "$RAW")
    echo "  $v: $f of $((PAR * PAR_ROUNDS)) parallel ${phase#par-} invocations failed"
    if [ "$f" -gt 0 ]; then
      echo "    (each retried once, untimed, and then succeeded); first error:"
      echo "    $(cat "$(ls "$WORK"/failed."$v"."$phase".* | head -1)")"
    fi
  done
done
printf '  podmeter first ADD / its second ADD: %s\n' \
  "$(ratio "$(median_of podmeter first-add)" "$(median_of podmeter second-add)")"

if [ "$PHASES" -gt 0 ]; then
  echo
  echo "phases ($PHASES ADDs and DELs each, alternating; PODMETER_LOG=podmeter::timing=debug):"
  echo "median ms per invocation; each phase ends where the next starts, so the rows add up"
  echo "to about the total (medians do not add exactly). exec and start: from before the"
  echo "fork to podmeter's main; exit: from its last log line until the shell saw it end."
  perl -e '
    my ($file, @vs) = @ARGV; my (%ms, @order, %seen, %cols);
    open my $fh, "<", $file or die;
    while (<$fh>) {
      chomp; my ($v, $c, $p, $t) = split /\t/;
      push @{$ms{"$v $c"}{$p}}, $t; $cols{"$v $c"} = 1;
      push @order, $p unless $seen{$p}++ or $p eq "total (wall)";
    }
    my @cols = grep { $cols{$_} } map { my $v = $_; map { "$v $_" } qw(ADD DEL) } @vs;
    sub med { my @s = sort { $a <=> $b } @_; @s % 2 ? $s[$#s / 2] : ($s[@s / 2 - 1] + $s[@s / 2]) / 2 }
    printf "| %-32s |%s\n", "phase", join "", map { sprintf " %-20s |", $_ } @cols;
    printf "| %s |%s\n", "-" x 32, join "", map { " " . "-" x 20 . " |" } @cols;
    for my $p (@order, "total (wall)") {
      printf "| %-32s |%s\n", $p, join "", map {
        my $s = $ms{$_}{$p}; sprintf " %20s |", $s ? sprintf("%.2f", med(@$s)) : "" } @cols;
    }
    my $ref = sub { my $s = $ms{"reference $_[0]"}{"total (wall)"}; $s ? med(@$s) : 0 };
    for my $c (@cols) {
      my ($v, $cmd) = split / /, $c; next if $v eq "reference" or !$ref->($cmd);
      printf "  %-20s / reference %s: %.2f\n", $c, $cmd, med(@{$ms{$c}{"total (wall)"}}) / $ref->($cmd);
    }
  ' "$PH" "${VARIANTS[@]}"
fi

if [ "$PROFILE" -gt 0 ]; then
  echo
  echo "under strace -ff -T ($PROFILE ADDs and DELs each, alternating): time in syscalls that took > 1 ms,"
  echo "per invocation, by kind (syscall, bpf command, netlink message type); median over the runs"
  echo "it occurred in (strace slows user space; the kernel-side waits are real)"
  for v in "${PROF_VARIANTS[@]}"; do
    for cmd in ADD DEL; do
      # One file per thread (-ff): no unfinished/resumed halves to join.
      perl -e '
        my %nl = ("0x10" => "RTM_NEWLINK", "0x11" => "RTM_DELLINK", "0x12" => "RTM_GETLINK",
                  "0x13" => "RTM_SETLINK", "0x14" => "RTM_NEWADDR", "0x18" => "RTM_NEWROUTE",
                  "0x24" => "RTM_NEWQDISC", "0x26" => "RTM_GETQDISC", "0x2c" => "RTM_NEWTFILTER",
                  "0x2d" => "RTM_DELTFILTER", "0x2e" => "RTM_GETTFILTER");
        my ($label, $runs, @files) = @ARGV; my %per;
        for my $f (@files) {
          my ($run) = $f =~ /\.(\d+)\.\d+$/;
          open my $fh, "<", $f or die;
          while (<$fh>) {
            next unless /^(\w+)\((.*)<(\d+\.\d+)>\s*$/;
            my ($sc, $args, $d) = ($1, $2, $3);
            next if $d <= 0.001;
            next if $sc =~ /^(futex|epoll_wait|epoll_pwait|poll|ppoll|wait4)$/; # waits on our own threads
            my $kind = $sc;
            $kind .= " $1" if $sc eq "bpf" && $args =~ /^(BPF_\w+)/;
            if ($sc =~ /^send/ && $args =~ /nlmsg_type=(\w+)/) { $kind .= " " . ($nl{$1} // $1) }
            $per{$kind}{$run} += $d * 1000;
          }
        }
        for my $k (sort { med(values %{$per{$b}}) <=> med(values %{$per{$a}}) } keys %per) {
          my @v = values %{$per{$k}};
          printf "  %-20s %-28s median %6.1f ms  (in %d of %d runs)\n", $label, $k, med(@v), scalar @v, $runs;
        }
        sub med { my @s = sort { $a <=> $b } @_; return 0 unless @s; @s % 2 ? $s[$#s / 2] : ($s[@s / 2 - 1] + $s[@s / 2]) / 2 }
      ' "$v $cmd" "$PROFILE" "$WORK"/strace."$v"."$cmd".*.*
    done
  done
  # Per invocation, median over the runs: bpf() calls, aya's feature probes
  # among them (BTF_LOAD, PROG_LOAD and MAP_CREATE: nothing else creates
  # objects once the programs are pinned), fsyncs, and the time inside them.
  echo "  per invocation (median of $PROFILE): bpf() calls | feature probes (BTF_LOAD, PROG_LOAD,"
  echo "  MAP_CREATE) | ms inside them | fsync+fdatasync calls | ms inside them"
  for v in "${PROF_VARIANTS[@]}"; do
    for cmd in ADD DEL; do
      counts=$(for ((i = 0; i < PROFILE; i++)); do
        cat "$WORK"/strace."$v"."$cmd"."$i".* | perl -ne '
          $b++ if /^bpf\(/;
          if (/^bpf\(BPF_(?:BTF_LOAD|PROG_LOAD|MAP_CREATE).*<(\d+\.\d+)>\s*$/) { $p++; $ps += $1 }
          if (/^f(?:data)?sync\(.*<(\d+\.\d+)>\s*$/) { $f++; $fs += $1 }
          END { printf "%d %d %.2f %d %.2f\n", $b, $p, $ps * 1000, $f, $fs * 1000 }'
      done)
      printf '  %-20s' "$v $cmd"
      for k in 1 2 3 4 5; do printf ' | %6s' "$(cut -d' ' -f$k <<<"$counts" | stats | cut -d' ' -f2)"; done
      echo
    done
  done
fi
