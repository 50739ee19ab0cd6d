//! Bad input answers the spec's error code and leaves nothing behind.

use podmeter_tests::{NetNs, Node};
use serde_json::{json, Value};

/// Nothing was created on the node: no links but loopback, no leases, no pins.
fn assert_untouched(node: &Node) {
    assert_eq!(node.ns.links(), ["lo"], "links were created");
    assert!(node.leases().is_empty(), "leases: {:?}", node.leases());
    assert!(!node.pin_path.exists(), "pins were created");
}

fn add_env(pod: &NetNs, overrides: &[(&str, &str)], drop: &[&str]) -> Vec<(&'static str, String)> {
    let mut env: Vec<(&'static str, String)> = vec![
        ("CNI_COMMAND", "ADD".into()),
        ("CNI_CONTAINERID", "ctr-1".into()),
        ("CNI_NETNS", pod.path().display().to_string()),
        ("CNI_IFNAME", "eth0".into()),
        ("CNI_PATH", "/usr/lib/cni".into()),
    ];
    env.retain(|(k, _)| !drop.contains(k));
    for (k, v) in overrides {
        env.retain(|(key, _)| key != k);
        let key: &'static str = match *k {
            "CNI_CONTAINERID" => "CNI_CONTAINERID",
            "CNI_IFNAME" => "CNI_IFNAME",
            "CNI_NETNS" => "CNI_NETNS",
            "CNI_ARGS" => "CNI_ARGS",
            other => panic!("unexpected override {other}"),
        };
        env.push((key, (*v).to_owned()));
    }
    env
}

fn expect_code(node: &Node, env: &[(&str, String)], stdin: &[u8], code: u64) -> Value {
    let out = node.cni_env(env, stdin);
    assert_eq!(
        out.code(),
        code,
        "stdout {} stderr {}",
        out.stdout,
        out.stderr
    );
    assert!(out.json["msg"].as_str().is_some_and(|m| !m.is_empty()));
    assert_untouched(node);
    out.json
}

#[test]
fn each_error_class_answers_its_code_and_leaves_nothing() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let pod = NetNs::new("pmt-pod");
    let conf = node.conf("1.1.0");
    let good = conf.to_string();
    let env = add_env(&pod, &[], &[]);

    // 6: the config is not JSON.
    expect_code(&node, &env, b"{not json", 6);
    // 4: a required variable is missing.
    expect_code(
        &node,
        &add_env(&pod, &[], &["CNI_COMMAND"]),
        good.as_bytes(),
        4,
    );
    expect_code(
        &node,
        &add_env(&pod, &[], &["CNI_NETNS"]),
        good.as_bytes(),
        4,
    );
    // 1: a version the plugin does not speak.
    let mut v = conf.clone();
    v["cniVersion"] = json!("0.2.0");
    expect_code(&node, &env, v.to_string().as_bytes(), 1);
    v["cniVersion"] = json!("9.9.9");
    expect_code(&node, &env, v.to_string().as_bytes(), 1);
    // 4: interface name over 15 characters; container ID with a '/'.
    let long = add_env(&pod, &[("CNI_IFNAME", "eth0123456789abc")], &[]);
    expect_code(&node, &long, good.as_bytes(), 4);
    let slash = add_env(&pod, &[("CNI_CONTAINERID", "ctr/../x")], &[]);
    expect_code(&node, &slash, good.as_bytes(), 4);
    // 7: a subnet too small to hold a pod, a bad network name, a bad bridge,
    // a delegated IPAM type with a path in it.
    let mut small = conf.clone();
    small["ipam"]["ranges"] = json!([[{"subnet": "10.77.0.0/31"}]]);
    expect_code(&node, &env, small.to_string().as_bytes(), 7);
    let mut name = conf.clone();
    name["name"] = json!("bad name!");
    expect_code(&node, &env, name.to_string().as_bytes(), 7);
    let mut bridge = conf.clone();
    bridge["bridge"] = json!("a-very-long-bridge-name");
    expect_code(&node, &env, bridge.to_string().as_bytes(), 7);
    let mut ipam = conf.clone();
    ipam["ipam"] = json!({"type": "../host-local"});
    expect_code(&node, &env, ipam.to_string().as_bytes(), 7);
    // 8: CNI_NETNS is not a network namespace.
    let not_ns = add_env(&pod, &[("CNI_NETNS", "/proc/self/ns/mnt")], &[]);
    expect_code(&node, &not_ns, good.as_bytes(), 8);
    let missing = add_env(&pod, &[("CNI_NETNS", "/run/netns/does-not-exist")], &[]);
    expect_code(&node, &missing, good.as_bytes(), 8);
}

