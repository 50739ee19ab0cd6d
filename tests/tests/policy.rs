//! Per-pod policy, end to end: rules made with `podmeterctl` (or the
//! plugin's config) enforced by the tc programs on real traffic between pod
//! namespaces, every denied packet counted once as POLICY_DENIED, and the
//! pod counters still equal to the veths' own.

use std::{net::UdpSocket, process::Output, time::Duration};

use aya::programs::{
    links::{FdLink, PinnedLink},
    SchedClassifier,
};
use podmeter_ebpf::{
    abi::Direction,
    policy::{store as policy_store, view::PolicyView},
    programs::drop_reasons::DropReasons,
    programs::object::PROGRAMS,
    PodCounter,
};
use podmeter_tests::{
    leftovers::link_pins,
    nft::NftCounter,
    traffic::{pings, tcp_talks, udp_refused, TcpServer},
    NetNs, Node, Pod, TwoPods,
};
use serde_json::{json, Value};

const QUICK: Duration = Duration::from_secs(2);

/// A node with pods `a`, `b` and `c` (dropped before the node).
fn three_pods() -> (Node, [Pod; 3]) {
    let node = Node::new();
    let conf = node.conf("1.1.0");
    let pods = ["a", "b", "c"].map(|name| node.add_pod(name, &conf));
    (node, pods)
}

fn ctl_ok(node: &Node, args: &[&str]) -> String {
    node.ctl_ok(args)
}

fn ctl_err(node: &Node, args: &[&str]) -> String {
    node.ctl_err(args)
}

fn add_rule(node: &Node, pod: &str, direction: &str, action: &str, rest: &[&str]) -> u32 {
    node.policy_add(pod, direction, action, rest)
}

fn check(node: &Node, pod: &str, direction: &str, remote: &str, rest: &[&str]) -> Output {
    let mut args = vec![
        "policy",
        "check",
        pod,
        "--direction",
        direction,
        "--remote",
        remote,
    ];
    args.extend_from_slice(rest);
    node.ctl(&args)
}

/// The pod's POLICY_DENIED drops in `direction`.
fn denied(node: &Node, pod: &Pod, direction: Direction) -> PodCounter {
    node.policy_denied(pod, direction)
}

/// Drop reason names recorded for the pod.
fn drop_reasons(node: &Node, pod: &Pod) -> Vec<String> {
    let (ifindex, _) = node.registered(pod);
    let names = DropReasons::of_running_kernel().unwrap();
    node.maps()
        .drops()
        .unwrap()
        .into_iter()
        .filter(|d| d.ifindex == ifindex)
        .map(|d| names.name(d.reason))
        .collect()
}

/// Issue 10, case 1: A may not send to B's TCP 8080, and nothing else changes.
#[test]
fn a_transmit_deny_stops_one_port_and_nothing_else() {
    podmeter_testkit::needs_root!();
    let TwoPods { node, a, b, .. } = TwoPods::new();
    let (a_ip, b_ip) = (a.ips()[0].clone(), b.ips()[0].clone());
    let _servers = [
        TcpServer::start(&b.ns, 8080),
        TcpServer::start(&b.ns, 8081),
        TcpServer::start(&a.ns, 9000),
    ];
    assert!(tcp_talks(&a.ns, &b_ip, 8080, QUICK), "open before the rule");

    let cidr = format!("{b_ip}/32");
    let id = add_rule(
        &node,
        "test/a",
        "transmit",
        "deny",
        &["--cidr", &cidr, "--proto", "tcp", "--ports", "8080"],
    );
    assert_eq!(id, 1);
    let syns = NftCounter::new(&a.ns, "out", "output", "tcp dport 8080");
    assert!(!tcp_talks(&a.ns, &b_ip, 8080, Duration::from_secs(3)));
    assert!(tcp_talks(&a.ns, &b_ip, 8081, QUICK), "another port");
    assert!(pings(&a.ns, &b_ip), "ping");
    assert!(
        tcp_talks(&b.ns, &a_ip, 9000, QUICK),
        "B to A, with A's replies"
    );

    // The SYN and its retries, as A's own kernel sent them, each denied
    // once (bytes: plus the Ethernet header the veth counts).
    std::thread::sleep(Duration::from_millis(300));
    let (packets, bytes) = syns.read();
    assert!(packets >= 2, "a SYN and at least one retry: {packets}");
    assert_eq!(
        denied(&node, &a, Direction::Transmit),
        PodCounter {
            packets,
            bytes: bytes + 14 * packets
        }
    );
    assert_eq!(denied(&node, &a, Direction::Receive), PodCounter::default());
    let reasons = drop_reasons(&node, &a);
    assert!(
        !reasons.iter().any(|r| r.starts_with("TC_")),
        "counted again by the drop tracer: {reasons:?}"
    );
    for pod in [&a, &b] {
        node.assert_counters_match_kernel(&pod.host_ifname());
    }
    let out = check(
        &node,
        "test/a",
        "transmit",
        &b_ip,
        &["--proto", "tcp", "--port", "8080"],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("denied (rule 1: deny tcp"));
}

