//! Finding a plugin on `CNI_PATH` and running it once.

use std::{
    ffi::OsString,
    fs,
    io::{ErrorKind, Write},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use rscni_plugin::{error::Error as CniError, types::ErrorResult};

use crate::ipam::IpamError;

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

/// Runs the plugin at `path` with `env` overriding our own environment, feeds it
/// `stdin` and returns its stdout on success. Its stderr is copied to ours: the
/// runtime logs our stderr, and the delegate's diagnostics belong there too.
pub fn run(
    plugin: &str,
    path: &Path,
    env: &[(&str, Option<OsString>)],
    stdin: &[u8],
) -> Result<Vec<u8>, IpamError> {
    let spawn_err = |source| IpamError::DelegateSpawn {
        path: path.to_path_buf(),
        source,
    };
    let mut child = spawn(path, env).map_err(spawn_err)?;
    let mut input = child.stdin.take().expect("stdin is piped");
    // Written from another thread while this one drains stdout and stderr: a plugin
    // that answers before reading all its input must not deadlock us on a full pipe.
    let output = thread::scope(|scope| {
        scope.spawn(move || {
            // A plugin may exit without reading stdin; its exit status tells the story.
            if let Err(e) = input.write_all(stdin) {
                tracing::debug!(plugin, %e, "writing the delegate's stdin failed");
            }
        });
        child.wait_with_output()
    })
    .map_err(spawn_err)?;

    if !output.stderr.is_empty() {
        eprint!("{}", String::from_utf8_lossy(&output.stderr));
    }
    if output.status.success() {
        return Ok(output.stdout);
    }
    match serde_json::from_slice::<ErrorResult>(&output.stdout) {
        Ok(result) => Err(IpamError::DelegateFailed {
            plugin: plugin.to_string(),
            error: CniError::from(result),
        }),
        Err(_) => Err(IpamError::DelegateCrashed {
            plugin: plugin.to_string(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        }),
    }
}

/// Spawns with piped stdio, retrying "text file busy" as libcni does: a plugin binary
/// being installed, or a file another thread of ours still has open for writing when
/// it forks, makes exec fail with ETXTBSY for a moment.
fn spawn(path: &Path, env: &[(&str, Option<OsString>)]) -> std::io::Result<Child> {
    let mut command = Command::new(path);
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
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
