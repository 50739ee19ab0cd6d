//! Per-pod TCP statistics against the kernel's own per-namespace counters:
//! two pods exchange real TCP (their own sockets), with retransmissions
//! (a share of one flow's packets dropped by nftables in the node netns),
//! resets (connections to a closed port, `SO_LINGER` 0 closes), many short
//! connections both ways, over IPv4, IPv6 and the pod's loopback, and long
//! ones left open; then each pod's counters equal its netns' `Tcp:` line.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use podmeter_ebpf::abi::{Tcp, TCP_RTT_BOUNDS};
use podmeter_tests::{
    binary,
    exporter::{promtool_check_metrics, sample, Exporter},
    leftovers::Leftovers,
    nfqueue::Delay,
    tcp::{abort, connect, exchange, snmp_tcp, wait_quiet, Server},
    Node, Pod, TwoPods,
};

/// What podmeter counted, as the kernel names it.
fn as_snmp(t: &Tcp) -> HashMap<&'static str, u64> {
    HashMap::from([
        ("RetransSegs", t.retransmits),
        ("OutRsts", t.resets_sent),
        ("ActiveOpens", t.active_opens),
        ("PassiveOpens", t.passive_opens),
        ("CurrEstab", t.established),
    ])
}

fn tcp_of(node: &Node, pod: &Pod) -> Tcp {
    let (ifindex, _) = node.registered(pod);
    node.maps().tcp().unwrap()[&ifindex]
}

/// Each pod's counters and its netns' at one quiet moment.
fn assert_tcp_matches_kernel(node: &Node, pods: &[&Pod]) {
    let namespaces: Vec<_> = pods.iter().map(|p| &p.ns).collect();
    for _ in 0..10 {
        wait_quiet(&namespaces);
        let before: Vec<_> = namespaces.iter().map(|ns| snmp_tcp(ns)).collect();
        let ours: Vec<_> = pods.iter().map(|p| tcp_of(node, p)).collect();
        let after: Vec<_> = namespaces.iter().map(|ns| snmp_tcp(ns)).collect();
        if before != after {
            continue;
        }
        for ((pod, kernel), ours) in pods.iter().zip(&after).zip(&ours) {
            let ours = as_snmp(ours);
            let kernel: HashMap<&str, u64> = ours.keys().map(|k| (*k, kernel[*k])).collect();
            assert_eq!(ours, kernel, "pod {} (podmeter, kernel)", pod.ns.name());
        }
        return;
    }
    panic!("the kernel's counters kept moving");
}

