//! podmeter's own keys in the network configuration, parsed and validated
//! before anything on the node is touched.

use rscni_plugin::types::NetConf;

pub use podmeter_conflist::PluginConfig;

use crate::{error::PluginError, net::names::validate_ifname};

/// The smallest MTU IPv6 allows; a pod below it would lose IPv6 silently.
const MIN_MTU: u32 = 1280;

/// Reading the shared schema ([`PluginConfig`]) from a network config, with
/// the plugin's checks on the values.
pub trait FromNetconf: Sized {
    fn from_netconf(conf: &NetConf) -> Result<Self, PluginError>;

    /// Whether traffic leaving the pod's subnets is masqueraded.
    fn ip_masq(conf: &NetConf) -> bool {
        conf.ip_masq.unwrap_or(false)
    }
}

impl FromNetconf for PluginConfig {
    fn from_netconf(conf: &NetConf) -> Result<Self, PluginError> {
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
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use ipnet::IpNet;
    use podmeter_ebpf::AttachMode;

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
