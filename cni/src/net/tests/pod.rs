//! Pod-side tests: interface configuration, CHECK state, traffic between pods.

use std::process::Stdio;

use super::*;
use crate::net::pod::pod_interface_state;

#[test]
fn pod_interface_is_renamed_addressed_and_routed() {
    podmeter_testkit::needs_root!();
    let (node, pod) = (TestNs::new(), TestNs::new());
    let host = add_pod(&node, &pod, "c4", "10.22.0.2/24", "fd00:22::2/64");
    assert!(node.link(&host.name).unwrap().admin_up);

    let eth0 = pod.link("eth0").unwrap();
    assert!(eth0.admin_up);
    let state = pod
        .run(|h| async move { pod_interface_state(&h, "eth0").await })
        .unwrap()
        .unwrap();
    assert_eq!(state.mac, eth0.mac);
    for a in ["10.22.0.2/24", "fd00:22::2/64"] {
        assert!(state.addrs.contains(&net(a)), "{a} in {:?}", state.addrs);
    }
    for (dst, gw) in [("0.0.0.0/0", "10.22.0.1"), ("::/0", "fd00:22::1")] {
        let r = PodRoute {
            dst: net(dst),
            gw: Some(gw.parse().unwrap()),
        };
        assert!(state.routes.contains(&r), "{r:?} in {:?}", state.routes);
    }
    assert!(pod
        .run(|h| async move { pod_interface_state(&h, "eth9").await })
        .unwrap()
        .is_none());
}

#[test]
fn two_pods_on_the_bridge_reach_each_other_v4_and_v6() {
    podmeter_testkit::needs_root!();
    let (node, a, b) = (TestNs::new(), TestNs::new(), TestNs::new());
    add_pod(&node, &a, "pa", "10.22.0.2/24", "fd00:22::2/64");
    add_pod(&node, &b, "pb", "10.22.0.3/24", "fd00:22::3/64");
    let pings: Vec<_> = [
        (&a, "10.22.0.3"),
        (&b, "10.22.0.2"),
        (&a, "fd00:22::3"),
        (&b, "fd00:22::2"),
        (&a, "10.22.0.1"),
        (&a, "fd00:22::1"),
    ]
    .into_iter()
    .map(|(from, to)| {
        // Spawned together: six sequential `ping -c 2` would take six seconds.
        let child = from
            .command(&["busybox", "ping", "-c", "2", "-W", "2", to])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ping");
        (from, to, child)
    })
    .collect();
    for (from, to, child) in pings {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "ping {to} from {}: {}{}",
            from.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
