//! containerd 1.6 as a Kubernetes node's runtime: pods made and removed over
//! CRI exactly as the kubelet asks for them, containerd running podmeter
//! (then portmap) from the conflist the node agent renders from the Node's
//! podCIDRs; metering checked through the real exporter against the
//! kernel's counters; what every teardown, a containerd restart, and a
//! failed ADD leave behind.

use k8s_cri::v1::PodSandboxState;
use podmeter_ebpf::PodIdentity;
use podmeter_tests::{
    // The node agent's conflist, from the Node object's podCIDRs (a
    // stand-in until the agent's crate can be used here: swap this line).
    agent_conflist::{node_fixture, pod_cidrs, render, Options, NETWORK_NAME},
    binary,
    containerd::{pod_leftovers, Containerd, Sandbox},
    cri::PodMeta,
    exporter::{assert_scrape_matches_kernel_of, pod_series_in, sample, Exporter},
    Node,
};
use serde_json::{json, Value};

fn conflist(node: &Node) -> String {
    let options = Options {
        pin_path: node.pin_path.clone(),
        ipam_data_dir: node.data_dir.path().to_owned(),
        cluster_cidrs: Vec::new(),
        portmap: true,
    };
    render(&pod_cidrs(&node_fixture()), &options)
}

/// A pod in namespace `shop` with a UID shaped as the API server's (one
/// per name).
fn meta(name: &str) -> PodMeta {
    PodMeta::with_uid_from_name("shop", name)
}

/// The host ifindex and identity podmeter registered for the sandbox.
fn registered(node: &Node, sandbox: &Sandbox) -> Option<(u32, PodIdentity)> {
    node.maps().find(NETWORK_NAME, &sandbox.id, "eth0").unwrap()
}

/// Asserts that nothing of the pod registered as `ifindex` with `id` is
/// left: no series, registry or counter entry, host veth, lease, link pin,
/// or nft rule naming its addresses.
fn assert_pod_gone(node: &Node, exporter: &Exporter, ifindex: u32, id: &PodIdentity) {
    let pod = &id.pod;
    let metrics = exporter.metrics();
    assert!(
        !metrics.contains(&format!(r#"pod="{pod}""#)),
        "series of {pod} left:\n{metrics}"
    );
    let maps = node.maps();
    let found = maps.find(NETWORK_NAME, &id.container_id, "eth0").unwrap();
    assert!(found.is_none(), "{pod} still registered");
    assert!(maps.pod_counters(ifindex).unwrap().is_none());
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

/// The CNI calls of StopPodSandbox (DEL in reverse order, with the netns
/// and the cached result) and RemovePodSandbox (again, with neither).
const STOP_AND_REMOVE: [&str; 6] = [
    "DEL loopback netns=yes prevResult=no rc=0",
    "DEL portmap netns=yes prevResult=yes rc=0",
    "DEL podmeter netns=yes prevResult=yes rc=0",
    "DEL loopback netns=no prevResult=no rc=0",
    "DEL portmap netns=no prevResult=no rc=0",
    "DEL podmeter netns=no prevResult=no rc=0",
];

#[test]
fn pods_get_addresses_from_the_node_range_talk_and_are_metered_until_removed() {
    podmeter_testkit::needs_root!();
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
        let metrics = assert_scrape_matches_kernel_of(&node, &id.host_ifname, "shop", name, || {
            exporter.metrics()
        });
        node.assert_counters_match_kernel(&id.host_ifname);
        // 4 pings of 5 to it, each with an 800-byte payload.
        let received = sample(&metrics, &pod_series_in("receive_bytes", "shop", name)).unwrap();
        assert!(received > 20.0 * 800.0, "{name}: {received}");
        let info = format!(
            r#"podmeter_pod_info{{namespace="shop",pod="{name}",interface="eth0",uid="{}",container_id="{}",host_interface="{}",ips="{}/24,{}/64"}}"#,
            pod.meta.uid, pod.id, id.host_ifname, ips[0], ips[1]
        );
        assert_eq!(sample(&metrics, &info), Some(1.0), "{info} in\n{metrics}");
        registrations.push((ifindex, id));
    }

    // The kubelet deletes a pod: StopPodSandbox (CNI DEL with the netns),
    // then RemovePodSandbox (DEL again, without it). The others stay metered.
    let (ifindex, id) = &registrations[0];
    containerd.cri().stop_pod_sandbox(&pods[0].id).unwrap();
    assert_pod_gone(&node, &exporter, *ifindex, id);
    containerd.cri().remove_pod_sandbox(&pods[0].id).unwrap();
    assert_pod_gone(&node, &exporter, *ifindex, id);
    pods[1].ping(&ips[2][0], 3, 100);
    for (pod, (_, id)) in pods.iter().zip(&registrations).skip(1) {
        assert_scrape_matches_kernel_of(&node, &id.host_ifname, "shop", &pod.meta.name, || {
            exporter.metrics()
        });
    }

    for (pod, (ifindex, id)) in pods.iter().zip(&registrations).skip(1) {
        containerd.remove_pod(pod);
        assert_pod_gone(&node, &exporter, *ifindex, id);
    }
    let left = pod_leftovers(&node);
    assert!(left.is_clean(), "left after removing every pod: {left}");
    assert_eq!(sample(&exporter.metrics(), "podmeter_pods"), Some(0.0));
    assert!(
        containerd.cni_cache_entries().is_empty(),
        "{:?}",
        containerd.cni_cache_entries()
    );
    let calls = calls(&containerd, &pods[0].id);
    assert_eq!(
        calls[..3],
        [
            "ADD loopback netns=yes prevResult=no rc=0",
            "ADD podmeter netns=yes prevResult=no rc=0",
            "ADD portmap netns=yes prevResult=yes rc=0",
        ]
    );
    assert_eq!(calls[3..], STOP_AND_REMOVE);
}

/// The calls the runtime made for one sandbox, in order, as `VERB plugin
/// netns=… prevResult=… rc=…` (CNI_ARGS left out: Go orders them at random).
fn calls(containerd: &Containerd, sandbox_id: &str) -> Vec<String> {
    containerd
        .cni_calls()
        .iter()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            (fields.get(2) == Some(&sandbox_id)).then(|| {
                let mut kept = fields[..2].to_vec();
                kept.extend(&fields[3..6]);
                kept.join(" ")
            })
        })
        .collect()
}

