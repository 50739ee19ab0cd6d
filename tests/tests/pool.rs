//! The warm veth pool (TCX): ADD takes a pair with the programs attached
//! instead of attaching, counts exactly from the first packet, discards
//! stale entries, falls back to attaching when the pool has nothing, and
//! several ADDs never share an entry. Each node's pool is drained at the
//! end, and nothing else may be left.

use std::{collections::HashSet, fs};

use podmeter_ebpf::pool;
use podmeter_tests::{leftovers::Leftovers, NetNs, Node, Pod};

/// ADD `name` with the plugin's phase log; returns the pod and that log.
fn add_logged(node: &Node, name: &str, conf: &serde_json::Value) -> (Pod, String) {
    let ns = NetNs::new("pmt-pod");
    let container_id = podmeter_tests::unique(name);
    let mut env = Node::cni_vars("ADD", &container_id, Some(&ns), "eth0", "");
    env.push(("PODMETER_LOG", "warn,podmeter::timing=debug".into()));
    env.push(("NO_COLOR", "1".into()));
    let out = node.cni_env(&env, conf.to_string().as_bytes());
    let log = out.stderr.clone();
    let result = out.ok().json;
    let pod = Pod {
        ns,
        container_id,
        ifname: "eth0".into(),
        result,
    };
    (pod, log)
}

fn attached(log: &str) -> bool {
    log.contains("phase=\"attach\"")
}

/// The pool's entries, by host ifindex.
fn entries(node: &Node) -> HashSet<u32> {
    fs::read_dir(node.layout().pool_dir())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix("_ingress")?.parse().ok()
        })
        .collect()
}

/// Drains the pool, then asserts that nothing is left of `pods` (DELed).
fn assert_clean(node: &Node, pods: &[&NetNs]) {
    node.drain_pool();
    let left = Leftovers::read(&node.site(pods));
    assert!(
        left.links.is_empty() && left.pins.is_empty() && left.registry == 0 && left.counters == 0,
        "left: {left}"
    );
}

#[test]
fn add_takes_a_pooled_pair_and_counts_from_the_first_packet() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let conf = node.conf("1.1.0");
    node.fill_pool(2);
    let pooled = entries(&node);
    assert_eq!(pooled.len(), 2);

    let (a, log_a) = add_logged(&node, "a", &conf);
    let (b, log_b) = add_logged(&node, "b", &conf);
    for log in [&log_a, &log_b] {
        assert!(!attached(log), "a pooled ADD attached:\n{log}");
        assert!(log.contains("pool: claim"), "{log}");
    }
    // Both took an entry: their host ends are the pool's pairs, renamed,
    // with the filler's links.
    let taken: HashSet<u32> = [&a, &b].iter().map(|p| node.registered(p).0).collect();
    assert_eq!(taken, pooled);
    assert!(entries(&node).is_empty());
    for &i in &taken {
        for hook in ["ingress", "egress"] {
            assert!(node.layout().link(i, hook).exists(), "{i}_{hook}");
        }
    }

    // Counting: the first packets (ND, ARP, the pings) are all counted.
    a.ns.ping(&b.ips()[0], 5, 200);
    b.ns.ping(&a.ips()[0], 3, 1000);
    for pod in [&a, &b] {
        let counters = node.assert_counters_match_kernel(&pod.host_ifname());
        assert!(counters.receive.packets >= 3, "{counters:?}");
    }
    node.check(&a, &conf).ok();

    // The pool is empty now: the next ADD attaches itself.
    let (c, log_c) = add_logged(&node, "c", &conf);
    assert!(attached(&log_c), "{log_c}");
    node.assert_counters_match_kernel(&c.host_ifname());

    // DEL is as without a pool: nothing named after the container is left,
    // and an ADD of the same container succeeds again (from a new entry).
    node.del(&a, &conf).ok();
    assert!(!node.ns.links().contains(&a.host_ifname()));
    node.fill_pool(1);
    let again = node
        .cni("ADD", &conf, &a.container_id, Some(&a.ns), "eth0", "")
        .ok();
    assert_eq!(again.json["interfaces"][1]["name"], a.host_ifname());
    for pod in [&a, &b, &c] {
        node.del(pod, &conf).ok();
    }
    assert_clean(&node, &[&a.ns, &b.ns, &c.ns]);
}

