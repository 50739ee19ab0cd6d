//! Delegated IPAM: running the plugin named by `ipam.type` the way the CNI spec's
//! "delegated plugins" section describes — same config on stdin, same environment
//! except for the verb, its result or error passed back.

mod exec;

use std::{borrow::Cow, ffi::OsString};

use rscni_plugin::types::{
    CNIResult, Cmd, GcAttachment, CNI_ARGS, CNI_COMMAND, CNI_CONTAINERID, CNI_IFNAME, CNI_NETNS,
    CNI_PATH,
};
use serde_json::Value;

use super::{IpamContext, IpamError};

pub use exec::find_plugin;

/// The key the runtime puts the GC keep-list under (spec 1.1.0).
const VALID_ATTACHMENTS: &str = "cni.dev/valid-attachments";

/// An IPAM plugin, looked up on `CNI_PATH` by name when a verb runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delegate {
    plugin: String,
}

impl Delegate {
    /// Accepts `plugin` if it can only name a file inside a `CNI_PATH` directory.
    pub fn new(plugin: &str) -> Result<Self, IpamError> {
        if plugin.is_empty() || plugin == "." || plugin == ".." || plugin.contains(['/', '\\']) {
            return Err(IpamError::InvalidType(plugin.to_string()));
        }
        Ok(Self {
            plugin: plugin.to_string(),
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
        exec::run(self.plugin(), &path, &environment(cmd, ctx), stdin)
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
mod tests;
