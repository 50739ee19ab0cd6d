//! Policy with owners (issue 19): the CNI config's rules, the operator's
//! (`podmeterctl`) and the kubernetes tier (written here through the
//! store's API, as the node agent will) on real traffic between pod
//! namespaces. Each owner replaces only its own; the owners' order decides:
//! an admin (config or operator) rule first, then, for a pod NetworkPolicy
//! isolates, the kubernetes tier, then the default. The exporter shows
//! each pod's verdicts on new flows and its isolation.

use std::time::Duration;

use ipnet::IpNet;
use podmeter_ebpf::{
    abi::{Direction, Peer, IDENTITY_HOST},
    maps::flow_tables::FlowTables,
    policy::{
        kubernetes::{KubePodPolicy, KubeProto, KubeRule},
        store::{self as policy_store, PolicyStore},
        view::PolicyView,
        Owner, PodPolicy, PortRange,
    },
    PodCounter,
};
use podmeter_tests::{
    binary,
    exporter::{promtool_check_metrics, sample, Exporter},
    traffic::{tcp_talks, TcpServer},
    Node, TwoPods,
};
use serde_json::{json, Value};

const QUICK: Duration = Duration::from_secs(2);
/// Long enough for a denied SYN to be retried at least once.
const DENIED: Duration = Duration::from_secs(2);

/// The NetworkPolicy index the tests' kubernetes rules come from.
const POLICY: u32 = 3;
/// The identity the tests give pod `a`.
const A: u32 = 100;

fn ports(first: u16, last: u16) -> Option<PortRange> {
    Some(PortRange { first, last })
}

fn receive_from_a(proto: KubeProto, ports: Option<PortRange>) -> KubeRule {
    KubeRule {
        direction: Direction::Receive,
        peer: A,
        proto: Some(proto),
        ports,
        policy: POLICY,
    }
}

/// NetworkPolicy isolates the pod for receive, and allows `rules`.
fn isolated_receive(rules: Vec<KubeRule>) -> KubePodPolicy {
    KubePodPolicy {
        isolated: [true, false],
        rules,
    }
}

/// Writes the pod's kubernetes tier, the peers (`a`'s addresses as
/// identity `A`) and the policy's name, as the agent does.
fn kubernetes(node: &Node, ifindex: u32, a_ips: &[String], policy: &KubePodPolicy) {
    let mut store = peer_is(node, a_ips, A);
    store
        .replace_policy_names(&[(POLICY, "test/from-a".to_owned())])
        .unwrap();
    store.apply_kubernetes(ifindex, policy).unwrap();
}

/// Makes `ips` the only peers, of pod identity `identity`; returns the
/// store, still locked.
fn peer_is(node: &Node, ips: &[String], identity: u32) -> PolicyStore<'static> {
    let mut store = PolicyStore::lock(&node.layout()).unwrap();
    let peer = Peer {
        pod_identity: identity,
        cidr_identity: 0,
    };
    let peers: Vec<_> = ips
        .iter()
        .map(|ip| (IpNet::from(ip.parse::<std::net::IpAddr>().unwrap()), peer))
        .collect();
    store.replace_peers(&peers).unwrap();
    store
}

fn list(node: &Node, pod: &str) -> Value {
    serde_json::from_str(&node.ctl_ok(&["policy", "list", pod, "--output", "json"])).unwrap()
}

/// `(owner, id or NetworkPolicy)` of every listed rule.
fn owners(listed: &Value) -> Vec<(String, Value)> {
    listed["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let owner = r["owner"].as_str().unwrap().to_owned();
            let which = if owner == "kubernetes" {
                r["name"].clone()
            } else {
                r["id"].clone()
            };
            (owner, which)
        })
        .collect()
}

