//! Kubernetes Services over podmeter's bridge, in a simulated two-node
//! cluster (`podmeter_tests::sim_cluster`: real agents writing each node's
//! conflist, real plugin) with kube-proxy emulated by nftables DNAT in each
//! node's netns (`podmeter_tests::services`).
//!
//! A same-node Service reply is switched at L2 on `pm0`: kube-proxy's
//! conntrack sees it, and un-NATs it, only if bridged traffic passes
//! netfilter. Hosts without `br_netfilter` loaded (Docker ≥ 27.3, so kind)
//! have `net.bridge.bridge-nf-call-iptables` 0 or absent; the agent's
//! conflist asks the plugin for the bridge's own `nf_call_iptables`
//! (`bridgeNetfilter`), which does not depend on the sysctl, and for
//! `hairpinMode`, without which a pod DNATed back to itself is refused by
//! the bridge.

use std::time::{Duration, Instant};

use podmeter_tests::{
    services::{
        bridge_nf_sysctls, http_server, kube_proxy, run_kind_checks, udp_echo, udp_echoes, Service,
    },
    sim_cluster::SimCluster,
    traffic::{tcp_talks, TcpServer},
    NetNs, Pod,
};

const SVC: Service = Service {
    v4: "10.96.0.10",
    v6: "fd00:10:96::10",
    port: 80,
};
const TARGET_PORT: u16 = 8080;
/// The same ClusterIPs on another port, to an HTTP server on the same
/// endpoint: kind-config/checks.sh fetches over HTTP.
const HTTP_SVC: Service = Service {
    v4: SVC.v4,
    v6: SVC.v6,
    port: 81,
};
const HTTP_TARGET_PORT: u16 = 8081;

/// Waits (up to 10 s: a new pod's first IPv6 neighbour discovery can take
/// a moment) until `from` talks TCP and UDP with the Service over `family`'s
/// ClusterIP; panics naming the case otherwise.
fn reaches_service(from: &NetNs, case: &str) {
    for ip in [SVC.v4, SVC.v6] {
        let start = Instant::now();
        loop {
            let tcp = tcp_talks(from, ip, SVC.port, Duration::from_secs(1));
            let udp = udp_echoes(from, ip, SVC.port);
            if tcp && udp {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{case}: Service {ip}:{}: TCP {}, UDP {}",
                SVC.port,
                if tcp { "ok" } else { "FAILED" },
                if udp { "ok" } else { "FAILED" },
            );
        }
    }
}

/// Every case, under the node's current sysctls.
fn every_case(a: &Pod, b: &Pod, c: &Pod, sysctls: u8) {
    reaches_service(&a.ns, &format!("same node, sysctls {sysctls}"));
    reaches_service(&c.ns, &format!("other node, sysctls {sysctls}"));
    reaches_service(&b.ns, &format!("own Service (hairpin), sysctls {sysctls}"));
}

#[test]
fn services_work_on_the_same_node_another_node_and_hairpin_whatever_the_sysctls() {
    podmeter_testkit::needs_root!();
    let c = SimCluster::new(2);
    let (n1, n2) = (&c.node(1).node, &c.node(2).node);
    // A host without br_netfilter loaded, before the first pod.
    for n in [n1, n2] {
        bridge_nf_sysctls(&n.ns, 0);
    }
    let a = n1.add_pod("a", &c.conf(1));
    let b = n1.add_pod("b", &c.conf(1));
    let other = n2.add_pod("c", &c.conf(2));
    let _tcp = TcpServer::start(&b.ns, TARGET_PORT);
    let _udp = udp_echo(&b.ns, TARGET_PORT);
    let _http = http_server(&b.ns, HTTP_TARGET_PORT);
    // kube-proxy runs on every node.
    for n in [n1, n2] {
        kube_proxy(&n.ns, &SVC, &b.ips(), TARGET_PORT);
        kube_proxy(&n.ns, &HTTP_SVC, &b.ips(), HTTP_TARGET_PORT);
    }

    every_case(&a, &b, &other, 0);

    // The checks notice: without the bridge's own option (a plugin that
    // does not set it) the same-node reply keeps the pod's address...
    let br = |on: u8| {
        let on = on.to_string();
        n1.ns.exec(&[
            "ip",
            "link",
            "set",
            "pm0",
            "type",
            "bridge",
            "nf_call_iptables",
            &on,
            "nf_call_ip6tables",
            &on,
        ]);
    };
    br(0);
    let checks = run_kind_checks(&HTTP_SVC, &b.ns, &a.ns, &other.ns);
    let text = String::from_utf8_lossy(&checks.stdout);
    assert!(
        !checks.status.success()
            && text.contains("FAILED: Service 10.96.0.10 from a pod on the same node")
            && text.contains("ok: Service 10.96.0.10 from a pod on another node"),
        "kind-config/checks.sh did not notice a same-node Service failing:\n{text}"
    );
    br(1);
    // ... and without hairpin the bridge does not send b's frame back to it.
    let hairpin = |on: &str| {
        n1.ns.exec(&[
            "ip",
            "link",
            "set",
            &b.host_ifname(),
            "type",
            "bridge_slave",
            "hairpin",
            on,
        ]);
    };
    hairpin("off");
    assert!(
        !tcp_talks(&b.ns, SVC.v4, SVC.port, Duration::from_secs(2)),
        "a pod reached its own Service without hairpin: the check cannot fail"
    );
    hairpin("on");

    // A host with br_netfilter loaded: the same.
    for n in [n1, n2] {
        bridge_nf_sysctls(&n.ns, 1);
    }
    every_case(&a, &b, &other, 1);

    // kind-config/up.sh's final Service checks, run here.
    let checks = run_kind_checks(&HTTP_SVC, &b.ns, &a.ns, &other.ns);
    let text = String::from_utf8_lossy(&checks.stdout);
    assert!(
        checks.status.success(),
        "kind-config/checks.sh:\n{text}{}",
        String::from_utf8_lossy(&checks.stderr)
    );
    for ip in [SVC.v4, SVC.v6] {
        for case in [
            "a pod on the same node",
            "a pod on another node",
            "its own endpoint (hairpin)",
        ] {
            let line = format!("ok: Service {ip} from {case}");
            assert!(text.contains(&line), "no {line:?} in\n{text}");
        }
    }
}
