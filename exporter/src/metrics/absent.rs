//! Telling "nothing pinned yet" apart from pins that cannot be read.
//!
//! A node has no pins before its first ADD and after every reboot (bpffs is
//! not persistent): that is a node without pods, not a failed scrape.

use std::{error::Error, io};

/// Whether `err` comes from a path that does not exist: the pin path, its
/// versioned directory, or a map or program pin in it. Other failures (no
/// permission, not a directory, another layout) are not.
pub fn not_pinned(err: &(dyn Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        // The first I/O error in the chain is the syscall's: it decides.
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return io.kind() == io::ErrorKind::NotFound;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use aya::{maps::MapError, sys::SyscallError};

    use super::*;

    fn map_error(errno: i32) -> podmeter_ebpf::Error {
        podmeter_ebpf::Error::Map {
            path: PathBuf::from("/sys/fs/bpf/x/v1/pm_counters"),
            source: MapError::SyscallError(SyscallError {
                call: "BPF_OBJ_GET",
                io_error: io::Error::from_raw_os_error(errno),
            }),
        }
    }

    #[test]
    fn only_a_missing_path_is_not_pinned() {
        assert!(not_pinned(&map_error(libc::ENOENT)));
        assert!(!not_pinned(&map_error(libc::EACCES)));
        assert!(!not_pinned(&map_error(libc::EPERM)));
        assert!(!not_pinned(&map_error(libc::ENOTDIR)));
        let mismatch = podmeter_ebpf::Error::LayoutMismatch {
            path: PathBuf::from("/sys/fs/bpf/x/v1/pm_counters"),
            expected: "a".into(),
            found: "b".into(),
        };
        assert!(!not_pinned(&mismatch));
    }
}
