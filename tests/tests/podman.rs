//! podman 4.3 with its CNI backend as the runtime, podmeter first in the
//! conflist (`podmeter_tests::podman` isolates podman per test). podman
//! passes `CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAME=<container name>` (plus
//! the pairs of its own `CNI_ARGS` environment variable, if set), so a
//! container is metered under its name, with an empty namespace and UID.

use std::process::Command;

use podmeter_ebpf::PodIdentity;
use podmeter_tests::{
    node::{NETWORK, SUBNET_V4},
    podman::{Container, Podman},
    Node,
};
use serde_json::{json, Value};

/// podmeter, then portmap and tuning as in podman's own default conflist.
fn plugins(podmeter: Value) -> Vec<Value> {
    vec![
        podmeter,
        json!({"type": "portmap", "capabilities": {"portMappings": true}}),
        json!({"type": "tuning"}),
    ]
}

fn identity(node: &Node, container: &Container) -> PodIdentity {
    node.maps()
        .find(NETWORK, &container.id, "eth0")
        .unwrap()
        .unwrap_or_else(|| panic!("{} is not registered", container.name))
        .1
}

fn ping(podman: &Podman, from: &str, to_ip: &str) {
    let out = podman.exec(from, &["ping", "-c", "3", "-i", "0.2", "-W", "2", to_ip]);
    assert!(
        out.status.success(),
        "{from} → {to_ip}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn two_containers_ping_each_other_and_are_metered_under_their_names() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let podman = Podman::new(&node, plugins(node.conf("1.0.0")));

    let networks = podman.podman(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
    assert!(
        networks.lines().any(|l| l == format!("{NETWORK} podmeter")),
        "{networks}"
    );
    let inspect: Value =
        serde_json::from_str(&podman.podman(&["network", "inspect", NETWORK])).unwrap();
    assert_eq!(inspect[0]["name"], NETWORK, "{inspect}");
    assert_eq!(inspect[0]["driver"], "podmeter", "{inspect}");

    let a = podman.run("web", None);
    let b = podman.run("db", Some("K8S_POD_NAMESPACE=shop"));
    let (ip_a, ip_b) = (podman.ip("web"), podman.ip("db"));
    let subnet_prefix = SUBNET_V4.trim_end_matches("0/24");
    assert!(ip_a.starts_with(subnet_prefix), "{ip_a}");
    ping(&podman, "web", &ip_b);
    ping(&podman, "db", &ip_a);

    // What podman passed (libcni caches it with the result) ...
    let cached = podman.cni_cache(&a.id).expect("libcni cache entry");
    assert_eq!(
        cached["cniArgs"],
        json!([["IgnoreUnknown", "1"], ["K8S_POD_NAME", "web"]])
    );
    assert_eq!(
        podman.cni_cache(&b.id).unwrap()["cniArgs"],
        json!([
            ["IgnoreUnknown", "1"],
            ["K8S_POD_NAME", "db"],
            ["K8S_POD_NAMESPACE", "shop"]
        ])
    );
    // ... and the identity podmeter registered from it.
    for (container, ip, namespace) in [(&a, &ip_a, ""), (&b, &ip_b, "shop")] {
        let id = identity(&node, container);
        assert_eq!(
            (id.namespace.as_str(), id.pod.as_str(), id.uid.as_str()),
            (namespace, container.name.as_str(), "")
        );
        assert_eq!(id.container_id, container.id);
        assert_eq!(id.ips[0].0.to_string(), *ip);
        let counters = node.assert_counters_match_kernel(&id.host_ifname);
        assert!(
            counters.transmit.packets >= 6,
            "{}: {counters:?}",
            container.name
        );
    }

    // A fresh reader (what the exporter serves) shows the names too.
    let stat = Command::new(podmeter_tests::binary("podmeterctl"))
        .arg("--bpf.pin-path")
        .arg(&node.pin_path)
        .args(["pods", "--output", "json"])
        .output()
        .unwrap();
    let mut names: Vec<(String, String)> = String::from_utf8_lossy(&stat.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let s = |k: &str| v[k].as_str().unwrap().to_owned();
            (s("namespace"), s("pod"))
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [("".into(), "web".into()), ("shop".into(), "db".into())]
    );
}

#[test]
fn rm_removes_entries_and_leases_and_later_runs_reuse_the_addresses() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    // Room for three containers, IPv4 only.
    let mut conf = node.conf("1.0.0");
    conf["ipam"]["ranges"] =
        json!([[{"subnet": SUBNET_V4, "rangeStart": "10.77.0.2", "rangeEnd": "10.77.0.4"}]]);
    let podman = Podman::new(&node, plugins(conf));

    let first: Vec<Container> = ["a", "b", "c"]
        .iter()
        .map(|n| podman.run(n, None))
        .collect();
    let mut addresses: Vec<String> = ["a", "b", "c"].iter().map(|n| podman.ip(n)).collect();
    addresses.sort();
    assert_eq!(addresses, ["10.77.0.2", "10.77.0.3", "10.77.0.4"]);
    assert_eq!(node.leases(), addresses);

    // A fourth does not fit: podman's run fails and leaves nothing behind.
    let out = podman.try_run("d", None);
    assert!(!out.status.success(), "a fourth container got an address");
    assert_eq!(node.maps().pods().unwrap().len(), 3);
    assert_eq!(node.leases(), addresses);

    let ip_a = podman.ip("a");
    let freed: Vec<String> = addresses
        .iter()
        .filter(|ip| **ip != ip_a)
        .cloned()
        .collect();
    podman.rm(&["b", "c"]);
    assert_eq!(node.leases(), [ip_a], "b's and c's leases left");
    let registered: Vec<String> = node
        .maps()
        .pods()
        .unwrap()
        .into_iter()
        .map(|(_, p)| p.pod)
        .collect();
    assert_eq!(registered, ["a"], "b's and c's registry entries left");
    for gone in &first[1..] {
        assert!(podman.cni_cache(&gone.id).is_none());
    }

    // New containers get the freed addresses, and each address answers once.
    let e = podman.run("e", None);
    let f = podman.run("f", None);
    let mut reused = vec![podman.ip("e"), podman.ip("f")];
    reused.sort();
    assert_eq!(reused, freed);
    ping(&podman, "e", &podman.ip("f"));
    ping(&podman, "e", &podman.ip("a"));
    ping(&podman, "a", &podman.ip("f"));
    for c in [&first[0], &e, &f] {
        node.assert_counters_match_kernel(&identity(&node, c).host_ifname);
    }

    podman.rm(&["a", "e", "f"]);
    assert!(node.maps().pods().unwrap().is_empty());
    assert!(node.maps().counters().unwrap().is_empty());
    assert!(node.leases().is_empty(), "{:?}", node.leases());
    assert!(node.link_pins().is_empty(), "{:?}", node.link_pins());
    assert_eq!(node.ns.links(), ["lo", "pm0"]);
    assert!(
        podman.cni_cache_entries().is_empty(),
        "{:?}",
        podman.cni_cache_entries()
    );
}
