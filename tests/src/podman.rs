//! podman (with its CNI backend) as the runtime on a test node, isolated
//! from the machine's podman and from other tests:
//!
//! - its own `containers.conf`, `storage.conf`, `registries.conf` and
//!   signature policy (`CONTAINERS_CONF`, ..., `$HOME`), its own storage
//!   (`--root`, `--runroot`, vfs), tmp, lock, event and runc state dirs, and
//!   its own CNI config dir holding one conflist: nothing of `/etc/containers`
//!   or `/var/lib/containers` is read or written;
//! - a private mount namespace in which `/var/lib` is an overlay whose upper
//!   dir is ours: libcni's cache (`/var/lib/cni/results`, which podman
//!   cannot move) is written there, not on the machine; the namespace also
//!   keeps podman's netns bind mounts from propagating to the machine;
//! - its own cgroup parent, so every container and conmon process is found
//!   (and, after a failure, killed) by cgroup;
//! - the node's network namespace, entered with `nsenter --net` (not
//!   `ip netns exec`, which would hide `/sys/fs/cgroup` from runc).
//!
//! The image is a busybox-static rootfs imported with `podman import` (no
//! registry is reachable). Drop removes containers (CNI DEL), processes,
//! mounts, cgroups and every file.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use serde_json::{json, Value};

use crate::{
    image::{self, busybox, is_static},
    isolation::{kill_leftovers, CgroupParent, MountNs},
    netns::run,
    node::NETWORK,
    Node,
};

pub const IMAGE: &str = "localhost/podmeter-busybox:latest";
const SETUP_HINT: &str = "run scripts/setup.sh (as root) to install it";
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A container `podman run -d` started.
#[derive(Debug, Clone)]
pub struct Container {
    pub name: String,
    pub id: String,
}

pub struct Podman<'a> {
    node: &'a Node,
    /// The private mount namespace podman runs in.
    mounts: MountNs,
    cgroup: CgroupParent,
    /// Dropped last: the overlay's upper dir is in it.
    dir: tempfile::TempDir,
}

impl<'a> Podman<'a> {
    /// podman on `node`, with the CNI network `NETWORK` made of `plugins`
    /// (the first is podmeter's entry, e.g. `node.conf("1.0.0")`), and the
    /// busybox image imported.
    pub fn new(node: &'a Node, plugins: Vec<Value>) -> Self {
        let runc = require_tools();
        let dir = tempfile::Builder::new()
            .prefix("pmtest-podman")
            .tempdir()
            .unwrap();
        let d = dir.path();
        for sub in [
            "root",
            "run",
            "tmp",
            "xdg",
            "cni",
            "bin",
            "home/.config/containers",
        ] {
            fs::create_dir_all(d.join(sub)).unwrap();
        }
        write_config(d, &runc);
        let conflist = json!({"cniVersion": "1.0.0", "name": NETWORK, "plugins": plugins});
        fs::write(
            d.join("cni").join(format!("{NETWORK}.conflist")),
            serde_json::to_string_pretty(&conflist).unwrap(),
        )
        .unwrap();
        let mounts = MountNs::new(&[("/var/lib", &d.join("varlib"))]);
        let podman = Self {
            node,
            mounts,
            cgroup: CgroupParent::new("pmtest-podman"),
            dir,
        };
        podman.import_busybox();
        podman
    }

