//! 50 ADDs at once on one node, as a kubelet starting a deployment does:
//! the first loads the programs, all get distinct addresses, none fails.
//! Then 50 DELs at once: none fails, nothing is left.

use std::collections::HashSet;

use podmeter_tests::{NetNs, Node};

const PODS: usize = 50;

#[test]
fn fifty_parallel_adds_get_fifty_distinct_addresses() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let conf = node.conf("1.1.0");
    let pods: Vec<NetNs> = (0..PODS).map(|_| NetNs::new("pmt-pod")).collect();

    let all = |command: &str| -> Vec<_> {
        std::thread::scope(|s| {
            let handles: Vec<_> = pods
                .iter()
                .enumerate()
                .map(|(i, ns)| {
                    let (node, conf) = (&node, &conf);
                    s.spawn(move || {
                        let args = format!("K8S_POD_NAMESPACE=par;K8S_POD_NAME=p{i}");
                        node.cni(command, conf, &format!("par-{i}"), Some(ns), "eth0", &args)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };
    let results = all("ADD");

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

    // Concurrent DELs walk and delete in the same shared maps.
    for out in all("DEL") {
        out.ok();
    }
    let maps = node.maps();
    assert!(maps.pods().unwrap().is_empty());
    assert!(maps.counters().unwrap().is_empty());
    assert!(maps.drops().unwrap().is_empty());
    assert!(node.link_pins().is_empty());
    assert!(node.leases().is_empty());
    assert_eq!(node.ns.links(), ["lo", "pm0"]);
}
