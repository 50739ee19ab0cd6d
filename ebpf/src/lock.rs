//! An exclusive `flock` on the pin directory, so that concurrent plugin
//! processes load and pin the programs once, not once each.

use std::{fs::File, os::fd::AsRawFd, path::Path};

use crate::Error;

pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Blocks until the lock is ours; it is released when the guard drops
    /// (or the process dies, so a crash never leaves the directory locked).
    pub(crate) fn acquire(dir: &Path) -> Result<Self, Error> {
        let file = File::open(dir).map_err(|e| Error::io("open", dir, e))?;
        loop {
            // SAFETY: flock on a file descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(Self { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::io("flock", dir, err));
            }
        }
    }
}
