//! Keeping a container runtime under test (podman, containerd) off the
//! machine's own state, and finding whatever it left after a failure:
//!
//! - [`MountNs`]: a private mount namespace in which machine dirs the
//!   runtime insists on writing (`/var/lib/cni`, `/run/containerd/s`) are
//!   overlays whose upper dirs are ours; mounts made inside (netns files,
//!   rootfs) do not propagate back, and go when its last process does;
//! - [`CgroupParent`]: a cgroup parent of our own, so every container
//!   process is found, and killed, by cgroup.

use std::{
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A process holding a private mount namespace; killed on drop.
pub struct MountNs {
    holder: Child,
    stopped: bool,
}

impl MountNs {
    /// A namespace in which each `(target, dir)` of `overlays` is an overlay
    /// of the machine's `target` writing to `dir/upper` (made here).
    pub fn new(overlays: &[(&str, &Path)]) -> Self {
        let mut script = String::new();
        for (target, dir) in overlays {
            for sub in ["upper", "work"] {
                fs::create_dir_all(dir.join(sub)).unwrap();
            }
            script += &format!(
                "mount -t overlay overlay -o lowerdir={target},upperdir={},workdir={} {target} && ",
                dir.join("upper").display(),
                dir.join("work").display()
            );
        }
        script += "echo ready && exec sleep infinity";
        let mut child = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "slave",
                "--",
                "sh",
                "-c",
                &script,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn unshare");
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        if line.trim() != "ready" {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "private mount namespace: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Self {
            holder: child,
            stopped: false,
        }
    }

    /// The `nsenter` argument that enters this namespace.
    pub fn nsenter_arg(&self) -> String {
        format!("--mount=/proc/{}/ns/mnt", self.holder.id())
    }

    /// The namespace's mount table.
    pub fn mountinfo(&self) -> String {
        fs::read_to_string(format!("/proc/{}/mountinfo", self.holder.id())).unwrap_or_default()
    }

    /// Processes in this namespace, except the holder.
    pub fn processes(&self) -> Vec<u32> {
        let mnt = |pid: u32| fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
        let holder = self.holder.id();
        match (self.stopped, mnt(holder)) {
            (false, Some(ours)) => fs::read_dir("/proc")
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter(|&pid| pid != holder && mnt(pid).as_ref() == Some(&ours))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Ends the holder; the namespace (and its mounts) goes with its last
    /// process.
    pub fn stop(&mut self) {
        if !self.stopped {
            let _ = self.holder.kill();
            let _ = self.holder.wait();
            self.stopped = true;
        }
    }
}

impl Drop for MountNs {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A cgroup parent of our own (`/<unique>` in every hierarchy), removed on
/// drop once its processes are gone.
pub struct CgroupParent {
    pub path: String,
}

impl CgroupParent {
    pub fn new(prefix: &str) -> Self {
        Self {
            path: format!("/{}", crate::unique(prefix)),
        }
    }

    /// Processes in the parent or any cgroup below it.
    pub fn processes(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for dir in cgroup_dirs(&self.path) {
            for procs in walk_dirs(&dir).iter().map(|d| d.join("cgroup.procs")) {
                let text = fs::read_to_string(procs).unwrap_or_default();
                pids.extend(text.lines().filter_map(|l| l.parse::<u32>().ok()));
            }
        }
        pids
    }
}

impl Drop for CgroupParent {
    fn drop(&mut self) {
        let start = Instant::now();
        for dir in cgroup_dirs(&self.path) {
            // A cgroup is removable once its last process has been reaped.
            for sub in walk_dirs(&dir).iter().rev() {
                while fs::remove_dir(sub).is_err() && start.elapsed() < Duration::from_secs(5) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

/// Waits up to `grace` for `alive` to come back empty (processes that exit
/// on their own after their runtime's teardown), then kills what is left.
pub fn kill_leftovers(alive: impl Fn() -> Vec<u32>, grace: Duration) {
    let start = Instant::now();
    while !alive().is_empty() && start.elapsed() < grace {
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in alive() {
        // A pid of the runtime under test (our mount namespace or cgroup),
        // which may have exited meanwhile.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// `parent` in every cgroup hierarchy (v2, or each v1 controller).
fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let rel = parent.trim_start_matches('/');
    let mut bases = vec![root.to_path_buf()];
    if let Ok(entries) = fs::read_dir(root) {
        bases.extend(entries.filter_map(|e| Some(e.ok()?.path())));
    }
    bases
        .into_iter()
        .map(|b| b.join(rel))
        .filter(|d| d.is_dir())
        .collect()
}

/// `dir` and every directory below it, parents first.
fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(entries) = fs::read_dir(&out[i]) {
            let subdirs = entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path());
            out.extend(subdirs.collect::<Vec<_>>());
        }
        i += 1;
    }
    out
}

/// Entries in libcni's result cache of a runtime whose `/var/lib` is the
/// overlay whose upper dir is `varlib_upper` (`/var/lib/cni/results` as the
/// runtime sees it).
pub fn cni_cache_entries(varlib_upper: &Path) -> Vec<String> {
    std::fs::read_dir(varlib_upper.join("cni/results"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}
