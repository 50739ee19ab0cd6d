//! The pinned maps, one file per map family: each holds its reads and its
//! part of a pod's life (made at ADD, removed at DEL, found by GC).

mod batch;
pub mod counters;
pub mod devices;
pub mod drops;
pub mod flow_tables;
pub mod open;
pub(crate) mod per_pod;
pub mod policy;
pub mod registry;
pub mod sources;
pub mod tcp;

use aya::maps::MapError;

pub use open::PinnedMaps;

/// A delete of a key that is not there is done. aya 0.14 reports that as
/// the syscall's ENOENT, not as `KeyNotFound`; concurrent DELs meet it when
/// they collect the same key while another one deletes it.
pub(crate) fn ignore_missing(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleting_a_missing_key_is_done() {
        let enoent = || {
            Err(MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_delete_elem",
                io_error: std::io::Error::from_raw_os_error(libc::ENOENT),
            }))
        };
        assert!(ignore_missing(enoent()).is_ok());
        assert!(ignore_missing(Err(MapError::KeyNotFound)).is_ok());
        let eperm = Err(MapError::SyscallError(aya::sys::SyscallError {
            call: "bpf_map_delete_elem",
            io_error: std::io::Error::from_raw_os_error(libc::EPERM),
        }));
        assert!(ignore_missing(eperm).is_err());
    }
}
