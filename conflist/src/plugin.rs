//! podmeter's own keys in a network configuration (beside the CNI spec's
//! `type`, `name`, `ipMasq`, `ipam`).

use std::path::PathBuf;

use ipnet::IpNet;
use podmeter_ebpf::{pins::DEFAULT_PIN_PATH, policy::PodPolicy, AttachMode};
use serde::{Deserialize, Serialize};

/// The bridge podmeter's pods hang off unless `bridge` says otherwise.
pub const DEFAULT_BRIDGE: &str = "pm0";

/// The plugin-specific part of the config; the defaults follow the
/// reference `bridge` plugin where it has the same key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginConfig {
    #[serde(default = "default_bridge")]
    pub bridge: String,
    /// Give the bridge the range's gateway address(es).
    #[serde(default)]
    pub is_gateway: bool,
    /// Route the pod's default route through the bridge; implies `isGateway`.
    #[serde(default)]
    pub is_default_gateway: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub hairpin_mode: bool,
    /// Bridged traffic passes the node's iptables/nftables hooks (the
    /// bridge's own `nf_call_iptables`/`nf_call_ip6tables`), whatever the
    /// node's `net.bridge.bridge-nf-call-*` sysctls say: kube-proxy's DNAT
    /// must see a same-node Service reply to undo it. Needs the kernel's
    /// `br_netfilter`.
    #[serde(default)]
    pub bridge_netfilter: bool,
    #[serde(default = "default_pin_path")]
    pub pin_path: PathBuf,
    /// `auto` (TCX on kernels ≥ 6.6, else clsact), `tcx` or `clsact`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub tc_attach_mode: AttachMode,
    /// The whole cluster's pod ranges: with `ipMasq`, traffic to them keeps
    /// the pod's address (other nodes route it back), as traffic to the
    /// pod's own subnet does.
    #[serde(
        default,
        rename = "clusterCIDRs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cluster_cidrs: Vec<IpNet>,
    /// Rules and defaults for every pod of this network, applied at ADD
    /// before the pod's links come up (for runtimes without Kubernetes;
    /// `podmeterctl policy` edits them per pod afterwards).
    #[serde(default, skip_serializing_if = "is_default")]
    pub policy: PodPolicy,
}

impl Default for PluginConfig {
    /// Every key left out.
    fn default() -> Self {
        Self {
            bridge: default_bridge(),
            is_gateway: false,
            is_default_gateway: false,
            mtu: None,
            hairpin_mode: false,
            bridge_netfilter: false,
            pin_path: default_pin_path(),
            tc_attach_mode: AttachMode::default(),
            cluster_cidrs: Vec::new(),
            policy: PodPolicy::default(),
        }
    }
}

fn default_bridge() -> String {
    DEFAULT_BRIDGE.to_owned()
}

fn default_pin_path() -> PathBuf {
    PathBuf::from(DEFAULT_PIN_PATH)
}

/// Left out when written: the same bytes as a config that never named it.
fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}
