//! The upstream e2e cases (`test/e2e/network/netpol`) on the upstream
//! model: each compiled for both nodes and compared, answer by answer,
//! with the reference evaluator; and a hand-written truth table per case,
//! so that the two cannot agree on a shared mistake.

use serde_json::json;

use super::{
    fixture::{any, policy, Truth, World},
    model::KubeProto::{Sctp, Tcp, Udp},
};

fn ns(prefix: &'static str) -> impl Fn(&str) -> bool {
    move |k| k.starts_with(prefix)
}

fn is(key: &'static str) -> impl Fn(&str) -> bool {
    move |k| k == key
}

/// Compares with the reference and returns the world for truth tables.
fn world(policies: &[(&str, &str, serde_json::Value)]) -> World {
    let mut w = World::upstream();
    for (n, name, spec) in policies {
        w.add(policy(n, name, spec.clone()));
    }
    assert!(w.compare() > 1000);
    w
}

#[test]
fn no_policy_allows_everything() {
    let w = world(&[]);
    Truth::all(true).check(&w, Tcp, 80);
}

#[test]
fn default_deny_ingress() {
    let w = world(&[(
        "x",
        "deny",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    )]);
    Truth::all(true)
        .set(any, ns("x/"), false)
        .check(&w, Tcp, 80);
    Truth::all(true)
        .set(any, ns("x/"), false)
        .check(&w, Udp, 81);
}

#[test]
fn default_deny_all() {
    let w = world(&[(
        "x",
        "deny",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    )]);
    Truth::all(true)
        .set(any, ns("x/"), false)
        .set(ns("x/"), any, false)
        .check(&w, Tcp, 80);
}

#[test]
fn allow_all_and_its_precedence_over_deny_all() {
    let allow = json!({"podSelector": {}, "ingress": [{}]});
    let w = world(&[("x", "allow", allow.clone())]);
    Truth::all(true).check(&w, Tcp, 80);
    let w = world(&[
        (
            "x",
            "deny",
            json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        ),
        ("x", "allow", allow),
    ]);
    Truth::all(true).check(&w, Tcp, 81);
}

#[test]
fn deny_ingress_from_other_namespaces() {
    let w = world(&[(
        "x",
        "same-ns",
        json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
    )]);
    Truth::all(true)
        .set(any, ns("x/"), false)
        .set(ns("x/"), ns("x/"), true)
        .check(&w, Tcp, 80);
}

#[test]
fn allow_from_pods_by_match_labels_and_match_expressions() {
    for from in [
        json!({"podSelector": {"matchLabels": {"pod": "b"}}}),
        json!({"podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b"]}]}}),
    ] {
        let w = world(&[(
            "x",
            "a-from-b",
            json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [from]}]}),
        )]);
        Truth::all(true)
            .set(any, is("x/a"), false)
            .set(is("x/b"), is("x/a"), true)
            .check(&w, Tcp, 80);
    }
}

#[test]
fn allow_from_namespaces_by_selector_and_the_automatic_name_label() {
    for sel in [
        json!({"matchLabels": {"ns": "y"}}),
        json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["y"]}]}),
    ] {
        let w = world(&[(
            "x",
            "from-y",
            json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": sel}]}]}),
        )]);
        Truth::all(true)
            .set(any, is("x/a"), false)
            .set(ns("y/"), is("x/a"), true)
            .check(&w, Tcp, 80);
    }
}

#[test]
fn pod_selector_and_namespace_selector_in_one_peer_or_in_two() {
    let and = json!([{"namespaceSelector": {"matchLabels": {"ns": "y"}}, "podSelector": {"matchLabels": {"pod": "b"}}}]);
    let w = world(&[(
        "x",
        "and",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": and}]}),
    )]);
    Truth::all(true)
        .set(any, is("x/a"), false)
        .set(is("y/b"), is("x/a"), true)
        .check(&w, Tcp, 80);
    let or = json!([{"namespaceSelector": {"matchLabels": {"ns": "y"}}}, {"podSelector": {"matchLabels": {"pod": "b"}}}]);
    let w = world(&[(
        "x",
        "or",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": or}]}),
    )]);
    Truth::all(true)
        .set(any, is("x/a"), false)
        .set(ns("y/"), is("x/a"), true)
        .set(is("x/b"), is("x/a"), true)
        .check(&w, Tcp, 80);
}

