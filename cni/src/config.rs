//! podmeter's own keys in the network configuration, parsed and validated
//! before anything on the node is touched.

use std::path::PathBuf;

use podmeter_ebpf::{pins::DEFAULT_PIN_PATH, AttachMode};
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
    #[serde(default = "default_pin_path")]
    pub pin_path: PathBuf,
    /// `auto` (TCX on kernels ≥ 6.6, else clsact), `tcx` or `clsact`.
    #[serde(default)]
    pub tc_attach_mode: TcAttachMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcAttachMode {
    #[default]
    Auto,
    Tcx,
    Clsact,
}

impl From<TcAttachMode> for AttachMode {
    fn from(m: TcAttachMode) -> Self {
        match m {
            TcAttachMode::Auto => AttachMode::Auto,
            TcAttachMode::Tcx => AttachMode::Tcx,
            TcAttachMode::Clsact => AttachMode::Clsact,
        }
    }
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
        assert!(!c.is_gateway && !c.hairpin_mode);
        assert_eq!(c.pin_path, PathBuf::from("/sys/fs/bpf/podmeter"));
        assert_eq!(c.tc_attach_mode, TcAttachMode::Auto);
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
}