#[test]
fn a_containerd_restart_keeps_pods_metered_and_removable() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let mut containerd = Containerd::start(&node, &conflist(&node));
    let web = containerd.run_pod(&meta("web")).unwrap();
    let cache = containerd.run_pod(&meta("cache")).unwrap();
    let cache_ip = containerd.ips(&cache)[0].clone();
    let (_, id) = registered(&node, &web).unwrap();
    web.ping(&cache_ip, 10, 500);
    let before = node.assert_counters_match_kernel(&id.host_ifname);

    // Stopped as systemd stops it: the pods run on under their shims, and
    // are metered with no runtime around.
    containerd.stop_daemon();
    web.ping(&cache_ip, 20, 500);
    let during = node.assert_counters_match_kernel(&id.host_ifname);
    containerd.start_daemon();
    let mut ready: Vec<(String, i32)> = containerd
        .cri()
        .list_pod_sandbox()
        .unwrap()
        .into_iter()
        .map(|p| (p.metadata.unwrap().name, p.state))
        .collect();
    ready.sort();
    let state = PodSandboxState::SandboxReady as i32;
    assert_eq!(ready, [("cache".into(), state), ("web".into(), state)]);

    web.ping(&cache_ip, 10, 500);
    let after = node.assert_counters_match_kernel(&id.host_ifname);
    assert!(
        during.transmit.packets >= before.transmit.packets + 20
            && after.transmit.packets >= during.transmit.packets + 10,
        "counters did not continue: {before:?} -> {during:?} -> {after:?}"
    );
    let exporter = Exporter::start(&binary("podmeter-exporter"), &node.pin_path);
    assert_scrape_matches_kernel_of(&node, &id.host_ifname, "shop", "web", || exporter.metrics());

    // The restarted containerd tears the pods down as it made them: DEL
    // with the netns and the cached result, then DEL without either.
    for pod in [&web, &cache] {
        containerd.remove_pod(pod);
        assert_eq!(calls(&containerd, &pod.id)[3..], STOP_AND_REMOVE);
    }
    let left = pod_leftovers(&node);
    assert!(left.is_clean(), "left after removing every pod: {left}");
    assert!(exporter.metrics().contains("podmeter_pods 0"));
}

