# shellcheck shell=bash
# podman isolated from the machine's own, for scripts/image.sh and
# scripts/image-check.sh (sourced, not run). Everything podman reads or writes
# lives under one directory:
#   - its own containers.conf, storage.conf (vfs), registries.conf (empty:
#     nothing is pulled) and signature policy, via CONTAINERS_* and $HOME;
#   - its own --root, --runroot, --tmpdir, TMPDIR, XDG_RUNTIME_DIR, event log,
#     and runc state dir (a wrapper passes --root to runc);
#   - its own cgroup parent for containers and conmon (pm_run), removed at
#     cleanup: podman's default, libpod_parent, would stay on the machine;
#   - a private mount namespace (held by a sleeping process) whose /var/lib
#     is an overlay with its upper dir in ours: anything podman still writes
#     there (caches under /var/lib/containers) lands in our directory, and
#     the container mounts it makes vanish with the namespace; /var/tmp is
#     ours too (podman load unpacks OCI archives there, whatever TMPDIR says).
# Same isolation as tests/src/podman.rs. The machine's /etc/containers,
# /var/lib/containers and podman state are never touched.
# Needs root: mount namespaces, and runc as root.

# podman_init DIR: sets up an isolated podman under DIR (created, must be
# empty) and starts the namespace holder. Call podman_cleanup on exit.
podman_init() {
  PM_DIR=$1
  PM_CGROUP=pmimage-$$
  local d=$PM_DIR sub
  for sub in root run libpod tmp vartmp xdg bin runc home/.config/containers varlib/upper varlib/work; do
    mkdir -p "$d/$sub"
  done
  local runc
  runc=$(command -v runc) || { echo "runc not found (scripts/setup.sh installs it)" >&2; return 1; }
  # runc keeps its state in /run/runc unless told otherwise.
  printf '#!/bin/sh\nexec %s --root %s "$@"\n' "$runc" "$d/runc" >"$d/bin/runc"
  chmod 755 "$d/bin/runc"
  cat >"$d/containers.conf" <<CONF
[containers]
# runc's setrlimit fails with this machine's defaults.
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$d/run/events.log"
# crun 1.8 fails on this cgroup layout; runc works.
runtime = "runc"
lock_type = "file"
tmp_dir = "$d/libpod"
static_dir = "$d/root/libpod"
volume_path = "$d/root/volumes"
image_copy_tmp_dir = "$d/tmp"

[engine.runtimes]
runc = ["$d/bin/runc"]
CONF
  printf '[storage]\ndriver = "vfs"\ngraphroot = "%s"\nrunroot = "%s"\n' "$d/root" "$d/run" >"$d/storage.conf"
  : >"$d/registries.conf"
  echo '{"default": [{"type": "insecureAcceptAnything"}]}' >"$d/home/.config/containers/policy.json"

  # The holder: prints "ready" once /var/lib and /var/tmp are ours, then sleeps until
  # podman_cleanup kills it (the namespace and its mounts go with it).
  # shellcheck disable=SC2016 # $1 and $$ are the inner shell's
  exec {PM_HOLDER_OUT}< <(unshare --mount --propagation slave -- sh -c '
      mount -t overlay overlay -o "lowerdir=/var/lib,upperdir=$1/varlib/upper,workdir=$1/varlib/work" /var/lib \
        && mount --bind "$1/vartmp" /var/tmp \
        && echo "ready $$" && exec sleep infinity' sh "$d" 2>&1)
  local line
  read -r line <&"$PM_HOLDER_OUT" || true
  if [[ $line != "ready "* ]]; then
    echo "podman isolation: private mount namespace failed: $line" >&2
    return 1
  fi
  PM_HOLDER=${line#ready }
}

# pm ARGS...: podman with the isolated config, in the private mount namespace.
pm() {
  local d=$PM_DIR
  env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME="$d/home" TMPDIR="$d/tmp" XDG_RUNTIME_DIR="$d/xdg" \
    CONTAINERS_CONF="$d/containers.conf" \
    CONTAINERS_STORAGE_CONF="$d/storage.conf" \
    CONTAINERS_REGISTRIES_CONF="$d/registries.conf" \
    nsenter --mount="/proc/$PM_HOLDER/ns/mnt" -- \
    podman --root "$d/root" --runroot "$d/run" --tmpdir "$d/libpod" \
    --storage-driver vfs --cgroup-manager cgroupfs "$@"
}

# pm_run ARGS...: `podman run --rm` without network, in our cgroup parent.
pm_run() {
  pm run --rm --network none --cgroup-parent "/$PM_CGROUP" "$@"
}

# podman_cleanup: removes containers, ends the namespace, deletes PM_DIR
# and our cgroups (in each hierarchy: cgroup v2, or every v1 controller).
podman_cleanup() {
  [ -n "${PM_DIR:-}" ] || return 0
  if [ -n "${PM_HOLDER:-}" ]; then
    pm rm -a -f -t 0 >/dev/null 2>&1 || true
    kill "$PM_HOLDER" 2>/dev/null || true
    # The namespace (and any mount podman left in it) is gone once the
    # holder has exited; wait for that before removing the files.
    local i
    for ((i = 0; i < 50; i++)); do kill -0 "$PM_HOLDER" 2>/dev/null || break; sleep 0.1; done
  fi
  local cg
  for cg in /sys/fs/cgroup/"$PM_CGROUP" /sys/fs/cgroup/*/"$PM_CGROUP"; do
    [ -d "$cg" ] || continue
    # Deepest first (conmon's and leftover containers' cgroups); a cgroup
    # still holding a process stays (rmdir refuses), and is reported.
    find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || echo "podman isolation: could not remove cgroup $cg" >&2
  done
  [ -z "${PM_HOLDER_OUT:-}" ] || exec {PM_HOLDER_OUT}<&-
  rm -rf "$PM_DIR"
  PM_DIR='' PM_HOLDER='' PM_HOLDER_OUT='' PM_CGROUP=''
}
