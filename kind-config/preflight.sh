# shellcheck shell=bash
# What kind-config/up.sh needs from the workstation, checked before it builds
# anything (the build takes minutes): sourced by up.sh, which calls
# `preflight BUILD` (BUILD: podman or docker, the image build path). Every
# failure is printed with its fix, all of them at once; returns 1 if any.
#
# The files it reads are under ${PODMETER_PREFLIGHT_ROOT:-} (empty: /), so
# kind-config/tests/preflight-test.sh can show it a kernel this machine is
# not; the tools are whatever PATH finds (the test puts stubs there).
#
# ENGINE (docker, or podman with KIND_EXPERIMENTAL_PROVIDER=podman) is set
# for up.sh.

# kind's nodes share this kernel: what the plugin needs (README "Kernel").
PREFLIGHT_KERNEL_FLOOR=5.17
# kind's "known issues": 3 nodes exhaust the distributions' defaults.
PREFLIGHT_INOTIFY_WATCHES=524288
PREFLIGHT_INOTIFY_INSTANCES=512

preflight() {
  local build=$1 root=${PODMETER_PREFLIGHT_ROOT:-} problems=() tool release
  fail() { problems+=("$*"); }

  ENGINE=docker
  if [ "${KIND_EXPERIMENTAL_PROVIDER:-}" = podman ]; then ENGINE=podman; fi
  if [ "$ENGINE" = docker ] && ! command -v docker >/dev/null 2>&1 && command -v podman >/dev/null 2>&1; then
    fail "docker not found, podman is: kind runs its nodes on podman with KIND_EXPERIMENTAL_PROVIDER=podman kind-config/up.sh (as root; rootless podman needs cgroup v2 delegation: https://kind.sigs.k8s.io/docs/user/rootless/)"
  fi
  for tool in kind kubectl "$ENGINE" openssl; do
    command -v "$tool" >/dev/null 2>&1 || case $tool in
      kind) fail "kind not found: https://kind.sigs.k8s.io/docs/user/quick-start/#installation (v0.27 or later)" ;;
      kubectl) fail "kubectl not found: https://kubernetes.io/docs/tasks/tools/" ;;
      openssl) fail "openssl not found (it makes the exporter's TLS certificate): apt install openssl / dnf install openssl" ;;
      *) fail "$tool not found: kind runs its nodes as $tool containers (https://docs.docker.com/engine/install/)" ;;
    esac
  done
  if command -v "$ENGINE" >/dev/null 2>&1; then
    local out
    if ! out=$("$ENGINE" info 2>&1 >/dev/null); then
      fail "$ENGINE is installed but does not answer (is its daemon running; may this user use it: the docker group, or root for podman?): ${out:0:300}"
    fi
    preflight_network "$ENGINE"
  fi
  case $build in
    docker)
      command -v docker >/dev/null 2>&1 ||
        fail "the image build needs docker, or podman as root (PODMETER_IMAGE_BUILD=podman: scripts/image.sh)"
      if command -v docker >/dev/null 2>&1 && ! docker buildx version >/dev/null 2>&1; then
        fail "docker has no BuildKit (docker buildx): install the docker-buildx-plugin package; Containerfile.build uses RUN --mount=type=cache"
      fi ;;
    podman)
      [ "$(id -u)" = 0 ] || fail "PODMETER_IMAGE_BUILD=podman needs root (scripts/image.sh runs podman as root)"
      command -v runc >/dev/null 2>&1 || fail "PODMETER_IMAGE_BUILD=podman needs runc: apt install runc" ;;
  esac

  # The kernel: kind's nodes run on it.
  release=$(uname -r)
  if ! preflight_version_at_least "$release" "$PREFLIGHT_KERNEL_FLOOR"; then
    fail "Linux $release is too old: podmeter needs Linux $PREFLIGHT_KERNEL_FLOOR or later (bpf_loop, the kfree_skb tracepoint's drop reason), and kind's nodes run on this kernel: e.g. Ubuntu 22.04's HWE kernel (apt install linux-generic-hwe-22.04), Debian 12's (6.1) or newer"
  fi
  [ -e "$root/sys/kernel/btf/vmlinux" ] ||
    fail "this kernel has no BTF (/sys/kernel/btf/vmlinux): podmeter's drop tracer needs a kernel built with CONFIG_DEBUG_INFO_BTF (every major distribution's)"
  [ -d "$root/proc/sys/net/bridge" ] ||
    fail "br_netfilter is not loaded: same-node Service replies would not be un-NATed (kind's nodes cannot load it): sudo modprobe br_netfilter && echo br_netfilter | sudo tee /etc/modules-load.d/podmeter.conf"
  local watches instances
  watches=$(cat "$root/proc/sys/fs/inotify/max_user_watches" 2>/dev/null || echo 0)
  instances=$(cat "$root/proc/sys/fs/inotify/max_user_instances" 2>/dev/null || echo 0)
  if [ "$watches" -lt "$PREFLIGHT_INOTIFY_WATCHES" ] || [ "$instances" -lt "$PREFLIGHT_INOTIFY_INSTANCES" ]; then
    fail "inotify limits too low for three kind nodes (watches $watches, instances $instances; kind's known issue \"too many open files\"): sudo sysctl fs.inotify.max_user_watches=$PREFLIGHT_INOTIFY_WATCHES fs.inotify.max_user_instances=$PREFLIGHT_INOTIFY_INSTANCES (and in /etc/sysctl.d/ to keep it)"
  fi

  [ ${#problems[@]} -eq 0 ] && return 0
  echo "up: the workstation is not ready (nothing was built or created):" >&2
  printf '  - %s\n' "${problems[@]}" >&2
  return 1
}

# An existing `kind` network without IPv6 makes a dual-stack `kind create
# cluster` fail late; kind creates a missing one with IPv6.
preflight_network() {
  local engine=$1 ipv6 field='{{.EnableIPv6}}'
  [ "$engine" = podman ] && field='{{.IPv6Enabled}}'
  "$engine" network inspect kind >/dev/null 2>&1 || return 0
  ipv6=$("$engine" network inspect kind --format "$field")
  if [ "$ipv6" != true ]; then
    fail "the $engine network 'kind' has no IPv6, which the dual-stack cluster needs: delete the kind clusters that use it, then $engine network rm kind (kind recreates it with IPv6; Docker needs IPv6 enabled: https://docs.docker.com/engine/daemon/ipv6/)"
  fi
}

# preflight_version_at_least 6.1.0-27-amd64 5.17: true if major.minor >= floor.
preflight_version_at_least() {
  local have=$1 want=$2 hmaj hmin wmaj wmin
  IFS=.- read -r hmaj hmin _ <<<"$have"
  IFS=. read -r wmaj wmin <<<"$want"
  [[ $hmaj =~ ^[0-9]+$ && $hmin =~ ^[0-9]+$ ]] || return 1
  [ "$hmaj" -gt "$wmaj" ] || { [ "$hmaj" -eq "$wmaj" ] && [ "$hmin" -ge "$wmin" ]; }
}
