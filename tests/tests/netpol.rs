//! NetworkPolicy enforced on real traffic: a simulated two-node cluster
//! (see `podmeter_tests::sim_cluster`), the real agent per node writing the
//! kubernetes tier it compiles into its node's pinned maps, pods made by the
//! plugin's ADD and their Pod objects (with the addresses ADD gave them) on
//! the fake API server. Each expectation is polled until it holds (or
//! `EVENTUALLY` passes): the agents apply changes asynchronously.

use std::time::{Duration, Instant};

use podmeter_conflist::kubernetes_tier;
use podmeter_ebpf::Direction;
use podmeter_tests::{
    agent::EVENTUALLY,
    fake_apiserver::{self, namespace, network_policy, pod},
    sim_cluster::{name, SimCluster},
    traffic::{tcp_talks, udp_refused, TcpServer},
    Pod,
};
use serde_json::{json, Value};

const PORT: u16 = 80;
/// Where no one listens: an allowed UDP datagram comes back as an ICMP
/// port unreachable, a denied one as nothing.
const CLOSED_UDP: u16 = 81;

/// A pod of the cluster: where it runs and what ADD made of it.
struct K8sPod {
    namespace: &'static str,
    name: &'static str,
    node: usize,
    pod: Pod,
    _server: TcpServer,
}

impl K8sPod {
    fn v4(&self) -> String {
        self.pod.ips()[0].clone()
    }

    fn v6(&self) -> String {
        self.pod.ips()[1].clone()
    }

    fn object(&self, labels: Value) -> Value {
        let ips = self.pod.ips();
        let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
        pod(
            self.namespace,
            self.name,
            &name(self.node),
            labels,
            &ips,
            json!([]),
        )
    }
}

/// The Pod object first (as the kubelet sees it before the sandbox, for
/// its uid), then ADD with that uid, then the Pod with its podIPs.
fn add_pod(c: &SimCluster, node: usize, namespace: &'static str, pod_name: &'static str) -> K8sPod {
    let uid = post_pod(c, node, namespace, pod_name);
    let p = sandbox(c, node, namespace, pod_name, &uid);
    c.api.apply(p.object(json!({ "pod": pod_name })));
    p
}

/// The Pod object, not wired yet: its uid.
fn post_pod(c: &SimCluster, node: usize, namespace: &str, pod_name: &str) -> String {
    let labels = json!({ "pod": pod_name });
    let version = c.api.apply(pod(
        namespace,
        pod_name,
        &name(node),
        labels,
        &[],
        json!([]),
    ));
    fake_apiserver::uid(&format!("{namespace}/{pod_name}"), version)
}

/// ADD of the pod `namespace/pod_name` of `uid`, serving TCP.
fn sandbox(
    c: &SimCluster,
    node: usize,
    namespace: &'static str,
    pod_name: &'static str,
    uid: &str,
) -> K8sPod {
    let made = c
        .node(node)
        .node
        .add_k8s_pod(namespace, pod_name, uid, &c.conf(node));
    let _server = TcpServer::start(&made.ns, PORT);
    K8sPod {
        namespace,
        name: pod_name,
        node,
        pod: made,
        _server,
    }
}

/// Polls until a TCP exchange from `from` to `to` at `addr` works (`want`)
/// or does not.
fn tcp(c: &SimCluster, from: &K8sPod, to: &K8sPod, addr: &str, want: bool) {
    let start = Instant::now();
    while tcp_talks(&from.pod.ns, addr, PORT, Duration::from_secs(1)) != want {
        assert!(
            start.elapsed() < EVENTUALLY,
            "{}/{} → {}/{} at {addr}: want {}; agent logs:\n{}",
            from.namespace,
            from.name,
            to.namespace,
            to.name,
            if want { "reached" } else { "denied" },
            logs(c),
        );
    }
}

fn logs(c: &SimCluster) -> String {
    let logs: Vec<String> = (1..=c.nodes.len()).map(|i| c.agent(i).log()).collect();
    logs.join("\n")
}

fn reaches(c: &SimCluster, from: &K8sPod, to: &K8sPod) {
    tcp(c, from, to, &to.v4(), true);
}

fn denied(c: &SimCluster, from: &K8sPod, to: &K8sPod) {
    tcp(c, from, to, &to.v4(), false);
}

/// The POLICY_DENIED packets received by `p`, from its node's pinned maps.
fn denied_on_receive(c: &SimCluster, p: &K8sPod) -> u64 {
    policy_denied(c, p, Direction::Receive)
}

/// `p`'s POLICY_DENIED packets in `direction`.
fn policy_denied(c: &SimCluster, p: &K8sPod, direction: Direction) -> u64 {
    let node = &c.node(p.node).node;
    let maps = node.maps();
    let ifindex = maps
        .pods()
        .unwrap()
        .into_iter()
        .find(|(_, id)| id.container_id == p.pod.container_id)
        .map(|(ifindex, _)| ifindex)
        .expect("the pod is registered");
    maps.drops()
        .unwrap()
        .into_iter()
        .filter(|d| d.ifindex == ifindex && d.direction == direction)
        .filter(|d| d.reason == podmeter_ebpf::abi::DROP_POLICY_DENIED)
        .map(|d| d.dropped.packets)
        .sum()
}

