//! The node agent as a test drives it: the real `podmeter-agent` binary,
//! pointed at a fake API server and at temp dirs standing in for
//! `/etc/cni/net.d` and `/opt/cni/bin`, always in a private mount namespace
//! so that whatever it mounts stays there and goes with it.

use std::{
    net::SocketAddr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use nix::{
    mount::{mount, umount2, MntFlags, MsFlags},
    sched::{unshare, CloneFlags},
    sys::signal::Signal,
};

use crate::{
    daemon::{self, Log},
    http::{self, Response},
};

/// Long enough for kube's watcher backoff after an API server outage
/// (0.8 s, doubling) on a loaded machine; a pass takes far less.
pub const EVENTUALLY: Duration = Duration::from_secs(60);

/// The host paths the agent manages, in a temp dir of their own.
pub struct AgentDirs {
    pub root: tempfile::TempDir,
    /// Stands in for `/etc/cni/net.d`.
    pub conf_dir: PathBuf,
    /// Stands in for `/opt/cni/bin`.
    pub bin_dir: PathBuf,
    /// Stands in for `/var/lib/podmeter/networks`.
    pub data_dir: PathBuf,
}

impl AgentDirs {
    pub fn new() -> Self {
        let root = tempfile::Builder::new()
            .prefix("pmtest-agent")
            .tempdir()
            .unwrap();
        let conf_dir = root.path().join("net.d");
        let bin_dir = root.path().join("bin");
        let data_dir = root.path().join("networks");
        for dir in [&conf_dir, &bin_dir] {
            std::fs::create_dir(dir).unwrap();
        }
        Self {
            root,
            conf_dir,
            bin_dir,
            data_dir,
        }
    }

    pub fn conflist(&self) -> PathBuf {
        self.conf_dir.join("10-podmeter.conflist")
    }

    pub fn installed_plugin(&self) -> PathBuf {
        self.bin_dir.join("podmeter")
    }
}

impl Default for AgentDirs {
    fn default() -> Self {
        Self::new()
    }
}

/// The mount namespace the agent runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mounts {
    /// A private copy of the machine's mounts (bpffs at /sys/fs/bpf as the
    /// machine has it).
    Private,
    /// A private copy with a fresh sysfs on /sys, hence no bpffs at
    /// /sys/fs/bpf: a kind node.
    FreshSysfs,
}

/// The agent's flags, each a field a test may change before [`Flags::command`].
#[derive(Debug, Clone)]
pub struct Flags {
    pub kubeconfig: PathBuf,
    pub node_name: String,
    pub pin_path: PathBuf,
    pub conflist: PathBuf,
    pub bin_dir: PathBuf,
    pub plugin_source: PathBuf,
    pub data_dir: PathBuf,
    /// Routes to other nodes (`--routes.enabled`). Off unless a test turns
    /// it on for an agent in a node namespace: an agent in the machine's
    /// own namespace must not route there.
    pub routes: bool,
    /// Appended as they are (`--cni.uninstall`).
    pub extra: Vec<String>,
}

impl Flags {
    /// `node` against `kubeconfig` with every path in `dirs`, the real
    /// plugin as the binary to install and the default pin path (written
    /// into the conflist only).
    pub fn new(kubeconfig: &Path, node: &str, dirs: &AgentDirs) -> Self {
        Self {
            kubeconfig: kubeconfig.into(),
            node_name: node.into(),
            pin_path: "/sys/fs/bpf/podmeter".into(),
            conflist: dirs.conflist(),
            bin_dir: dirs.bin_dir.clone(),
            plugin_source: crate::binary("podmeter"),
            data_dir: dirs.data_dir.clone(),
            routes: false,
            extra: Vec::new(),
        }
    }

    /// The command line, on a free loopback port, logging at debug level.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(crate::binary("podmeter-agent"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KUBECONFIG", &self.kubeconfig)
            .arg("--node-name")
            .arg(&self.node_name)
            .arg("--bpf.pin-path")
            .arg(&self.pin_path)
            .arg("--cni.conflist")
            .arg(&self.conflist)
            .arg("--cni.bin-dir")
            .arg(&self.bin_dir)
            .arg("--cni.plugin-source")
            .arg(&self.plugin_source)
            .arg("--ipam.data-dir")
            .arg(&self.data_dir)
            .arg(format!("--routes.enabled={}", self.routes))
            .args([
                "--web.listen-address",
                "127.0.0.1:0",
                "--log.level",
                "debug",
            ])
            .args(&self.extra);
        cmd
    }
}

/// Runs `cmd` in a new mount namespace of kind `mounts`: it is private (no
/// mount event reaches the machine), and dies with the process.
fn in_mount_ns(cmd: &mut Command, mounts: Mounts) {
    // SAFETY: only system calls between fork and exec, no allocation.
    unsafe {
        cmd.pre_exec(move || {
            unshare(CloneFlags::CLONE_NEWNS)?;
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )?;
            if mounts == Mounts::FreshSysfs {
                // As `ip netns exec` does: the kernel refuses to stack the
                // same sysfs on its own mount point (EBUSY).
                umount2("/sys", MntFlags::MNT_DETACH)?;
                mount(
                    Some("sysfs"),
                    "/sys",
                    Some("sysfs"),
                    MsFlags::empty(),
                    None::<&str>,
                )?;
            }
            Ok(())
        });
    }
}

/// A running agent; killed on drop (its mount namespace goes with it).
pub struct Agent {
    /// Behind a lock so that `eventually` (`&self`) can notice an exit.
    child: Mutex<Child>,
    pub addr: SocketAddr,
    log: Log,
}

impl Agent {
    /// Starts `cmd` (see [`command`]) and waits for its `listening` line;
    /// panics with its log if it exits or stays silent instead.
    pub fn start(mut cmd: Command, mounts: Mounts) -> Self {
        in_mount_ns(&mut cmd, mounts);
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning podmeter-agent");
        let (addr, log) =
            daemon::wait_listening(&mut child, "podmeter-agent", Duration::from_secs(30));
        Self {
            child: Mutex::new(child),
            addr,
            log,
        }
    }

    /// Runs `cmd` to its end (a start-up failure); returns its status and log.
    pub fn run_to_exit(mut cmd: Command) -> (ExitStatus, String) {
        in_mount_ns(&mut cmd, Mounts::Private);
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .expect("running podmeter-agent");
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap().id()
    }

    pub fn get(&self, path: &str) -> Response {
        http::get(self.addr, path, None)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The log once a line contains `needle`; panics with the log after
    /// [`EVENTUALLY`] without one.
    pub fn log_with(&self, needle: &str) -> String {
        self.eventually(&format!("a log line with {needle:?}"), || {
            let log = self.log();
            log.lines().any(|l| l.contains(needle)).then_some(log)
        })
    }

    /// Polls `f` until it returns `Some`; panics naming `what`, with the
    /// agent's log, after [`EVENTUALLY`].
    pub fn eventually<T>(&self, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            if let Some(status) = self.child.lock().unwrap().try_wait().unwrap() {
                panic!(
                    "podmeter-agent exited ({status}) waiting for {what}:\n{}",
                    self.log()
                );
            }
            assert!(
                start.elapsed() < EVENTUALLY,
                "no {what} after {EVENTUALLY:?}; agent log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and waits (up to [`EVENTUALLY`]) for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        crate::signal(self.pid(), Signal::SIGTERM);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.lock().unwrap().try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < EVENTUALLY,
                "still running {EVENTUALLY:?} after SIGTERM:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
