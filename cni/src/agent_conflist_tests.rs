//! The conflist the node agent renders, read as the runtime hands it to the
//! plugin and through the plugin's own parse and checks: the two ends of
//! the shared schema (`podmeter-conflist`) tested against each other.

use std::path::PathBuf;

use ipnet::IpNet;
use podmeter_conflist::{
    render, Options, CNI_VERSION, DEFAULT_BRIDGE, DEFAULT_DATA_DIR, NETWORK_NAME,
};
use podmeter_ebpf::pins::DEFAULT_PIN_PATH;
use rscni_plugin::types::NetConf;
use serde_json::Value;

use crate::{
    config::{FromNetconf, PluginConfig},
    ipam::Ipam,
};

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

/// Each plugin of the rendered list as libcni passes it on stdin: the
/// list's `name` and `cniVersion` injected into the plugin's object.
fn as_runtime_passes(ranges: &[IpNet], portmap: bool) -> Vec<(String, NetConf)> {
    let options = Options {
        pin_path: DEFAULT_PIN_PATH.into(),
        ipam_data_dir: DEFAULT_DATA_DIR.into(),
        cluster_cidrs: nets(&["10.244.0.0/16"]),
        portmap,
    };
    let list: Value = serde_json::from_str(&render(ranges, &options)).unwrap();
    assert_eq!(list["name"], NETWORK_NAME);
    assert_eq!(list["cniVersion"], CNI_VERSION);
    list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|plugin| {
            let mut plugin = plugin.clone();
            plugin["name"] = list["name"].clone();
            plugin["cniVersion"] = list["cniVersion"].clone();
            let kind = plugin["type"].as_str().unwrap().to_owned();
            (kind, serde_json::from_value(plugin).unwrap())
        })
        .collect()
}

/// The plugin's reading of the podmeter entry, and the subnets its IPAM
/// leases from, set by set.
fn parsed(ranges: &[IpNet], portmap: bool) -> (PluginConfig, Vec<Vec<IpNet>>, Vec<String>) {
    let plugins = as_runtime_passes(ranges, portmap);
    let (kind, conf) = &plugins[0];
    assert_eq!(kind, "podmeter");
    let config = PluginConfig::from_netconf(conf).unwrap();
    assert!(PluginConfig::ip_masq(conf));
    let Ipam::Builtin(ipam) = Ipam::from_netconf(conf).unwrap() else {
        panic!("the agent's conflist uses the built-in IPAM");
    };
    assert_eq!(ipam.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    let subnets = ipam
        .range_sets
        .iter()
        .map(|set| set.iter().map(|r| r.subnet).collect())
        .collect();
    let kinds = plugins.into_iter().map(|(kind, _)| kind).collect();
    (config, subnets, kinds)
}

fn assert_node_defaults(config: &PluginConfig) {
    assert_eq!(config.bridge, DEFAULT_BRIDGE);
    assert_eq!(config.pin_path, PathBuf::from(DEFAULT_PIN_PATH));
    assert!(config.is_gateway && config.is_default_gateway);
    assert!(config.hairpin_mode && config.bridge_netfilter);
    assert_eq!(config.cluster_cidrs, nets(&["10.244.0.0/16"]));
    assert_eq!(config.mtu, None);
}

#[test]
fn dual_stack_with_and_without_portmap() {
    let ranges = nets(&["10.244.1.0/24", "fd00:10:244:1::/64"]);
    for (portmap, kinds) in [
        (true, vec!["podmeter", "portmap"]),
        (false, vec!["podmeter"]),
    ] {
        let (config, subnets, got_kinds) = parsed(&ranges, portmap);
        assert_node_defaults(&config);
        assert_eq!(subnets, vec![vec![ranges[0]], vec![ranges[1]]]);
        assert_eq!(got_kinds, kinds);
    }
}

#[test]
fn single_stack_with_and_without_portmap() {
    for family in [&["10.244.1.0/24"], &["fd00:10:244:1::/64"]] {
        let ranges = nets(family);
        for (portmap, kinds) in [
            (true, vec!["podmeter", "portmap"]),
            (false, vec!["podmeter"]),
        ] {
            let (config, subnets, got_kinds) = parsed(&ranges, portmap);
            assert_node_defaults(&config);
            assert_eq!(subnets, vec![ranges.clone()]);
            assert_eq!(got_kinds, kinds);
        }
    }
}
