//! Stand-in for the node agent's conflist rendering, until the agent crate
//! (`agent/src/conflist.rs`: `render(ranges, options)`) can be used here:
//! the same signature, names and output, so the tests switch to the agent's
//! function by changing one `use` line.
//!
//! Also the fixture a node agent renders from: a Kubernetes Node object
//! with its `spec.podCIDRs`.

use std::path::PathBuf;

use ipnet::IpNet;
use serde_json::{json, Value};

/// The network's name (leases live under `<dataDir>/<name>/`).
pub const NETWORK_NAME: &str = "podmeter";

/// containerd 1.6 and 1.7 (libcni 1.1.x) refuse results newer than 1.0.0.
pub const CNI_VERSION: &str = "1.0.0";

/// What the conflist says besides the ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub pin_path: PathBuf,
    pub ipam_data_dir: PathBuf,
    /// Chain `portmap` (hostPort) after podmeter.
    pub portmap: bool,
}

/// The conflist for a node with `ranges` (one per family, in the node's
/// order), pretty-printed with a trailing newline.
pub fn render(ranges: &[IpNet], options: &Options) -> String {
    let range_sets: Vec<Value> = ranges
        .iter()
        .map(|r| json!([{ "subnet": r.to_string() }]))
        .collect();
    let mut plugins = vec![json!({
        "type": "podmeter",
        "bridge": "pm0",
        "isGateway": true,
        "isDefaultGateway": true,
        "ipMasq": true,
        "pinPath": options.pin_path,
        "ipam": {
            "type": "builtin",
            "dataDir": options.ipam_data_dir,
            "ranges": range_sets,
        },
    })];
    if options.portmap {
        plugins.push(json!({
            "type": "portmap",
            "capabilities": { "portMappings": true },
        }));
    }
    let conflist = json!({
        "cniVersion": CNI_VERSION,
        "name": NETWORK_NAME,
        "plugins": plugins,
    });
    let mut text = serde_json::to_string_pretty(&conflist).expect("a JSON value always renders");
    text.push('\n');
    text
}

/// A dual-stack Node as the API server returns it to the agent.
pub fn node_fixture() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "pmtest-node"},
        "spec": {
            "podCIDR": "10.244.1.0/24",
            "podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"],
        },
    })
}

/// A Node's `spec.podCIDRs`, in its order.
pub fn pod_cidrs(node: &Value) -> Vec<IpNet> {
    node["spec"]["podCIDRs"]
        .as_array()
        .expect("spec.podCIDRs")
        .iter()
        .map(|c| c.as_str().unwrap().parse().unwrap())
        .collect()
}
