//! Node objects written by an attacker with a node's kubelet credentials
//! (issue 18), in the simulated cluster (`podmeter_tests::sim_cluster`):
//! each hostile Node, applied beside healthy ones, gets no route on any
//! node, keeps every agent ready, shows in the agents' metrics, and leaves
//! the healthy pods' traffic alone; removing it removes its trace. Two
//! Nodes claiming overlapping ranges: neither is routed, both reported.
//! The full table of cases is `agent/src/routes.rs`'s and `admit.rs`'s pure
//! tests; this covers a representative set end to end.

use std::{collections::BTreeSet, time::Instant};

use podmeter_tests::{
    fake_apiserver,
    sim_cluster::{internal_ips, name, routes_to, SimCluster},
    Pod,
};

const NODES: usize = 2;

/// Node `i`'s own routes: to every other node's ranges.
fn mesh(i: usize) -> BTreeSet<(String, String)> {
    (1..=NODES)
        .filter(|&j| j != i)
        .flat_map(|j| routes_to(j, &internal_ips(j, false)))
        .collect()
}

/// The `podmeter_agent_node_errors` series of node `i`'s agent.
fn node_errors(c: &SimCluster, i: usize) -> Vec<String> {
    c.get(i, "/metrics")
        .body
        .lines()
        .filter(|l| l.starts_with("podmeter_agent_node_errors{"))
        .map(str::to_owned)
        .collect()
}

/// Waits until every agent reports exactly `want` (as `node=...,reason=...`
/// fragments, one per series), then checks that each is ready and routes
/// exactly `routes(i)`.
fn settled(c: &SimCluster, want: &[&str], routes: impl Fn(usize) -> BTreeSet<(String, String)>) {
    for i in 1..=NODES {
        c.agent(i).eventually("the node errors", || {
            let got = node_errors(c, i);
            let all = want.iter().all(|w| got.iter().any(|l| l.contains(w)));
            (all && got.len() == want.len()).then_some(())
        });
        assert_eq!(c.get(i, "/readyz").status, 200, "node {i}");
        c.wait_routes(i, &routes(i), Instant::now());
    }
}

fn pings(pods: &[Pod]) {
    for (from, to) in [(&pods[0], &pods[1]), (&pods[1], &pods[0])] {
        for ip in to.ips() {
            from.ns.ping(&ip, 1, 56);
        }
    }
}

#[test]
fn hostile_nodes_get_no_route_and_keep_every_agent_ready() {
    podmeter_testkit::needs_root!();
    let c = SimCluster::new(NODES);
    settled(&c, &[], mesh);
    let pods: Vec<Pod> = (1..=NODES)
        .map(|i| c.node(i).node.add_pod(&format!("pod{i}"), &c.conf(i)))
        .collect();
    pings(&pods);

    // (pod CIDR, InternalIP, reason): the underlay is 10.78.0.0/24 with
    // the API server on .1, the cluster 10.244.0.0/16.
    let cases = [
        ("10.78.0.0/25", "10.78.0.99", "outside_cluster_cidr"),
        ("10.78.0.1/32", "10.78.0.99", "outside_cluster_cidr"),
        ("169.254.169.254/32", "10.78.0.99", "special_range"),
        ("128.0.0.0/1", "10.78.0.99", "special_range"),
        ("fe80::/65", "fd00:78::99", "special_range"),
        ("255.255.255.255/32", "10.78.0.99", "special_range"),
        ("10.96.0.0/16", "10.78.0.99", "outside_cluster_cidr"),
        ("10.244.50.0/24", "127.0.0.1", "bad_internal_ip"),
        ("10.244.50.0/24", "224.0.0.1", "bad_internal_ip"),
        ("10.244.50.0/24", "0.0.0.0", "bad_internal_ip"),
    ];
    for (cidr, ip, reason) in cases {
        c.api.apply(fake_apiserver::node("hostile", &[cidr], ip));
        settled(
            &c,
            &[&format!("node=\"hostile\",reason=\"{reason}\"")],
            mesh,
        );
        pings(&pods);
        c.api.delete("hostile");
        settled(&c, &[], mesh);
    }

    // A claim over node 2's range: neither routed, both reported, on
    // every node, whatever the names.
    let hijack = fake_apiserver::node("aaa-hijack", &["10.244.2.0/23"], "10.78.0.99");
    c.api.apply(hijack);
    let overlap = [
        "node=\"aaa-hijack\",reason=\"overlap\",peer=\"node-2\"",
        "node=\"node-2\",reason=\"overlap\",peer=\"aaa-hijack\"",
    ];
    settled(&c, &overlap, |i| {
        // Node 1 loses its v4 route to node 2; node 2 routes as before.
        let mut want = mesh(i);
        want.retain(|(dst, _)| dst != "10.244.2.0/24");
        want
    });
    assert_eq!(name(2), "node-2");
    c.api.delete("aaa-hijack");
    settled(&c, &[], mesh);
    pings(&pods);
}
