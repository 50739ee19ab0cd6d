//! Debian's containerd (1.6) as the runtime on a test node, driven over CRI
//! as the kubelet drives it, isolated from the machine and other tests:
//!
//! - its own config, root, state, socket, runc root and `opt` dir under a
//!   temp dir; the CRI plugin's CNI `bin_dir` (which becomes `CNI_PATH`)
//!   and `conf_dir` are temp dirs too, holding podmeter, `loopback` and
//!   `portmap` and one conflist;
//! - a private mount namespace ([`MountNs`]) in which `/var/lib` and `/run`
//!   are overlays writing to the temp dir: libcni's cache
//!   (`/var/lib/cni/results`) and the shims' sockets
//!   (`/run/containerd/s/...`, fixed in containerd 1.6 whatever the state
//!   dir) land there, and the pods' netns mounts
//!   (`netns_mounts_under_state_dir`) and rootfs mounts stay in it;
//! - the node's network namespace (`nsenter --net`), so containerd runs the
//!   plugin there, as on a node;
//! - a cgroup parent of its own for the pods' processes.
//!
//! Each plugin in `bin_dir` is a small sh wrapper that runs the real binary
//! and appends one line per call to a log (verb, container, whether a netns
//! and a `prevResult` were passed, exit code): what the runtime did is read
//! from there, not inferred. The sandbox (pause) image is busybox running
//! `sleep`, an OCI archive imported with `ctr`.
//!
//! Drop stops and removes every pod through CRI (shims outlive containerd),
//! stops containerd, kills whatever of ours is left, and removes every
//! file; mounts go with the mount namespace.

use std::{
    fs,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    cri::{pod_sandbox_config, Cri, PodMeta},
    image::busybox_oci_archive,
    isolation::{kill_leftovers, CgroupParent, MountNs},
    netns::{ping, run},
    Node,
};

mod files;
use files::{config, require_tools, write_wrapper, PLUGINS};

pub const PAUSE_IMAGE: &str = "localhost/podmeter-pause:1";
/// How long containerd may take to start, stop or load a conflist.
const PATIENCE: Duration = Duration::from_secs(30);

pub struct Containerd<'a> {
    node: &'a Node,
    daemon: Option<Child>,
    cri: Cri,
    mounts: MountNs,
    cgroup: CgroupParent,
    /// Dropped last: overlays and state live in it.
    dir: tempfile::TempDir,
}

/// A pod sandbox RunPodSandbox made.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// The sandbox ID: the CNI container ID.
    pub id: String,
    pub meta: PodMeta,
    /// The pause process, whose network namespace is the pod's.
    pub pid: u32,
}

impl Sandbox {
    /// A command run in the pod's network namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/proc/{}/ns/net", self.pid))
            .arg(program);
        cmd
    }

    /// `busybox ping` from the pod; panics on loss.
    pub fn ping(&self, addr: &str, count: u32, size: u32) {
        ping(self.command("busybox"), addr, count, size);
    }
}

impl<'a> Containerd<'a> {
    /// containerd in `node` with `conflist` as its only CNI config, the
    /// pause image imported, ready for pods.
    pub fn start(node: &'a Node, conflist: &str) -> Self {
        require_tools();
        let dir = tempfile::Builder::new()
            .prefix("pmtest-containerd")
            .tempdir()
            .unwrap();
        let d = &dir.path().to_owned();
        for sub in ["cni-bin", "cni-conf", "image"] {
            fs::create_dir_all(d.join(sub)).unwrap();
        }
        fs::write(d.join("config.toml"), config(d)).unwrap();
        for plugin in PLUGINS {
            write_wrapper(d, plugin);
        }
        let mounts = MountNs::new(&[("/var/lib", &d.join("varlib")), ("/run", &d.join("run"))]);
        let mut containerd = Self {
            node,
            daemon: None,
            cri: Cri::new(&d.join("containerd.sock")),
            mounts,
            cgroup: CgroupParent::new("pmtest-containerd"),
            dir,
        };
        containerd.write_conflist(conflist);
        containerd.start_daemon();
        let archive = busybox_oci_archive(&d.join("image"), PAUSE_IMAGE, &["sleep", "2147483647"]);
        run(containerd
            .ctr()
            .args(["-n", "k8s.io", "images", "import"])
            .arg(archive));
        containerd
    }

    pub fn cri(&self) -> &Cri {
        &self.cri
    }

    /// Starts the daemon (again, after [`Containerd::stop_daemon`]) and
    /// waits until CRI reports the runtime and the network ready.
    pub fn start_daemon(&mut self) {
        assert!(self.daemon.is_none(), "containerd is running");
        let d = self.dir.path();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("containerd.log"))
            .unwrap();
        let child = self
            .nsenter(true)
            .arg("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        self.daemon = Some(child);
        // A fresh client: the old connection went with the old daemon.
        self.cri = Cri::new(&d.join("containerd.sock"));
        self.wait_for("the runtime and network to be ready", |c| {
            let conditions = c.cri.status().ok()?.status?.conditions;
            conditions.iter().all(|c| c.status).then_some(())
        });
    }

