//! IP address management: the built-in allocator and delegation to IPAM plugins.
//!
//! [`Ipam::from_netconf`] only parses, so the caller can reject a bad config before it
//! creates anything; the verbs then either run the built-in host-local-style allocator
//! or the plugin named by `ipam.type`, found on `CNI_PATH`.

pub mod builtin;
pub mod delegate;
pub mod error;

use std::path::{Path, PathBuf};

use rscni_plugin::types::{CNIResult, GcAttachment, NetConf};

pub use error::IpamError;

pub use podmeter_conflist::BUILTIN_TYPE;

/// What one invocation knows about the attachment, as the runtime passed it to us.
///
/// For GC and STATUS the runtime passes no attachment, so `container_id` and `ifname`
/// are empty strings there; nothing reads them for those verbs.
#[derive(Debug, Clone, Copy)]
pub struct IpamContext<'a> {
    /// `NetConf.name`, already validated (it names the lease directory).
    pub network: &'a str,
    pub container_id: &'a str,
    pub ifname: &'a str,
    pub netns: Option<&'a Path>,
    pub cni_args: Option<&'a str>,
    pub cni_path: &'a [PathBuf],
    /// The network config serialized again from the parsed `NetConf` (not the bytes we
    /// read: key order and formatting may differ): what a delegate reads on stdin.
    pub raw_config: &'a [u8],
}

/// Where addresses come from for this network.
#[derive(Debug, Clone)]
pub enum Ipam {
    Builtin(builtin::BuiltinConfig),
    Delegated(delegate::Delegate),
}

impl Ipam {
    /// Parses and validates `conf.ipam` without touching anything.
    ///
    /// `ipam.type == "builtin"` selects the built-in allocator; any other type is the
    /// file name of a plugin to delegate to.
    ///
    /// Refuses every config when podmeter runs as some podmeter's IPAM delegate
    /// (see [`delegate::DELEGATE_MARKER`]): podmeter is no IPAM plugin.
    pub fn from_netconf(conf: &NetConf) -> Result<Self, IpamError> {
        refuse_nesting(std::env::var_os(delegate::DELEGATE_MARKER).is_some())?;
        let ipam = conf.ipam.as_ref().ok_or(IpamError::MissingIpam)?;
        if ipam.r#type == BUILTIN_TYPE {
            builtin::BuiltinConfig::parse(&ipam.custom).map(Self::Builtin)
        } else {
            delegate::Delegate::parse(&ipam.r#type, &ipam.custom).map(Self::Delegated)
        }
    }

    /// Leases one address per range set (or runs the delegate's ADD). The leases
    /// are durable once the [`Syncing`] is waited for: before ADD answers.
    pub fn add(&self, ctx: &IpamContext) -> Result<(CNIResult, Syncing), IpamError> {
        match self {
            Self::Builtin(conf) => conf.add(ctx),
            Self::Delegated(delegate) => delegate.add(ctx).map(|r| (r, Syncing::done())),
        }
    }

    /// Releases the attachment's leases; Ok when it holds none.
    pub fn del(&self, ctx: &IpamContext) -> Result<(), IpamError> {
        match self {
            Self::Builtin(conf) => conf.del(ctx),
            Self::Delegated(delegate) => delegate.del(ctx),
        }
    }

    /// Fails unless the attachment still holds its lease(s).
    pub fn check(&self, ctx: &IpamContext) -> Result<(), IpamError> {
        match self {
            Self::Builtin(conf) => conf.check(ctx),
            Self::Delegated(delegate) => delegate.check(ctx),
        }
    }

    /// Drops every lease whose attachment is not in `valid`.
    pub fn gc(&self, ctx: &IpamContext, valid: &[GcAttachment]) -> Result<(), IpamError> {
        match self {
            Self::Builtin(conf) => conf.gc(ctx, valid),
            Self::Delegated(delegate) => delegate.gc(ctx, valid),
        }
    }

    /// Whether an ADD could succeed now: the data dir is usable, or the delegate says so.
    pub fn status(&self, ctx: &IpamContext) -> Result<(), IpamError> {
        match self {
            Self::Builtin(conf) => conf.status(ctx),
            Self::Delegated(delegate) => delegate.status(ctx),
        }
    }
}

/// The fsyncs that make an ADD's leases durable, running while the ADD wires the
/// pod. Dropped without [`wait`](Self::wait) (the ADD failed and gives its leases
/// back), they finish or not: nobody counts on them.
#[must_use = "the leases are durable only once waited for"]
pub struct Syncing(Option<std::thread::JoinHandle<Result<(), IpamError>>>);

impl Syncing {
    pub(crate) fn new(thread: std::thread::JoinHandle<Result<(), IpamError>>) -> Self {
        Self(Some(thread))
    }

    /// Nothing left to make durable (a delegate's own business).
    pub fn done() -> Self {
        Self(None)
    }

    /// Waits until the leases are durable, or their fsync failed.
    pub fn wait(self) -> Result<(), IpamError> {
        match self.0 {
            None => Ok(()),
            Some(thread) => thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
        }
    }
}

fn refuse_nesting(run_as_delegate: bool) -> Result<(), IpamError> {
    if run_as_delegate {
        return Err(IpamError::RunAsDelegate);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
