//! DEL, CHECK, GC and STATUS, and the result layout of every spec version.

use std::time::Duration;

use podmeter_ebpf::{
    pod::per_pod_maps,
    policy::{
        kubernetes::{KubePodPolicy, KubeRule},
        store::PolicyStore,
    },
    programs::attach::attached_programs,
    AttachMode, Direction,
};
use podmeter_tests::{traffic::tcp_talks, NetNs, Node, Pod, TwoPods, SPEC_VERSIONS};
use serde_json::json;

/// Nothing of `pod` is left on the node: link, lease, map entry, link pin.
fn assert_gone(node: &Node, pod: &Pod) {
    assert!(
        !node.ns.links().contains(&pod.host_ifname()),
        "host veth {} left",
        pod.host_ifname()
    );
    for ip in pod.ips() {
        assert!(!node.leases().contains(&ip), "lease {ip} left");
    }
    let maps = node.maps();
    assert!(
        maps.find("pmtest", &pod.container_id, &pod.ifname)
            .unwrap()
            .is_none(),
        "registry entry left"
    );
    assert!(maps.counters().unwrap().is_empty(), "counters left");
    assert!(
        node.link_pins().is_empty(),
        "link pins left: {:?}",
        node.link_pins()
    );
}

#[test]
fn del_is_idempotent_and_leaves_nothing() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let conf = node.conf("1.1.0");
    let pod = node.add_pod("p", &conf);
    assert_eq!(node.link_pins().len(), 2, "one link per hook");
    assert_eq!(node.leases().len(), 2);
    for _ in 0..3 {
        node.del(&pod, &conf).ok();
    }
    assert_gone(&node, &pod);
}

/// Issue 19: a pod with entries in every per-pod map (a policy rule gives
/// it policy, rules and a flow table; a denied packet a drop entry; a
/// kubernetes rule its kubernetes tier), then
/// DEL: no map of the table holds anything of it.
#[test]
fn del_empties_every_per_pod_map() {
    podmeter_testkit::needs_root!();
    let TwoPods { node, a, b, conf } = TwoPods::new();
    let b_ip = b.ips()[0].clone();
    let cidr = format!("{b_ip}/32");
    node.policy_add(
        "test/a",
        "transmit",
        "deny",
        &["--cidr", &cidr, "--proto", "tcp", "--ports", "8080"],
    );
    assert!(
        !tcp_talks(&a.ns, &b_ip, 8080, Duration::from_secs(1)),
        "the rule denies"
    );
    let (ifindex, _) = node.registered(&a);
    // The kubernetes tier's (the agent's, written here through the store).
    let rule = KubeRule {
        direction: Direction::Receive,
        peer: 0,
        proto: None,
        ports: None,
        policy: 1,
    };
    PolicyStore::lock(&node.layout())
        .unwrap()
        .apply_kubernetes(
            ifindex,
            &KubePodPolicy {
                isolated: [false; 2],
                rules: vec![rule],
            },
        )
        .unwrap();
    let every: Vec<&str> = per_pod_maps().collect();
    assert_eq!(node.maps().holding(ifindex).unwrap(), every);

    node.del(&a, &conf).ok();
    assert_eq!(
        node.maps().holding(ifindex).unwrap(),
        Vec::<&str>::new(),
        "entries left after DEL"
    );
    let (b_ifindex, _) = node.registered(&b);
    assert!(
        !node.maps().holding(b_ifindex).unwrap().is_empty(),
        "the other pod keeps its entries"
    );
}

#[test]
fn del_after_the_netns_is_gone_succeeds_and_cleans_up() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let conf = node.conf("1.1.0");
    let pod = node.add_pod("p", &conf);
    let Pod {
        ns,
        container_id,
        ifname,
        result,
    } = pod;
    let path = ns.path();
    drop(ns); // the runtime removed the sandbox before calling DEL
    assert!(!path.exists());
    let out = node.cni_env(
        &[
            ("CNI_COMMAND", "DEL".into()),
            ("CNI_CONTAINERID", container_id.clone()),
            ("CNI_NETNS", path.display().to_string()),
            ("CNI_IFNAME", ifname.clone()),
            ("CNI_PATH", "/usr/lib/cni".into()),
        ],
        conf.to_string().as_bytes(),
    );
    out.ok();
    let pod = Pod {
        ns: NetNs::new("pmt-pod"),
        container_id,
        ifname,
        result,
    };
    assert_gone(&node, &pod);
}

#[test]
fn check_passes_after_add_and_fails_without_the_host_veth() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let conf = node.conf("1.1.0");
    let pod = node.add_pod("p", &conf);
    node.check(&pod, &conf).ok();

    node.ns.exec(&["ip", "link", "del", &pod.host_ifname()]);
    let out = node.check(&pod, &conf);
    assert!(!out.success, "CHECK passed without the host veth");
    let msg = out.json["details"].as_str().unwrap_or_default().to_owned();
    assert!(msg.contains(&pod.host_ifname()), "unclear message: {msg}");
    node.del(&pod, &conf).ok();
    assert_gone(&node, &pod);
}

#[test]
fn check_fails_when_an_address_is_removed() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let conf = node.conf("1.1.0");
    let pod = node.add_pod("p", &conf);
    pod.ns.exec(&[
        "ip",
        "addr",
        "del",
        &format!("{}/24", pod.ips()[0]),
        "dev",
        "eth0",
    ]);
    let out = node.check(&pod, &conf);
    assert!(!out.success);
    assert!(out.json["details"]
        .as_str()
        .unwrap()
        .contains(&pod.ips()[0]));
}

