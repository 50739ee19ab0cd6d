//! Running a helper process (an IPAM delegate, `nft`) once, within a time
//! limit, without a panic on any error.
//!
//! std's `wait_with_output` unwraps a failed read of the child's pipes; here
//! stdin is written and stdout and stderr are read on threads of our own,
//! and every error comes back as a value. The child runs in a process group
//! of its own, which is killed once it exits or the limit passes, so nothing
//! it started outlives the call.

use std::{
    io::{self, ErrorKind, Read, Write},
    os::unix::process::CommandExt,
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

/// How long output may still take to close once the child's group is gone.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);
const MAX_POLL: Duration = Duration::from_millis(10);

/// What a finished child left.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Still running (or holding its output open) at the limit: killed.
    #[error("no answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
}

/// Runs `command` with piped stdio, feeds it `stdin`, and waits at most
/// `limit` for it to exit and close its output.
pub fn run(mut command: Command, stdin: &[u8], limit: Duration) -> Result<Finished, ChildError> {
    let deadline = Instant::now() + limit;
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = spawn(&mut command)?;
    // Threads of their own, not scoped ones: a descendant that left the group
    // could hold a pipe open forever, and we must be able to stop waiting.
    let pipes = start_io(&mut child, stdin);
    // Without its I/O threads the child could wait for input until the
    // limit: stop it at once.
    let deadline = if pipes.is_ok() {
        deadline
    } else {
        Instant::now()
    };
    let (exited, status) = wait_and_kill_group(&mut child, deadline)?;
    let (stdout, stderr) = pipes?;
    if !exited {
        return Err(ChildError::Timeout(limit));
    }
    let output_deadline = deadline.max(Instant::now() + OUTPUT_GRACE);
    let collect = |rx: mpsc::Receiver<io::Result<Vec<u8>>>| {
        let wait = output_deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(read) => read.map_err(ChildError::Io),
            Err(_) => Err(ChildError::Timeout(limit)),
        }
    };
    Ok(Finished {
        status,
        stdout: collect(stdout)?,
        stderr: collect(stderr)?,
    })
}

/// Waits until the child exits or `deadline` passes, then kills its process group
/// and reaps it; returns whether it had exited by itself.
///
/// The exit is observed with WNOWAIT, leaving the child a zombie until the group is
/// killed: while the zombie exists its pid cannot name another process group, so the
/// signal cannot reach anyone else.
fn wait_and_kill_group(child: &mut Child, deadline: Instant) -> io::Result<(bool, ExitStatus)> {
    let pid = Pid::from_raw(i32::try_from(child.id()).map_err(io::Error::other)?);
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    let mut poll = Duration::from_millis(1);
    let exited = loop {
        match waitid(Id::Pid(pid), flags) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
            Ok(_) => break true,
            Err(errno) => {
                // Not knowing whether it exited, make sure it is gone.
                let _ = killpg(pid, Signal::SIGKILL);
                let _ = child.wait();
                return Err(errno.into());
            }
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
        Err(errno) => tracing::warn!(%pid, %errno, "killing a child's process group failed"),
    }
    Ok((exited, child.wait()?))
}

type Output = mpsc::Receiver<io::Result<Vec<u8>>>;

/// Starts the threads that feed stdin and read stdout and stderr. If one
/// cannot start (no threads left), the caller still kills and reaps the
/// child before reporting it.
fn start_io(child: &mut Child, stdin: &[u8]) -> io::Result<(Output, Output)> {
    let mut input = piped(child.stdin.take())?;
    let stdin = stdin.to_vec();
    background(move || {
        // A child may exit without reading stdin; its exit status tells the story.
        if let Err(e) = input.write_all(&stdin) {
            tracing::debug!(%e, "writing a child's stdin failed");
        }
    })?;
    let stdout = read_in_background(piped(child.stdout.take())?)?;
    let stderr = read_in_background(piped(child.stderr.take())?)?;
    Ok((stdout, stderr))
}

fn piped<T>(pipe: Option<T>) -> io::Result<T> {
    pipe.ok_or_else(|| io::Error::other("a pipe was not set up"))
}

fn read_in_background(mut pipe: impl Read + Send + 'static) -> io::Result<Output> {
    let (tx, rx) = mpsc::channel();
    background(move || {
        let mut bytes = Vec::new();
        let read = pipe.read_to_end(&mut bytes).map(|_| bytes);
        // The receiver is gone only if we stopped waiting.
        let _ = tx.send(read);
    })?;
    Ok(rx)
}

/// `thread::spawn` panics when no thread can be made; this reports it.
fn background(f: impl FnOnce() + Send + 'static) -> io::Result<()> {
    thread::Builder::new().spawn(f).map(drop)
}

/// Spawns, retrying "text file busy" as libcni does: a binary being
/// installed, or a file another thread of ours still has open for writing
/// when it forks, makes exec fail with ETXTBSY for a moment.
fn spawn(command: &mut Command) -> io::Result<Child> {
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
