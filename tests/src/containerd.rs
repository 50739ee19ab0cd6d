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
//! [`Containerd::start_for_agent`] starts it as a node is before the
//! node agent ran: no podmeter in `bin_dir`, no conflist, the network not
//! ready; the agent (in a host-network pod) installs both.
//!
//! Drop stops and removes every pod through CRI (shims outlive containerd),
//! stops containerd, kills whatever of ours is left, and removes every
//! file; mounts go with the mount namespace.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use k8s_cri::v1::PodSandboxConfig;
use serde_json::Value;

use crate::{
    agent_conflist::NETWORK_NAME,
    cri::{pod_sandbox_config, Cri, PodMeta},
    image::busybox_oci_archive,
    isolation::{kill_leftovers, CgroupParent, MountNs},
    leftovers::{Leftovers, Site},
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
        Self::launch(node, Some(conflist), &PLUGINS)
    }

    /// containerd in `node` as on a node before its agent ran: `bin_dir`
    /// without podmeter, no conflist; the runtime is ready, the network
    /// is not ([`Containerd::wait_network_ready`]).
    pub fn start_for_agent(node: &'a Node) -> Self {
        let reference: Vec<&str> = PLUGINS.into_iter().filter(|&p| p != "podmeter").collect();
        Self::launch(node, None, &reference)
    }

    fn launch(node: &'a Node, conflist: Option<&str>, plugins: &[&str]) -> Self {
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
        for plugin in plugins {
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
        if let Some(conflist) = conflist {
            containerd.write_conflist(conflist);
        }
        containerd.start_daemon();
        let archive = busybox_oci_archive(&d.join("image"), PAUSE_IMAGE, &["sleep", "2147483647"]);
        containerd.import_image(&archive);
        containerd
    }

    /// Imports an OCI image archive into the CRI plugin's namespace, as
    /// the harness imports its pause image (and `kind load` an image).
    pub fn import_image(&self, archive: &Path) {
        run(self
            .ctr()
            .args(["-n", "k8s.io", "images", "import"])
            .arg(archive));
    }

    /// The CNI `bin_dir` (the node's `/opt/cni/bin`).
    pub fn cni_bin_dir(&self) -> PathBuf {
        self.dir.path().join("cni-bin")
    }

    /// The CNI `conf_dir` (the node's `/etc/cni/net.d`).
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir.path().join("cni-conf")
    }

    /// A directory for a pod's container logs (the kubelet's
    /// `/var/log/pods/<namespace>_<name>_<uid>`), made here.
    pub fn pod_log_dir(&self, meta: &PodMeta) -> PathBuf {
        let dir = self.dir.path().join("pods").join(&meta.uid);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The cgroup parent of `meta`'s pod (inside ours).
    pub fn pod_cgroup(&self, meta: &PodMeta) -> String {
        format!("{}/pod{}", self.cgroup.path, meta.uid)
    }

    /// Makes `path` a shared mount in containerd's mount namespace (only
    /// there: it stays a slave of the machine's mount): containerd refuses
    /// a Bidirectional mount whose source is not on a shared mount.
    pub fn make_shared(&self, path: &Path) {
        run(Command::new("nsenter")
            .arg(self.mounts.nsenter_arg())
            .arg("mount")
            .arg("--make-shared")
            .arg(path));
    }

    pub fn cri(&self) -> &Cri {
        &self.cri
    }

    /// Starts the daemon (again, after [`Containerd::stop_daemon`]) and
    /// waits until CRI reports the runtime ready, and the network too if
    /// there is a conflist.
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
        let has_conflist = fs::read_dir(self.cni_conf_dir()).unwrap().next().is_some();
        self.wait_for("the runtime to be ready", |c| c.ready("RuntimeReady"));
        if has_conflist {
            self.wait_network_ready();
        }
    }

    /// Waits until CRI reports the network ready: containerd loaded a
    /// conflist from `conf_dir`.
    pub fn wait_network_ready(&self) {
        self.wait_for("the network to be ready", |c| c.ready("NetworkReady"));
    }

    /// `Some` if CRI's status has condition `kind` true.
    fn ready(&self, kind: &str) -> Option<()> {
        let conditions = self.cri.status().ok()?.status?.conditions;
        conditions
            .iter()
            .any(|c| c.r#type == kind && c.status)
            .then_some(())
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
        // nsenter execs containerd: the child is containerd.
        crate::signal(child.id(), nix::sys::signal::Signal::SIGTERM);
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
        self.run_sandbox(meta, pod_sandbox_config(meta, &self.pod_cgroup(meta)))
    }

    /// RunPodSandbox with `config` (made for `meta`, in [`Containerd::pod_cgroup`]).
    pub fn run_sandbox(
        &self,
        meta: &PodMeta,
        config: PodSandboxConfig,
    ) -> Result<Sandbox, tonic::Status> {
        let id = self.cri.run_pod_sandbox(config)?;
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
        crate::isolation::cni_cache_entries(&self.dir.path().join("varlib/upper"))
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

/// What podmeter's pods left on `node` (agent's network): loopback, the
/// bridge, their addresses and routes stay by design (as the bridge
/// plugin's do); containerd and its shims live in the node's namespace, and
/// are not counted either.
pub fn pod_leftovers(node: &Node) -> Leftovers {
    let site = Site {
        netns: node.ns.name().to_owned(),
        pod_netns: Vec::new(),
        pin_path: node.pin_path.clone(),
        data_dir: node.data_dir.path().to_owned(),
        network: NETWORK_NAME.to_owned(),
    };
    let mut found = Leftovers::read(&site);
    let kept = ["lo", "pm0"];
    found
        .addrs
        .retain(|a| !kept.iter().any(|dev| a.starts_with(&format!("{dev} "))));
    found
        .routes
        .retain(|r| !kept.iter().any(|dev| r.contains(&format!(" dev {dev} "))));
    found
        .processes
        .retain(|p| !p.ends_with(" containerd") && !p.ends_with(" containerd-shim"));
    found
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