fn at(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

#[test]
fn each_pods_tcp_counters_equal_its_netns_counters() {
    podmeter_testkit::needs_root!();
    let TwoPods { node, conf, a, b } = TwoPods::new();
    let (a4, a6, b4, b6) = (&a.ips()[0], &a.ips()[1], &b.ips()[0], &b.ips()[1]);
    // One share of what a sends to b's port 7001 and of what b sends from
    // its port 7002 is lost on the way: both retransmit.
    node.ns.exec(&[
        "nft",
        "add table inet pmtcp; \
         add chain inet pmtcp lossy { type filter hook forward priority 0 ; }; \
         add rule inet pmtcp lossy tcp dport 7001 numgen inc mod 7 == 0 drop; \
         add rule inet pmtcp lossy tcp sport 7002 numgen inc mod 7 == 0 drop",
    ]);
    let servers = [
        Server::start(&b.ns, "::", 7000, 1000),
        Server::start(&b.ns, "::", 7001, 10),
        Server::start(&b.ns, "::", 7002, 2_000_000),
        Server::start(&a.ns, "::", 7000, 1000),
        Server::start(&a.ns, "127.0.0.1", 7003, 100),
    ];
    // Short connections both ways, both families.
    for _ in 0..20 {
        assert_eq!(exchange(&a.ns, at(b4, 7000), 500), 1000);
        assert_eq!(exchange(&b.ns, at(a4, 7000), 500), 1000);
    }
    for _ in 0..5 {
        exchange(&a.ns, at(b6, 7000), 500);
        exchange(&b.ns, at(a6, 7000), 500);
        // Within a, over its loopback: both ends are a's.
        exchange(&a.ns, at("127.0.0.1", 7003), 10);
    }
    // Bulk with loss: a's data to b, then b's answer to a.
    exchange(&a.ns, at(b4, 7001), 3_000_000);
    exchange(&a.ns, at(b6, 7002), 10);
    // Resets: a closed port (b's, a's loopback), and aborts.
    for _ in 0..4 {
        assert!(connect(&a.ns, at(b4, 7999)).is_err());
        assert!(connect(&a.ns, at(b6, 7999)).is_err());
        assert!(connect(&a.ns, at("127.0.0.1", 7999)).is_err());
    }
    for _ in 0..3 {
        abort(&a.ns, at(b4, 7000));
        abort(&b.ns, at(a6, 7000));
    }
    // Long connections, left open while comparing.
    let long: Vec<_> = (0..3)
        .map(|_| connect(&a.ns, at(b4, 7000)).unwrap())
        .chain((0..2).map(|_| connect(&b.ns, at(a6, 7000)).unwrap()))
        .collect();

    assert_tcp_matches_kernel(&node, &[&a, &b]);
    let (ta, tb) = (tcp_of(&node, &a), tcp_of(&node, &b));
    // What the traffic must have made: a test that counts nothing passes
    // nothing.
    assert!(ta.retransmits > 0 && tb.retransmits > 0, "{ta:?} {tb:?}");
    assert!(ta.resets_sent >= 7 && tb.resets_sent >= 11, "{ta:?} {tb:?}");
    // Each pod holds 3 + 2 long connections, as client or server.
    assert_eq!((ta.established, tb.established), (5, 5));
    assert!(ta.rtt_count > 0 && tb.rtt_count > 0);

    // The exporter says the same, with the pod's labels.
    let exporter = Exporter::start(&binary("podmeter-exporter"), &node.pin_path);
    let metrics = exporter.metrics();
    promtool_check_metrics(&metrics);
    let series = |family: &str, pod: &str, more: &str| {
        let name = format!(
            r#"podmeter_pod_tcp_{family}{{namespace="test",pod="{pod}",interface="eth0"{more}}}"#
        );
        sample(&metrics, &name).unwrap_or_else(|| panic!("{name} missing in\n{metrics}"))
    };
    assert_eq!(series("retransmits_total", "a", ""), ta.retransmits as f64);
    assert_eq!(
        series("connections_opened_total", "b", r#",side="passive""#),
        tb.passive_opens as f64
    );
    assert_eq!(series("connections", "a", ""), ta.established as f64);
    assert_eq!(series("rtt_seconds_count", "b", ""), tb.rtt_count as f64);
    drop(long);
    drop(servers);

    // DEL leaves nothing of a in the TCP map or the devices map (its
    // netns entry): what is left is b's.
    let (ifindex, _) = node.registered(&a);
    node.del(&a, &conf).ok();
    assert!(!node.maps().tcp().unwrap().contains_key(&ifindex));
    let left = Leftovers::read(&node.site(&[&b.ns]));
    // b's two veth ends and netns; its two traffic counters and TCP entry.
    assert_eq!((left.devices, left.counters), (3, 3), "{left:?}");

    // The same netns ADDed again (same cookie) starts at zero, though its
    // kernel counters do not; and counts from there.
    node.cni(
        "ADD",
        &conf,
        "again",
        Some(&a.ns),
        "eth0",
        "K8S_POD_NAMESPACE=test;K8S_POD_NAME=again",
    )
    .ok();
    let readded = Pod {
        ns: a.ns,
        container_id: "again".into(),
        ifname: "eth0".into(),
        result: serde_json::Value::Null,
    };
    assert_eq!(tcp_of(&node, &readded), Tcp::default());
    let _server = Server::start(&b.ns, "::", 7000, 10);
    exchange(&readded.ns, at(b4, 7000), 10);
    wait_quiet(&[&readded.ns]);
    let t = tcp_of(&node, &readded);
    assert_eq!(
        (t.active_opens, t.passive_opens, t.rtt_count),
        (1, 0, 1),
        "{t:?}"
    );
    node.del(&readded, &conf).ok();
}

/// The buckets (by upper bound, microseconds) holding `t`'s RTTs.
fn rtt_bounds_seen(t: &Tcp) -> Vec<u64> {
    (0..=TCP_RTT_BOUNDS)
        .filter(|&i| t.rtt_buckets[i] > 0)
        .map(|i| {
            if i < TCP_RTT_BOUNDS {
                Tcp::rtt_bound_us(i)
            } else {
                u64::MAX
            }
        })
        .collect()
}

/// a's packets wait 20 ms in the node (an NFQUEUE delay), b's do not:
/// each connection's smoothed RTT, observed when it ends, falls in the
/// buckets around 20 ms for a and below 1 ms for b, once per connection.
#[test]
fn each_ended_connection_observes_its_rtt_once() {
    podmeter_testkit::needs_root!();
    let TwoPods { node, conf, a, b } = TwoPods::new();
    let c = node.add_pod("c", &conf);
    let c4 = c.ips()[0].clone();
    let _delay = Delay::start(&node.ns, 7, Duration::from_millis(20));
    // The kernel has the xtables NFQUEUE target, not nftables' queue.
    node.ns.exec(&[
        "iptables",
        "-A",
        "FORWARD",
        "-s",
        &a.ips()[0],
        "-j",
        "NFQUEUE",
        "--queue-num",
        "7",
    ]);
    let _server = Server::start(&c.ns, "0.0.0.0", 7000, 1000);
    const CONNECTIONS: u64 = 10;
    for _ in 0..CONNECTIONS {
        exchange(&a.ns, at(&c4, 7000), 2000);
        exchange(&b.ns, at(&c4, 7000), 2000);
    }
    wait_quiet(&[&a.ns, &b.ns, &c.ns]);
    let (ta, tb, tc) = (tcp_of(&node, &a), tcp_of(&node, &b), tcp_of(&node, &c));
    assert_eq!((ta.rtt_count, tb.rtt_count), (CONNECTIONS, CONNECTIONS));
    // c's end of each: half of them slow.
    assert_eq!(tc.rtt_count, 2 * CONNECTIONS);
    let (seen_a, seen_b) = (rtt_bounds_seen(&ta), rtt_bounds_seen(&tb));
    // (12.8, 25.6] and (25.6, 51.2] ms.
    assert!(
        seen_a.iter().all(|b| [25_600, 51_200].contains(b)),
        "{seen_a:?} {ta:?}"
    );
    assert!(seen_b.iter().all(|b| *b <= 800), "{seen_b:?} {tb:?}");
    let mean_a = ta.rtt_sum_us / ta.rtt_count;
    assert!((20_000..40_000).contains(&mean_a), "{ta:?}");
    for pod in [&a, &b, &c] {
        node.del(pod, &conf).ok();
    }
}