#[test]
fn stale_entries_are_discarded_and_add_still_works() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let conf = node.conf("1.1.0");
    node.fill_pool(2);
    let layout = node.layout();
    let mut stale = entries(&node).into_iter();
    let (gone, moved) = (stale.next().unwrap(), stale.next().unwrap());
    // What a manual delete leaves: pins whose veth is gone (defunct links).
    let by_index = |i: u32| {
        let out = node.ns.exec(&["ip", "-j", "link", "show"]);
        let links: serde_json::Value = serde_json::from_str(&out).unwrap();
        links
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["ifindex"] == i)
            .map(|l| l["ifname"].as_str().unwrap().to_owned())
            .unwrap()
    };
    assert!(pool::is_pool_name(&by_index(gone)));
    node.ns.exec(&["ip", "link", "del", &by_index(gone)]);
    // What an ifindex reused by another link looks like: an entry's pins
    // under the index of a link that is not theirs (the loopback's, 1).
    for hook in ["egress", "ingress"] {
        fs::rename(layout.pool_link(moved, hook), layout.pool_link(1, hook)).unwrap();
    }

    let (a, log) = add_logged(&node, "a", &conf);
    assert!(attached(&log), "stale entries were used:\n{log}");
    assert!(log.contains("discarding a stale entry"), "{log}");
    node.assert_counters_match_kernel(&a.host_ifname());
    assert!(entries(&node).is_empty(), "stale entries left in the pool");
    assert!(node.ns.links().contains(&"lo".to_owned()));

    // The filler's sweep removes the veth whose pins went.
    let filled = node.fill_pool(1);
    assert_eq!((filled.entries, filled.created), (1, 1), "{filled:?}");
    assert_eq!(
        node.ns
            .links()
            .iter()
            .filter(|n| pool::is_pool_name(n))
            .count(),
        1
    );
    node.del(&a, &conf).ok();
    assert_clean(&node, &[&a.ns]);
}

#[test]
fn clsact_mode_leaves_the_pool_alone() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let mut conf = node.conf("1.1.0");
    conf["tcAttachMode"] = "clsact".into();
    node.fill_pool(1);
    let (a, log) = add_logged(&node, "a", &conf);
    assert!(attached(&log) && !log.contains("pool: claim"), "{log}");
    assert_eq!(entries(&node).len(), 1);
    node.del(&a, &conf).ok();
    assert_clean(&node, &[&a.ns]);
}

#[test]
fn parallel_adds_beyond_the_pool_share_no_entry() {
    podmeter_testkit::needs_root!();
    const PODS: usize = 24;
    let node = Node::new();
    let conf = node.conf("1.1.0");
    node.fill_pool(6);
    let pooled = entries(&node);
    let pods: Vec<NetNs> = (0..PODS).map(|_| NetNs::new("pmt-pod")).collect();
    let all = |command: &str| -> Vec<_> {
        std::thread::scope(|s| {
            let handles: Vec<_> = pods
                .iter()
                .enumerate()
                .map(|(i, ns)| {
                    let (node, conf) = (&node, &conf);
                    s.spawn(move || {
                        node.cni(command, conf, &format!("pool-{i}"), Some(ns), "eth0", "")
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };
    for out in all("ADD") {
        out.ok();
    }
    let registered = node.maps().pods().unwrap();
    let ifindexes: HashSet<u32> = registered.iter().map(|(i, _)| *i).collect();
    assert_eq!(ifindexes.len(), PODS);
    assert!(pooled.is_subset(&ifindexes), "every entry went to a pod");
    assert!(entries(&node).is_empty());
    assert_eq!(node.link_pins().len(), 2 * PODS);
    for (_, pod) in &registered {
        node.assert_counters_match_kernel(&pod.host_ifname);
    }
    for out in all("DEL") {
        out.ok();
    }
    let refs: Vec<&NetNs> = pods.iter().collect();
    assert_clean(&node, &refs);
}
