//! `podmeterctl policy` edits at the edges: a full rule table, a full CIDR,
//! a DEL of the pod in the middle of an edit, a CIDR no packet can match.
//! Each refused edit exits 2 with the reason on stderr and changes nothing.

use std::{process::Command, time::Duration};

use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    Map, MapData,
};
use podmeter_ebpf::{
    abi::{RuleKeyData, RuleSet, MAX_RULE_PREFIXES, RULE_KEY_FIXED_BITS},
    pins::RULES_MAP,
    policy::store as policy_store,
};
use podmeter_tests::{strace::Trace, NetNs, Node};
use serde_json::json;

fn list(node: &Node) -> String {
    node.ctl_ok(&["policy", "list", "test/a", "--output", "json"])
}

/// `policy add test/a --direction D --action A REST...`
fn add_args<'a>(direction: &'a str, action: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "policy",
        "add",
        "test/a",
        "--direction",
        direction,
        "--action",
        action,
    ];
    args.extend_from_slice(rest);
    args
}

/// Fills the node's rule table up to `free` free entries, with /32s of an
/// interface no pod has (straight into the pinned trie: through the store
/// each add reads every rule, far too slow for 65,536).
fn fill_rule_table(node: &Node, free: u32) {
    let data = MapData::from_pin(node.layout().map(RULES_MAP)).unwrap();
    let mut trie: LpmTrie<MapData, RuleKeyData, RuleSet> =
        LpmTrie::try_from(Map::LpmTrie(data)).unwrap();
    let used = trie.keys().count() as u32;
    for i in 0..MAX_RULE_PREFIXES - used - free {
        let mut addr = [0; 16];
        addr[..4].copy_from_slice(&i.to_be_bytes());
        let key = RuleKeyData {
            ifindex: u32::MAX,
            direction: 0,
            family: libc::AF_INET as u8,
            pad: [0; 2],
            addr,
        };
        let set = RuleSet {
            prefix_len: 32,
            ..Default::default()
        };
        trie.insert(&Key::new(RULE_KEY_FIXED_BITS + 32, key), set, 0)
            .unwrap();
    }
}

#[test]
fn a_full_table_or_cidr_refuses_the_whole_change() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let conf = node.conf("1.1.0");
    let _a = node.add_pod("a", &conf);
    let deny_ten = add_args("receive", "deny", &["--cidr", "10.0.0.0/8"]);
    node.ctl_ok(&deny_ten);
    // One entry left: a rule for any address needs two (IPv4 and IPv6),
    // the first would fit.
    fill_rule_table(&node, 1);
    let before = list(&node);
    let any = add_args("transmit", "deny", &["--proto", "udp"]);
    for _ in 0..2 {
        let stderr = node.ctl_err(&any);
        assert!(
            stderr.contains("all 65,536 CIDR entries per node are in use"),
            "{stderr}"
        );
        assert_eq!(stderr.matches("full").count(), 1, "said once: {stderr}");
        assert_eq!(list(&node), before, "a retry adds nothing either");
    }
    let check = node.ctl(&[
        "policy",
        "check",
        "test/a",
        "--direction",
        "transmit",
        "--remote",
        "10.9.9.9",
        "--proto",
        "udp",
    ]);
    assert!(check.status.success(), "not enforced for IPv4: {check:?}");

    // A CIDR the pod has takes rules without a new entry, up to 16.
    for port in 1..16 {
        let port = port.to_string();
        let more = add_args(
            "receive",
            "allow",
            &["--cidr", "10.0.0.0/8", "--proto", "tcp", "--ports", &port],
        );
        node.ctl_ok(&more);
    }
    let before = list(&node);
    let stderr = node.ctl_err(&deny_ten);
    assert!(
        stderr.contains("the limit: 16 rules per CIDR and direction"),
        "{stderr}"
    );
    assert_eq!(list(&node), before);
}

/// A `policy add` whose first map write is held up (strace delays it)
/// while DEL removes the pod: whichever wins, no rule of the pod is left.
#[test]
fn an_edit_racing_del_leaves_no_rules() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let conf = node.conf("1.1.0");
    let a = node.add_pod("a", &conf);
    let (ifindex, _) = node.registered(&a);
    let logs = tempfile::tempdir().unwrap();
    let add = add_args("receive", "deny", &["--proto", "udp"]);
    let ctl = |strace: &[&str], log: &str| {
        let mut cmd = Command::new("strace");
        cmd.args(["-f", "-qq", "-o"])
            .arg(logs.path().join(log))
            .args(strace)
            .arg(podmeter_tests::binary("podmeterctl"))
            .arg("--bpf.pin-path")
            .arg(&node.pin_path)
            .args(&add);
        cmd
    };
    // A dry run finds the write; deleting its rule leaves the maps as they
    // were, so the delayed run makes the same calls.
    assert!(ctl(&[], "dry").status().unwrap().success());
    node.ctl_ok(&["policy", "delete", "test/a", "1"]);
    let trace = Trace::read(&logs.path().join("dry"));
    let write = trace.find("the first map write", |c| {
        c.name == "bpf" && c.line.contains("BPF_MAP_UPDATE_ELEM")
    });
    let delay = trace.aim(write, "delay_enter=2000000");

    let mut edit = ctl(&["-e", &delay], "delayed").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(node.del(&a, &conf).success);
    let edited = edit.wait().unwrap();
    assert!(
        !policy_store::ifindexes(&node.layout())
            .unwrap()
            .contains(&ifindex),
        "rules of a deleted pod (the edit {edited:?})"
    );
}

#[test]
fn ipv4_mapped_cidrs_are_refused() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let conf = node.conf("1.1.0");
    let _a = node.add_pod("a", &conf);
    let before = list(&node);
    let stderr = node.ctl_err(&add_args(
        "receive",
        "deny",
        &["--cidr", "::ffff:10.77.0.9/128"],
    ));
    assert!(
        stderr.contains(
            "is IPv4-mapped IPv6, which no packet carries: write it as IPv4 (10.77.0.9/32)"
        ),
        "{stderr}"
    );
    assert_eq!(list(&node), before);

    let mut bad = node.conf("1.1.0");
    bad["policy"] =
        json!({"receive": {"rules": [{"action": "deny", "cidr": "::ffff:10.0.0.0/104"}]}});
    let ns = NetNs::new("pmt-pod");
    let out = node.cni("ADD", &bad, "mapped-policy", Some(&ns), "eth0", "");
    assert_eq!(out.code(), 7, "{out:?}");
    assert!(out.stdout.contains("IPv4-mapped"), "{out:?}");
}