#[test]
fn by_ports_port_ranges_and_protocols() {
    let w = world(&[(
        "x",
        "b-81",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}], "ports": [{"port": 81}]}]}),
    )]);
    Truth::all(true)
        .set(any, is("x/a"), false)
        .check(&w, Tcp, 80);
    Truth::all(true)
        .set(any, is("x/a"), false)
        .set(is("x/b"), is("x/a"), true)
        .check(&w, Tcp, 81);
    Truth::all(true)
        .set(any, is("x/a"), false)
        .check(&w, Udp, 81);
    let w = world(&[(
        "x",
        "range",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "endPort": 81}]}]}),
    )]);
    Truth::all(true).check(&w, Tcp, 81);
    Truth::all(true)
        .set(any, ns("x/"), false)
        .check(&w, Tcp, 82);
    Truth::all(true)
        .set(any, ns("x/"), false)
        .check(&w, Udp, 80);
}

#[test]
fn udp_default_deny_and_by_port() {
    let w = world(&[
        (
            "x",
            "deny",
            json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        ),
        (
            "x",
            "udp-81",
            json!({"podSelector": {}, "ingress": [{"ports": [{"protocol": "UDP", "port": 81}]}]}),
        ),
    ]);
    Truth::all(true).check(&w, Udp, 81);
    Truth::all(true)
        .set(any, ns("x/"), false)
        .check(&w, Udp, 80);
    Truth::all(true)
        .set(any, ns("x/"), false)
        .check(&w, Tcp, 81);
}

#[test]
fn a_policy_allowing_only_sctp_does_not_allow_tcp() {
    let w = world(&[(
        "x",
        "sctp",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"protocol": "SCTP", "port": 80}]}]}),
    )]);
    Truth::all(true).check(&w, Sctp, 80);
    Truth::all(true)
        .set(any, is("x/a"), false)
        .check(&w, Tcp, 80);
    Truth::all(true)
        .set(any, is("x/a"), false)
        .check(&w, Udp, 80);
}

#[test]
fn ingress_on_a_named_port() {
    let w = world(&[(
        "x",
        "named",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"port": "serve-80-tcp"}]}]}),
    )]);
    Truth::all(true).check(&w, Tcp, 80);
    Truth::all(true)
        .set(any, is("x/a"), false)
        .check(&w, Tcp, 81);
    Truth::all(true)
        .set(any, is("x/a"), false)
        .check(&w, Udp, 80);
}

#[test]
fn a_named_port_resolves_on_each_pod_that_defines_it() {
    let mut w = World::upstream();
    // y/b serves UDP 80 under another name: the name resolves to nothing
    // there, for ingress into it and for egress to it.
    w.pod_mut("y/b").spec.as_mut().unwrap().containers[0].ports = Some(vec![]);
    w.add(policy("y", "in", json!({"podSelector": {}, "ingress": [{"ports": [{"protocol": "UDP", "port": "serve-80-udp"}]}]})));
    w.add(policy("x", "out", json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [{"ports": [{"protocol": "UDP", "port": "serve-80-udp"}]}]})));
    assert!(w.compare() > 1000);
    Truth::all(true)
        .set(any, is("y/b"), false)
        .check(&w, Udp, 80);
    Truth::all(true)
        .set(any, ns("y/"), false)
        .set(is("x/a"), any, false)
        .check(&w, Udp, 81);
}

#[test]
fn egress_on_a_named_port_with_no_peers() {
    let w = world(&[(
        "x",
        "named",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [{"ports": [{"protocol": "UDP", "port": "serve-80-udp"}]}]}),
    )]);
    Truth::all(true).check(&w, Udp, 80);
    Truth::all(true)
        .set(is("x/a"), any, false)
        .check(&w, Udp, 81);
    Truth::all(true)
        .set(is("x/a"), any, false)
        .check(&w, Tcp, 80);
}

