//! containerd 1.6 as a Kubernetes node's runtime: pods made and removed over
//! CRI exactly as the kubelet asks for them, containerd running podmeter
//! (then portmap) from the conflist the node agent renders from the Node's
//! podCIDRs; metering checked through the real exporter against the
//! kernel's counters; what every teardown, a containerd restart, and a
//! failed ADD leave behind.

use podmeter_ebpf::PodIdentity;
use podmeter_tests::{
    // The node agent's conflist, from the Node object's podCIDRs (a
    // stand-in until the agent's crate can be used here: swap this line).
    agent_conflist::{node_fixture, pod_cidrs, render, Options, NETWORK_NAME},
    binary,
    containerd::{Containerd, Sandbox},
    cri::PodMeta,
    exporter::{assert_scrape_matches_kernel, pod_series, sample, Exporter},
    leftovers::{Leftovers, Site},
    Node,
};

fn conflist(node: &Node) -> String {
    let options = Options {
        pin_path: node.pin_path.clone(),
        ipam_data_dir: node.data_dir.path().to_owned(),
        portmap: true,
    };
    render(&pod_cidrs(&node_fixture()), &options)
}

fn meta(name: &str) -> PodMeta {
    // UIDs as the API server makes them.
    let uid = format!("0c1d2e3f-4a5b-4c6d-8e7f-{:0>12}", name.len() * 1111);
    PodMeta::new("shop", name, &format!("{uid}-{name}"))
}

/// The host ifindex and identity podmeter registered for the sandbox.
fn registered(node: &Node, sandbox: &Sandbox) -> Option<(u32, PodIdentity)> {
    node.maps().find(NETWORK_NAME, &sandbox.id, "eth0").unwrap()
}

/// Where the node keeps podmeter's state for the agent's network.
fn site(node: &Node) -> Site {
    Site {
        netns: node.ns.name().to_owned(),
        pod_netns: Vec::new(),
        pin_path: node.pin_path.clone(),
        data_dir: node.data_dir.path().to_owned(),
        network: NETWORK_NAME.to_owned(),
    }
}

/// What the node holds beyond `baseline` (the bridge and its gateway
/// addresses and routes), by kind. containerd and its shims live in the
/// node's namespace by design and are not counted.
fn leftovers(node: &Node, baseline: &Leftovers) -> Leftovers {
    let mut found = Leftovers::read(&site(node)).beyond(baseline);
    found
        .processes
        .retain(|p| !p.ends_with(" containerd") && !p.ends_with(" containerd-shim"));
    found
}

