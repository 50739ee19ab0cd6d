//! podmeter first in a conflist with the reference meta plugins after it,
//! `podmeter` → `portmap` → `bandwidth` → `tuning`, driven as libcni drives
//! a conflist (`podmeter_tests::conflist`). The reference plugins (1.1.1)
//! speak up to CNI 1.0.0.
//!
//! Counting under the bandwidth plugin: its egress shaping (pod transmit) is
//! an ingress qdisc redirecting to an ifb device, which runs after our TCX
//! ingress program and after the veth counted the packet: both sides count
//! the same packets. Its ingress shaping (pod receive) is a tbf qdisc on the
//! host veth, which runs after our TCX egress program but before the veth
//! counts: the drop tracer sees each packet tbf drops as a `QDISC_DROP`
//! receive drop of the pod and takes it back out of the pod's receive
//! counters, which so stay equal to the veth's transmit counters.

use std::{
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use podmeter_ebpf::{programs::drop_reasons::DropReasons, Direction, PodCounter};
use podmeter_tests::{
    conflist::{Attachment, ChainError, Runtime},
    node::{GATEWAY_V4, NETWORK},
    NetNs, Node, Pod,
};
use serde_json::{json, Value};

const HOST_PORT: u16 = 18080;
const CONTAINER_PORT: u16 = 8080;
/// 10 Mbit/s, in bits per second as the bandwidth plugin takes it.
const RATE: u64 = 10_000_000;
/// 1 Mbit of burst (the plugin takes bits): over a 2 s run that is 5% above the rate.
const BURST: u64 = 1_000_000;
const SOMAXCONN: &str = "1234";
/// tuning sets the pod's MTU, and keeps the old one in its dataDir until DEL.
const POD_MTU: u32 = 1400;

fn conflist(node: &Node, tuning_dir: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "plugins": [
            node.conf("1.0.0"),
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "bandwidth", "capabilities": {"bandwidth": true}},
            // dataDir: where tuning keeps what it changed (default /run/cni/tuning).
            {
                "type": "tuning",
                "sysctl": {"net.core.somaxconn": SOMAXCONN},
                "mtu": POD_MTU,
                "dataDir": tuning_dir,
            },
        ],
    })
}

fn port_mapping() -> (&'static str, Value) {
    let ports =
        json!([{"hostPort": HOST_PORT, "containerPort": CONTAINER_PORT, "protocol": "tcp"}]);
    ("portMappings", ports)
}

fn shaping() -> (&'static str, Value) {
    let limits = json!({
        "ingressRate": RATE, "ingressBurst": BURST,
        "egressRate": RATE, "egressBurst": BURST,
    });
    ("bandwidth", limits)
}

/// A pod namespace ADDed through the whole chain with Kubernetes `CNI_ARGS`
/// and the given capability arguments.
fn add(rt: &Runtime, list: &Value, name: &str, caps: &[(&str, Value)]) -> (Pod, Attachment) {
    let ns = NetNs::new("pmt-pod");
    let mut att = Attachment::new(&podmeter_tests::unique(name), &ns)
        .arg("IgnoreUnknown", "1")
        .arg("K8S_POD_NAMESPACE", "chain")
        .arg("K8S_POD_NAME", name);
    for (key, value) in caps {
        att = att.capability(key, value.clone());
    }
    let result = rt
        .add(list, &att)
        .unwrap_or_else(|e| panic!("ADD {name}: {e}"));
    let pod = Pod {
        ns,
        container_id: att.container_id.clone(),
        ifname: att.ifname.clone(),
        result,
    };
    (pod, att)
}

/// CHECK through the whole chain; returns the plugins left out. The
/// reference plugins 1.1.1 have two CHECK bugs unrelated to podmeter:
/// portmap with port mappings also looks for its IPv4 rules in ip6tables
/// (containernetworking/plugins#819), and bandwidth without a bandwidth
/// config dereferences nil (containernetworking/plugins#1221). A CHECK that
/// fails with exactly one of those is repeated without that plugin; any
/// other failure fails the test.
fn check(rt: &Runtime, list: &Value, att: &Attachment) -> Vec<String> {
    let mut list = list.clone();
    let mut left_out = Vec::new();
    loop {
        let (plugin, output) = match rt.check(&list, att) {
            Ok(()) => return left_out,
            Err(ChainError::Plugin { plugin, output, .. }) => (plugin, output),
            Err(e) => panic!("CHECK: {e}"),
        };
        let known = match plugin.as_str() {
            "portmap" => output.stdout.contains("could not check ipv6 dnat"),
            "bandwidth" => output.stderr.contains("nil pointer dereference"),
            _ => false,
        };
        assert!(
            known,
            "CHECK of {plugin} failed: {}\n{}",
            output.stdout, output.stderr
        );
        list["plugins"]
            .as_array_mut()
            .unwrap()
            .retain(|p| p["type"] != plugin.as_str());
        left_out.push(plugin);
    }
}

