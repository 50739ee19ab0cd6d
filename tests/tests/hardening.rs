//! What a clumsy operator or a local user can do to a node, and how the
//! plugin holds up: the node's own namespace as a pod's, a pin path someone
//! else made or can write, maps removed or replaced under a running pod, a
//! config that can never ADD, a type error in a config key.

use std::{fs, os::unix::fs::PermissionsExt, path::PathBuf, process::Command};

use podmeter_tests::{leftovers::Leftovers, CniOutput, NetNs, Node};
use serde_json::{json, Value};

/// ADD with `CNI_NETNS` set to any path.
fn add_in(node: &Node, conf: &Value, netns: &str) -> CniOutput {
    let env = [
        ("CNI_COMMAND", "ADD".to_owned()),
        ("CNI_CONTAINERID", "ctr-1".to_owned()),
        ("CNI_NETNS", netns.to_owned()),
        ("CNI_IFNAME", "eth0".to_owned()),
        ("CNI_PATH", "/usr/lib/cni".to_owned()),
    ];
    node.cni_env(&env, conf.to_string().as_bytes())
}

/// No pod state on the node, as the fault sweep counts it (links but
/// loopback and bridges, leases, entries of the maps of podmeter's layout,
/// link pins, masquerade rules, processes), and no bridge either unless
/// `bridge_ok`. The bridge's gateway addresses and routes may stay.
fn assert_no_pod_state(node: &Node, bridge_ok: bool) {
    let left = Leftovers {
        addrs: Default::default(),
        routes: Default::default(),
        ..Leftovers::read(&node.site(&[]))
    };
    assert!(left.is_clean(), "left: {left}");
    if !bridge_ok {
        assert_eq!(node.ns.links(), ["lo"], "the bridge was made");
    }
}

#[test]
fn add_into_the_nodes_own_namespace_is_refused_and_touches_nothing() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let conf = node.conf("1.1.0");
    // The namespace the plugin runs in, by its name and through a process
    // of the node (as `/proc/<pid>/ns/net` of a host process would be).
    let mut sleeper = node.ns.command("sleep").arg("30").spawn().unwrap();
    let by_pid = format!("/proc/{}/ns/net", sleeper.id());
    for netns in [node.ns.path().display().to_string(), by_pid] {
        let out = add_in(&node, &conf, &netns);
        assert_eq!(out.code(), 8, "{netns}: {}", out.stdout);
        let details = out.json["details"].as_str().unwrap();
        assert!(details.contains("node's own"), "{details}");
        assert_eq!(node.ns.links(), ["lo"], "{netns}");
        let routes = node.ns.exec(&["ip", "-j", "route", "show"]);
        assert_eq!(routes.trim(), "[]", "{netns}: routes were added");
        assert!(node.leases().is_empty());
        assert!(!node.pin_path.exists(), "pins were created");
    }
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
}

/// A directory under bpffs that the test removes, whatever happens.
struct BpfDir(PathBuf);

impl BpfDir {
    fn new(mode: u32) -> Self {
        let dir = PathBuf::from("/sys/fs/bpf").join(podmeter_tests::unique("pmtest-parent"));
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
        Self(dir)
    }
}

impl Drop for BpfDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs `argv` as the unprivileged user nobody.
fn as_nobody(argv: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(argv)
        .output()
        .unwrap()
}

#[test]
fn a_pin_path_another_user_owns_or_can_write_is_refused() {
    podmeter_testkit::needs_root!();
    // (parent mode, who makes the pin path, its mode, what the error says)
    let cases: [(u32, bool, u32, &str); 3] = [
        // bpffs' default: sticky and world-writable; a user got there first.
        (0o1777, true, 0o755, "owned by uid 65534"),
        (0o777, false, 0o700, "writable by others"),
        (0o755, false, 0o777, "writable by others"),
    ];
    for (parent_mode, by_nobody, mode, says) in cases {
        let parent = BpfDir::new(parent_mode);
        let mut node = Node::new();
        node.pin_path = parent.0.join("podmeter");
        fs::create_dir(&node.pin_path).unwrap();
        fs::set_permissions(&node.pin_path, fs::Permissions::from_mode(mode)).unwrap();
        if by_nobody {
            // As if nobody had made it: root makes it and hands it over, since
            // nobody may not reach a bpffs root mounted 0700 (as setup does).
            std::os::unix::fs::chown(&node.pin_path, Some(65534), Some(65534)).unwrap();
        }
        let pod = NetNs::new("pmt-pod");
        let out = node.cni("ADD", &node.conf("1.1.0"), "ctr", Some(&pod), "eth0", "");
        assert_eq!(out.code(), 110, "{}", out.stdout);
        let details = out.json["details"].as_str().unwrap();
        assert!(
            details.contains("unsafe pin path") && details.contains(says),
            "{details}"
        );
        assert_eq!(node.ns.links(), ["lo"]);
        assert!(node.leases().is_empty());
        let inside: Vec<_> = fs::read_dir(&node.pin_path).unwrap().collect();
        assert!(inside.is_empty(), "created under the pin path: {inside:?}");
        let status = node.cni("STATUS", &node.conf("1.1.0"), "", None, "", "");
        assert_eq!(status.code(), 50, "STATUS passed on an unsafe pin path");
    }
}

