//! 50 ADDs at once on one node, as a kubelet starting a deployment does:
//! the first loads the programs, all get distinct addresses, none fails.

use std::collections::HashSet;

use podmeter_tests::{NetNs, Node};

const PODS: usize = 50;

#[test]
fn fifty_parallel_adds_get_fifty_distinct_addresses() {
    let node = Node::new();
    let conf = node.conf("1.1.0");
    let pods: Vec<NetNs> = (0..PODS).map(|_| NetNs::new("pmt-pod")).collect();

    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let (node, conf) = (&node, &conf);
                s.spawn(move || {
                    let args = format!("K8S_POD_NAMESPACE=par;K8S_POD_NAME=p{i}");
                    node.cni("ADD", conf, &format!("par-{i}"), Some(ns), "eth0", &args)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let mut addresses = HashSet::new();
    for out in results {
        let out = out.ok();
        for ip in out.json["ips"].as_array().unwrap() {
            assert!(addresses.insert(ip["address"].as_str().unwrap().to_owned()));
        }
    }
    assert_eq!(
        addresses.len(),
        2 * PODS,
        "one v4 and one v6 address per pod"
    );
    assert_eq!(node.maps().pods().unwrap().len(), PODS);
    assert_eq!(node.link_pins().len(), 2 * PODS);
    assert_eq!(node.leases().len(), 2 * PODS);
}