    /// A `podman` command with this instance's env and global flags, run in
    /// its mount namespace and the node's network namespace.
    pub fn command(&self, args: &[&str]) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new("nsenter");
        cmd.env_clear()
            .env("PATH", PATH)
            .env("HOME", d.join("home"))
            .env("TMPDIR", d.join("tmp"))
            .env("XDG_RUNTIME_DIR", d.join("xdg"))
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf"))
            .arg(self.mounts.nsenter_arg())
            .arg(format!("--net={}", self.node.ns.path().display()))
            .arg("podman")
            .arg("--root")
            .arg(d.join("root/storage"))
            .arg("--runroot")
            .arg(d.join("run/storage"))
            .arg("--tmpdir")
            .arg(d.join("run/libpod"))
            .arg("--network-config-dir")
            .arg(d.join("cni"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        cmd
    }

    /// Runs podman with `args`, failed or not.
    pub fn try_podman(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("spawn podman")
    }

    /// Runs podman with `args`; panics with its output if it fails.
    pub fn podman(&self, args: &[&str]) -> String {
        let out = run(&mut self.command(args));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `podman run -d` of `sleep` on our network, with extra `CNI_ARGS`
    /// (podman appends the pairs of its own `CNI_ARGS` to what it passes).
    pub fn try_run(&self, name: &str, cni_args: Option<&str>) -> Output {
        let mut cmd = self.command(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            NETWORK,
            "--cgroup-parent",
            &self.cgroup.path,
            IMAGE,
            "sleep",
            "3600",
        ]);
        if let Some(args) = cni_args {
            cmd.env("CNI_ARGS", args);
        }
        cmd.output().expect("spawn podman")
    }

    pub fn run(&self, name: &str, cni_args: Option<&str>) -> Container {
        let out = self.try_run(name, cni_args);
        assert!(
            out.status.success(),
            "podman run {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Container {
            name: name.to_owned(),
            id: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        }
    }

    /// `podman rm -f` without the grace period (`sleep` as PID 1 ignores SIGTERM).
    pub fn rm(&self, names: &[&str]) {
        let mut args = vec!["rm", "-f", "-t", "0"];
        args.extend(names);
        self.podman(&args);
    }

    /// `podman exec`, failed or not.
    pub fn exec(&self, name: &str, argv: &[&str]) -> Output {
        let mut args = vec!["exec", name];
        args.extend(argv);
        self.try_podman(&args)
    }

    pub fn inspect(&self, name: &str) -> Value {
        let out: Value = serde_json::from_str(&self.podman(&["inspect", name])).unwrap();
        out[0].clone()
    }

    /// The container's IPv4 address on our network, as podman reports it.
    pub fn ip(&self, name: &str) -> String {
        let info = self.inspect(name);
        info["NetworkSettings"]["Networks"][NETWORK]["IPAddress"]
            .as_str()
            .unwrap_or_else(|| panic!("no address on {NETWORK}: {info}"))
            .to_owned()
    }

    /// The entry libcni cached for the container's attachment (config,
    /// `cniArgs`, result), or `None`: podman's `/var/lib/cni/results`, which
    /// lands in our overlay's upper dir.
    pub fn cni_cache(&self, container_id: &str) -> Option<Value> {
        let path = self
            .dir
            .path()
            .join("varlib/upper/cni/results")
            .join(format!("{NETWORK}-{container_id}-eth0"));
        let text = fs::read_to_string(path).ok()?;
        Some(serde_json::from_str(&text).unwrap())
    }

    /// Names of the libcni cache entries podman has.
    pub fn cni_cache_entries(&self) -> Vec<String> {
        crate::isolation::cni_cache_entries(&self.dir.path().join("varlib/upper"))
    }

    fn import_busybox(&self) {
        let tar = image::busybox_rootfs_tar(self.dir.path());
        self.podman(&["import", "--quiet", tar.to_str().unwrap(), IMAGE]);
    }

    /// Processes in our cgroup parent (containers, conmon) or in our mount
    /// namespace (podman, conmon, cleanup).
    fn processes(&self) -> Vec<u32> {
        let mut pids = self.mounts.processes();
        pids.extend(self.cgroup.processes());
        pids
    }
}

impl Drop for Podman<'_> {
    fn drop(&mut self) {
        // Containers go through podman, so that CNI DEL runs for each.
        let _ = self.try_podman(&["rm", "-a", "-f", "-t", "0"]);
        // conmon and its exit command linger briefly; then whatever is left
        // of ours (after a failure) is killed by pid.
        kill_leftovers(|| self.processes(), Duration::from_secs(5));
        let netns_files = podman_netns_mounts(&self.mounts.mountinfo());
        self.mounts.stop();
        // podman removes a container's netns file at teardown; after a
        // failure the (then unmounted) file may be left.
        for file in netns_files {
            let _ = fs::remove_file(file);
        }
        // The cgroups go when `cgroup` drops, once their processes are reaped.
    }
}

/// Checks the tools podman needs here; returns runc's path.
fn require_tools() -> PathBuf {
    let find = |tool: &str| {
        PATH.split(':')
            .map(|dir| Path::new(dir).join(tool))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("`{tool}` is missing: {SETUP_HINT}"))
    };
    for tool in ["podman", "conmon", "nsenter", "unshare", "tar"] {
        find(tool);
    }
    assert!(
        Path::new("/usr/lib/cni/portmap").is_file(),
        "the reference CNI plugins are missing: {SETUP_HINT}"
    );
    assert!(
        is_static(&busybox()),
        "{} is not statically linked (busybox-static): {SETUP_HINT}",
        busybox().display()
    );
    find("runc")
}

fn write_config(d: &Path, runc: &Path) {
    let p = |sub: &str| format!("{:?}", d.join(sub).display().to_string());
    let plugin_dirs = format!(
        "[{:?}, \"/usr/lib/cni\"]",
        crate::binary("podmeter")
            .parent()
            .unwrap()
            .display()
            .to_string()
    );
    let containers_conf = format!(
        r#"[containers]
# runc's setrlimit fails with the machine's defaults.
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = {events}
runtime = "runc"
lock_type = "file"
tmp_dir = {tmp_dir}
static_dir = {static_dir}
volume_path = {volume_path}
image_copy_tmp_dir = {tmp}

[engine.runtimes]
runc = [{runc}]

[network]
network_backend = "cni"
cni_plugin_dirs = {plugin_dirs}
network_config_dir = {cni}
default_network = "{NETWORK}"
"#,
        events = p("run/events.log"),
        tmp_dir = p("run/libpod"),
        static_dir = p("root/libpod"),
        volume_path = p("root/volumes"),
        tmp = p("tmp"),
        runc = p("bin/runc"),
        cni = p("cni"),
    );
    fs::write(d.join("containers.conf"), containers_conf).unwrap();
    let storage_conf = format!(
        "[storage]\ndriver = \"vfs\"\ngraphroot = {}\nrunroot = {}\n",
        p("root/storage"),
        p("run/storage")
    );
    fs::write(d.join("storage.conf"), storage_conf).unwrap();
    fs::write(d.join("registries.conf"), "").unwrap();
    fs::write(
        d.join("home/.config/containers/policy.json"),
        r#"{"default": [{"type": "insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    // runc keeps its state under /run/runc unless told otherwise.
    let wrapper = d.join("bin/runc");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {} --root {} \"$@\"\n",
            runc.display(),
            d.join("run/runc").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Container netns files podman has mounted, from its namespace's `mountinfo`.
fn podman_netns_mounts(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with("/run/netns/netns-"))
        .map(PathBuf::from)
        .collect()
}