#[test]
fn pins_are_root_only_and_another_user_cannot_remove_them() {
    podmeter_testkit::needs_root!();
    // The default bpffs mode: any user may create entries at its top.
    let parent = BpfDir::new(0o1777);
    let mut node = Node::new();
    node.pin_path = parent.0.join("podmeter");
    let conf = node.conf("1.1.0");
    let pod = node.add_pod("web", &conf);
    let layout = node.layout();
    for dir in [node.pin_path.clone(), layout.dir(), layout.links_dir()] {
        let meta = fs::metadata(&dir).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o700, "{dir:?}");
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0);
    }
    let link = layout.links_dir().join(&node.link_pins()[0]);
    let removed = as_nobody(&["rm", "-f", link.to_str().unwrap()]);
    assert!(!removed.status.success(), "nobody removed {link:?}");
    let renamed = as_nobody(&[
        "mv",
        node.pin_path.to_str().unwrap(),
        parent.0.join("stolen").to_str().unwrap(),
    ]);
    assert!(!renamed.status.success(), "nobody renamed the pin path");
    assert!(link.exists());
    node.del(&pod, &conf).ok();
    assert_no_pod_state(&node, true);
}

/// ADD a pod, let `break_pins` damage the pins, then DEL must still remove
/// the veth, the lease, the link pins and the entries of every map left.
fn del_survives(break_pins: impl Fn(&podmeter_ebpf::PinLayout)) {
    let node = Node::new();
    let conf = node.conf("1.1.0");
    let pod = node.add_pod("web", &conf);
    break_pins(&node.layout());
    let out = node.del(&pod, &conf);
    assert!(out.success, "DEL failed: {} {}", out.stdout, out.stderr);
    assert_no_pod_state(&node, true);
    // And again, as a runtime retries.
    node.del(&pod, &conf).ok();
    let gc = gc(&node, &conf);
    assert!(gc.success, "GC failed: {} {}", gc.stdout, gc.stderr);
}

fn gc(node: &Node, conf: &Value) -> CniOutput {
    let mut conf = conf.clone();
    conf["cni.dev/valid-attachments"] = json!([]);
    node.cni("GC", &conf, "", None, "", "")
}

#[test]
fn del_cleans_up_when_a_map_pin_is_missing() {
    podmeter_testkit::needs_root!();
    for map in ["pm_counters", "pm_devices", "pm_drops", "pm_registry"] {
        del_survives(|layout| fs::remove_file(layout.map(map)).unwrap());
    }
}

#[test]
fn del_cleans_up_when_a_map_pin_has_another_layout() {
    podmeter_testkit::needs_root!();
    // A map renamed over another, as a local user could before pins were
    // root's alone, or an older podmeter's map.
    del_survives(|layout| {
        fs::rename(layout.map("pm_devices"), layout.map("pm_counters")).unwrap();
    });
    del_survives(|layout| {
        fs::rename(layout.map("pm_counters"), layout.map("pm_registry")).unwrap();
    });
}

