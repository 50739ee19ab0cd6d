//! podmeter's own keys in the network configuration, parsed and validated
//! before anything on the node is touched.

use std::path::PathBuf;

use ipnet::IpNet;
use podmeter_ebpf::{pins::DEFAULT_PIN_PATH, policy::PodPolicy, AttachMode};
use rscni_plugin::types::NetConf;
use serde::Deserialize;

use crate::{error::PluginError, net::names::validate_ifname};

pub const DEFAULT_BRIDGE: &str = "pm0";

/// The plugin-specific part of the config; the defaults follow the
/// reference `bridge` plugin where it has the same key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
    #[serde(default)]
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
    #[serde(default)]
    pub tc_attach_mode: AttachMode,
    /// The whole cluster's pod ranges: with `ipMasq`, traffic to them keeps
    /// the pod's address (other nodes route it back), as traffic to the
    /// pod's own subnet does.
    #[serde(default, rename = "clusterCIDRs")]
    pub cluster_cidrs: Vec<IpNet>,
    /// Rules and defaults for every pod of this network, applied at ADD
    /// before the pod's links come up (for runtimes without Kubernetes;
    /// `podmeterctl policy` edits them per pod afterwards).
    #[serde(default)]
    pub policy: PodPolicy,
}

fn default_bridge() -> String {
    DEFAULT_BRIDGE.to_owned()
}

fn default_pin_path() -> PathBuf {
    PathBuf::from(DEFAULT_PIN_PATH)
}

/// The smallest MTU IPv6 allows; a pod below it would lose IPv6 silently.
const MIN_MTU: u32 = 1280;

impl PluginConfig {
    pub fn from_netconf(conf: &NetConf) -> Result<Self, PluginError> {
        let custom = serde_json::Value::Object(conf.custom.clone().into_iter().collect());
        // The path names the key at fault: `isGateway: invalid type: ...`.
        let mut cfg: PluginConfig = serde_path_to_error::deserialize(custom)
            .map_err(|e| PluginError::Config(format!("{}: {}", e.path(), e.inner())))?;
        cfg.is_gateway |= cfg.is_default_gateway;
        validate_ifname(&cfg.bridge)
            .map_err(|e| PluginError::Config(format!("bridge name {:?}: {e}", cfg.bridge)))?;
        if let Some(mtu) = cfg.mtu.filter(|m| !(MIN_MTU..=65535).contains(m)) {
            return Err(PluginError::Config(format!(
                "mtu {mtu} is outside {MIN_MTU}..=65535"
            )));
        }
        if !cfg.pin_path.is_absolute() {
            return Err(PluginError::Config(format!(
                "pinPath {:?} must be an absolute path",
                cfg.pin_path
            )));
        }
        // A range written with host bits set is most likely a typo, and nft
        // would quietly widen it to its network.
        if let Some((i, net)) = cfg
            .cluster_cidrs
            .iter()
            .enumerate()
            .find(|(_, n)| **n != n.trunc())
        {
            return Err(PluginError::Config(format!(
                "clusterCIDRs[{i}]: {net} has host bits set (the network is {})",
                net.trunc()
            )));
        }
        cfg.policy
            .validate()
            .map_err(|e| PluginError::Config(e.to_string()))?;
        Ok(cfg)
    }

    /// Whether traffic leaving the pod's subnets is masqueraded.
    pub fn ip_masq(conf: &NetConf) -> bool {
        conf.ip_masq.unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn netconf(json: &str) -> NetConf {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn defaults_follow_the_reference_bridge() {
        let c = PluginConfig::from_netconf(&netconf(r#"{"name":"n","type":"podmeter"}"#)).unwrap();
        assert_eq!(c.bridge, "pm0");
        assert!(!c.is_gateway && !c.hairpin_mode && !c.bridge_netfilter);
        assert_eq!(c.pin_path, PathBuf::from("/sys/fs/bpf/podmeter"));
        assert_eq!(c.tc_attach_mode, AttachMode::Auto);
    }

    #[test]
    fn default_gateway_implies_gateway() {
        let c = PluginConfig::from_netconf(&netconf(
            r#"{"name":"n","type":"podmeter","isDefaultGateway":true,"bridge":"br-x","mtu":1400}"#,
        ))
        .unwrap();
        assert!(c.is_gateway);
        assert_eq!(c.mtu, Some(1400));
    }

    #[test]
    fn bad_values_are_config_errors() {
        for bad in [
            r#"{"name":"n","type":"podmeter","bridge":"a-bridge-name-too-long"}"#,
            r#"{"name":"n","type":"podmeter","bridge":"a/b"}"#,
            r#"{"name":"n","type":"podmeter","mtu":100}"#,
            r#"{"name":"n","type":"podmeter","isGateway":"yes"}"#,
            r#"{"name":"n","type":"podmeter","pinPath":"relative"}"#,
            r#"{"name":"n","type":"podmeter","tcAttachMode":"xdp"}"#,
            r#"{"name":"n","type":"podmeter","clusterCIDRs":"10.244.0.0/16"}"#,
        ] {
            assert!(
                matches!(
                    PluginConfig::from_netconf(&netconf(bad)),
                    Err(PluginError::Config(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_type_error_names_the_key() {
        let err = PluginConfig::from_netconf(&netconf(
            r#"{"name":"n","type":"podmeter","isGateway":"yes"}"#,
        ))
        .unwrap_err();
        assert!(err.to_string().contains("isGateway: invalid type"), "{err}");
    }

    #[test]
    fn cluster_cidrs_are_networks_and_errors_name_the_entry() {
        let c = PluginConfig::from_netconf(&netconf(
            r#"{"name":"n","type":"podmeter","clusterCIDRs":["10.244.0.0/16","fd00:10:244::/56"]}"#,
        ))
        .unwrap();
        let want: Vec<IpNet> = vec![
            "10.244.0.0/16".parse().unwrap(),
            "fd00:10:244::/56".parse().unwrap(),
        ];
        assert_eq!(c.cluster_cidrs, want);
        let no_key = PluginConfig::from_netconf(&netconf(r#"{"name":"n","type":"podmeter"}"#));
        assert!(no_key.unwrap().cluster_cidrs.is_empty());

        for (bad, names) in [
            (r#"["10.244.0.0/16","10.244.0.0/33"]"#, "clusterCIDRs[1]"),
            (
                r#"["10.244.1.5/16"]"#,
                "clusterCIDRs[0]: 10.244.1.5/16 has host bits set",
            ),
        ] {
            let err = PluginConfig::from_netconf(&netconf(&format!(
                r#"{{"name":"n","type":"podmeter","clusterCIDRs":{bad}}}"#
            )))
            .unwrap_err();
            assert!(err.to_string().contains(names), "{bad}: {err}");
        }
    }
}