/// A server started in a namespace, killed on drop.
struct Server(Child);

impl Server {
    fn start(ns: &NetNs, argv: &[&str]) -> Self {
        let child = ns
            .command(argv[0])
            .args(&argv[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        Self(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Retries `f` until it returns `Some` (a server still starting), for up to 5 s.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{what}: timed out"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET url` from `client` (busybox wget; its `-T` crashes in 1.35, hence `timeout`).
fn http_get(client: &NetNs, url: &str) -> Option<String> {
    let out = client.try_exec(&["timeout", "5", "busybox", "wget", "-q", "-O", "-", url]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Throughput in Mbit/s the receiver saw, `client` sending to `server_ip`.
fn iperf3(client: &NetNs, server_ip: &str, extra: &[&str]) -> f64 {
    let report = eventually("iperf3 client", || {
        // -O 1: the first second (slow start, tbf's burst) is not measured.
        let mut argv = vec!["iperf3", "-J", "-t", "3", "-O", "1", "-c", server_ip];
        argv.extend(extra);
        let out = client.try_exec(&argv);
        let report: Value = serde_json::from_slice(&out.stdout).ok()?;
        // A server still starting refuses the connection (exit status 0 with -J).
        (out.status.success() && report.get("error").is_none()).then_some(report)
    });
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("no throughput in {report}"))
        / 1e6
}

fn tc_qdiscs(node: &Node, dev: &str) -> Vec<Value> {
    let out = node
        .ns
        .exec(&["tc", "-s", "-j", "qdisc", "show", "dev", dev]);
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Packets the tbf qdisc on `dev` dropped.
fn tbf_drops(node: &Node, dev: &str) -> u64 {
    tc_qdiscs(node, dev)
        .iter()
        .find(|q| q["kind"] == "tbf")
        .unwrap_or_else(|| panic!("no tbf on {dev}"))["drops"]
        .as_u64()
        .unwrap()
}

/// podmeter's receive drops of `pod` for kernel drop reason `reason`.
fn receive_drops(node: &Node, pod: &Pod, reason: &str) -> PodCounter {
    let reason = DropReasons::of_running_kernel().unwrap().value(reason);
    let (ifindex, _) = node.registered(pod);
    node.maps()
        .drops()
        .unwrap()
        .into_iter()
        .filter(|d| d.ifindex == ifindex && d.direction == Direction::Receive)
        .filter(|d| Some(d.reason) == reason)
        .fold(PodCounter::default(), |sum, d| PodCounter {
            packets: sum.packets + d.dropped.packets,
            bytes: sum.bytes + d.dropped.bytes,
        })
}

#[test]
fn the_chain_adds_checks_forwards_ports_and_deletes_without_a_trace() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let (cache, tuning) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let rt = Runtime::new(&node.ns, cache.path());
    let list = conflist(&node, tuning.path());
    let (a, att_a) = add(&rt, &list, "web", &[port_mapping(), shaping()]);
    let (b, att_b) = add(&rt, &list, "client", &[]);

    // podmeter's result went down the chain: bandwidth found the host veth in
    // it (tbf there) and appended its ifb; tuning found eth0 in the sandbox.
    let host = a.host_ifname();
    assert!(host.starts_with("pm"), "{}", a.result);
    let kinds: Vec<Value> = tc_qdiscs(&node, &host)
        .iter()
        .map(|q| q["kind"].clone())
        .collect();
    assert!(
        kinds.contains(&json!("tbf")) && kinds.contains(&json!("ingress")),
        "{kinds:?}"
    );
    let ifb = a.result["interfaces"][3]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(node.ns.links().contains(&ifb), "{}", a.result);
    assert_eq!(
        a.ns.exec(&["cat", "/proc/sys/net/core/somaxconn"]).trim(),
        SOMAXCONN
    );
    assert_eq!(
        a.ns.exec(&["cat", "/sys/class/net/eth0/mtu"]).trim(),
        POD_MTU.to_string()
    );
    let backups = || std::fs::read_dir(tuning.path()).unwrap().count();
    assert_eq!(
        backups(),
        2,
        "tuning keeps one backup per pod in its dataDir"
    );
    let (_, identity) = node.registered(&a);
    assert_eq!(
        (identity.namespace.as_str(), identity.pod.as_str()),
        ("chain", "web")
    );

    // CHECK, with the cached final result (which carries the ifb) as prevResult.
    let left_out = check(&rt, &list, &att_a);
    assert!(
        left_out.is_empty() || left_out == ["portmap"],
        "{left_out:?}"
    );
    let left_out = check(&rt, &list, &att_b);
    assert!(
        left_out.is_empty() || left_out == ["bandwidth"],
        "{left_out:?}"
    );

    // hostPort 18080 on the node reaches the pod's 8080. From the node
    // itself (OUTPUT DNAT), and hairpinned from another pod on the bridge
    // (PREROUTING DNAT; portmap masquerades sources in the pod's subnet, so
    // the reply comes back through the node).
    let docroot = tempfile::tempdir().unwrap();
    std::fs::write(docroot.path().join("index.html"), "hello from web\n").unwrap();
    let port = CONTAINER_PORT.to_string();
    let home = docroot.path().to_str().unwrap();
    let _httpd = Server::start(&a.ns, &["busybox", "httpd", "-f", "-p", &port, "-h", home]);
    let url = format!("http://{GATEWAY_V4}:{HOST_PORT}/");
    for client in [&node.ns, &b.ns] {
        let body = eventually("port mapping", || http_get(client, &url));
        assert_eq!(body, "hello from web\n");
    }
    node.assert_counters_match_kernel(&a.host_ifname());

    // DEL in reverse order leaves nothing of either pod.
    for att in [&att_a, &att_b] {
        rt.del(&list, att)
            .unwrap_or_else(|e| panic!("DEL {}: {e}", att.container_id));
    }
    let maps = node.maps();
    assert!(maps.pods().unwrap().is_empty(), "registry entries left");
    assert!(maps.counters().unwrap().is_empty(), "counters left");
    assert!(node.leases().is_empty(), "leases: {:?}", node.leases());
    assert!(node.link_pins().is_empty(), "{:?}", node.link_pins());
    let links = node.ns.links();
    assert!(
        links.iter().all(|l| l == "lo" || l == "pm0"),
        "links left (veths, ifb): {links:?}"
    );
    for save in ["iptables-save", "ip6tables-save"] {
        let rules = node.ns.exec(&[save, "-t", "nat"]);
        for pod in [&a, &b] {
            assert!(
                !rules.contains("CNI-DN-") && !rules.contains(&pod.container_id),
                "{save}: portmap rules left:\n{rules}"
            );
        }
    }
    assert_eq!(backups(), 0, "tuning backups left");
    assert!(rt.cached_result(&list, &att_a).is_none());
    assert!(
        http_get(&node.ns, &url).is_none(),
        "the mapping outlived DEL"
    );
}

#[test]
fn a_pod_shaped_to_10_mbits_measures_10_mbits_and_counts_exactly() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let (cache, tuning) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let rt = Runtime::new(&node.ns, cache.path());
    let list = conflist(&node, tuning.path());
    let (shaped, _) = add(&rt, &list, "shaped", &[shaping()]);
    let (b, _) = add(&rt, &list, "b", &[]);
    let (c, _) = add(&rt, &list, "c", &[]);
    let host = shaped.host_ifname();
    let _server_shaped = Server::start(&shaped.ns, &["iperf3", "-s"]);
    let _server_b = Server::start(&b.ns, &["iperf3", "-s"]);

    // Unshaped, pod to pod runs at Gbit/s.
    let free = iperf3(&c.ns, &b.ips()[0], &[]);
    assert!(free > 200.0, "unshaped: {free:.1} Mbit/s");

    // Transmit shaping (ingress qdisc → ifb → tbf) ...
    let up = iperf3(&shaped.ns, &b.ips()[0], &[]);
    // ... and receive shaping (tbf on the host veth); a 32 KiB window keeps
    // less in flight than tbf queues (rate × 25 ms + burst), so tbf delays
    // but never drops.
    let down = iperf3(&b.ns, &shaped.ips()[0], &["-w", "32K"]);
    for (what, mbits) in [("transmit", up), ("receive", down)] {
        assert!(
            (5.0..15.0).contains(&mbits),
            "{what} shaped to 10 Mbit/s measured {mbits:.2} Mbit/s"
        );
    }
    assert_eq!(tbf_drops(&node, &host), 0, "tbf dropped despite the window");
    node.assert_counters_match_kernel(&host);
    node.assert_counters_match_kernel(&b.host_ifname());

    // An unlimited window overflows tbf: the packets it drops are QDISC_DROP
    // receive drops of the pod, and not received by it.
    let down = iperf3(&b.ns, &shaped.ips()[0], &[]);
    assert!((5.0..15.0).contains(&down), "receive {down:.2} Mbit/s");
    let drops = receive_drops(&node, &shaped, "QDISC_DROP");
    assert!(
        drops.packets > 0,
        "an unlimited window never overflowed tbf"
    );
    // tbf's own drop statistic is a different accounting (segments, its
    // child qdisc): it must have dropped, but need not agree to the packet.
    assert!(tbf_drops(&node, &host) > 0);
    node.assert_counters_match_kernel(&host);
}