/// Issue 10, case 2: B receives only from A on TCP 80, yet what B opens
/// itself gets its replies, and ICMP errors of its flows reach it.
#[test]
fn a_receive_default_deny_keeps_replies_and_icmp_errors() {
    podmeter_testkit::needs_root!();
    let (node, [a, b, c]) = three_pods();
    let (a_ip, b_ip, c_ip) = (a.ips()[0].clone(), b.ips()[0].clone(), c.ips()[0].clone());
    let _servers = [TcpServer::start(&b.ns, 80), TcpServer::start(&c.ns, 9000)];
    let cidr = format!("{a_ip}/32");
    add_rule(
        &node,
        "test/b",
        "receive",
        "allow",
        &["--cidr", &cidr, "--proto", "tcp", "--ports", "80"],
    );
    ctl_ok(
        &node,
        &[
            "policy",
            "default",
            "test/b",
            "--direction",
            "receive",
            "--action",
            "deny",
        ],
    );

    assert!(tcp_talks(&a.ns, &b_ip, 80, QUICK), "A is allowed");
    assert!(!tcp_talks(&c.ns, &b_ip, 80, QUICK), "C is not");
    assert!(!pings(&c.ns, &b_ip), "nor C's echo requests");
    assert!(tcp_talks(&b.ns, &c_ip, 9000, QUICK), "B's own connection");
    assert!(
        tcp_talks(&b.ns, &c.ips()[1], 9000, QUICK),
        "B's own connection, IPv6"
    );
    assert!(pings(&b.ns, &c_ip), "B's echo requests get their replies");
    assert!(
        udp_refused(&b.ns, &c_ip, 9999),
        "C's port unreachable for B's datagram"
    );
    assert!(udp_refused(&b.ns, &c.ips()[1], 9999), "the same over IPv6");
    assert!(denied(&node, &b, Direction::Receive).packets > 0);
    for pod in [&a, &b, &c] {
        node.assert_counters_match_kernel(&pod.host_ifname());
    }
    for (remote, port, code) in [(&a_ip, "80", 0), (&a_ip, "81", 1), (&c_ip, "80", 1)] {
        let out = check(
            &node,
            "test/b",
            "receive",
            remote,
            &["--proto", "tcp", "--port", port],
        );
        assert_eq!(out.status.code(), Some(code), "{remote}:{port} {out:?}");
    }
}

