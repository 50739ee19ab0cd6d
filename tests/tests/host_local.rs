//! The reference `host-local` IPAM plugin, delegated to through CNI_PATH.

use podmeter_tests::Node;
use serde_json::json;

#[test]
fn reference_host_local_ipam_works_as_a_delegate() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let leases = tempfile::tempdir().unwrap();
    let mut conf = node.conf("1.0.0"); // host-local 1.1.1 speaks up to 1.0.0
    conf["ipam"] = json!({
        "type": "host-local",
        "dataDir": leases.path(),
        "ranges": [[{"subnet": "10.78.0.0/24"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
    });
    let a = node.add_pod("a", &conf);
    let b = node.add_pod("b", &conf);
    assert!(a.ips()[0].starts_with("10.78.0."), "{}", a.result);
    a.ns.ping(&b.ips()[0], 3, 56);
    a.ns.ping("10.78.0.1", 1, 56);
    node.check(&a, &conf).ok();

    let lease = leases.path().join("pmtest").join(&a.ips()[0]);
    assert!(lease.exists(), "host-local wrote no lease");
    node.del(&a, &conf).ok();
    assert!(!lease.exists(), "host-local lease left after DEL");
    node.del(&b, &conf).ok();
}
