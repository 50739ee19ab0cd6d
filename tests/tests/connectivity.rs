//! Two pods on one node: distinct addresses, reachability over IPv4 and
//! IPv6, and counters that equal the kernel's own veth counters exactly.

use podmeter_tests::{
    node::{GATEWAY_V4, GATEWAY_V6},
    Node, TwoPods,
};

#[test]
fn two_pods_reach_each_other_and_counters_equal_the_kernels() {
    podmeter_testkit::needs_root!();
    let TwoPods { node, a, b, .. } = TwoPods::new();

    // The bridge keeps its MAC as ports join: pods' gateway entries stay valid.
    assert_eq!(
        a.result["interfaces"][0]["mac"],
        b.result["interfaces"][0]["mac"]
    );
    let (ips_a, ips_b) = (a.ips(), b.ips());
    assert_eq!(ips_a.len(), 2, "dual stack: {:?}", a.result);
    assert_ne!(ips_a, ips_b, "distinct addresses");

    for (from, to) in [(&a, &ips_b), (&b, &ips_a)] {
        for ip in to.iter() {
            from.ns.ping(ip, 1, 56);
        }
        from.ns.ping(GATEWAY_V4, 1, 56);
        from.ns.ping(GATEWAY_V6, 1, 56);
    }
    let before = node
        .maps()
        .pod_counters(node.registered(&a).0)
        .unwrap()
        .unwrap();
    a.ns.ping(&ips_b[0], 50, 1000);
    b.ns.ping(&ips_a[0], 50, 1000);
    let after = node
        .maps()
        .pod_counters(node.registered(&a).0)
        .unwrap()
        .unwrap();
    // At least 100 echo packets of 1000 bytes each way went through a: a
    // counter that did not move would make the equality below vacuous.
    assert!(after.transmit.packets - before.transmit.packets >= 100);
    assert!(after.receive.bytes - before.receive.bytes >= 100 * 1000);

    node.assert_counters_match_kernel(&a.host_ifname());
    node.assert_counters_match_kernel(&b.host_ifname());
}

#[test]
fn identity_comes_from_cni_args() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let pod = node.add_pod("web-0", &node.conf("1.1.0"));
    let (_, identity) = node.registered(&pod);
    assert_eq!(identity.namespace, "test");
    assert_eq!(identity.pod, "web-0");
    assert_eq!(identity.uid, "uid-web-0");
    let ips: Vec<String> = identity.ips.iter().map(|(a, _)| a.to_string()).collect();
    assert_eq!(ips, pod.ips());
}