/// The policy x/`name` letting `peer` (one `from` entry) into x/a.
fn allow_into_a(name: &str, peer: Value) -> Value {
    network_policy(
        "x",
        name,
        json!({
            "podSelector": { "matchLabels": { "pod": "a" } },
            "ingress": [{ "from": [peer] }],
        }),
    )
}

#[test]
fn network_policy_is_enforced_on_real_traffic_across_nodes() {
    podmeter_testkit::needs_root!();
    let c = SimCluster::new(2);
    c.api.apply(namespace("x", json!({ "ns": "x" })));
    c.api.apply(namespace("y", json!({ "ns": "y" })));
    let a = add_pod(&c, 1, "x", "a");
    let xb = add_pod(&c, 2, "x", "b");
    let xc = add_pod(&c, 1, "x", "c");
    let yb = add_pod(&c, 2, "y", "b");

    // No policy: everyone reaches a, on both families.
    for from in [&xb, &xc, &yb] {
        reaches(&c, from, &a);
        tcp(&c, from, &a, &a.v6(), true);
    }

    // Default deny ingress on a: nobody reaches it, by TCP or UDP, on
    // either family; a still reaches the others (egress not isolated).
    let deny = network_policy(
        "x",
        "deny-a",
        json!({ "podSelector": { "matchLabels": { "pod": "a" } }, "policyTypes": ["Ingress"] }),
    );
    c.api.apply(deny);
    let before = denied_on_receive(&c, &a);
    for from in [&xb, &xc, &yb] {
        denied(&c, from, &a);
        tcp(&c, from, &a, &a.v6(), false);
    }
    assert!(
        !udp_refused(&xc.pod.ns, &a.v4(), CLOSED_UDP),
        "UDP to an isolated pod"
    );
    for to in [&xb, &xc, &yb] {
        reaches(&c, &a, to);
    }
    let counted = denied_on_receive(&c, &a) - before;
    assert!(
        counted >= 7,
        "6 TCP probes and a UDP datagram denied, {counted} POLICY_DENIED packets on a"
    );

    // Allow from pod=b of x (podSelector): x/b reaches a across nodes, on
    // both families; x/c and y/b (another namespace) do not.
    c.api.apply(allow_into_a(
        "allow-b",
        json!({ "podSelector": { "matchLabels": { "pod": "b" } } }),
    ));
    reaches(&c, &xb, &a);
    tcp(&c, &xb, &a, &a.v6(), true);
    denied(&c, &xc, &a);
    denied(&c, &yb, &a);
    let list = c.node(1).node.ctl_ok(&["policy", "list", "x/a"]);
    assert!(
        list.contains("x/allow-b"),
        "policy list shows the kubernetes rule's policy:\n{list}"
    );

    // Allow from namespace y: y's pods reach a too.
    c.api.apply(allow_into_a(
        "allow-y",
        json!({ "namespaceSelector": { "matchLabels": { "ns": "y" } } }),
    ));
    reaches(&c, &yb, &a);
    denied(&c, &xc, &a);

    // x/b loses its label: denied afterwards.
    c.api.apply(xb.object(json!({ "pod": "not-b" })));
    denied(&c, &xb, &a);
    reaches(&c, &yb, &a);

    // Every policy deleted: open again.
    for policy in ["x/deny-a", "x/allow-b", "x/allow-y"] {
        c.api.delete_object("NetworkPolicy", policy);
    }
    for from in [&xb, &xc, &yb] {
        reaches(&c, from, &a);
    }
    assert!(udp_refused(&xc.pod.ns, &a.v4(), CLOSED_UDP));
    for i in 1..=2 {
        let metrics = c.get(i, "/metrics").body;
        assert!(
            metrics.contains("podmeter_agent_policy_errors_total{stage=\"write\"} 0"),
            "node {i}: every write succeeded:\n{metrics}"
        );
    }
}

#[test]
fn a_pod_meets_its_network_policy_from_its_first_packet() {
    podmeter_testkit::needs_root!();
    let c = SimCluster::new(1);
    c.api.apply(namespace("x", json!({})));
    let a = add_pod(&c, 1, "x", "a");
    // The policy and the Pod object exist before ADD: x/new may send to
    // no one (default deny egress).
    c.api.apply(network_policy(
        "x",
        "deny-new",
        json!({ "podSelector": { "matchLabels": { "pod": "new" } }, "policyTypes": ["Egress"] }),
    ));
    let uid = post_pod(&c, 1, "x", "new");
    // The agent has compiled the pod's tier where ADD looks for it.
    let tier = kubernetes_tier::file(c.node(1).node.data_dir.path(), &uid).unwrap();
    c.agent(1)
        .eventually("the new pod's tier", || tier.exists().then_some(()));
    let new = sandbox(&c, 1, "x", "new", &uid);
    assert!(
        !tcp_talks(&new.pod.ns, &a.v4(), PORT, Duration::from_secs(1)),
        "the first connection of a pod isolated for egress went through"
    );
    assert!(
        policy_denied(&c, &new, Direction::Transmit) >= 1,
        "the denied first packets are counted as POLICY_DENIED on the pod's transmit side"
    );
    // Its podIPs known, the agent's own apply keeps it so.
    c.api.apply(new.object(json!({ "pod": "new" })));
    denied(&c, &new, &a);
    reaches(&c, &a, &new);
}
