//! The plugin's error type and its one mapping onto CNI error codes.

use rscni_plugin::error::Error as CniError;

use crate::{ipam::IpamError, net::NetError};

/// Plugin-defined codes (the spec reserves 0–99 for itself).
pub const CODE_EBPF: u32 = 110;
pub const CODE_CHECK_FAILED: u32 = 120;
pub const CODE_MASQ: u32 = 130;
/// A bug: the plugin panicked.
pub const CODE_INTERNAL: u32 = 199;

/// The error result for a panic, in the spec's error JSON and the version
/// every other error is answered in.
pub fn internal_error(version: &str, panic: &str) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": version,
        "code": CODE_INTERNAL,
        "msg": "internal error",
        "details": format!("podmeter panicked: {panic}"),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("invalid network config: {0}")]
    Config(String),

    /// `CNI_ARGS` carries what no runtime sends.
    #[error("CNI_ARGS: {0}")]
    Args(String),

    #[error(transparent)]
    Ipam(#[from] IpamError),

    #[error(transparent)]
    Net(#[from] NetError),

    #[error(transparent)]
    Ebpf(#[from] podmeter_ebpf::Error),

    /// CHECK found the attachment not as ADD left it.
    #[error("{0}")]
    Check(String),

    #[error("ipMasq: {0}")]
    Masq(String),

    /// STATUS: ADD cannot work on this node.
    #[error("{0}")]
    NotAvailable(String),

    /// The agent's file of the pod's kubernetes tier is unreadable: the
    /// pod is not wired rather than wired without its NetworkPolicy.
    #[error("reading the pod's NetworkPolicy tier under {dir}: {source}")]
    KubernetesTier {
        dir: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl From<PluginError> for CniError {
    fn from(e: PluginError) -> Self {
        let details = e.to_string();
        match e {
            PluginError::Config(_) => CniError::InvalidNetworkConfig(details),
            PluginError::Args(_) => CniError::InvalidEnvValue(details),
            PluginError::Ipam(e) => e.into(),
            PluginError::Net(NetError::NetNs { .. }) => CniError::InvalidNetNS(details),
            PluginError::Net(_) => CniError::IOFailure(details),
            PluginError::Ebpf(_) => CniError::Custom(CODE_EBPF, "eBPF failure".into(), details),
            PluginError::Check(_) => {
                CniError::Custom(CODE_CHECK_FAILED, "check failed".into(), details)
            }
            PluginError::Masq(_) => CniError::Custom(CODE_MASQ, "ipMasq failure".into(), details),
            PluginError::NotAvailable(_) => CniError::PluginNotAvailable(details),
            PluginError::KubernetesTier { .. } => CniError::IOFailure(details),
        }
    }
}