/// Issue 18: special-purpose pod ranges are config errors (7) in every
/// version, the error JSON answers in the config's version, and a pod name
/// longer than Kubernetes allows is the environment's error (4), not the
/// eBPF registry's (110).
#[test]
fn special_ranges_and_long_names_are_refused_in_the_configs_version() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let pod = NetNs::new("pmt-pod");
    let env = add_env(&pod, &[], &[]);
    for version in ["0.4.0", "1.0.0", "1.1.0"] {
        let conf = node.conf(version);
        for subnet in ["127.0.0.0/8", "224.0.0.0/24", "169.254.0.0/16", "0.0.0.0/0"] {
            let mut bad = conf.clone();
            bad["ipam"]["ranges"] = json!([[{ "subnet": subnet }]]);
            let got = expect_code(&node, &env, bad.to_string().as_bytes(), 7);
            assert_eq!(got["cniVersion"], version, "{subnet}: {got}");
            let details = got["details"].as_str().unwrap_or_default();
            assert!(details.contains("not a pod range"), "{subnet}: {got}");
        }
        let name = format!("K8S_POD_NAMESPACE=ns;K8S_POD_NAME={}", "p".repeat(256));
        let long = add_env(&pod, &[("CNI_ARGS", &name)], &[]);
        let got = expect_code(&node, &long, conf.to_string().as_bytes(), 4);
        assert_eq!(got["cniVersion"], version, "{got}");
        assert!(
            got["details"]
                .as_str()
                .unwrap_or_default()
                .contains("K8S_POD_NAME is 256 bytes"),
            "{got}"
        );
    }
}

#[test]
fn a_full_range_fails_and_rolls_back_the_other_family() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let mut conf = node.conf("1.1.0");
    // One usable v4 address (.2 beside the gateway), plenty of v6.
    conf["ipam"]["ranges"] = json!([[{"subnet": "10.77.0.0/30"}], [{"subnet": "fd00:77::/64"}]]);
    let first = node.add_pod("first", &conf);
    let pod = NetNs::new("pmt-pod");
    let out = node.cni("ADD", &conf, "second", Some(&pod), "eth0", "");
    assert!(!out.success);
    assert_eq!(
        node.leases().len(),
        2,
        "only the first pod's leases: {:?}",
        node.leases()
    );
    assert_eq!(pod.links(), ["lo"], "nothing in the failed pod");
    assert_eq!(node.maps().pods().unwrap().len(), 1);
    node.del(&first, &conf).ok();
}

#[test]
fn a_second_add_of_one_attachment_fails_without_harming_the_first() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let conf = node.conf("1.1.0");
    let pod = node.add_pod("p", &conf);
    let out = node.cni("ADD", &conf, &pod.container_id, Some(&pod.ns), "eth0", "");
    assert!(!out.success, "a duplicate ADD succeeded");
    node.check(&pod, &conf).ok();
    assert_eq!(node.link_pins().len(), 2);
}

#[test]
fn a_failure_after_the_veth_exists_rolls_everything_back() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let conf = node.conf("1.1.0");
    let pod = NetNs::new("pmt-pod");
    // The pod already has an eth0: renaming our veth end to it must fail,
    // after addresses, veth, registry and attachments were made.
    pod.exec(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other",
    ]);
    let out = node.cni("ADD", &conf, "ctr", Some(&pod), "eth0", "");
    assert!(!out.success, "ADD over an existing eth0 succeeded");
    assert!(node.leases().is_empty(), "leases: {:?}", node.leases());
    assert!(node.maps().pods().unwrap().is_empty());
    assert!(node.link_pins().is_empty());
    let links = node.ns.links();
    assert!(
        links.iter().all(|l| l == "lo" || l == "pm0"),
        "links left: {links:?}"
    );
}

#[test]
fn foreign_pinned_maps_are_reported_not_reused() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let layout = node.layout();
    std::fs::create_dir_all(layout.dir()).unwrap();
    // pm_registry as some other version might have made it: 64-byte values.
    let obj = aya_obj::Map::new_from_params(aya::maps::MapType::Hash as u32, 4, 64, 16, 0);
    aya::maps::MapData::create(obj, "pm_registry", None)
        .unwrap()
        .pin(layout.map("pm_registry"))
        .unwrap();
    let pod = NetNs::new("pmt-pod");
    let out = node.cni("ADD", &node.conf("1.1.0"), "ctr", Some(&pod), "eth0", "");
    assert_eq!(out.code(), 110, "{}", out.stdout);
    let details = out.json["details"].as_str().unwrap();
    assert!(
        details.contains("pm_registry") && details.contains("layout"),
        "{details}"
    );
    assert_eq!(node.ns.links(), ["lo"]);
    assert!(node.leases().is_empty());
    assert_eq!(pod.links(), ["lo"]);
}