/// containerd 1.6's libcni (1.1.x) cannot read a 1.1.0 result: with a 1.1.0
/// conflist, podmeter's ADD succeeds, containerd rejects its result, and
/// its cleanup DEL runs the list in reverse, where portmap (CNI ≤ 1.0.0)
/// refuses the config first, so podmeter's DEL never runs. The pod's state
/// stays until a DEL reaches podmeter (once the conflist is fixed) or a GC.
#[test]
fn a_failed_add_under_containerd_leaves_state_that_gc_or_the_next_del_removes() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let good = conflist(&node);
    let mut bad: Value = serde_json::from_str(&good).unwrap();
    bad["cniVersion"] = json!("1.1.0");
    let containerd = Containerd::start(&node, &bad.to_string());
    for name in ["web", "db"] {
        let err = containerd.run_pod(&meta(name)).unwrap_err();
        assert!(
            err.message().ends_with(
                r#"plugin type="podmeter" failed (add): unsupported CNI result version "1.1.0""#
            ),
            "{err:?}"
        );
    }
    // containerd keeps each failed sandbox, NotReady, for the kubelet to
    // stop and remove, since its cleanup failed.
    let sandboxes = containerd.cri().list_pod_sandbox().unwrap();
    let id_of = |name: &str| {
        let sandbox = sandboxes
            .iter()
            .find(|s| s.metadata.as_ref().unwrap().name == name)
            .unwrap_or_else(|| panic!("no sandbox {name}: {sandboxes:?}"));
        assert_eq!(sandbox.state, PodSandboxState::SandboxNotready as i32);
        sandbox.id.clone()
    };
    let (web, db) = (id_of("web"), id_of("db"));
    let failed_add = [
        "ADD loopback netns=yes prevResult=no rc=0",
        "ADD podmeter netns=yes prevResult=no rc=0",
        "DEL loopback netns=yes prevResult=no rc=0",
        "DEL portmap netns=yes prevResult=no rc=1",
    ];
    assert_eq!(calls(&containerd, &web), failed_add);
    assert!(
        containerd.log().contains(&format!(
            r#"encountered an error cleaning up failed sandbox \"{web}\", marking sandbox state as SANDBOX_UNKNOWN"#
        )),
        "{}",
        containerd.log()
    );

    // What is left: each pod fully attached and metered (a pod the runtime
    // does not run), its netns kept mounted by containerd.
    let left = pod_leftovers(&node);
    eprintln!("left after two failed ADDs: {left}");
    assert_eq!(
        (
            left.links.len(),
            left.leases.len(),
            left.registry,
            left.pins.len(),
            left.nft_rules
        ),
        // registry: each pod's identity and its sources (2 entries a pod).
        (2, 4, 4, 4, 4),
        "{left}"
    );
    let exporter = Exporter::start(&binary("podmeter-exporter"), &node.pin_path);
    assert_eq!(sample(&exporter.metrics(), "podmeter_pods"), Some(2.0));
    let attached = |id: &str| node.maps().find(NETWORK_NAME, id, "eth0").unwrap().unwrap();
    let (web_ifindex, web_id) = attached(&web);
    let (db_ifindex, db_id) = attached(&db);

    // The kubelet's StopPodSandbox fails the same way while the conflist
    // is 1.1.0, and changes nothing.
    assert!(containerd.cri().stop_pod_sandbox(&web).is_err());
    assert_eq!(calls(&containerd, &web)[4..], failed_add[2..]);
    assert_eq!(pod_leftovers(&node), left);

    // A runtime with CNI GC (spec 1.1.0) passes its valid attachments:
    // everything of `web` goes, `db` stays.
    let mut gc = bad["plugins"][0].clone();
    gc["cniVersion"] = bad["cniVersion"].clone();
    gc["name"] = json!(NETWORK_NAME);
    gc["cni.dev/valid-attachments"] = json!([{"containerID": db, "ifname": "eth0"}]);
    node.cni("GC", &gc, "", None, "", "").ok();
    assert_pod_gone(&node, &exporter, web_ifindex, &web_id);
    assert_eq!(node.maps().pods().unwrap().len(), 1);

    // Without GC: once the conflist is fixed, the kubelet's next
    // StopPodSandbox reaches podmeter's DEL, which removes everything.
    containerd.set_conflist(&good);
    for id in [&web, &db] {
        containerd.cri().stop_pod_sandbox(id).unwrap();
        containerd.cri().remove_pod_sandbox(id).unwrap();
    }
    assert_eq!(
        calls(&containerd, &db)[4..7],
        [
            "DEL loopback netns=yes prevResult=no rc=0",
            "DEL portmap netns=yes prevResult=no rc=0",
            "DEL podmeter netns=yes prevResult=no rc=0",
        ]
    );
    assert_pod_gone(&node, &exporter, db_ifindex, &db_id);

    // The kubelet's retry then makes the pod.
    let retry = containerd.run_pod(&meta("web")).unwrap();
    assert!(registered(&node, &retry).is_some());
    containerd.remove_pod(&retry);
    let left = pod_leftovers(&node);
    assert!(left.is_clean(), "left: {left}");
}
