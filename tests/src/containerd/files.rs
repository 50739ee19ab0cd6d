//! The files a test containerd runs from: its config, the CNI bin dir's
//! plugin wrappers, and the tools it needs.

use std::{fs, os::unix::fs::PermissionsExt, path::Path};

use super::PAUSE_IMAGE;
use crate::image::{busybox, is_static};

/// The plugins in the CNI bin dir: ours, and the reference plugins the
/// runtime (loopback) and the conflist (portmap) use.
pub(super) const PLUGINS: [&str; 3] = ["podmeter", "loopback", "portmap"];
const SETUP_HINT: &str = "run scripts/setup.sh (as root) to install it";

/// containerd's config: every path under `d`, the CRI settings a test node
/// needs here (see FACTS: no AppArmor, cgroupfs, netns mounts under the
/// state dir), plugins that would touch the machine or that we do not use
/// disabled.
pub(super) fn config(d: &Path) -> String {
    let p = |sub: &str| format!("{:?}", d.join(sub).display().to_string());
    format!(
        r#"version = 2
root = {root}
state = {state}
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = {socket}

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}

[plugins."io.containerd.grpc.v1.cri"]
  disable_apparmor = true
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  sandbox_image = "{PAUSE_IMAGE}"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = {runc}

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = {bin_dir}
    conf_dir = {conf_dir}
"#,
        root = p("root"),
        state = p("state"),
        socket = p("containerd.sock"),
        opt = p("opt"),
        runc = p("runc"),
        bin_dir = p("cni-bin"),
        conf_dir = p("cni-conf"),
    )
}

/// `d/cni-bin/<plugin>`: runs the real plugin with the runtime's stdin,
/// env and args, logs the call to `d/cni-calls.log` and passes on stdout
/// and the exit code.
pub(super) fn write_wrapper(d: &Path, plugin: &str) {
    let real = match plugin {
        "podmeter" => crate::binary("podmeter"),
        _ => Path::new("/usr/lib/cni").join(plugin),
    };
    let script = format!(
        r#"#!/bin/sh
conf=$(cat)
printf '%s' "$conf" | {real} "$@"
rc=$?
case "$conf" in *'"prevResult"'*) prev=yes ;; *) prev=no ;; esac
netns=no; [ -n "$CNI_NETNS" ] && netns=yes
echo "$CNI_COMMAND {plugin} $CNI_CONTAINERID netns=$netns prevResult=$prev rc=$rc args=$CNI_ARGS" >>{log}
exit $rc
"#,
        real = real.display(),
        log = d.join("cni-calls.log").display(),
    );
    let path = d.join("cni-bin").join(plugin);
    fs::write(&path, script).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
}

pub(super) fn require_tools() {
    for tool in [
        "containerd",
        "containerd-shim-runc-v2",
        "ctr",
        "runc",
        "nsenter",
        "unshare",
        "tar",
    ] {
        let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .any(|dir| Path::new(dir).join(tool).is_file());
        assert!(found, "`{tool}` is missing: {SETUP_HINT}");
    }
    for plugin in ["loopback", "portmap"] {
        assert!(
            Path::new("/usr/lib/cni").join(plugin).is_file(),
            "the reference CNI plugins are missing: {SETUP_HINT}"
        );
    }
    assert!(
        is_static(&busybox()),
        "{} is not statically linked (busybox-static): {SETUP_HINT}",
        busybox().display()
    );
}
