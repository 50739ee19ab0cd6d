//! The IPAM error type and its one mapping onto CNI error codes.

use std::{io, net::IpAddr, path::PathBuf, process::ExitStatus, time::Duration};

use rscni_plugin::error::Error as CniError;

/// Plugin-defined code (the spec reserves 0-99): every address of a range set is leased.
/// Not 11 ("try again later"): that code is for transient conditions such as lock
/// contention, and a full range only clears once pods go away.
pub const CODE_RANGE_EXHAUSTED: u32 = 100;
/// Plugin-defined code: ADD for an attachment that already holds a lease.
pub const CODE_ALREADY_ALLOCATED: u32 = 101;
/// Plugin-defined code: CHECK found an attachment without its lease.
pub const CODE_LEASE_MISSING: u32 = 102;

#[derive(thiserror::Error, Debug)]
pub enum IpamError {
    #[error("network config has no \"ipam\" section")]
    MissingIpam,

    #[error("invalid ipam type {0:?}: must name a plugin file (not empty, \".\", \"..\", and no '/' or '\\')")]
    InvalidType(String),

    #[error("invalid ipam config: {reason}")]
    InvalidConfig { reason: String },

    #[error("no IP addresses available in range set {range_set} ({ranges})")]
    RangeExhausted { range_set: usize, ranges: String },

    #[error(
        "{ip} has been allocated to {container_id}/{ifname}, duplicate allocation is not allowed"
    )]
    AlreadyAllocated {
        ip: IpAddr,
        container_id: String,
        ifname: String,
    },

    #[error("no address in range set {range_set} ({ranges}) is leased to {container_id}/{ifname}")]
    LeaseMissing {
        container_id: String,
        ifname: String,
        range_set: usize,
        ranges: String,
    },

    #[error("gave up after {waited:?} waiting for the lock {path}")]
    LockTimeout { path: PathBuf, waited: Duration },

    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("data dir {path} is not usable: {source}")]
    DataDirUnusable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "ipam type resolves to {path}, which is podmeter itself: podmeter is no IPAM plugin \
         (its own allocator is \"type\": \"builtin\")"
    )]
    DelegateIsSelf { path: PathBuf },

    #[error(
        "podmeter was started as another podmeter's IPAM plugin ({marker} is set): the \
         ipam type leads back to podmeter",
        marker = super::delegate::DELEGATE_MARKER
    )]
    RunAsDelegate,

    #[error(
        "ipam plugin {plugin} did not finish within {limit:?} (ipam.{key}) and was killed",
        key = super::delegate::TIMEOUT_KEY
    )]
    DelegateTimeout { plugin: String, limit: Duration },

    #[error("failed to find plugin {name:?} in path {paths:?}")]
    PluginNotFound { name: String, paths: Vec<PathBuf> },

    #[error("running ipam plugin {path}: {source}")]
    DelegateSpawn {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("ipam plugin {plugin} failed: {error}")]
    DelegateFailed { plugin: String, error: CniError },

    #[error("ipam plugin {plugin} {status} without an error result; stderr: {stderr}")]
    DelegateCrashed {
        plugin: String,
        status: ExitStatus,
        stderr: String,
    },

    #[error("ipam plugin {plugin} returned an unreadable result: {source}")]
    DelegateBadResult {
        plugin: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("network config is not a JSON object, cannot add the valid attachments: {source}")]
    RawConfig {
        #[source]
        source: serde_json::Error,
    },
}

impl IpamError {
    /// Builds an [`IpamError::Io`] from a failed call on `path`.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { op, path, source }
    }

    pub(crate) fn config(reason: impl Into<String>) -> Self {
        Self::InvalidConfig {
            reason: reason.into(),
        }
    }
}

impl From<IpamError> for CniError {
    fn from(err: IpamError) -> Self {
        let details = err.to_string();
        match err {
            IpamError::MissingIpam
            | IpamError::InvalidType(_)
            | IpamError::InvalidConfig { .. }
            | IpamError::DelegateIsSelf { .. }
            | IpamError::RunAsDelegate => Self::InvalidNetworkConfig(details),
            // 7 rather than 3 (NotExist): 3 tells the runtime the container is gone and
            // needs no cleanup, while a missing plugin is a config naming a binary that
            // is not installed.
            IpamError::PluginNotFound { .. } => Self::InvalidNetworkConfig(details),
            IpamError::RangeExhausted { .. } => {
                Self::Custom(CODE_RANGE_EXHAUSTED, "IP range exhausted".into(), details)
            }
            IpamError::AlreadyAllocated { .. } => Self::Custom(
                CODE_ALREADY_ALLOCATED,
                "address already allocated".into(),
                details,
            ),
            IpamError::LeaseMissing { .. } => {
                Self::Custom(CODE_LEASE_MISSING, "lease missing".into(), details)
            }
            // A plugin that did not answer in time has not failed; like a busy lock,
            // it is a condition that may clear, and retrying is what a runtime should
            // do. 5 (I/O) would say something of ours broke.
            IpamError::LockTimeout { .. } | IpamError::DelegateTimeout { .. } => {
                Self::TryAgainLater(details)
            }
            // STATUS is the only verb that reports this, and 50 is its "cannot ADD now".
            IpamError::DataDirUnusable { .. } => Self::PluginNotAvailable(details),
            // The delegate's own code is what the runtime must see, not ours.
            IpamError::DelegateFailed { error, .. } => error,
            IpamError::DelegateBadResult { .. } | IpamError::RawConfig { .. } => {
                Self::FailedToDecode(details)
            }
            IpamError::Io { .. }
            | IpamError::DelegateSpawn { .. }
            | IpamError::DelegateCrashed { .. } => Self::IOFailure(details),
        }
    }
}