#[test]
fn check_fails_when_the_pod_interface_is_another_host_veths_peer() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let conf = node.conf("1.1.0");
    let pod = node.add_pod("p", &conf);
    // The pod's eth0 set aside (its host veth stays up on the bridge) and
    // replaced by the end of another pair that looks the same from inside
    // the pod: name, MAC, addresses and so routes. Only its peer differs.
    let ip = |ns: &NetNs, args: &[&str]| ns.exec(&[&["ip"], args].concat());
    ip(
        &node.ns,
        &[
            "link",
            "add",
            "pmdecoy",
            "type",
            "veth",
            "peer",
            "name",
            "pmdecoy-pod",
        ],
    );
    ip(&node.ns, &["link", "set", "pmdecoy", "master", "pm0", "up"]);
    ip(
        &node.ns,
        &["link", "set", "pmdecoy-pod", "netns", pod.ns.name()],
    );
    ip(&pod.ns, &["link", "set", "eth0", "down"]);
    ip(&pod.ns, &["link", "set", "eth0", "name", "eth0-old"]);
    let mac = pod.result["interfaces"][2]["mac"].as_str().unwrap();
    ip(
        &pod.ns,
        &["link", "set", "pmdecoy-pod", "name", "eth0", "address", mac],
    );
    for address in pod.result["ips"].as_array().unwrap() {
        let address = address["address"].as_str().unwrap();
        ip(&pod.ns, &["addr", "add", address, "dev", "eth0", "nodad"]);
    }
    ip(&pod.ns, &["link", "set", "eth0", "up"]);

    let out = node.check(&pod, &conf);
    assert!(
        !out.success,
        "CHECK passed with another veth's peer as eth0"
    );
    let msg = out.json["details"].as_str().unwrap_or_default();
    assert!(
        msg.contains(&format!(
            "is not the peer of host veth {}",
            pod.host_ifname()
        )),
        "unclear message: {msg}"
    );
    node.del(&pod, &conf).ok();
    assert_gone(&node, &pod);
}

#[test]
fn gc_with_an_empty_valid_list_removes_everything_of_the_network() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let conf = node.conf("1.1.0");
    let pods: Vec<Pod> = (0..3)
        .map(|i| node.add_pod(&format!("p{i}"), &conf))
        .collect();
    let keep = &pods[2];

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] =
        json!([{"containerID": keep.container_id, "ifname": keep.ifname}]);
    node.cni("GC", &gc, "", None, "", "").ok();
    assert_eq!(
        node.maps().pods().unwrap().len(),
        1,
        "only the valid attachment stays"
    );
    assert_eq!(node.link_pins().len(), 2);
    node.check(keep, &conf).ok();

    // The pre-1.1.0 key works as well.
    let mut gc = conf.clone();
    gc["cni.dev/attachments"] = json!([]);
    node.cni("GC", &gc, "", None, "", "").ok();
    for pod in &pods {
        assert_gone(&node, pod);
    }
}

#[test]
fn every_spec_version_gets_its_own_result_layout() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    for version in SPEC_VERSIONS {
        let conf = node.conf(version);
        let pod = node.add_pod("v", &conf);
        let r = &pod.result;
        assert_eq!(r["cniVersion"], version);
        let legacy = version.starts_with("0.");
        for ip in r["ips"].as_array().unwrap() {
            // 0.3.x/0.4.0 carry "version" per IP; 1.0.0 dropped it.
            assert_eq!(ip.get("version").is_some(), legacy, "{version}: {ip}");
            assert_eq!(ip["interface"], 2);
        }
        assert_eq!(
            r["interfaces"][2]["sandbox"],
            pod.ns.path().display().to_string()
        );
        if version != "0.3.0" && version != "0.3.1" {
            node.check(&pod, &conf).ok(); // CHECK exists from 0.4.0 on
        }
        node.del(&pod, &conf).ok();
        assert_gone(&node, &pod);
    }
}

#[test]
fn version_lists_every_supported_version() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let out = node
        .cni_env(
            &[("CNI_COMMAND", "VERSION".into())],
            br#"{"cniVersion":"1.1.0"}"#,
        )
        .ok();
    let mut versions: Vec<String> =
        serde_json::from_value(out.json["supportedVersions"].clone()).unwrap();
    versions.sort();
    assert_eq!(versions, SPEC_VERSIONS);
}

#[test]
fn status_succeeds_on_bpffs_and_fails_with_50_elsewhere() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let conf = node.conf("1.1.0");
    node.cni("STATUS", &conf, "", None, "", "").ok();

    let not_bpffs = tempfile::tempdir().unwrap();
    let mut bad = conf.clone();
    bad["pinPath"] = json!(not_bpffs.path().join("pins"));
    let out = node.cni("STATUS", &bad, "", None, "", "");
    assert_eq!(out.code(), 50, "{}", out.stdout);
    assert!(
        !not_bpffs.path().join("pins").exists(),
        "STATUS created the pin path"
    );
}

#[test]
fn repeated_add_del_never_stacks_attachments() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let conf = node.conf("1.1.0");
    for _ in 0..5 {
        let pod = node.add_pod("cycle", &conf);
        let hooks = node
            .ns
            .run_in(|| attached_programs(&pod.host_ifname(), AttachMode::Tcx).unwrap());
        for (hook, names) in hooks {
            assert_eq!(names.len(), 1, "{}: {names:?}", hook.name);
        }
        node.del(&pod, &conf).ok();
        assert_gone(&node, &pod);
    }
}
