//! Config options: clsact attachment, ipMasq, mtu, hairpin, default gateway.

use podmeter_tests::{Node, TwoPods};
use serde_json::{json, Value};

#[test]
fn clsact_attachment_counts_exactly_and_is_removed_on_del() {
    podmeter_testkit::needs_root!();
    let TwoPods { node, conf, a, b } =
        TwoPods::with_conf(|conf| conf["tcAttachMode"] = json!("clsact"));
    a.ns.ping(&b.ips()[0], 20, 500);
    for pod in [&a, &b] {
        let ours = node.assert_counters_match_kernel(&pod.host_ifname());
        assert!(ours.transmit.packets >= 20, "the pings were not counted");
    }
    assert!(node.link_pins().is_empty(), "clsact needs no link pins");
    let filters = node
        .ns
        .exec(&["tc", "filter", "show", "dev", &a.host_ifname(), "ingress"]);
    assert!(filters.contains("pm_ingress"), "{filters}");
    node.check(&a, &conf).ok();
    // CHECK looks at the filters themselves under clsact too.
    node.ns
        .exec(&["tc", "filter", "del", "dev", &a.host_ifname(), "ingress"]);
    let out = node.check(&a, &conf);
    assert!(!out.success, "CHECK passed without the ingress filter");
    assert!(out.json["details"]
        .as_str()
        .unwrap()
        .contains("0 podmeter programs at ingress"));
    node.check(&b, &conf).ok();
    node.del(&a, &conf).ok();
    node.del(&b, &conf).ok();
    assert!(node.maps().pods().unwrap().is_empty());
}

fn nft_ruleset(node: &Node) -> String {
    let out = node.ns.try_exec(&["nft", "list", "ruleset"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn ip_masq_rules_follow_the_pod() {
    podmeter_testkit::needs_root!();
    let TwoPods { node, conf, a, b } = TwoPods::with_conf(|conf| conf["ipMasq"] = json!(true));
    let rules = nft_ruleset(&node);
    for ip in a.ips().iter().chain(&b.ips()) {
        assert!(
            rules.contains(&format!("saddr {ip} ")),
            "no rule for {ip}:\n{rules}"
        );
    }
    assert!(rules.contains("masquerade"));
    node.del(&a, &conf).ok();
    let rules = nft_ruleset(&node);
    assert!(
        !rules.contains(&format!("saddr {} ", a.ips()[0])),
        "{rules}"
    );
    assert!(rules.contains(&format!("saddr {} ", b.ips()[0])), "{rules}");
    node.del(&a, &conf).ok(); // repeated DEL with masquerading on
    node.del(&b, &conf).ok();
}

#[test]
fn mtu_hairpin_and_default_gateway_are_applied() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let mut conf = node.conf("1.1.0");
    conf["mtu"] = json!(1400);
    conf["hairpinMode"] = json!(true);
    conf["isDefaultGateway"] = json!(true);
    let pod = node.add_pod("p", &conf);

    let link = |ns: &podmeter_tests::NetNs, name: &str| -> Value {
        serde_json::from_str::<Value>(&ns.exec(&["ip", "-d", "-j", "link", "show", name])).unwrap()
            [0]
        .clone()
    };
    assert_eq!(link(&pod.ns, "eth0")["mtu"], 1400);
    let host = link(&node.ns, &pod.host_ifname());
    assert_eq!(host["mtu"], 1400);
    assert_eq!(
        host["linkinfo"]["info_slave_data"]["hairpin"], true,
        "{host}"
    );

    let routes: Value =
        serde_json::from_str(&pod.ns.exec(&["ip", "-j", "route", "show", "default"])).unwrap();
    assert_eq!(routes[0]["gateway"], "10.77.0.1", "{routes}");
    let routes6: Value =
        serde_json::from_str(&pod.ns.exec(&["ip", "-6", "-j", "route", "show", "default"]))
            .unwrap();
    assert_eq!(routes6[0]["gateway"], "fd00:77::1", "{routes6}");
    let reported: Vec<&str> = pod.result["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["dst"].as_str().unwrap())
        .collect();
    assert_eq!(reported, ["0.0.0.0/0", "::/0"]);
    let accept_ra = node.ns.exec(&[
        "cat",
        &format!("/proc/sys/net/ipv6/conf/{}/accept_ra", pod.host_ifname()),
    ]);
    assert_eq!(accept_ra.trim(), "0");
    node.check(&pod, &conf).ok();
}
