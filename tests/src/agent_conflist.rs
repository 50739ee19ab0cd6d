//! The conflist the node agent writes for a Node fixture, rendered by the
//! agent's own code (`podmeter_agent::{ranges, conflist}`), so that the
//! runtime in a test runs exactly what a node would get.

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use serde_json::{json, Value};

pub use podmeter_agent::conflist::{render, Options, NETWORK_NAME};

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

/// A Node's pod ranges, read as the agent reads them.
pub fn pod_cidrs(node: &Value) -> Vec<IpNet> {
    let node: Node = serde_json::from_value(node.clone()).expect("a Node object");
    podmeter_agent::ranges::pod_ranges(&node).expect("valid pod ranges")
}
