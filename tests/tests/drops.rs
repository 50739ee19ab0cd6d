//! Kernel drops on a pod's devices, attributed to the pod by direction and
//! reason. busybox ping's echo replies are also offered to the ICMP stack,
//! which has no socket for them: one NO_SOCKET receive drop per reply.
//! Multicast the bridge floods to a pod that did not join its group (MLD
//! and IGMP reports, other hosts' neighbour solicitations) is freed without
//! a reason (NOT_SPECIFIED) and is not counted.

use std::collections::HashMap;

use podmeter_ebpf::{programs::drop_reasons::DropReasons, Direction};
use podmeter_tests::{packet, TwoPods};

#[test]
fn echo_replies_show_up_as_no_socket_receive_drops_of_the_pinger() {
    podmeter_testkit::needs_root!();
    let TwoPods { node, conf, a, b } = TwoPods::new();
    let no_socket = DropReasons::of_running_kernel()
        .unwrap()
        .value("NO_SOCKET")
        .unwrap();

    let drops_of = |pod: &podmeter_tests::Pod| {
        let (ifindex, _) = node.registered(pod);
        node.maps()
            .drops()
            .unwrap()
            .into_iter()
            .filter(|d| d.ifindex == ifindex && d.reason == no_socket)
            .map(|d| (d.direction, d.dropped.packets))
            .collect::<HashMap<_, _>>()
    };
    let before = drops_of(&a).get(&Direction::Receive).copied().unwrap_or(0);
    a.ns.ping(&b.ips()[0], 10, 100);
    let after = drops_of(&a);
    assert_eq!(
        after.get(&Direction::Receive).copied().unwrap_or(0) - before,
        10,
        "{after:?}"
    );
    assert_eq!(after.get(&Direction::Transmit), None, "{after:?}");

    // DEL takes the pod's drops with it.
    let (ifindex, _) = node.registered(&a);
    node.del(&a, &conf).ok();
    let left: Vec<_> = node
        .maps()
        .drops()
        .unwrap()
        .into_iter()
        .filter(|d| d.ifindex == ifindex)
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Issue 18's "13 NOT_SPECIFIED receive drops": all were multicast for
/// groups the pod had not joined, flooded by the bridge around each ADD
/// (ip6_mc_input for MLD reports and solicitations, ip_rcv_finish_core for
/// IGMP). Two pods (each ADD floods the other), both families pinged, and
/// time for the reports to go out: still none counted.
#[test]
fn flooded_multicast_is_not_counted_as_a_drop() {
    podmeter_testkit::needs_root!();
    let TwoPods { node, a, b, .. } = TwoPods::new();
    for ip in b.ips() {
        a.ns.ping(&ip, 3, 56);
    }
    // MLD and IGMP send their reports again within a second or two.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let not_specified = DropReasons::of_running_kernel()
        .unwrap()
        .value("NOT_SPECIFIED")
        .unwrap();
    let counted: Vec<_> = node
        .maps()
        .drops()
        .unwrap()
        .into_iter()
        .filter(|d| d.reason == not_specified)
        .collect();
    assert!(counted.is_empty(), "{counted:?}");
}

#[test]
fn counters_stay_exact_when_the_pod_interface_goes_down() {
    podmeter_testkit::needs_root!();
    let TwoPods { node, a, b, .. } = TwoPods::new();
    b.ns.ping(&a.ips()[0], 2, 56);
    // The host veth loses its carrier: what still reaches it is dropped by
    // its queue (QDISC_DROP), after podmeter's egress program counted it.
    a.ns.exec(&["ip", "link", "set", "eth0", "down"]);
    let lost = b.ns.try_exec(&[
        "busybox",
        "ping",
        "-c",
        "5",
        "-i",
        "0.05",
        "-W",
        "1",
        &a.ips()[0],
    ]);
    assert!(
        !lost.status.success(),
        "pinged a pod whose interface is down"
    );
    node.assert_counters_match_kernel(&a.host_ifname());
    node.assert_counters_match_kernel(&b.host_ifname());
}

/// A capture (tcpdump-like) in the pod that cannot keep up: its socket
/// drops its copies of what the pod sends (PACKET_SOCK_ERROR), but what the
/// pod sends goes out all the same. Those are the capture's drops, not the
/// pod's.
#[test]
fn a_slow_capture_in_the_pod_adds_no_drops() {
    podmeter_testkit::needs_root!();
    let TwoPods { node, a, b, .. } = TwoPods::new();
    let sock_error = DropReasons::of_running_kernel()
        .unwrap()
        .value("PACKET_SOCK_ERROR")
        .unwrap();
    // What the capture could pass off as the pod's (the odd receive drop of
    // IPv6 chatter is the pod's own).
    let capture_drops = || {
        let (ifindex, _) = node.registered(&a);
        node.maps()
            .drops()
            .unwrap()
            .into_iter()
            .filter(|d| {
                d.ifindex == ifindex
                    && (d.reason == sock_error || d.direction == Direction::Transmit)
            })
            .collect::<Vec<_>>()
    };
    // b reads nothing either: its own socket's drops are its business.
    let _sink =
        b.ns.run_in(|| std::net::UdpSocket::bind("0.0.0.0:5000").unwrap());
    a.ns.ping(&b.ips()[0], 1, 56);

    let capture = a.ns.run_in(|| packet::bind("eth0", packet::ALL));
    packet::shrink_receive_buffer(&capture);
    let to = format!("{}:5000", b.ips()[0]);
    a.ns.run_in(|| {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..2000 {
            socket.send_to(&[7; 200], &to).unwrap();
        }
    });
    assert!(packet::drops(&capture) > 0, "the capture kept up");
    assert_eq!(capture_drops(), []);
    node.assert_counters_match_kernel(&a.host_ifname());
}