/// Asserts that nothing of `sandbox` (registered as `ifindex`/`id`) is left:
/// no series, host veth, lease, link pin, registry or counter entry, nft
/// rule naming its addresses.
fn assert_pod_gone(
    node: &Node,
    exporter: &Exporter,
    sandbox: &Sandbox,
    ifindex: u32,
    id: &PodIdentity,
) {
    let pod = &sandbox.meta.name;
    let metrics = exporter.metrics();
    assert!(
        !metrics.contains(&format!(r#"pod="{pod}""#)),
        "series of {pod} left:\n{metrics}"
    );
    assert!(
        registered(node, sandbox).is_none(),
        "{pod} still registered"
    );
    assert!(node.maps().pod_counters(ifindex).unwrap().is_none());
    assert!(
        !node.ns.links().contains(&id.host_ifname),
        "{pod}'s veth left"
    );
    let leases = podmeter_tests::leftovers::leases(&node.data_dir.path().join(NETWORK_NAME));
    for (ip, _) in &id.ips {
        assert!(!leases.contains(&ip.to_string()), "{pod}'s lease {ip} left");
    }
    let prefix = format!("{ifindex}_");
    assert!(
        !node.link_pins().iter().any(|p| p.starts_with(&prefix)),
        "{pod}'s link pins left: {:?}",
        node.link_pins()
    );
    let ruleset = node.ns.exec(&["nft", "list", "table", "inet", "podmeter"]);
    for (ip, _) in &id.ips {
        assert!(
            !ruleset.contains(&ip.to_string()),
            "nft rule of {pod} ({ip}) left:\n{ruleset}"
        );
    }
}

#[test]
fn pods_get_addresses_from_the_node_range_talk_and_are_metered_until_removed() {
    let node = Node::new();
    let containerd = Containerd::start(&node, &conflist(&node));
    let pods: Vec<Sandbox> = ["frontend", "backend", "db"]
        .iter()
        .map(|n| containerd.run_pod(&meta(n)).unwrap())
        .collect();

    // Distinct addresses, one per family, from the Node's podCIDRs.
    let ranges = pod_cidrs(&node_fixture());
    let ips: Vec<Vec<String>> = pods.iter().map(|p| containerd.ips(p)).collect();
    for (pod, ips) in pods.iter().zip(&ips) {
        assert_eq!(ips.len(), 2, "{}: {ips:?}", pod.meta.name);
        for (ip, range) in ips.iter().zip(&ranges) {
            assert!(
                range.contains(&ip.parse::<std::net::IpAddr>().unwrap()),
                "{ip} not in {range}"
            );
        }
    }
    let mut all: Vec<&String> = ips.iter().flatten().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 6, "{ips:?}");

    for (i, from) in pods.iter().enumerate() {
        for (j, to) in ips.iter().enumerate() {
            if i != j {
                from.ping(&to[0], 5, 800);
                from.ping(&to[1], 5, 800);
            }
        }
    }

    let exporter = Exporter::start(&binary("podmeter-exporter"), &node.pin_path);
    let mut registrations = Vec::new();
    for (pod, ips) in pods.iter().zip(&ips) {
        let (ifindex, id) = registered(&node, pod).expect("registered");
        let name = &pod.meta.name;
        let metrics = assert_scrape_matches_kernel(&node, &exporter, &id.host_ifname, "shop", name);
        node.assert_counters_match_kernel(&id.host_ifname);
        // 4 pings of 5 to it, each with an 800-byte payload.
        let received = sample(&metrics, &pod_series("receive_bytes", "shop", name)).unwrap();
        assert!(received > 20.0 * 800.0, "{name}: {received}");
        let info = format!(
            r#"podmeter_pod_info{{namespace="shop",pod="{name}",interface="eth0",uid="{}",container_id="{}",host_interface="{}",ips="{}/24,{}/64"}}"#,
            pod.meta.uid, pod.id, id.host_ifname, ips[0], ips[1]
        );
        assert_eq!(sample(&metrics, &info), Some(1.0), "{info} in\n{metrics}");
        registrations.push((ifindex, id));
    }
    // The bridge and its gateways, which stay.
    let baseline = Leftovers::read(&site(&node));

    // The kubelet deletes a pod: StopPodSandbox (CNI DEL with the netns),
    // then RemovePodSandbox (DEL again, without it). The others stay metered.
    containerd.cri().stop_pod_sandbox(&pods[0].id).unwrap();
    assert_pod_gone(
        &node,
        &exporter,
        &pods[0],
        registrations[0].0,
        &registrations[0].1,
    );
    containerd.cri().remove_pod_sandbox(&pods[0].id).unwrap();
    assert_pod_gone(
        &node,
        &exporter,
        &pods[0],
        registrations[0].0,
        &registrations[0].1,
    );
    pods[1].ping(&ips[2][0], 3, 100);
    for (pod, (_, id)) in pods.iter().zip(&registrations).skip(1) {
        assert_scrape_matches_kernel(&node, &exporter, &id.host_ifname, "shop", &pod.meta.name);
    }

    for (pod, (ifindex, id)) in pods.iter().zip(&registrations).skip(1) {
        containerd.remove_pod(pod);
        assert_pod_gone(&node, &exporter, pod, *ifindex, id);
    }
    let left = leftovers(&node, &baseline);
    assert!(left.is_clean(), "left after removing every pod: {left}");
    assert_eq!(sample(&exporter.metrics(), "podmeter_pods"), Some(0.0));
    assert!(
        containerd.cni_cache_entries().is_empty(),
        "{:?}",
        containerd.cni_cache_entries()
    );
    eprintln!("CNI calls:\n{}", containerd.cni_calls().join("\n"));
}
