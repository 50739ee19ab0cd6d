//! Files the agent puts on the host, replaced atomically: a temp file in the
//! same directory, fsync, rename, fsync of the directory. A runtime reading
//! the conflist, or a kubelet executing the plugin, sees the old file or the
//! new one, never half of one; a running plugin keeps its old inode.

use std::{
    fs::{self, File, Permissions},
    io::{self, Write},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("reading {path}: {error}")]
    Read { path: PathBuf, error: io::Error },
    #[error("writing {path}: {error}")]
    Write { path: PathBuf, error: io::Error },
    #[error("removing {path}: {error}")]
    Remove { path: PathBuf, error: io::Error },
    #[error("{path} has no parent directory")]
    NoParent { path: PathBuf },
}

/// Whether a file had to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    Written,
}

/// Makes `path` hold exactly `content` with `mode`, unless it already
/// does. The temp file starts with a dot and has no `.conf`/`.conflist`
/// ending, so libcni never loads one left by a crash.
pub fn replace(path: &Path, content: &[u8], mode: u32) -> Result<Outcome, InstallError> {
    match fs::read(path) {
        Ok(current) if current == content && mode_of(path)? == mode => {
            return Ok(Outcome::Unchanged)
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(InstallError::Read {
                path: path.into(),
                error,
            })
        }
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| InstallError::NoParent { path: path.into() })?;
    let write_err = |error| InstallError::Write {
        path: path.into(),
        error,
    };
    // Dropped (and removed) on any error before the rename.
    let mut tmp = tempfile::Builder::new()
        .prefix(".podmeter-")
        .permissions(Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(write_err)?;
    tmp.write_all(content).map_err(write_err)?;
    // The umask narrowed the mode at creation; set it exactly.
    tmp.as_file()
        .set_permissions(Permissions::from_mode(mode))
        .map_err(write_err)?;
    tmp.as_file().sync_all().map_err(write_err)?;
    tmp.persist(path).map_err(|e| write_err(e.error))?;
    sync_dir(dir).map_err(write_err)?;
    Ok(Outcome::Written)
}

/// Installs the plugin binary `source` as `dest` when their contents differ.
pub fn install_binary(source: &Path, dest: &Path) -> Result<Outcome, InstallError> {
    let content = fs::read(source).map_err(|e| InstallError::Read {
        path: source.into(),
        error: e,
    })?;
    replace(dest, &content, 0o755)
}

/// Removes `path`; a missing file is already removed.
pub fn remove(path: &Path) -> Result<(), InstallError> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => {
            return Err(InstallError::Remove {
                path: path.into(),
                error,
            })
        }
    }
    if let Some(dir) = path.parent() {
        sync_dir(dir).map_err(|error| InstallError::Remove {
            path: path.into(),
            error,
        })?;
    }
    Ok(())
}

fn mode_of(path: &Path) -> Result<u32, InstallError> {
    let meta = fs::metadata(path).map_err(|error| InstallError::Read {
        path: path.into(),
        error,
    })?;
    Ok(meta.permissions().mode() & 0o7777)
}

/// The rename (or unlink) is durable only once the directory is synced.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn writes_then_leaves_equal_content_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("10-x.conflist");
        assert_eq!(replace(&path, b"one", 0o644).unwrap(), Outcome::Written);
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert_eq!(mode_of(&path).unwrap(), 0o644);
        let inode = fs::metadata(&path).unwrap().ino();
        assert_eq!(replace(&path, b"one", 0o644).unwrap(), Outcome::Unchanged);
        assert_eq!(fs::metadata(&path).unwrap().ino(), inode);
        // Only the file itself: no temp file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_change_is_a_new_inode_never_an_in_place_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugin");
        replace(&path, b"v1", 0o755).unwrap();
        // A reader holding the old file (a kubelet executing the plugin)
        // keeps the old content.
        let old = File::open(&path).unwrap();
        let inode = old.metadata().unwrap().ino();
        assert_eq!(replace(&path, b"v2", 0o755).unwrap(), Outcome::Written);
        assert_ne!(fs::metadata(&path).unwrap().ino(), inode);
        assert_eq!(std::io::read_to_string(old).unwrap(), "v1");
        assert_eq!(fs::read(&path).unwrap(), b"v2");
        assert_eq!(mode_of(&path).unwrap(), 0o755);
    }

    #[test]
    fn a_wrong_mode_alone_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugin");
        fs::write(&path, b"same").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        assert_eq!(replace(&path, b"same", 0o755).unwrap(), Outcome::Written);
        assert_eq!(mode_of(&path).unwrap(), 0o755);
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-binary");
        let err = install_binary(&missing, &dir.path().join("podmeter")).unwrap_err();
        assert!(err.to_string().contains("no-such-binary"), "{err}");
        let err = replace(&dir.path().join("no-dir/file"), b"x", 0o644).unwrap_err();
        assert!(err.to_string().contains("no-dir/file"), "{err}");
    }

    #[test]
    fn remove_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"x").unwrap();
        remove(&path).unwrap();
        assert!(!path.exists());
        remove(&path).unwrap();
    }
}
