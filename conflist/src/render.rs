//! The node's conflist, rendered from its pod ranges by the node agent.
//! Pure: the same inputs give the same bytes, so the agent rewrites the file
//! only when they change.

use std::path::PathBuf;

use ipnet::IpNet;
use serde::Serialize;

use crate::{BuiltinIpam, IpRange, PluginConfig, BUILTIN_TYPE};

/// The network's name: IPAM leases live under `<dataDir>/<name>/`, so it
/// must not change between versions of the agent.
pub const NETWORK_NAME: &str = "podmeter";

/// containerd 1.6 and 1.7 (libcni 1.1.x, kind ≤ v0.26) refuse results newer
/// than 1.0.0, so a 1.1.0 conflist fails every pod there. The plugin speaks
/// 0.3.0–1.1.0; 1.0.0 is the newest every supported runtime accepts.
pub const CNI_VERSION: &str = "1.0.0";

/// What the conflist says besides the ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub pin_path: PathBuf,
    pub ipam_data_dir: PathBuf,
    /// The cluster's pod ranges (`clusterCIDRs`: not masqueraded to).
    pub cluster_cidrs: Vec<IpNet>,
    /// Chain `portmap` (hostPort) after podmeter. Only when the runtime's
    /// bin dir has it: libcni fails every ADD whose chain names a missing
    /// plugin, which would take the whole node down for want of hostPorts.
    pub portmap: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Conflist {
    cni_version: &'static str,
    name: &'static str,
    plugins: Vec<Plugin>,
}

/// A plugin of the chain, with the CNI spec's keys beside its own.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Plugin {
    Podmeter {
        #[serde(rename = "ipMasq")]
        ip_masq: bool,
        // Boxed: far larger than portmap's entry.
        #[serde(flatten)]
        config: Box<PluginConfig>,
        ipam: Ipam,
    },
    Portmap {
        capabilities: PortmapCapabilities,
    },
}

#[derive(Serialize)]
struct Ipam {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    builtin: BuiltinIpam,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PortmapCapabilities {
    port_mappings: bool,
}

/// The conflist for a node with `ranges` (one per family, in the node's
/// order), pretty-printed with a trailing newline. `ranges` must not be
/// empty: a node without pod ranges gets no conflist.
pub fn render(ranges: &[IpNet], options: &Options) -> String {
    debug_assert!(!ranges.is_empty());
    let config = PluginConfig {
        // The plugin adds the pod's default route per family through the
        // bridge's gateway address: no ipam routes needed.
        is_gateway: true,
        is_default_gateway: true,
        // kube-proxy's Services: a pod reaching itself through its own
        // Service is DNATed back to the port it came from (hairpin), and a
        // same-node backend's reply must pass netfilter to be un-NATed even
        // where net.bridge.bridge-nf-call-* is 0 (the bridge's own option).
        hairpin_mode: true,
        bridge_netfilter: true,
        pin_path: options.pin_path.clone(),
        // Left out when empty: the plugin's default, and the same bytes as
        // agents before the flag wrote.
        cluster_cidrs: options.cluster_cidrs.clone(),
        ..PluginConfig::default()
    };
    let ipam = Ipam {
        kind: BUILTIN_TYPE,
        builtin: BuiltinIpam {
            // One range set per family: the IPAM leases one address from each.
            ranges: Some(ranges.iter().map(|r| vec![IpRange::subnet(*r)]).collect()),
            data_dir: Some(options.ipam_data_dir.clone()),
            ..BuiltinIpam::default()
        },
    };
    let mut plugins = vec![Plugin::Podmeter {
        // Traffic leaving the pod ranges takes the node's address: nothing
        // outside the cluster routes them back. Other nodes' pods do (the
        // agents' routes), hence `clusterCIDRs`.
        ip_masq: true,
        config: Box::new(config),
        ipam,
    }];
    if options.portmap {
        plugins.push(Plugin::Portmap {
            capabilities: PortmapCapabilities {
                port_mappings: true,
            },
        });
    }
    let conflist = Conflist {
        cni_version: CNI_VERSION,
        name: NETWORK_NAME,
        plugins,
    };
    // Through a `Value`, whose keys are sorted: the bytes agents wrote
    // before this type existed, so upgrading rewrites no conflist.
    let value = serde_json::to_value(&conflist).expect("the conflist's types always serialize");
    let mut text = serde_json::to_string_pretty(&value).expect("a JSON value always renders");
    text.push('\n');
    text
}
#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn options(portmap: bool) -> Options {
        Options {
            pin_path: "/sys/fs/bpf/podmeter".into(),
            ipam_data_dir: "/var/lib/podmeter/networks".into(),
            cluster_cidrs: Vec::new(),
            portmap,
        }
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn dual_stack_with_portmap() {
        let text = render(
            &nets(&["10.244.1.0/24", "fd00:10:244:1::/64"]),
            &options(true),
        );
        let got: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            got,
            json!({
                "cniVersion": "1.0.0",
                "name": "podmeter",
                "plugins": [
                    {
                        "type": "podmeter",
                        "bridge": "pm0",
                        "isGateway": true,
                        "isDefaultGateway": true,
                        "ipMasq": true,
                        "hairpinMode": true,
                        "bridgeNetfilter": true,
                        "pinPath": "/sys/fs/bpf/podmeter",
                        "ipam": {
                            "type": "builtin",
                            "dataDir": "/var/lib/podmeter/networks",
                            "ranges": [
                                [{"subnet": "10.244.1.0/24"}],
                                [{"subnet": "fd00:10:244:1::/64"}]
                            ]
                        }
                    },
                    {"type": "portmap", "capabilities": {"portMappings": true}}
                ]
            })
        );
        assert!(text.ends_with("}\n"));
    }

    #[test]
    fn single_stack_keeps_one_range_set_and_portmap_only_if_present() {
        let got: Value =
            serde_json::from_str(&render(&nets(&["fd00:1::/64"]), &options(false))).unwrap();
        assert_eq!(
            got["plugins"][0]["ipam"]["ranges"],
            json!([[{"subnet": "fd00:1::/64"}]])
        );
        assert_eq!(got["plugins"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn the_nodes_order_is_kept() {
        let got: Value = serde_json::from_str(&render(
            &nets(&["fd00:1::/64", "10.1.0.0/24"]),
            &options(true),
        ))
        .unwrap();
        assert_eq!(
            got["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "fd00:1::/64"
        );
    }

    #[test]
    fn cluster_cidrs_go_to_the_podmeter_entry_in_order() {
        let mut o = options(false);
        o.cluster_cidrs = nets(&["10.244.0.0/16", "fd00:10:244::/56"]);
        let got: Value = serde_json::from_str(&render(&nets(&["10.244.1.0/24"]), &o)).unwrap();
        assert_eq!(
            got["plugins"][0]["clusterCIDRs"],
            json!(["10.244.0.0/16", "fd00:10:244::/56"])
        );
        let without: Value =
            serde_json::from_str(&render(&nets(&["10.244.1.0/24"]), &options(false))).unwrap();
        assert!(without["plugins"][0].get("clusterCIDRs").is_none());
    }

    #[test]
    fn same_inputs_same_bytes() {
        let r = nets(&["10.1.0.0/24"]);
        assert_eq!(render(&r, &options(true)), render(&r, &options(true)));
        assert_ne!(render(&r, &options(true)), render(&r, &options(false)));
    }
}
