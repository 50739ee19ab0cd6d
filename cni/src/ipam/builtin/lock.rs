//! An exclusive `flock` with a bounded wait.
//!
//! flock rather than fcntl locks: fcntl locks belong to the process, so two stores
//! opened by one process (or its threads) would not exclude each other, while flock
//! belongs to the open file description. host-local locks the same `lock` file with
//! flock, so a host-local and a podmeter sharing a data dir also exclude each other.
//!
//! Polling with `LOCK_NB` rather than blocking on a helper thread: a timed-out helper
//! would still be queued for the lock and could take it after we gave up.

use std::{
    fs::{File, OpenOptions},
    os::unix::fs::OpenOptionsExt,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};

use crate::ipam::IpamError;

/// Held until dropped; the kernel also drops it if the process dies.
#[derive(Debug)]
pub struct DirLock {
    _flock: Flock<File>,
}

const MAX_BACKOFF: Duration = Duration::from_millis(20);

impl DirLock {
    /// Takes the exclusive lock on `path` (created if missing), waiting up to `timeout`.
    pub fn acquire(path: &Path, timeout: Duration) -> Result<Self, IpamError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(IpamError::io("open lock", path))?;
        let started = Instant::now();
        let mut backoff = Duration::from_millis(1);
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(flock) => return Ok(Self { _flock: flock }),
                Err((f, Errno::EWOULDBLOCK | Errno::EINTR)) => file = f,
                Err((_, errno)) => {
                    return Err(IpamError::io("flock", path)(errno.into()));
                }
            }
            let waited = started.elapsed();
            if waited >= timeout {
                return Err(IpamError::LockTimeout {
                    path: path.to_path_buf(),
                    waited,
                });
            }
            // Jitter keeps 50 waiting processes from waking in lockstep.
            let seed = started.elapsed().subsec_nanos() ^ std::process::id();
            let jitter = Duration::from_micros(u64::from(seed % 1000));
            thread::sleep((backoff + jitter).min(timeout.saturating_sub(waited)));
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}
