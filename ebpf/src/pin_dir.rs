//! The pin directories belong to root alone.
//!
//! bpffs is mounted 1777 by default, so any local user can create a directory
//! there. A user who owned the pin path, or could write in one of its
//! directories, could remove a pod's link pins (its programs detach, its
//! counters freeze) or rename a map under DEL. So podmeter creates its
//! directories mode 0700, and refuses a path in which a directory is owned by
//! another user, is writable by others (unless, like bpffs' root, it is
//! sticky: others can add entries there but not rename or remove ours), or
//! is a symlink.

use std::{
    fs::{self, DirBuilder},
    io,
    os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use nix::{
    sys::statfs::{statfs, BPF_FS_MAGIC},
    unistd::geteuid,
};

use crate::{pins::PinLayout, Error};

/// Group and other write bits.
const WRITABLE_BY_OTHERS: u32 = 0o022;
const STICKY: u32 = 0o1000;

/// Creates the pin path, its versioned directory and the links directory
/// (each mode 0700) where missing, after checking every directory above.
pub fn ensure(layout: &PinLayout) -> Result<(), Error> {
    check_ancestors(layout.pin_path())?;
    for dir in own_dirs(layout) {
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            // Made by someone else meanwhile, perhaps: checked below like any other.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create", &dir, e)),
        }
        check_dir(&dir, false)?;
    }
    Ok(())
}

/// Checks the pin path and the directories above and below it that exist,
/// without creating anything: for the readers (DEL, GC, the exporter).
pub fn check(layout: &PinLayout) -> Result<(), Error> {
    check_ancestors(layout.pin_path())?;
    for dir in own_dirs(layout) {
        match check_dir(&dir, false) {
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => break,
            other => other?,
        }
    }
    Ok(())
}

/// Checks that `path`, or its nearest existing ancestor, is on bpffs, before
/// anything is created there.
pub fn check_bpffs(path: &Path) -> Result<(), Error> {
    let existing = path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let fs = statfs(existing).map_err(|e| Error::io("statfs", existing, e.into()))?;
    if fs.filesystem_type() != BPF_FS_MAGIC {
        return Err(Error::NotBpffs {
            path: PathBuf::from(path),
        });
    }
    Ok(())
}

/// Removes a pin (program, map or link) at `path`; `Ok(false)` if there
/// was none.
pub(crate) fn remove_if_exists(path: &Path) -> Result<bool, Error> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

/// podmeter's own directories, outermost first.
fn own_dirs(layout: &PinLayout) -> [PathBuf; 3] {
    [
        layout.pin_path().to_path_buf(),
        layout.dir(),
        layout.links_dir(),
    ]
}

fn check_ancestors(pin_path: &Path) -> Result<(), Error> {
    if !pin_path.is_absolute() {
        return Err(unsafe_path(pin_path, "is not an absolute path"));
    }
    let mut ancestors: Vec<&Path> = pin_path.ancestors().skip(1).collect();
    ancestors.reverse();
    for dir in ancestors {
        check_dir(dir, true)?;
    }
    Ok(())
}

/// `dir` must be a real directory owned by root (or us), writable by no one
/// else; a directory we did not make may be writable by others if sticky.
fn check_dir(dir: &Path, sticky_ok: bool) -> Result<(), Error> {
    let meta = fs::symlink_metadata(dir).map_err(|e| Error::io("stat", dir, e))?;
    if meta.file_type().is_symlink() {
        return Err(unsafe_path(dir, "is a symlink"));
    }
    if !meta.is_dir() {
        return Err(unsafe_path(dir, "is not a directory"));
    }
    let uid = meta.uid();
    if uid != 0 && uid != geteuid().as_raw() {
        return Err(unsafe_path(
            dir,
            &format!("is owned by uid {uid}, not root"),
        ));
    }
    let mode = meta.permissions().mode();
    if mode & WRITABLE_BY_OTHERS != 0 && !(sticky_ok && mode & STICKY != 0) {
        return Err(unsafe_path(
            dir,
            &format!("is writable by others (mode {:o})", mode & 0o7777),
        ));
    }
    Ok(())
}

fn unsafe_path(dir: &Path, reason: &str) -> Error {
    Error::UnsafePinPath {
        path: dir.to_path_buf(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_owned_private_dirs_pass_and_others_writable_fail() {
        let tmp = std::env::temp_dir().join(format!("pm-pin-dir-{}", std::process::id()));
        fs::create_dir_all(&tmp).unwrap();
        let check = |mode: u32, sticky_ok: bool| {
            fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).unwrap();
            check_dir(&tmp, sticky_ok)
        };
        let results = [
            check(0o700, false).is_ok(),
            check(0o755, false).is_ok(),
            check(0o775, false).is_err(),
            check(0o777, true).is_err(),
            check(0o1777, true).is_ok(),
            check(0o1777, false).is_err(),
        ];
        fs::remove_dir(&tmp).unwrap();
        assert_eq!(results, [true; 6]);
    }

    #[test]
    fn symlinks_and_relative_paths_are_refused() {
        let link = std::env::temp_dir().join(format!("pm-pin-link-{}", std::process::id()));
        std::os::unix::fs::symlink("/", &link).unwrap();
        let refused = check_dir(&link, true);
        fs::remove_file(&link).unwrap();
        assert!(matches!(refused, Err(Error::UnsafePinPath { .. })));
        assert!(check_ancestors(Path::new("relative/pins")).is_err());
    }
}