#[test]
fn egress_deny_by_pod_selector_and_ingress_with_egress() {
    let w = world(&[(
        "x",
        "a-no-egress",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": []}),
    )]);
    Truth::all(true)
        .set(is("x/a"), any, false)
        .check(&w, Tcp, 80);
    let w = world(&[(
        "x",
        "both",
        json!({
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}],
            "egress": [{"ports": [{"port": 80}]}],
        }),
    )]);
    // No policyTypes: Ingress, and Egress because it has egress rules.
    Truth::all(true)
        .set(any, is("x/a"), false)
        .set(is("x/b"), is("x/a"), true)
        .check(&w, Tcp, 80);
    Truth::all(true)
        .set(any, is("x/a"), false)
        .set(is("x/a"), any, false)
        .set(is("x/b"), is("x/a"), true)
        .check(&w, Tcp, 81);
}

/// y/b's addresses (node 1, 10 + 4) as /32 and /128 blocks.
fn y_b_blocks() -> serde_json::Value {
    json!([{"ipBlock": {"cidr": "10.244.1.14/32"}}, {"ipBlock": {"cidr": "fd00:10:244:1::14/128"}}])
}

#[test]
fn egress_to_a_server_in_a_cidr_block() {
    let w = world(&[(
        "x",
        "cidr",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [{"to": y_b_blocks()}]}),
    )]);
    Truth::all(true)
        .set(is("x/a"), any, false)
        .set(is("x/a"), is("y/b"), true)
        .check(&w, Tcp, 80);
}

#[test]
fn except_is_a_hole_and_another_allow_covers_it() {
    let except = json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [{"to": [
        {"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.1.14/32"]}},
        {"ipBlock": {"cidr": "fd00:10:244::/56", "except": ["fd00:10:244:1::14/128"]}},
    ]}]});
    let w = world(&[("x", "except", except.clone())]);
    Truth::all(true)
        .set(is("x/a"), is("y/b"), false)
        .check(&w, Tcp, 80);
    let w = world(&[
        ("x", "except", except),
        (
            "x",
            "y-b",
            json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [{"to": y_b_blocks()}]}),
        ),
    ]);
    Truth::all(true).check(&w, Tcp, 80);
}

#[test]
fn stacked_policies_are_a_union() {
    let from = |pod: &str| json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": pod}}}]}]});
    let w = world(&[("x", "b", from("b")), ("x", "c", from("c"))]);
    Truth::all(true)
        .set(any, is("x/a"), false)
        .set(is("x/b"), is("x/a"), true)
        .set(is("x/c"), is("x/a"), true)
        .check(&w, Tcp, 80);
}

#[test]
fn updated_policy_labels_and_deletion() {
    let mut w = World::upstream();
    w.add(policy(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{}]}),
    ));
    assert!(w.compare() > 0);
    Truth::all(true).check(&w, Tcp, 80);
    // allow-all → deny-all, same name.
    w.policies[0] = policy(
        "x",
        "p",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    )
    .into();
    assert!(w.compare() > 0);
    Truth::all(true)
        .set(any, ns("x/"), false)
        .check(&w, Tcp, 80);
    // Allow from namespaces labelled team=t and pods labelled role=r.
    w.policies[0] = policy(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [
            {"from": [{"namespaceSelector": {"matchLabels": {"team": "t"}}}]},
            {"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "r"}}}]},
        ]}),
    )
    .into();
    assert!(w.compare() > 0);
    Truth::all(true)
        .set(any, ns("x/"), false)
        .check(&w, Tcp, 80);
    let mut z = (*w.namespaces[2]).clone();
    z.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("team".into(), "t".into());
    w.namespaces[2] = z.into();
    w.pod_mut("y/c")
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("role".into(), "r".into());
    assert!(w.compare() > 0);
    Truth::all(true)
        .set(any, ns("x/"), false)
        .set(ns("z/"), ns("x/"), true)
        .set(is("y/c"), ns("x/"), true)
        .check(&w, Tcp, 80);
    w.policies.clear();
    assert!(w.compare() > 0);
    Truth::all(true).check(&w, Tcp, 80);
}