    /// Stops the daemon as systemd would (SIGTERM); pods keep running
    /// under their shims.
    pub fn stop_daemon(&mut self) {
        assert!(
            self.terminate(),
            "containerd still running {PATIENCE:?} after SIGTERM (killed)"
        );
    }

    /// SIGTERM, then SIGKILL if it is still running after [`PATIENCE`];
    /// true if it stopped on SIGTERM. Does not panic (Drop uses it).
    fn terminate(&mut self) -> bool {
        let Some(mut child) = self.daemon.take() else {
            return true;
        };
        // SAFETY: kill(2) on our own child (nsenter execs containerd).
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while let Ok(None) = child.try_wait() {
            if start.elapsed() > PATIENCE {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// RunPodSandbox as the kubelet sends it for `meta`.
    pub fn run_pod(&self, meta: &PodMeta) -> Result<Sandbox, tonic::Status> {
        let cgroup = format!("{}/pod{}", self.cgroup.path, meta.uid);
        let id = self
            .cri
            .run_pod_sandbox(pod_sandbox_config(meta, &cgroup))?;
        Ok(Sandbox {
            pid: self.cri.sandbox_pid(&id)?,
            id,
            meta: meta.clone(),
        })
    }

    /// StopPodSandbox then RemovePodSandbox, as the kubelet does when a pod
    /// is deleted; panics if either fails.
    pub fn remove_pod(&self, sandbox: &Sandbox) {
        self.cri.stop_pod_sandbox(&sandbox.id).unwrap();
        self.cri.remove_pod_sandbox(&sandbox.id).unwrap();
    }

    /// The pod's IPs as CRI reports them (the CNI result's, v4 first).
    pub fn ips(&self, sandbox: &Sandbox) -> Vec<String> {
        let status = self.cri.pod_sandbox_status(&sandbox.id).unwrap();
        let network = status.status.unwrap().network.unwrap();
        std::iter::once(network.ip)
            .chain(network.additional_ips.into_iter().map(|ip| ip.ip))
            .collect()
    }

    /// Replaces the conflist and waits until containerd has loaded it (it
    /// watches `conf_dir`).
    pub fn set_conflist(&self, conflist: &str) {
        self.write_conflist(conflist);
        let want: Value = serde_json::from_str(conflist).unwrap();
        self.wait_for("containerd to load the new conflist", |c| {
            let status = c.cri.status().ok()?;
            let loaded: Value = serde_json::from_str(status.info.get("cniconfig")?).ok()?;
            let source = loaded["Networks"].as_array()?.last()?["Config"]["Source"].as_str()?;
            (serde_json::from_str::<Value>(source).ok()? == want).then_some(())
        });
    }

    /// containerd's log (stdout and stderr, all runs).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// One line per plugin call, in order: `VERB plugin container
    /// netns=yes|no prevResult=yes|no rc=N args=CNI_ARGS`.
    pub fn cni_calls(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("cni-calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Entries in libcni's result cache (`/var/lib/cni/results` as
    /// containerd sees it).
    pub fn cni_cache_entries(&self) -> Vec<String> {
        fs::read_dir(self.dir.path().join("varlib/upper/cni/results"))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn write_conflist(&self, conflist: &str) {
        // Atomically: containerd reloads on every change in the dir and
        // ignores names without a CNI extension.
        let conf_dir = self.dir.path().join("cni-conf");
        let tmp = conf_dir.join("10-podmeter.tmp");
        fs::write(&tmp, conflist).unwrap();
        fs::rename(tmp, conf_dir.join("10-podmeter.conflist")).unwrap();
    }

    /// `nsenter` into our mount namespace, and the node's network namespace
    /// if `net`.
    fn nsenter(&self, net: bool) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(self.mounts.nsenter_arg());
        if net {
            cmd.arg(format!("--net={}", self.node.ns.path().display()));
        }
        cmd
    }

    fn ctr(&self) -> Command {
        let mut cmd = self.nsenter(false);
        cmd.arg("ctr")
            .arg("--address")
            .arg(self.dir.path().join("containerd.sock"));
        cmd
    }

    fn wait_for(&self, what: &str, ready: impl Fn(&Self) -> Option<()>) {
        let start = Instant::now();
        while ready(self).is_none() {
            assert!(
                start.elapsed() < PATIENCE,
                "waited {PATIENCE:?} for {what}; containerd's log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Shims and containerd (our mount namespace), pods (our cgroup).
    fn processes(&self) -> Vec<u32> {
        let mut pids = self.mounts.processes();
        pids.extend(self.cgroup.processes());
        pids
    }
}

impl Drop for Containerd<'_> {
    fn drop(&mut self) {
        // Pods go through CRI, so that CNI DEL runs for each and their
        // shims exit.
        if self.daemon.is_some() {
            for pod in self.cri.list_pod_sandbox().unwrap_or_default() {
                let _ = self.cri.stop_pod_sandbox(&pod.id);
                let _ = self.cri.remove_pod_sandbox(&pod.id);
            }
        }
        self.terminate();
        kill_leftovers(|| self.processes(), Duration::from_secs(5));
        self.mounts.stop();
    }
}
