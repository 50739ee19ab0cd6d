//! An exclusive `flock` with a bounded wait.
//!
//! flock rather than fcntl locks: fcntl locks belong to the process, so two stores
//! opened by one process (or its threads) would not exclude each other, while flock
//! belongs to the open file description. host-local locks the same `lock` file with
//! flock, so a host-local and a podmeter sharing a data dir also exclude each other.
//! `std::fs::File::try_lock` is flock on Linux.
//!
//! Polling with `LOCK_NB` rather than blocking on a helper thread: a timed-out helper
//! would still be queued for the lock and could take it after we gave up.
//!
//! Released by closing the file, never by an explicit unlock: closing cannot fail in
//! a way that leaves the lock held, so releasing has no error to handle (nix's `Flock`
//! panics in `Drop` when its unlock fails).

use std::{
    fs::{File, OpenOptions, TryLockError},
    io::{self, ErrorKind},
    os::unix::fs::OpenOptionsExt,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use crate::ipam::IpamError;

/// Held until dropped; the kernel also drops it if the process dies.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

const MAX_BACKOFF: Duration = Duration::from_millis(20);

impl DirLock {
    /// Takes the exclusive lock on `path` (created if missing), waiting up to `timeout`.
    pub fn acquire(path: &Path, timeout: Duration) -> Result<Self, IpamError> {
        let file = open_lock_file(path)?;
        let started = Instant::now();
        let mut backoff = Duration::from_millis(1);
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Self { _file: file }),
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) if e.kind() == ErrorKind::Interrupted => {}
                Err(TryLockError::Error(e)) => return Err(IpamError::io("flock", path)(e)),
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

/// Opens (or creates) the lock, refusing anything but a regular file: following a
/// symlink would create or lock a file elsewhere, and a FIFO or device is no lock
/// host-local would share. O_NONBLOCK keeps a FIFO from blocking the open itself.
fn open_lock_file(path: &Path) -> Result<File, IpamError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(IpamError::io("open lock", path))?;
    let meta = file.metadata().map_err(IpamError::io("stat lock", path))?;
    if !meta.is_file() {
        return Err(IpamError::io("open lock", path)(io::Error::new(
            ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    Ok(file)
}