/// Issue 10, case 3: inside a denied /8 an allowed /32 wins, in both
/// families; port ranges and `any` match as documented.
#[test]
fn the_longest_prefix_wins_in_both_families() {
    podmeter_testkit::needs_root!();
    let (node, [a, b, c]) = three_pods();
    let _servers = [
        TcpServer::start(&b.ns, 9000),
        TcpServer::start(&b.ns, 8050),
        TcpServer::start(&c.ns, 9000),
    ];
    let (b_ips, c_ips) = (b.ips(), c.ips());
    let (b4, b6, c4, c6) = (
        b_ips[0].as_str(),
        b_ips[1].as_str(),
        c_ips[0].as_str(),
        c_ips[1].as_str(),
    );
    for (cidr, action) in [
        ("10.0.0.0/8".to_owned(), "deny"),
        (format!("{b4}/32"), "allow"),
        ("fd00::/8".to_owned(), "deny"),
        (format!("{b6}/128"), "allow"),
    ] {
        add_rule(&node, "test/a", "transmit", action, &["--cidr", &cidr]);
    }
    let b32 = format!("{b4}/32");
    add_rule(
        &node,
        "test/a",
        "transmit",
        "deny",
        &["--cidr", &b32, "--proto", "tcp", "--ports", "8000-8100"],
    );
    add_rule(
        &node,
        "test/a",
        "transmit",
        "deny",
        &["--cidr", &b32, "--ports", "5353"],
    );

    assert!(tcp_talks(&a.ns, b4, 9000, QUICK), "/32 allow inside the /8");
    assert!(
        tcp_talks(&a.ns, b6, 9000, QUICK),
        "/128 allow inside the /8"
    );
    assert!(!tcp_talks(&a.ns, c4, 9000, QUICK), "the /8 deny");
    assert!(!tcp_talks(&a.ns, c6, 9000, QUICK), "the IPv6 /8 deny");
    assert!(
        !tcp_talks(&a.ns, b4, 8050, QUICK),
        "the port range on the /32"
    );
    assert!(tcp_talks(&a.ns, b6, 8050, QUICK), "no range on the /128");
    assert!(
        pings(&a.ns, b4) && !pings(&a.ns, c4),
        "ICMP follows the CIDRs"
    );

    // Port range edges, protocols, `any` with a port, from podmeterctl.
    for (remote, proto, port, code) in [
        (b4, "tcp", Some("7999"), 0),
        (b4, "tcp", Some("8000"), 1),
        (b4, "tcp", Some("8100"), 1),
        (b4, "tcp", Some("8101"), 0),
        (b4, "udp", Some("8050"), 0),
        (b4, "udp", Some("5353"), 1),
        (b4, "tcp", Some("5353"), 1),
        (b4, "icmp", None, 0),
        (c4, "udp", Some("53"), 1),
        (b6, "tcp", Some("8050"), 0),
        (c6, "icmpv6", None, 1),
        ("192.168.1.1", "tcp", Some("80"), 0),
    ] {
        let mut rest = vec!["--proto", proto];
        rest.extend(port.iter().flat_map(|p| ["--port", *p]));
        let out = check(&node, "test/a", "transmit", remote, &rest);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{remote} {proto} {port:?}: {out:?}"
        );
    }
    for pod in [&a, &b, &c] {
        node.assert_counters_match_kernel(&pod.host_ifname());
    }
}

/// What a reload or re-attach would change on the pod's host veth: per
/// hook, the TCX revision (bumped by every attach and detach), the attached
/// program ids and the pinned link's id.
fn attached(node: &Node, pod: &Pod) -> Vec<(u64, Vec<u32>, u32)> {
    let (ifname, (ifindex, _)) = (pod.host_ifname(), node.registered(pod));
    let layout = node.layout();
    node.ns.run_in(|| {
        PROGRAMS
            .iter()
            .map(|spec| {
                let (revision, programs) =
                    SchedClassifier::query_tcx(&ifname, spec.attach_type).unwrap();
                let pin = layout.link(ifindex, spec.hook);
                let link = FdLink::from(PinnedLink::from_pin(&pin).unwrap());
                (
                    revision,
                    programs.iter().map(|p| p.id()).collect(),
                    link.info().unwrap().id(),
                )
            })
            .collect()
    })
}

