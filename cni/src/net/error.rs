//! The one error type of the networking layer.
//!
//! Every variant says which object (link, namespace, sysctl) and which operation failed, so the
//! CNI error built from it (`crate::error`) is actionable without a debugger.

use std::io;
use std::path::PathBuf;

/// A failure in `net`: namespaces, links, addresses, routes, sysctls.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The network namespace path could not be opened, is not a pod's network namespace, or
    /// could not be entered: CNI `InvalidNetNS` (code 8), the only variant with its own code.
    #[error("network namespace {path}: {source}")]
    NetNs { path: PathBuf, source: io::Error },

    /// A netlink request was refused by the kernel or the connection failed.
    #[error("{op} {link}: {source}")]
    Netlink {
        /// What we asked for, e.g. "add veth", "add address 10.22.0.1/24 to".
        op: String,
        /// The link (name, or index when no name is known) the request was about.
        link: String,
        source: rtnetlink::Error,
    },

    /// The netlink socket, the tokio runtime or the namespace thread could not be created.
    #[error("{what}: {source}")]
    Setup {
        what: &'static str,
        source: io::Error,
    },

    /// The kernel's answer to a request never came: the request was lost
    /// (a failed send), so nothing is known of its effect.
    #[error("{op} {link}: no answer from the kernel")]
    NoAnswer { op: &'static str, link: String },

    /// The bridge has all the ports a Linux bridge can have (`BR_MAX_PORTS`
    /// is 1,024 port numbers, 0 unused): the kernel refuses the next
    /// veth with EXFULL.
    #[error("bridge #{bridge} already has 1,023 ports, the most a Linux bridge holds: no more pods on it until some are deleted")]
    BridgeFull { bridge: u32 },

    /// A link we need (e.g. the pod's temporary veth end) does not exist.
    #[error("link {name} not found")]
    LinkNotFound { name: String },

    /// The configured bridge name is taken by a link of another kind; we never reuse or
    /// delete it, because it is not ours.
    #[error("link {name} exists but is a {kind}, not a bridge")]
    NotABridge { name: String, kind: String },

    /// An interface name the kernel would refuse (too long, `/`, whitespace, ...).
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },

    /// A route the kernel could not even be asked for (e.g. an IPv6 destination via an IPv4
    /// gateway).
    #[error("{route}: {reason}")]
    InvalidRoute { route: String, reason: String },

    /// Reading or writing a file under /proc/sys/net failed.
    #[error("sysctl {path}: {source}")]
    Sysctl { path: PathBuf, source: io::Error },
}

impl NetError {
    /// The positive errno behind this error, if the kernel gave one (e.g. 17 for EEXIST).
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetError::Netlink { source, .. } => netlink_errno(source),
            NetError::NetNs { source, .. }
            | NetError::Setup { source, .. }
            | NetError::Sysctl { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    pub(crate) fn netlink(
        op: impl Into<String>,
        link: impl Into<String>,
    ) -> impl FnOnce(rtnetlink::Error) -> NetError {
        let (op, link) = (op.into(), link.into());
        move |source| NetError::Netlink { op, link, source }
    }
}

/// The positive errno of a netlink NACK (the kernel sends it negated).
pub(crate) fn netlink_errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => Some(msg.raw_code().abs()).filter(|&c| c != 0),
        _ => None,
    }
}
