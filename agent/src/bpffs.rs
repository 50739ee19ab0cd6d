//! bpffs at the plugin's mount point. kind and other Docker-based nodes get
//! a fresh sysfs without it; the plugin (run by the runtime in the host's
//! mount namespace) needs it there, so the agent mounts it from its
//! container, which sees the host's `/sys/fs/bpf` with Bidirectional
//! propagation, and the mount propagates to the host.

use std::{io, path::Path};

use nix::{
    mount::{mount, MsFlags},
    sys::statfs::{statfs, BPF_FS_MAGIC},
};

#[derive(Debug, thiserror::Error)]
pub enum BpffsError {
    #[error("checking the file system at {path}: {error}")]
    Stat { path: String, error: nix::Error },
    #[error("mounting bpffs at {path}: {error}")]
    Mount { path: String, error: nix::Error },
    #[error("making the bpffs mount at {path} shared: {error}")]
    Share { path: String, error: nix::Error },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// bpffs was there already (a host that mounts it, or an earlier agent):
    /// left alone, since its mode and propagation are the host's to choose.
    AlreadyMounted,
    Mounted,
}

/// Mounts bpffs at `path` unless it is mounted there: mode 0700 (the plugin
/// refuses pin paths others can write, and the kernel's default is 1777),
/// then shared, so that the host sees it through the container's
/// Bidirectional volume and mounts made under it later propagate too.
pub fn ensure_mounted(path: &Path) -> Result<Outcome, BpffsError> {
    if is_bpffs(path)? {
        return Ok(Outcome::AlreadyMounted);
    }
    let shown = || path.display().to_string();
    mount(
        Some("bpffs"),
        path,
        Some("bpf"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0700"),
    )
    .map_err(|error| BpffsError::Mount {
        path: shown(),
        error,
    })?;
    mount(
        None::<&str>,
        path,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .map_err(|error| BpffsError::Share {
        path: shown(),
        error,
    })?;
    Ok(Outcome::Mounted)
}

/// Whether the file system at `path` (the top mount there) is bpffs.
pub fn is_bpffs(path: &Path) -> Result<bool, BpffsError> {
    match statfs(path) {
        Ok(fs) => Ok(fs.filesystem_type() == BPF_FS_MAGIC),
        Err(error) => Err(BpffsError::Stat {
            path: path.display().to_string(),
            error,
        }),
    }
}

/// Whether others may write the bpffs root (a host's 1777 default). The
/// plugin accepts a sticky root above its pin path, so this is a warning.
pub fn world_writable(path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o002 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_directory_is_not_bpffs_and_a_missing_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_bpffs(dir.path()).unwrap());
        let missing = dir.path().join("missing");
        let err = is_bpffs(&missing).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
