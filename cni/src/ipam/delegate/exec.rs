//! Finding a plugin on `CNI_PATH` and running it once, within a time limit.

use std::{
    ffi::OsString,
    fs,
    io::{self, ErrorKind, Read, Write},
    os::unix::{
        fs::{MetadataExt, PermissionsExt},
        process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    sys::{
        signal::{killpg, Signal},
        wait::{waitid, Id, WaitPidFlag, WaitStatus},
    },
    unistd::Pid,
};
use rscni_plugin::{error::Error as CniError, types::ErrorResult};

use crate::ipam::IpamError;

/// Set in every delegate's environment. podmeter refuses to run with it set: an
/// `ipam.type` that leads back to podmeter by any path (a copy, a wrapper script)
/// would otherwise make each podmeter start another one, without end.
pub const DELEGATE_MARKER: &str = "PODMETER_IPAM_DELEGATE";

/// How long output may still take to close once the delegate's group is gone.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);
const MAX_POLL: Duration = Duration::from_millis(10);

/// The first `dir/name` in `paths` that is an executable regular file, as libcni picks.
pub fn find_plugin(name: &str, paths: &[PathBuf]) -> Result<PathBuf, IpamError> {
    paths
        .iter()
        .map(|dir| dir.join(name))
        .find(|path| {
            fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| IpamError::PluginNotFound {
            name: name.to_string(),
            paths: paths.to_vec(),
        })
}

/// Whether `path` is the very file this process runs from (by device and inode, so
/// a symlink or hard link under another name counts too).
pub fn is_running_executable(path: &Path) -> bool {
    let id = |m: fs::Metadata| (m.dev(), m.ino());
    match (fs::metadata(path), fs::metadata("/proc/self/exe")) {
        (Ok(plugin), Ok(own)) => id(plugin) == id(own),
        _ => false,
    }
}

/// Runs the plugin at `path` with `env` overriding our own environment, feeds it
/// `stdin` and returns its stdout on success. Its stderr is copied to ours: the
/// runtime logs our stderr, and the delegate's diagnostics belong there too.
///
/// The plugin runs in a process group of its own, which is killed once the plugin
/// exits or `limit` has passed, whichever is first: nothing the delegate started in
/// its group outlives the call.
pub fn run(
    plugin: &str,
    path: &Path,
    env: &[(&str, Option<OsString>)],
    stdin: &[u8],
    limit: Duration,
) -> Result<Vec<u8>, IpamError> {
    let spawn_err = |source| IpamError::DelegateSpawn {
        path: path.to_path_buf(),
        source,
    };
    let deadline = Instant::now() + limit;
    let mut child = spawn(path, env).map_err(spawn_err)?;
    // Threads of their own, not scoped ones: a descendant that left the group could
    // hold a pipe open forever, and we must be able to stop waiting for it.
    let mut input = child.stdin.take().expect("stdin is piped");
    let stdin = stdin.to_vec();
    thread::spawn(move || {
        // A plugin may exit without reading stdin; its exit status tells the story.
        if let Err(e) = input.write_all(&stdin) {
            tracing::debug!(%e, "writing the delegate's stdin failed");
        }
    });
    let stdout = read_in_background(child.stdout.take().expect("stdout is piped"));
    let stderr = read_in_background(child.stderr.take().expect("stderr is piped"));

    let (exited, status) = wait_and_kill_group(&mut child, deadline).map_err(spawn_err)?;
    let timeout = || IpamError::DelegateTimeout {
        plugin: plugin.to_string(),
        limit,
    };
    if !exited {
        return Err(timeout());
    }
    let output_deadline = deadline.max(Instant::now() + OUTPUT_GRACE);
    let collect = |rx: mpsc::Receiver<io::Result<Vec<u8>>>| {
        let wait = output_deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(read) => read.map_err(spawn_err),
            Err(_) => Err(timeout()),
        }
    };
    let (stdout, stderr) = (collect(stdout)?, collect(stderr)?);
    interpret(plugin, status, stdout, &stderr)
}

fn interpret(
    plugin: &str,
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: &[u8],
) -> Result<Vec<u8>, IpamError> {
    if !stderr.is_empty() {
        eprint!("{}", String::from_utf8_lossy(stderr));
    }
    if status.success() {
        return Ok(stdout);
    }
    match serde_json::from_slice::<ErrorResult>(&stdout) {
        Ok(result) => Err(IpamError::DelegateFailed {
            plugin: plugin.to_string(),
            error: CniError::from(result),
        }),
        Err(_) => Err(IpamError::DelegateCrashed {
            plugin: plugin.to_string(),
            status,
            stderr: String::from_utf8_lossy(stderr).trim().to_string(),
        }),
    }
}

/// Waits until the child exits or `deadline` passes, then kills its process group
/// and reaps it; returns whether it had exited by itself.
///
/// The exit is observed with WNOWAIT, leaving the child a zombie until the group is
/// killed: while the zombie exists its pid cannot name another process group, so the
/// signal cannot reach anyone else.
fn wait_and_kill_group(child: &mut Child, deadline: Instant) -> io::Result<(bool, ExitStatus)> {
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pids fit in i32"));
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    let mut poll = Duration::from_millis(1);
    let exited = loop {
        match waitid(Id::Pid(pid), flags) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
            Ok(_) => break true,
            Err(errno) => return Err(errno.into()),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        thread::sleep(poll.min(left));
        poll = (poll * 2).min(MAX_POLL);
    };
    match killpg(pid, Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(errno) => tracing::warn!(%pid, %errno, "killing the delegate's process group failed"),
    }
    Ok((exited, child.wait()?))
}

fn read_in_background(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let read = pipe.read_to_end(&mut bytes).map(|_| bytes);
        // The receiver is gone only if we stopped waiting.
        let _ = tx.send(read);
    });
    rx
}

/// Spawns with piped stdio in a new process group, retrying "text file busy" as
/// libcni does: a plugin binary being installed, or a file another thread of ours
/// still has open for writing when it forks, makes exec fail with ETXTBSY for a moment.
fn spawn(path: &Path, env: &[(&str, Option<OsString>)]) -> io::Result<Child> {
    let mut command = Command::new(path);
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .env(DELEGATE_MARKER, "1");
    for (key, value) in env {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    let mut attempt = 0;
    loop {
        match command.spawn() {
            Err(e) if e.kind() == ErrorKind::ExecutableFileBusy && attempt < 5 => {
                attempt += 1;
                thread::sleep(Duration::from_millis(50 * attempt));
            }
            result => return result,
        }
    }
}
