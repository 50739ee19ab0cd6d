//! Finding a plugin on `CNI_PATH` and running it once, within a time limit.

use std::{
    ffi::OsString,
    fs,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
    time::Duration,
};

use rscni_plugin::{error::Error as CniError, types::ErrorResult};

use crate::{
    child::{self, ChildError},
    ipam::IpamError,
};

/// Set in every delegate's environment. podmeter refuses to run with it set: an
/// `ipam.type` that leads back to podmeter by any path (a copy, a wrapper script)
/// would otherwise make each podmeter start another one, without end.
pub const DELEGATE_MARKER: &str = "PODMETER_IPAM_DELEGATE";

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
/// Nothing the delegate started in its process group outlives the call, nor
/// does the delegate outlive `limit` (see [`child::run`]).
pub fn run(
    plugin: &str,
    path: &Path,
    env: &[(&str, Option<OsString>)],
    stdin: &[u8],
    limit: Duration,
) -> Result<Vec<u8>, IpamError> {
    let mut command = Command::new(path);
    command.env(DELEGATE_MARKER, "1");
    for (key, value) in env {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    match child::run(command, stdin, limit) {
        Ok(done) => interpret(plugin, done.status, done.stdout, &done.stderr),
        Err(ChildError::Timeout(_)) => Err(IpamError::DelegateTimeout {
            plugin: plugin.to_string(),
            limit,
        }),
        Err(ChildError::Io(source)) => Err(IpamError::DelegateSpawn {
            path: path.to_path_buf(),
            source,
        }),
    }
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