/// Issue 10, case 4: rules added and removed while traffic flows take
/// effect at the next packet, with the same programs and links.
#[test]
fn rules_change_at_runtime_without_reload() {
    podmeter_testkit::needs_root!();
    let (node, [a, b, c]) = three_pods();
    let b_ip = b.ips()[0].clone();
    let before: Vec<_> = [&a, &b, &c].iter().map(|p| attached(&node, p)).collect();
    // C streams pings to B throughout; its counters must stay exact.
    let mut stream =
        c.ns.command("busybox")
            .args(["ping", "-q", "-i", "0.02", "-c", "250", &b_ip])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();

    let cidr = format!("{b_ip}/32");
    for _ in 0..3 {
        assert!(pings(&a.ns, &b_ip));
        let id = add_rule(
            &node,
            "test/a",
            "transmit",
            "deny",
            &["--cidr", &cidr, "--proto", "icmp"],
        );
        assert!(!pings(&a.ns, &b_ip), "denied from the next packet");
        ctl_ok(&node, &["policy", "delete", "test/a", &id.to_string()]);
        assert!(pings(&a.ns, &b_ip), "allowed from the next packet");
    }
    assert!(stream.wait().unwrap().success(), "C's stream lost packets");

    // A flow the rules already let through meets a new rule at its next
    // packet: one UDP flow, A to B, before and after a deny and its removal.
    let receiver = b.ns.run_in(|| UdpSocket::bind(("0.0.0.0", 7000)).unwrap());
    receiver
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let sender = a.ns.run_in(|| UdpSocket::bind(("0.0.0.0", 0)).unwrap());
    sender.connect((b_ip.as_str(), 7000)).unwrap();
    let arrives = || {
        sender.send(b"x").unwrap();
        receiver.recv(&mut [0u8; 8]).is_ok()
    };
    let unrelated = add_rule(&node, "test/a", "transmit", "deny", &["--proto", "icmpv6"]);
    assert!(arrives(), "the flow, allowed and tracked");
    let id = add_rule(
        &node,
        "test/a",
        "transmit",
        "deny",
        &["--cidr", &cidr, "--proto", "udp", "--ports", "7000"],
    );
    assert!(!arrives(), "the same flow, denied from the next packet");
    ctl_ok(&node, &["policy", "delete", "test/a", &id.to_string()]);
    assert!(arrives(), "and allowed again");
    ctl_ok(
        &node,
        &["policy", "delete", "test/a", &unrelated.to_string()],
    );
    let after: Vec<_> = [&a, &b, &c].iter().map(|p| attached(&node, p)).collect();
    assert_eq!(before, after, "same programs, same links");
    assert_eq!(denied(&node, &a, Direction::Transmit).packets, 4);
    for pod in [&a, &b, &c] {
        assert_eq!(
            denied(&node, pod, Direction::Receive),
            PodCounter::default()
        );
        node.assert_counters_match_kernel(&pod.host_ifname());
    }
    // A's policy went with its last rule: A is back to counting only.
    assert_eq!(
        PolicyView::open(&node.layout())
            .unwrap()
            .defaults(node.registered(&a).0)
            .unwrap(),
        None
    );
}

/// Issue 10, case 5: bad rules are refused with the reason and change
/// nothing; without pins podmeterctl says so.
#[test]
fn bad_rules_are_refused_and_change_nothing() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let conf = node.conf("1.1.0");
    let a = node.add_pod("a", &conf);
    add_rule(&node, "test/a", "receive", "deny", &["--proto", "udp"]);
    let list = || ctl_ok(&node, &["policy", "list", "test/a", "--output", "json"]);
    let before = list();
    assert_eq!(
        serde_json::from_str::<Value>(&before).unwrap(),
        json!({"defaults": {"receive": "allow", "transmit": "allow"},
               "rules": [{"id": 1, "direction": "receive", "owner": "operator", "action": "deny", "proto": "udp"}]})
    );
    let add = |rest: &[&str]| {
        let mut args = vec![
            "policy",
            "add",
            "test/a",
            "--direction",
            "receive",
            "--action",
            "deny",
        ];
        args.extend_from_slice(rest);
        ctl_err(&node, &args)
    };
    for (rest, reason) in [
        (&["--cidr", "10.0.0.300/8"][..], "invalid IP address"),
        (
            &["--cidr", "10.1.2.3/8"],
            "host bits set (did you mean 10.0.0.0/8?)",
        ),
        (&["--ports", "70000"], "not a number in 0..=65535"),
        (&["--proto", "gre"], "unknown protocol \"gre\""),
        (
            &["--proto", "icmp", "--ports", "80"],
            "ports apply to tcp, udp or any",
        ),
    ] {
        let stderr = add(rest);
        assert!(stderr.contains(reason), "{rest:?}: {stderr}");
    }
    let stderr = ctl_err(
        &node,
        &[
            "policy",
            "add",
            "test/nope",
            "--direction",
            "receive",
            "--action",
            "deny",
        ],
    );
    assert!(stderr.contains("no pod \"test/nope\""), "{stderr}");
    let stderr = ctl_err(&node, &["policy", "delete", "test/a", "7"]);
    assert!(stderr.contains("has no rule 7"), "{stderr}");
    assert_eq!(list(), before);
    let (ifindex, _) = node.registered(&a);
    assert_eq!(
        policy_store::ifindexes(&node.layout()).unwrap(),
        [ifindex].into()
    );

    // A node where the plugin never ran: said plainly, nothing created.
    let nowhere = node
        .pin_path
        .with_file_name(podmeter_tests::unique("pmtest-none"));
    for args in [&["pods"][..], &["policy", "list", "x"]] {
        let out = std::process::Command::new(podmeter_tests::binary("podmeterctl"))
            .arg("--bpf.pin-path")
            .arg(&nowhere)
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert!(stderr.contains("no podmeter pins at"), "{stderr}");
    }
    assert!(!nowhere.exists());
}