/// Each owner's replace leaves the others' rules; `policy list` shows every
/// rule's owner, and the kubernetes rules' NetworkPolicy; the operator
/// cannot delete the config's rule; DEL leaves no kubernetes entry.
#[test]
fn each_owner_replaces_only_its_own_rules() {
    podmeter_testkit::needs_root!();
    let TwoPods { node, conf, a, b } = TwoPods::with_conf(|conf| {
        conf["policy"] = json!({"transmit": {"rules": [
            {"action": "deny", "proto": "udp", "ports": "9999"}]}});
    });
    let (ifindex, _) = node.registered(&b);
    node.policy_add("test/b", "receive", "deny", &["--proto", "udp"]);
    kubernetes(
        &node,
        ifindex,
        &a.ips(),
        &isolated_receive(vec![receive_from_a(KubeProto::Tcp, ports(8000, 8080))]),
    );
    let listed = list(&node, "test/b");
    assert_eq!(
        owners(&listed),
        [
            ("config".to_owned(), json!(1)),
            ("operator".to_owned(), json!(2)),
            ("kubernetes".to_owned(), json!("test/from-a")),
        ],
        "{listed}"
    );
    assert_eq!(
        listed["rules"][2],
        json!({"owner": "kubernetes", "direction": "receive", "action": "allow",
               "peer": A, "proto": "tcp", "ports": "8000-8080", "policy": POLICY,
               "name": "test/from-a"})
    );
    assert_eq!(
        listed["isolated"],
        json!({"receive": true, "transmit": false})
    );

    // The operator cannot delete the config's rule.
    let refused = node.ctl_err(&["policy", "delete", "test/b", "1"]);
    assert!(refused.contains("belongs to the config"), "{refused}");

    // The operator's replace (the store's apply as Operator).
    let operator: PodPolicy = serde_json::from_value(json!({"receive": {"default": "deny",
        "rules": [{"action": "allow", "proto": "tcp", "ports": "22"}]}}))
    .unwrap();
    PolicyStore::lock(&node.layout())
        .unwrap()
        .apply(ifindex, Owner::Operator, &operator)
        .unwrap();
    assert_eq!(
        owners(&list(&node, "test/b")),
        [
            ("config".to_owned(), json!(1)),
            ("operator".to_owned(), json!(2)),
            ("kubernetes".to_owned(), json!("test/from-a")),
        ]
    );
    // The kubernetes tier's replace.
    kubernetes(
        &node,
        ifindex,
        &a.ips(),
        &isolated_receive(vec![receive_from_a(KubeProto::Udp, None)]),
    );
    let listed = list(&node, "test/b");
    assert_eq!(owners(&listed).len(), 3, "{listed}");
    assert_eq!(listed["rules"][2]["proto"], "udp");
    assert_eq!(
        listed["defaults"]["receive"], "deny",
        "the operator's default"
    );
    // The config's replace with nothing.
    PolicyStore::lock(&node.layout())
        .unwrap()
        .apply(ifindex, Owner::Config, &PodPolicy::default())
        .unwrap();
    assert_eq!(
        owners(&list(&node, "test/b")),
        [
            ("operator".to_owned(), json!(2)),
            ("kubernetes".to_owned(), json!("test/from-a")),
        ]
    );

    // DEL takes the kubernetes tier with the pod.
    assert!(node.del(&b, &conf).success);
    let view = PolicyView::open(&node.layout()).unwrap();
    assert!(view.kubernetes_rules(ifindex).unwrap().is_empty());
    assert!(!policy_store::ifindexes(&node.layout())
        .unwrap()
        .contains(&ifindex));
}