#[test]
fn pods_without_ips_host_network_deleting_or_finished_match_no_selector() {
    let mut w = World::upstream();
    w.add(policy("x", "from-b", json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "b"}}}]}]})));
    // y/b loses its IP; z/b is being deleted; y/c becomes a hostNetwork
    // pod labelled pod=b on node 2's address; z/c is pod=b but Succeeded.
    w.pod_mut("y/b").status.as_mut().unwrap().pod_ips = None;
    w.pod_mut("z/b").metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
    );
    let yc = w.pod_mut("y/c");
    yc.spec.as_mut().unwrap().host_network = Some(true);
    yc.metadata.labels = Some([("pod".to_owned(), "b".to_owned())].into());
    let zc = w.pod_mut("z/c");
    zc.metadata.labels = Some([("pod".to_owned(), "b".to_owned())].into());
    zc.status.as_mut().unwrap().phase = Some("Succeeded".into());
    assert!(w.compare() > 1000);
    let compiled = w.compile_all();
    let zc_ip = "10.244.1.18".parse().unwrap();
    assert!(!super::simulate::allowed(
        &compiled[0],
        "x/a",
        super::model::Direction::Receive,
        zc_ip,
        Tcp,
        80
    ));
    // Only x/b is a running pod labelled pod=b with an address.
    let zb_ip = "10.244.2.17".parse().unwrap();
    assert!(!super::simulate::allowed(
        &compiled[1],
        "x/b",
        super::model::Direction::Receive,
        zb_ip,
        Tcp,
        80
    ));
    let xb_ip = "10.244.2.11".parse().unwrap();
    assert!(super::simulate::allowed(
        &compiled[0],
        "x/a",
        super::model::Direction::Receive,
        xb_ip,
        Tcp,
        80
    ));
    // Finished pods have no tier.
    assert!(!compiled[0].pods.contains_key("z/c"));
}

#[test]
fn the_node_is_always_allowed() {
    let w = world(&[(
        "x",
        "deny",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    )]);
    let compiled = w.compile_all();
    for addr in super::fixture::node_addrs(1) {
        for d in super::model::Direction::ALL {
            assert!(super::simulate::allowed(
                &compiled[0],
                "x/a",
                d,
                addr,
                Tcp,
                80
            ));
        }
    }
    // The other node is not this node.
    let other = super::fixture::node_addrs(2)[0];
    assert!(!super::simulate::allowed(
        &compiled[0],
        "x/a",
        super::model::Direction::Receive,
        other,
        Tcp,
        80
    ));
}

#[test]
fn identities_persist_so_one_label_change_rewrites_few_entries() {
    use super::compile::Compiler;
    let mut w = World::upstream();
    w.add(policy("x", "from-b", json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "b"}}}]}]})));
    let mut compiler = Compiler::default();
    let before = w.compile(&mut compiler, 1);
    assert_eq!(
        w.compile(&mut compiler, 1),
        before,
        "a recompile of the same world changed"
    );
    // y/c (node 2) becomes pod=b: it joins y/b's class, so only its two
    // addresses change identity; no pod's rules change.
    w.pod_mut("y/c").metadata.labels = Some([("pod".to_owned(), "b".to_owned())].into());
    let after = w.compile(&mut compiler, 1);
    let changed: Vec<_> = after
        .peers
        .iter()
        .filter(|e| !before.peers.contains(e))
        .collect();
    assert_eq!(changed.len(), 2, "{changed:?}");
    assert_eq!(after.pods, before.pods);
    // z/c becomes pod=b with a label of its own: a new class, one more rule
    // for x's pods; every other rule and identity stays.
    w.pod_mut("z/c").metadata.labels = Some(
        [
            ("pod".to_owned(), "b".to_owned()),
            ("new".to_owned(), "1".to_owned()),
        ]
        .into(),
    );
    let last = w.compile(&mut compiler, 1);
    assert_eq!(
        last.peers
            .iter()
            .filter(|e| !after.peers.contains(e))
            .count(),
        2
    );
    for (key, pod) in &last.pods {
        let old = &after.pods[key].policy.rules;
        assert!(old.iter().all(|r| pod.policy.rules.contains(r)), "{key}");
        let gained = usize::from(key.starts_with("x/"));
        assert_eq!(pod.policy.rules.len(), old.len() + gained, "{key}");
    }
}