/// Issue 10, case 6: rules from the plugin's config come with ADD and go
/// with DEL, with the pod's flows and rules added later, cycle after cycle.
#[test]
fn config_policy_comes_and_goes_with_the_pod() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let mut conf = node.conf("1.1.0");
    conf["policy"] = json!({
        "receive": {"default": "deny", "rules": [
            {"action": "allow", "proto": "icmp"},
            {"action": "allow", "proto": "icmpv6"}]}
    });
    let other = node.add_pod("other", &node.conf("1.1.0"));
    let _server = TcpServer::start(&other.ns, 9000);
    for round in 0..3 {
        let a = node.add_pod("a", &conf);
        let (ifindex, _) = node.registered(&a);
        let a_ip = a.ips()[0].clone();
        let _a_server = TcpServer::start(&a.ns, 9000);
        let listed: Value =
            serde_json::from_str(&ctl_ok(&node, &["policy", "list", "test/a", "-o", "json"]))
                .unwrap();
        assert_eq!(listed["defaults"]["receive"], "deny", "round {round}");
        assert_eq!(
            listed["rules"].as_array().unwrap().len(),
            2,
            "round {round}"
        );
        assert!(pings(&other.ns, &a_ip), "icmp allowed");
        assert!(!tcp_talks(&other.ns, &a_ip, 9000, QUICK), "tcp denied");
        assert!(tcp_talks(&a.ns, &other.ips()[0], 9000, QUICK), "A's own");
        add_rule(
            &node,
            &a.host_ifname(),
            "transmit",
            "deny",
            &["--proto", "udp"],
        );
        let store = PolicyView::open(&node.layout()).unwrap();
        assert!(!store.flows(ifindex).unwrap().is_empty(), "flows tracked");

        assert!(node.del(&a, &conf).success, "round {round}");
        assert!(
            !policy_store::ifindexes(&node.layout())
                .unwrap()
                .contains(&ifindex),
            "policy, rules or flows left after DEL"
        );
        assert!(
            !link_pins(&node.layout())
                .iter()
                .any(|p| p.starts_with(&format!("{ifindex}_"))),
            "link pins left"
        );
    }
    assert!(policy_store::ifindexes(&node.layout()).unwrap().is_empty());
    // A config with a bad rule fails ADD with the reason, before anything.
    let mut bad = node.conf("1.1.0");
    bad["policy"] =
        json!({"transmit": {"rules": [{"action": "deny", "ports": "80", "proto": "icmp"}]}});
    let ns = NetNs::new("pmt-pod");
    let out = node.cni("ADD", &bad, "bad-policy", Some(&ns), "eth0", "");
    assert_eq!(out.code(), 7);
    assert!(
        out.stdout.contains("ports apply to tcp, udp or any"),
        "{out:?}"
    );
    assert_eq!(
        node.leases().len(),
        2,
        "only `other`'s leases: {:?}",
        node.leases()
    );
}