#[test]
fn gc_removes_a_veth_an_add_made_but_never_registered() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let conf = node.conf("1.1.0");
    let pod = node.add_pod("web", &conf);
    // What an ADD killed between creating the pair and registering it
    // leaves: a host veth of podmeter's shape on the bridge.
    node.ns.exec(&[
        "ip",
        "link",
        "add",
        "pm0123456789abc",
        "type",
        "veth",
        "peer",
        "name",
        "pmtmpdeadbeef0",
    ]);
    node.ns
        .exec(&["ip", "link", "set", "pm0123456789abc", "master", "pm0"]);
    let mut keep = conf.clone();
    keep["cni.dev/valid-attachments"] =
        json!([{"containerID": pod.container_id, "ifname": pod.ifname}]);
    node.cni("GC", &keep, "", None, "", "").ok();
    let links = node.ns.links();
    assert!(!links.iter().any(|l| l == "pm0123456789abc"), "{links:?}");
    assert!(links.contains(&pod.host_ifname()), "GC removed a valid pod");
    node.assert_counters_match_kernel(&pod.host_ifname());
    gc(&node, &conf).ok();
    assert_no_pod_state(&node, true);
}

#[test]
fn a_config_that_can_never_add_fails_status_and_add_before_touching_anything() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let pod = NetNs::new("pmt-pod");
    let mut conf = node.conf("1.1.0");
    // An IPv4 route via an IPv6 gateway, and one via a gateway the pod
    // cannot reach: the kernel would refuse either in the pod, after the
    // bridge got its gateway addresses.
    for route in [
        json!({"dst": "10.99.0.0/16", "gw": "fd00:77::1"}),
        json!({"dst": "10.99.0.0/16", "gw": "192.168.200.1"}),
    ] {
        conf["ipam"]["routes"] = json!([route]);
        let status = node.cni("STATUS", &conf, "", None, "", "");
        assert_eq!(status.code(), 7, "{}", status.stdout);
        let out = node.cni("ADD", &conf, "ctr", Some(&pod), "eth0", "");
        assert_eq!(out.code(), 7, "{}", out.stdout);
        assert!(out.json["details"]
            .as_str()
            .unwrap()
            .contains("ipam.routes"));
        assert_eq!(node.ns.links(), ["lo"], "the bridge was made");
        assert!(node.leases().is_empty());
    }
}

#[test]
fn what_the_node_lacks_fails_status_and_add_before_any_pod_state() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let pod = NetNs::new("pmt-pod");
    // ipMasq without nft on PATH (Debian has it in /usr/sbin; nsenter is
    // in /usr/bin).
    let mut conf = node.conf("1.1.0");
    conf["ipMasq"] = json!(true);
    let without_nft = |command: &str, netns: &str| {
        let env = [
            ("CNI_COMMAND", command.to_owned()),
            ("CNI_CONTAINERID", "ctr-1".to_owned()),
            ("CNI_NETNS", netns.to_owned()),
            ("CNI_IFNAME", "eth0".to_owned()),
            ("CNI_PATH", "/usr/lib/cni".to_owned()),
            ("PATH", "/usr/bin".to_owned()),
        ];
        node.cni_env(&env, conf.to_string().as_bytes())
    };
    let status = without_nft("STATUS", "");
    assert_eq!(status.code(), 50, "{}", status.stdout);
    assert!(status.stdout.contains("nft"), "{}", status.stdout);
    let out = without_nft("ADD", pod.path().to_str().unwrap());
    assert_eq!(out.code(), 50, "{}", out.stdout);
    assert_no_pod_state(&node, false);

    // The bridge's name taken by a link that is not a bridge.
    node.ns.exec(&[
        "ip", "link", "add", "pm0", "type", "veth", "peer", "name", "pm0peer",
    ]);
    let conf = node.conf("1.1.0");
    let status = node.cni("STATUS", &conf, "", None, "", "");
    assert_eq!(status.code(), 50, "{}", status.stdout);
    let out = node.cni("ADD", &conf, "ctr", Some(&pod), "eth0", "");
    assert!(!out.success);
    assert!(out.stdout.contains("not a bridge"), "{}", out.stdout);
    let mut links = node.ns.links();
    links.sort();
    assert_eq!(links, ["lo", "pm0", "pm0peer"]);
    assert!(node.leases().is_empty());
}

#[test]
fn a_type_error_in_a_config_key_names_the_key() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let pod = NetNs::new("pmt-pod");
    let mut conf = node.conf("1.1.0");
    conf["isGateway"] = json!("yes");
    let out = node.cni("ADD", &conf, "ctr", Some(&pod), "eth0", "");
    assert_eq!(out.code(), 7);
    let details = out.json["details"].as_str().unwrap();
    assert!(details.contains("isGateway: invalid type"), "{details}");
}