/// The owners' order decides real traffic to pod `b`, which NetworkPolicy
/// isolates for receive: a kubernetes allow opens it (inside the rule's
/// port range only; an SCTP rule does not allow TCP), anything else is
/// denied and counted as POLICY_DENIED, the node always passes, and an
/// operator deny beats a kubernetes allow. Kubernetes rules of a pod that
/// is not isolated change nothing.
#[test]
fn the_owners_order_decides_real_traffic() {
    podmeter_testkit::needs_root!();
    let TwoPods { node, a, b, .. } = TwoPods::new();
    let (a_ip, b_ip) = (a.ips()[0].clone(), b.ips()[0].clone());
    let (a_index, _) = node.registered(&a);
    let (b_index, _) = node.registered(&b);
    let _servers = [8000, 8080, 8081, 9000].map(|port| TcpServer::start(&b.ns, port));
    let _a_server = TcpServer::start(&a.ns, 7000);
    assert!(tcp_talks(&a.ns, &b_ip, 8081, QUICK), "open before");

    kubernetes(
        &node,
        b_index,
        &a.ips(),
        &isolated_receive(vec![
            receive_from_a(KubeProto::Tcp, ports(8000, 8080)),
            receive_from_a(KubeProto::Sctp, ports(9000, 9000)),
        ]),
    );
    assert!(tcp_talks(&a.ns, &b_ip, 8000, QUICK), "a kubernetes allow");
    let b_ip6 = b.ips()[1].clone();
    assert!(tcp_talks(&a.ns, &b_ip6, 8000, QUICK), "over IPv6 too");
    assert!(!tcp_talks(&a.ns, &b_ip6, 8081, DENIED), "IPv6, outside");
    assert!(tcp_talks(&a.ns, &b_ip, 8080, QUICK), "the range's end");
    let before = node.policy_denied(&b, Direction::Receive);
    assert!(!tcp_talks(&a.ns, &b_ip, 8081, DENIED), "outside the range");
    assert!(!tcp_talks(&a.ns, &b_ip, 9000, DENIED), "SCTP is not TCP");
    let after = node.policy_denied(&b, Direction::Receive);
    assert!(
        after.packets >= before.packets + 2,
        "denied SYNs counted: {before:?} → {after:?}"
    );
    assert!(
        tcp_talks(&node.ns, &b_ip, 9000, QUICK),
        "the node (b's gateway) is always allowed"
    );
    // `a` itself is not isolated: kubernetes rules change nothing there.
    kubernetes(
        &node,
        a_index,
        &a.ips(),
        &KubePodPolicy {
            isolated: [false, false],
            rules: vec![receive_from_a(KubeProto::Udp, None)],
        },
    );
    assert!(tcp_talks(&b.ns, &a_ip, 7000, QUICK), "b to a, not isolated");
    assert_eq!(
        PolicyView::open(&node.layout())
            .unwrap()
            .defaults(a_index)
            .unwrap(),
        None,
        "a pod neither isolated nor with admin policy has no policy entry"
    );

    // An operator deny beats the kubernetes allow.
    let a_cidr = format!("{a_ip}/32");
    node.policy_add(
        "test/b",
        "receive",
        "deny",
        &["--cidr", &a_cidr, "--proto", "tcp", "--ports", "8080"],
    );
    assert!(
        !tcp_talks(&a.ns, &b_ip, 8080, DENIED),
        "operator deny first"
    );
    assert!(
        tcp_talks(&a.ns, &b_ip, 8000, QUICK),
        "the rest still allowed"
    );
    let check = |port: &str| {
        let out = node.ctl(&[
            "policy",
            "check",
            "test/b",
            "--direction",
            "receive",
            "--remote",
            &a_ip,
            "--proto",
            "tcp",
            "--port",
            port,
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        check("8080").contains("denied (rule 1: deny tcp") && check("8080").contains("operator's"),
        "{}",
        check("8080")
    );
    assert!(
        check("8000").contains("allowed by NetworkPolicy test/from-a"),
        "{}",
        check("8000")
    );
    assert!(
        check("8081").contains("denied (isolated by NetworkPolicy; no NetworkPolicy"),
        "{}",
        check("8081")
    );

    // Not isolated any more: the default (allow) again.
    kubernetes(&node, b_index, &a.ips(), &KubePodPolicy::default());
    assert!(tcp_talks(&a.ns, &b_ip, 8081, QUICK), "open again");
    assert_ne!(
        node.policy_denied(&b, Direction::Receive),
        PodCounter::default()
    );
    for pod in [&a, &b] {
        node.assert_counters_match_kernel(&pod.host_ifname());
    }
}

/// The node's own addresses (identity HOST) are allowed whatever the
/// kubernetes rules, as kubelet's probes must be.
#[test]
fn the_host_identity_is_always_allowed() {
    podmeter_testkit::needs_root!();
    let TwoPods { node, a, b, .. } = TwoPods::new();
    let b_ip = b.ips()[0].clone();
    let (b_index, _) = node.registered(&b);
    let _server = TcpServer::start(&b.ns, 8000);
    kubernetes(&node, b_index, &a.ips(), &isolated_receive(vec![]));
    assert!(!tcp_talks(&a.ns, &b_ip, 8000, DENIED), "isolated, no allow");
    drop(peer_is(&node, &a.ips(), IDENTITY_HOST));
    assert!(
        tcp_talks(&a.ns, &b_ip, 8000, QUICK),
        "a now counts as the node"
    );
}

/// The policy's verdicts on new flows, as the exporter shows them: pod `b`,
/// isolated for receive, counts each allowed connection once (not its
/// later packets, nor its replies, which pass by the flow), and each denied
/// SYN once: a denied flow opens nothing, so a retransmitted SYN is decided
/// and counted again, which makes the denied count equal the POLICY_DENIED
/// drops. The node's own traffic (IGMP from the bridge) also opens flows
/// the policy decides on: the allowed count is checked against b's flow
/// table, where each TCP connection is one entry. The isolation gauge says
/// receive only; `a`, without policy, has neither family.
#[test]
fn verdicts_on_new_flows_and_isolation_are_exported() {
    podmeter_testkit::needs_root!();
    const ALLOWED: usize = 5;
    const DENIED_CONNECTIONS: u64 = 3;
    let TwoPods { node, a, b, .. } = TwoPods::new();
    let b_ip = b.ips()[0].clone();
    let (b_index, _) = node.registered(&b);
    let _servers = [8000, 8081].map(|port| TcpServer::start(&b.ns, port));
    kubernetes(
        &node,
        b_index,
        &a.ips(),
        &isolated_receive(vec![receive_from_a(KubeProto::Tcp, ports(8000, 8000))]),
    );
    for i in 0..ALLOWED {
        assert!(tcp_talks(&a.ns, &b_ip, 8000, QUICK), "allowed {i}");
    }
    for i in 0..DENIED_CONNECTIONS {
        assert!(!tcp_talks(&a.ns, &b_ip, 8081, DENIED), "denied {i}");
    }

    let exporter = Exporter::start(&binary("podmeter-exporter"), &node.pin_path);
    let metrics = exporter.metrics();
    let denied_syns = node.policy_denied(&b, Direction::Receive).packets;
    let flows = FlowTables::open(&node.layout()).unwrap();
    let table = flows.flows(b_index).unwrap();
    let (_, state) = flows
        .occupancy()
        .unwrap()
        .into_iter()
        .find(|(ifindex, _)| *ifindex == b_index)
        .unwrap();
    promtool_check_metrics(&metrics);
    let series = |pod: &str, family: &str, labels: &str| {
        let name = format!(
            r#"podmeter_pod_{family}{{namespace="test",pod="{pod}",interface="eth0",{labels}}}"#
        );
        sample(&metrics, &name)
    };
    let verdicts = |direction: Direction, verdict: &str| {
        let labels = format!(r#"direction="{}",verdict="{verdict}""#, direction.as_str());
        series("b", "policy_flows_total", &labels).unwrap()
    };
    assert_eq!(state.refused, [0, 0]);
    for direction in Direction::ALL {
        // Each allowed decision opened one flow (or replaced an expired one).
        let opened = table
            .iter()
            .filter(|(_, f)| f.opened_by == direction as u32)
            .collect::<Vec<_>>();
        let tcp = opened
            .iter()
            .filter(|(k, _)| k.proto == libc::IPPROTO_TCP as u8);
        let connections = if direction == Direction::Receive {
            ALLOWED
        } else {
            0
        };
        assert_eq!(tcp.count(), connections, "{direction:?}: {table:?}");
        assert_eq!(
            verdicts(direction, "allowed"),
            (opened.len() as u64 + state.reclaimed[direction as usize]) as f64,
            "{direction:?}: {table:?}\n{metrics}"
        );
    }
    assert!(denied_syns >= DENIED_CONNECTIONS, "{denied_syns}");
    assert_eq!(
        verdicts(Direction::Receive, "denied"),
        denied_syns as f64,
        "one decision per denied SYN\n{metrics}"
    );
    assert_eq!(verdicts(Direction::Transmit, "denied"), 0.0);
    let isolated = |pod: &str, direction: &str| {
        series(
            pod,
            "policy_isolated",
            &format!(r#"direction="{direction}""#),
        )
    };
    assert_eq!(isolated("b", "receive"), Some(1.0), "{metrics}");
    assert_eq!(isolated("b", "transmit"), Some(0.0));
    assert_eq!(isolated("a", "receive"), None, "a has no policy");
    let a_verdicts = r#"direction="receive",verdict="allowed""#;
    assert_eq!(series("a", "policy_flows_total", a_verdicts), None);
}
