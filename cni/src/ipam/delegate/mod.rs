//! Delegated IPAM: running the plugin named by `ipam.type` the way the CNI spec's
//! "delegated plugins" section describes — same config on stdin, same environment
//! except for the verb, its result or error passed back.

mod exec;

use std::{borrow::Cow, collections::HashMap, ffi::OsString, path::Path, time::Duration};

use rscni_plugin::types::{
    CNIResult, Cmd, GcAttachment, CNI_ARGS, CNI_COMMAND, CNI_CONTAINERID, CNI_IFNAME, CNI_NETNS,
    CNI_PATH,
};
use serde_json::Value;

use super::{IpamContext, IpamError};

pub use exec::{find_plugin, DELEGATE_MARKER};

/// The key the runtime puts the GC keep-list under (spec 1.1.0).
const VALID_ATTACHMENTS: &str = "cni.dev/valid-attachments";

/// The `ipam` key (ours, not the delegate's) that bounds each run of the delegate.
pub const TIMEOUT_KEY: &str = "delegateTimeout";
/// Far beyond what an IPAM plugin needs (host-local: milliseconds; dhcp waits up to
/// about a minute for a server in the worst case), well inside the two minutes a
/// kubelet gives the runtime for a sandbox.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// An IPAM plugin, looked up on `CNI_PATH` by name when a verb runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delegate {
    plugin: String,
    /// The delegate is killed, with its process group, once it ran this long.
    timeout: Duration,
}

impl Delegate {
    /// Accepts `plugin` if it can only name a file inside a `CNI_PATH` directory and
    /// is not this very program by name; reads [`TIMEOUT_KEY`] from the rest of the
    /// `ipam` section.
    pub fn parse(plugin: &str, ipam: &HashMap<String, Value>) -> Result<Self, IpamError> {
        refuse_own_name(plugin, std::env::current_exe().ok().as_deref())?;
        let mut delegate = Self::new(plugin)?;
        if let Some(timeout) = parse_timeout(ipam)? {
            delegate.timeout = timeout;
        }
        Ok(delegate)
    }

    /// A delegate with the default time limit.
    pub fn new(plugin: &str) -> Result<Self, IpamError> {
        if plugin.is_empty() || plugin == "." || plugin == ".." || plugin.contains(['/', '\\']) {
            return Err(IpamError::InvalidType(plugin.to_string()));
        }
        Ok(Self {
            plugin: plugin.to_string(),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// Runs ADD. Results in the 0.3.x/0.4.0 layout parse too: their extra
    /// `ips[].version` is ignored.
    pub fn add(&self, ctx: &IpamContext) -> Result<CNIResult, IpamError> {
        let stdout = self.run(Cmd::Add, ctx, ctx.raw_config)?;
        serde_json::from_slice(&stdout).map_err(|source| IpamError::DelegateBadResult {
            plugin: self.plugin.clone(),
            source,
        })
    }

    pub fn del(&self, ctx: &IpamContext) -> Result<(), IpamError> {
        self.run(Cmd::Del, ctx, ctx.raw_config).map(drop)
    }

    pub fn check(&self, ctx: &IpamContext) -> Result<(), IpamError> {
        self.run(Cmd::Check, ctx, ctx.raw_config).map(drop)
    }

    /// Runs GC with `valid` in the config unless the runtime's config already has a
    /// keep-list, in which case the delegate sees exactly what we saw.
    pub fn gc(&self, ctx: &IpamContext, valid: &[GcAttachment]) -> Result<(), IpamError> {
        let stdin = with_valid_attachments(ctx.raw_config, valid)?;
        self.run(Cmd::Gc, ctx, &stdin).map(drop)
    }

    pub fn status(&self, ctx: &IpamContext) -> Result<(), IpamError> {
        self.run(Cmd::Status, ctx, ctx.raw_config).map(drop)
    }

    fn run(&self, cmd: Cmd, ctx: &IpamContext, stdin: &[u8]) -> Result<Vec<u8>, IpamError> {
        let path = find_plugin(self.plugin(), ctx.cni_path)?;
        if exec::is_running_executable(&path) {
            return Err(IpamError::DelegateIsSelf { path });
        }
        let env = environment(cmd, ctx);
        exec::run(self.plugin(), &path, &env, stdin, self.timeout)
    }
}

/// Refuses an `ipam.type` that is the running program's file name, before anything
/// is created; [`exec::is_running_executable`] catches other names for the same file
/// when the verb runs, and [`DELEGATE_MARKER`] any other way back to podmeter.
fn refuse_own_name(plugin: &str, exe: Option<&Path>) -> Result<(), IpamError> {
    match exe {
        Some(exe) if exe.file_name().is_some_and(|name| name == plugin) => {
            Err(IpamError::DelegateIsSelf {
                path: exe.to_path_buf(),
            })
        }
        _ => Ok(()),
    }
}

/// `delegateTimeout` as a duration such as `"30s"` or `"1m 30s"`; `null` is absent.
fn parse_timeout(ipam: &HashMap<String, Value>) -> Result<Option<Duration>, IpamError> {
    let invalid = |reason: String| IpamError::config(format!("ipam.{TIMEOUT_KEY}: {reason}"));
    let text = match ipam.get(TIMEOUT_KEY) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(text)) => text,
        Some(other) => {
            return Err(invalid(format!(
                "expected a duration such as \"30s\", got {other}"
            )))
        }
    };
    match humantime::parse_duration(text) {
        Ok(timeout) if !timeout.is_zero() => Ok(Some(timeout)),
        Ok(_) => Err(invalid("must be longer than zero".into())),
        Err(e) => Err(invalid(format!("{text:?}: {e}"))),
    }
}

/// The CNI variables to override in the inherited environment; `None` removes one.
/// GC and STATUS concern no attachment, so only the verb and the path survive; the
/// others are removed rather than left over from our own invocation.
fn environment(cmd: Cmd, ctx: &IpamContext) -> Vec<(&'static str, Option<OsString>)> {
    let per_attachment = matches!(cmd, Cmd::Add | Cmd::Del | Cmd::Check);
    let given = |value: Option<OsString>| value.filter(|v| per_attachment && !v.is_empty());
    let path = std::env::join_paths(ctx.cni_path).unwrap_or_default();
    vec![
        (CNI_COMMAND, Some(<&str>::from(cmd).into())),
        (CNI_CONTAINERID, given(Some(ctx.container_id.into()))),
        (CNI_NETNS, given(ctx.netns.map(Into::into))),
        (CNI_IFNAME, given(Some(ctx.ifname.into()))),
        (CNI_ARGS, given(ctx.cni_args.map(Into::into))),
        (CNI_PATH, Some(path)),
    ]
}

fn with_valid_attachments<'a>(
    raw_config: &'a [u8],
    valid: &[GcAttachment],
) -> Result<Cow<'a, [u8]>, IpamError> {
    let bad = |source| IpamError::RawConfig { source };
    let mut config: serde_json::Map<String, Value> =
        serde_json::from_slice(raw_config).map_err(bad)?;
    if config.contains_key(VALID_ATTACHMENTS) {
        return Ok(Cow::Borrowed(raw_config));
    }
    config.insert(
        VALID_ATTACHMENTS.to_string(),
        serde_json::to_value(valid).map_err(bad)?,
    );
    serde_json::to_vec(&config).map(Cow::Owned).map_err(bad)
}

#[cfg(test)]
mod limits_tests;
#[cfg(test)]
mod tests;
