//! Policy that holds against a hostile pod (issue 17): frames crafted inside
//! a pod with a packet socket, as any pod with CAP_NET_RAW can, must not get
//! around another pod's rules, take another pod's MAC or addresses, act as
//! a router, or break another pod's connections; each frame podmeter drops
//! is counted once with its reason, and every pod's counters still equal
//! its veth's.

use std::{
    io::ErrorKind,
    net::{IpAddr, SocketAddr, TcpListener, UdpSocket},
    time::Duration,
};

use podmeter_ebpf::{
    abi::{Direction, DROP_POLICY_DENIED, DROP_SPOOFED_SOURCE, DROP_UNPARSABLE},
    PodCounter, PodSource,
};
use podmeter_tests::{
    frames::{self, eth, ethertype, icmp, ip, Mac, ICMP, ICMPV6, TCP, UDP},
    nft::NftCounter,
    node::{GATEWAY_V4, GATEWAY_V6},
    Node, Pod,
};
use serde_json::Value;

const SETTLE: Duration = Duration::from_millis(300);

/// A node with pods named `names` (dropped before the node).
fn pods<const N: usize>(names: [&str; N]) -> (Node, [Pod; N]) {
    let node = Node::new();
    let conf = node.conf("1.1.0");
    let pods = names.map(|name| node.add_pod(name, &conf));
    (node, pods)
}

/// The pod's IPv4 and IPv6 address.
fn addrs(pod: &Pod) -> (IpAddr, IpAddr) {
    let ips = pod.ips();
    (ips[0].parse().unwrap(), ips[1].parse().unwrap())
}

fn pod_mac(pod: &Pod) -> Mac {
    frames::mac(pod.result["interfaces"][2]["mac"].as_str().unwrap())
}

fn bridge_mac(node: &Node) -> Mac {
    let out = node.ns.exec(&["ip", "-j", "link", "show", "pm0"]);
    let json: Value = serde_json::from_str(&out).unwrap();
    frames::mac(json[0]["address"].as_str().unwrap())
}

fn ctl(node: &Node, args: &[&str]) {
    let out = node.ctl(args);
    assert!(out.status.success(), "podmeterctl {args:?}: {out:?}");
}

/// `podmeterctl policy add test/<pod> --direction D --action A <rest>`.
fn rule(node: &Node, pod: &str, direction: &str, action: &str, rest: &[&str]) {
    let pod = format!("test/{pod}");
    let mut args = vec![
        "policy",
        "add",
        &pod,
        "--direction",
        direction,
        "--action",
        action,
    ];
    args.extend_from_slice(rest);
    ctl(node, &args);
}

fn default_deny(node: &Node, pod: &str, direction: &str) {
    let pod = format!("test/{pod}");
    ctl(
        node,
        &[
            "policy",
            "default",
            &pod,
            "--direction",
            direction,
            "--action",
            "deny",
        ],
    );
}

/// The pod's drops with podmeter's own `reason` in `direction`.
fn dropped(node: &Node, pod: &Pod, direction: Direction, reason: u32) -> PodCounter {
    let (ifindex, _) = node.registered(pod);
    node.maps()
        .drops()
        .unwrap()
        .into_iter()
        .find(|d| d.ifindex == ifindex && d.direction == direction && d.reason == reason)
        .map(|d| d.dropped)
        .unwrap_or_default()
}

/// Waits until no more of the pod's received packets are denied: new pods
/// send a few multicast reports (IGMP, MLD) in their first seconds, which
/// a receive default deny denies, and which are no test's.
fn quiet_denials(node: &Node, pod: &Pod) {
    let denied = || dropped(node, pod, Direction::Receive, DROP_POLICY_DENIED);
    let stable = (0..10).any(|_| {
        let before = denied();
        std::thread::sleep(Duration::from_millis(1500));
        before == denied()
    });
    assert!(stable, "the pod's denials never stood still");
}

/// What the veth counts for these frames.
fn counted(frames: &[Vec<u8>]) -> PodCounter {
    PodCounter {
        packets: frames.len() as u64,
        bytes: frames.iter().map(|f| f.len() as u64).sum(),
    }
}

fn assert_counters_match(node: &Node, pods: &[&Pod]) {
    for pod in pods {
        node.assert_counters_match_kernel(&pod.host_ifname());
    }
}

/// A UDP socket in `pod` on `port` of both families, not blocking.
fn udp_listener(pod: &Pod, port: u16) -> UdpSocket {
    let s = pod.ns.run_in(|| UdpSocket::bind(("::", port)).unwrap());
    s.set_nonblocking(true).unwrap();
    s
}

fn nothing_received(s: &UdpSocket) -> bool {
    let mut buf = [0u8; 9000];
    matches!(s.recv_from(&mut buf), Err(e) if e.kind() == ErrorKind::WouldBlock)
}

/// (the bridge port the FDB has `mac` on, B's neighbour entry's MAC for `addr`).
fn fdb_port(node: &Node, mac: Mac) -> Vec<String> {
    let out = node.ns.exec(&["bridge", "-j", "fdb", "show", "br", "pm0"]);
    let text = mac.map(|b| format!("{b:02x}")).join(":");
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["mac"] == text.as_str())
        .map(|e| e["ifname"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn neighbour_mac(pod: &Pod, addr: IpAddr) -> String {
    let out = pod.ns.exec(&[
        "ip",
        "-j",
        "neigh",
        "show",
        &addr.to_string(),
        "dev",
        "eth0",
    ]);
    let json: Value = serde_json::from_str(&out).unwrap();
    json[0]["lladdr"].as_str().unwrap_or_default().to_owned()
}

/// Must-show 1: C sends as A (address; MAC and address; ARP and NA): B's
/// sockets see nothing though B allows A, the bridge keeps A's MAC on A's
/// port, B's neighbour entries for A stay A's, and each of C's frames is
/// counted once as SPOOFED_SOURCE on C.
#[test]
fn a_pod_cannot_send_as_another() {
    podmeter_testkit::needs_root!();
    let (node, [a, b, c]) = pods(["a", "b", "c"]);
    let ((a4, a6), (b4, b6), (c4, c6)) = (addrs(&a), addrs(&b), addrs(&c));
    let (a_mac, b_mac, c_mac) = (pod_mac(&a), pod_mac(&b), pod_mac(&c));
    default_deny(&node, "b", "receive");
    rule(
        &node,
        "b",
        "receive",
        "allow",
        &["--cidr", &format!("{a4}/32")],
    );
    rule(
        &node,
        "b",
        "receive",
        "allow",
        &["--cidr", &format!("{a6}/128")],
    );
    let udp = udp_listener(&b, 7000);
    let tcp = b.ns.run_in(|| TcpListener::bind(("::", 7001)).unwrap());
    tcp.set_nonblocking(true).unwrap();
    // B learns A's MAC for both addresses, the bridge learns A's port;
    // then past the neighbour table's locktime (1 s), so a forged update
    // would be taken.
    for addr in [a4, a6] {
        b.ns.ping(&addr.to_string(), 1, 56);
    }
    std::thread::sleep(Duration::from_millis(1100));
    let from_a = [
        NftCounter::new(&b.ns, "from_a4", "input", &format!("ip saddr {a4}")),
        NftCounter::new(&b.ns, "from_a6", "input", &format!("ip6 saddr {a6}")),
    ];

    let mut sent = Vec::new();
    for (src, dst) in [(a4, b4), (a6, b6)] {
        let echo = if src.is_ipv4() {
            (ICMP, 8)
        } else {
            (ICMPV6, 128)
        };
        for (proto, l4) in [
            (UDP, frames::udp(src, dst, 40000, 7000, b"as a")),
            (TCP, frames::tcp_syn(src, dst, 40001, 7001)),
            (echo.0, icmp(src, dst, echo.1, 0, [0, 1, 0, 1], b"ping")),
        ] {
            sent.push(eth(
                b_mac,
                c_mac,
                &[],
                ethertype(src),
                &ip(src, dst, proto, &l4),
            ));
        }
        // A's MAC as well: the whole handshake attempt starts here.
        let syn = frames::tcp_syn(src, dst, 40002, 7001);
        sent.push(eth(
            b_mac,
            a_mac,
            &[],
            ethertype(src),
            &ip(src, dst, TCP, &syn),
        ));
    }
    // A's MAC alone, with C's own address: only the MAC check stops it
    // moving A's MAC to C's bridge port.
    let own = frames::udp(c4, b4, 40003, 7000, b"as a's mac");
    sent.push(eth(
        b_mac,
        a_mac,
        &[],
        frames::ETH_P_IP,
        &ip(c4, b4, UDP, &own),
    ));
    // ARP: a reply to B and a gratuitous request, both "A is at C's MAC".
    sent.push(eth(
        b_mac,
        c_mac,
        &[],
        frames::ETH_P_ARP,
        &frames::arp(2, c_mac, a4, b_mac, b4),
    ));
    sent.push(eth(
        frames::BROADCAST,
        c_mac,
        &[],
        frames::ETH_P_ARP,
        &frames::arp(1, c_mac, a4, [0; 6], a4),
    ));
    // An unsolicited, overriding NA for A's address from C's own.
    let mut na_body = match a6 {
        IpAddr::V6(t) => t.octets().to_vec(),
        IpAddr::V4(_) => unreachable!(),
    };
    na_body.extend([2, 1]);
    na_body.extend(c_mac);
    let na = icmp(c6, b6, 136, 0, [0x20, 0, 0, 0], &na_body);
    sent.push(eth(
        b_mac,
        c_mac,
        &[],
        frames::ETH_P_IPV6,
        &ip(c6, b6, ICMPV6, &na),
    ));
    frames::send(&c.ns, "eth0", &sent);
    std::thread::sleep(SETTLE);

    assert!(nothing_received(&udp), "a spoofed datagram reached B");
    assert!(
        matches!(tcp.accept(), Err(e) if e.kind() == ErrorKind::WouldBlock),
        "B accepted a connection"
    );
    for counter in &from_a {
        assert_eq!(counter.packets(), 0, "B's stack saw packets 'from A'");
    }
    assert_eq!(fdb_port(&node, a_mac), [a.host_ifname()], "A's MAC moved");
    for addr in [a4, a6] {
        let want = a_mac.map(|x| format!("{x:02x}")).join(":");
        assert_eq!(neighbour_mac(&b, addr), want, "B's entry for {addr}");
    }
    assert_eq!(
        dropped(&node, &c, Direction::Transmit, DROP_SPOOFED_SOURCE),
        counted(&sent)
    );
    for pod in [&a, &b] {
        assert_eq!(
            dropped(&node, pod, Direction::Transmit, DROP_SPOOFED_SOURCE),
            PodCounter::default(),
            "a pod's own traffic is never spoofed"
        );
    }
    assert!(
        podmeter_tests::traffic::pings(&c.ns, &a4.to_string()),
        "C's own traffic passes"
    );
    assert_counters_match(&node, &[&a, &b, &c]);
}

/// IPv6 extension headers for a chain of `n`: hop-by-hop first, as the
/// RFC orders it, then routing, fragment and destination options.
fn chain_kinds(n: usize) -> Vec<u8> {
    [0u8, 43, 44]
        .into_iter()
        .chain(std::iter::repeat(60))
        .take(n)
        .collect()
}

/// Must-show 2: VLAN tags (1-3, 802.1Q and 802.1ad, VID 0 and not) and
/// IPv6 chains of 0-10 extension headers get past no transmit deny (to a
/// pod, to the node) and no receive deny under a default allow; what is
/// allowed still passes.
#[test]
fn tags_and_header_chains_get_past_no_rule() {
    podmeter_testkit::needs_root!();
    let (node, [a, b]) = pods(["a", "b"]);
    let ((a4, a6), (b4, b6)) = (addrs(&a), addrs(&b));
    let (a_mac, b_mac, br_mac) = (pod_mac(&a), pod_mac(&b), bridge_mac(&node));
    let (gw4, gw6): (IpAddr, IpAddr) = (GATEWAY_V4.parse().unwrap(), GATEWAY_V6.parse().unwrap());
    for cidr in [
        format!("{b4}/32"),
        format!("{b6}/128"),
        format!("{gw4}/32"),
        format!("{gw6}/128"),
    ] {
        rule(
            &node,
            "a",
            "transmit",
            "deny",
            &["--cidr", &cidr, "--proto", "udp", "--ports", "7100"],
        );
    }
    for cidr in [format!("{a4}/32"), format!("{a6}/128")] {
        rule(
            &node,
            "b",
            "receive",
            "deny",
            &["--cidr", &cidr, "--proto", "udp", "--ports", "7200"],
        );
    }
    let at_b = NftCounter::new(&b.ns, "denied", "input", "udp dport { 7100, 7200 }");
    let allowed_at_b = NftCounter::new(&b.ns, "allowed", "input", "udp dport 7300");
    let at_node = NftCounter::new(&node.ns, "denied", "input", "udp dport 7100");
    let targets = [
        (b_mac, a4, b4, 7100),
        (b_mac, a6, b6, 7100),
        (br_mac, a4, gw4, 7100),
        (br_mac, a6, gw6, 7100),
        (b_mac, a4, b4, 7200),
        (b_mac, a6, b6, 7200),
    ];

    let (q, ad) = (frames::ETH_P_8021Q, frames::ETH_P_8021AD);
    let tag_sets: [&[(u16, u16)]; 8] = [
        &[(q, 0)],
        &[(ad, 0)],
        &[(q, 5)],
        &[(ad, 0), (q, 0)],
        &[(q, 0), (q, 0)],
        &[(ad, 7), (q, 9)],
        &[(ad, 0), (q, 0), (q, 0)],
        &[(q, 0), (q, 3), (q, 0)],
    ];
    let mut tagged = Vec::new();
    for tags in tag_sets {
        for (dst_mac, src, dst, port) in targets {
            let l4 = frames::udp(src, dst, 40000, port, b"tagged");
            tagged.push(eth(
                dst_mac,
                a_mac,
                tags,
                ethertype(src),
                &ip(src, dst, UDP, &l4),
            ));
        }
    }
    // Chains of 0-10 headers; a transmit deny to B and to the node, a
    // receive deny at B.
    let (mut denied_at_a, mut denied_at_b) = (Vec::new(), Vec::new());
    for n in 0..=10 {
        for (dst_mac, dst, port) in [(b_mac, b6, 7100), (br_mac, gw6, 7100), (b_mac, b6, 7200)] {
            let l4 = frames::udp(a6, dst, 40000, port, b"chained");
            let (first, payload) = frames::ext_chain(&chain_kinds(n), UDP, &l4);
            let frame = eth(
                dst_mac,
                a_mac,
                &[],
                frames::ETH_P_IPV6,
                &frames::ipv6(a6, dst, first, 64, &payload),
            );
            if port == 7100 {
                &mut denied_at_a
            } else {
                &mut denied_at_b
            }
            .push(frame);
        }
    }
    // A chain too long to walk, to a port nothing denies: not classified,
    // so not allowed.
    let l4 = frames::udp(a6, b6, 40000, 7300, b"too long");
    let (first, payload) = frames::ext_chain(&[60; 17], UDP, &l4);
    let unparsable = vec![eth(
        b_mac,
        a_mac,
        &[],
        frames::ETH_P_IPV6,
        &frames::ipv6(a6, b6, first, 64, &payload),
    )];
    // And what is allowed: ten headers to an open port.
    let (first, payload) = frames::ext_chain(
        &chain_kinds(10),
        UDP,
        &frames::udp(a6, b6, 40000, 7300, b"fine"),
    );
    let fine = vec![eth(
        b_mac,
        a_mac,
        &[],
        frames::ETH_P_IPV6,
        &frames::ipv6(a6, b6, first, 64, &payload),
    )];
    let open = udp_listener(&b, 7300);
    for batch in [&tagged, &denied_at_a, &denied_at_b, &unparsable, &fine] {
        frames::send(&a.ns, "eth0", batch);
    }
    std::thread::sleep(SETTLE);

    assert_eq!(at_b.packets(), 0, "delivered to B past a deny");
    assert_eq!(at_node.packets(), 0, "delivered to the node past a deny");
    assert_eq!(
        allowed_at_b.packets(),
        1,
        "only the allowed chain reached port 7300"
    );
    let mut buf = [0u8; 64];
    assert_eq!(open.recv(&mut buf).unwrap(), 4, "the allowed datagram");
    assert!(nothing_received(&open));
    assert_eq!(
        dropped(&node, &a, Direction::Transmit, DROP_SPOOFED_SOURCE),
        counted(&tagged)
    );
    assert_eq!(
        dropped(&node, &a, Direction::Transmit, DROP_POLICY_DENIED),
        counted(&denied_at_a)
    );
    assert_eq!(
        dropped(&node, &b, Direction::Receive, DROP_POLICY_DENIED),
        counted(&denied_at_b)
    );
    assert_eq!(
        dropped(&node, &a, Direction::Transmit, DROP_UNPARSABLE),
        counted(&unparsable)
    );
    // Ordinary traffic both ways.
    let _server = podmeter_tests::traffic::TcpServer::start(&b.ns, 7400);
    for dst in [b4, b6] {
        assert!(podmeter_tests::traffic::tcp_talks(
            &a.ns,
            &dst.to_string(),
            7400,
            Duration::from_secs(2)
        ));
    }
    assert_counters_match(&node, &[&a, &b]);
}

/// One sysctl of the pod's eth0, read inside its namespace.
fn pod_sysctl(pod: &Pod, path: &str) -> String {
    let path = format!("/proc/sys/net/{path}");
    pod.ns
        .run_in(|| std::fs::read_to_string(&path).unwrap())
        .trim()
        .to_owned()
}

/// Must-show 3: a pod's router advertisements and redirects (also behind
/// an extension header) reach no other pod, not even one with a receive
/// default deny; pods do not accept them anyway.
#[test]
fn pods_are_not_routers() {
    podmeter_testkit::needs_root!();
    let (node, [a, b, c]) = pods(["a", "b", "c"]);
    let ((a4, _), (b4, b6)) = (addrs(&a), addrs(&b));
    let a_mac = pod_mac(&a);
    default_deny(&node, "b", "receive");
    for pod in [&a, &b, &c] {
        for sysctl in [
            "ipv6/conf/eth0/accept_ra",
            "ipv6/conf/eth0/accept_redirects",
            "ipv4/conf/eth0/accept_redirects",
            "ipv6/conf/eth0/addr_gen_mode",
        ] {
            assert_eq!(pod_sysctl(pod, sysctl), "0", "{sysctl}");
        }
    }
    let routes = |p: &Pod| p.ns.exec(&["ip", "-6", "route"]) + &p.ns.exec(&["ip", "-6", "addr"]);
    let before = [routes(&b), routes(&c)];
    let seen: Vec<NftCounter> = [&b, &c]
        .into_iter()
        .flat_map(|p| {
            [
                NftCounter::new(
                    &p.ns,
                    "ra6",
                    "input",
                    "icmpv6 type { nd-router-advert, nd-redirect }",
                ),
                NftCounter::new(&p.ns, "redirect4", "input", "icmp type redirect"),
            ]
        })
        .collect();

    let a_ll: IpAddr = PodSource {
        mac: a_mac,
        ips: vec![],
        gateways: vec![],
    }
    .link_local()
    .into();
    let all_nodes: IpAddr = "ff02::1".parse().unwrap();
    let all_nodes_mac = [0x33, 0x33, 0, 0, 0, 1];
    // RA: hop limit 64, router lifetime 1800 s, a prefix fd00:99::/64 (A, L).
    let mut ra_body = vec![0u8; 8];
    ra_body.extend([3, 4, 64, 0xc0]);
    ra_body.extend(3600u32.to_be_bytes());
    ra_body.extend(3600u32.to_be_bytes());
    ra_body.extend([0; 4]);
    ra_body.extend("fd00:99::".parse::<std::net::Ipv6Addr>().unwrap().octets());
    let ra = icmp(a_ll, all_nodes, 134, 0, [64, 0, 0x07, 0x08], &ra_body);
    let redirect_body = [
        a_ll.to_string()
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
        "fd00:88::1".parse::<std::net::Ipv6Addr>().unwrap().octets(),
    ]
    .concat();
    let redirect6 = icmp(a_ll, b6, 137, 0, [0; 4], &redirect_body);
    let quoted = ip(
        b4,
        "10.99.0.1".parse().unwrap(),
        UDP,
        &frames::udp(b4, "10.99.0.1".parse().unwrap(), 1, 2, b""),
    );
    let redirect4 = icmp(
        a4,
        b4,
        5,
        1,
        match a4 {
            IpAddr::V4(g) => g.octets(),
            _ => unreachable!(),
        },
        &quoted,
    );
    let (hidden_first, hidden) = frames::ext_chain(&[60], ICMPV6, &ra);
    let b_mac = pod_mac(&b);
    let sent = vec![
        eth(
            all_nodes_mac,
            a_mac,
            &[],
            frames::ETH_P_IPV6,
            &frames::ipv6(a_ll, all_nodes, ICMPV6, 255, &ra),
        ),
        eth(
            all_nodes_mac,
            a_mac,
            &[],
            frames::ETH_P_IPV6,
            &frames::ipv6(a_ll, all_nodes, hidden_first, 255, &hidden),
        ),
        eth(
            b_mac,
            a_mac,
            &[],
            frames::ETH_P_IPV6,
            &frames::ipv6(a_ll, b6, ICMPV6, 255, &redirect6),
        ),
        eth(
            b_mac,
            a_mac,
            &[],
            frames::ETH_P_IP,
            &ip(a4, b4, ICMP, &redirect4),
        ),
    ];
    frames::send(&a.ns, "eth0", &sent);
    std::thread::sleep(SETTLE);

    for counter in &seen {
        assert_eq!(counter.packets(), 0, "a router message reached a pod");
    }
    assert_eq!(
        [routes(&b), routes(&c)],
        before,
        "routes or addresses changed"
    );
    assert_eq!(
        dropped(&node, &a, Direction::Transmit, DROP_SPOOFED_SOURCE),
        counted(&sent)
    );
    assert_counters_match(&node, &[&a, &b, &c]);
}

/// A UDP responder in `pod` on `port`: answers a datagram holding a
/// number N with N bytes. Stops when dropped (its socket closes).
struct Responder(
    Option<std::thread::JoinHandle<()>>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
);

impl Responder {
    fn start(pod: &Pod, port: u16) -> Self {
        let s = pod.ns.run_in(|| UdpSocket::bind(("::", port)).unwrap());
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    let size: usize = std::str::from_utf8(&buf[..n]).unwrap().parse().unwrap();
                    s.send_to(&vec![7u8; size], from).unwrap();
                }
            }
        });
        Self(Some(thread), stop)
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.1.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.0.take() {
            let _ = t.join();
        }
    }
}

/// A UDP socket in `pod` connected to `to`.
fn connected(pod: &Pod, to: SocketAddr) -> UdpSocket {
    let any = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let s = pod.ns.run_in(|| UdpSocket::bind(any).unwrap());
    s.connect(to).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s
}

/// Must-show 5: a pod with a receive default deny gets fragmented replies
/// (3,000 and 8,000 B, IPv4 and IPv6) to its own requests; an unsolicited
/// fragmented datagram is still denied, every fragment of it.
#[test]
fn fragmented_replies_pass_and_unrelated_fragments_do_not() {
    podmeter_testkit::needs_root!();
    let (node, [a, b]) = pods(["a", "b"]);
    let ((a4, a6), (b4, b6)) = (addrs(&a), addrs(&b));
    default_deny(&node, "b", "receive");
    let _responder = Responder::start(&a, 7500);
    for dst in [a4, a6] {
        let s = connected(&b, SocketAddr::new(dst, 7500));
        for size in [3000usize, 8000] {
            s.send(size.to_string().as_bytes()).unwrap();
            let mut buf = vec![0u8; 9000];
            assert_eq!(
                s.recv(&mut buf).ok(),
                Some(size),
                "a {size} B reply from {dst}"
            );
        }
    }
    assert_eq!(
        dropped(&node, &b, Direction::Receive, DROP_POLICY_DENIED),
        PodCounter::default()
    );

    let victim = udp_listener(&b, 7501);
    quiet_denials(&node, &b);
    for dst in [b4, b6] {
        let before = dropped(&node, &b, Direction::Receive, DROP_POLICY_DENIED).packets;
        let s = a.ns.run_in(|| {
            UdpSocket::bind(if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).unwrap()
        });
        s.send_to(&[1u8; 3000], SocketAddr::new(dst, 7501)).unwrap();
        std::thread::sleep(SETTLE);
        // 3,008 B of UDP in 1,480 B (IPv4) or 1,448 B (IPv6) fragments.
        let after = dropped(&node, &b, Direction::Receive, DROP_POLICY_DENIED).packets;
        assert_eq!(after - before, 3, "every fragment to {dst} denied");
    }
    assert!(nothing_received(&victim));
    assert_counters_match(&node, &[&a, &b]);
}

/// An ICMP port unreachable from `src` to `victim` quoting the UDP datagram
/// `victim:sport -> remote:port`.
fn port_unreachable(src: IpAddr, victim: IpAddr, sport: u16, remote: IpAddr, port: u16) -> Vec<u8> {
    let quoted = ip(
        victim,
        remote,
        UDP,
        &frames::udp(victim, remote, sport, port, b"x"),
    );
    let (kind, code) = if src.is_ipv4() { (3, 3) } else { (1, 4) };
    ip(
        src,
        victim,
        if src.is_ipv4() { ICMP } else { ICMPV6 },
        &icmp(src, victim, kind, code, [0; 4], &quoted),
    )
}

/// Must-show 6: a port unreachable forged by a third pod about a live flow
/// does not reach the victim's connected socket; a real one from the
/// flow's remote end does.
#[test]
fn only_the_flows_remote_end_can_refuse_it() {
    podmeter_testkit::needs_root!();
    let (node, [a, b, c]) = pods(["a", "b", "c"]);
    let ((a4, a6), (b4, b6), (c4, c6)) = (addrs(&a), addrs(&b), addrs(&c));
    let (b_mac, c_mac) = (pod_mac(&b), pod_mac(&c));
    default_deny(&node, "b", "receive");
    let listener = udp_listener(&a, 7600);
    let mut forged = Vec::new();
    let mut sockets = Vec::new();
    for (remote, victim, forger) in [(a4, b4, c4), (a6, b6, c6)] {
        let s = connected(&b, SocketAddr::new(remote, 7600));
        s.send(b"x").unwrap();
        let sport = s.local_addr().unwrap().port();
        let packet = port_unreachable(forger, victim, sport, remote, 7600);
        forged.push(eth(b_mac, c_mac, &[], ethertype(victim), &packet));
        sockets.push(s);
    }
    quiet_denials(&node, &b);
    let before = dropped(&node, &b, Direction::Receive, DROP_POLICY_DENIED);
    frames::send(&c.ns, "eth0", &forged);
    std::thread::sleep(SETTLE);
    for s in &sockets {
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 16];
        let got = s.recv(&mut buf);
        assert!(
            matches!(&got, Err(e) if e.kind() == ErrorKind::WouldBlock),
            "a forged error reached the socket: {got:?}"
        );
    }
    let after = dropped(&node, &b, Direction::Receive, DROP_POLICY_DENIED);
    let forged_count = counted(&forged);
    assert_eq!(
        (after.packets - before.packets, after.bytes - before.bytes),
        (forged_count.packets, forged_count.bytes),
        "each forged error denied once"
    );

    drop(listener); // now A's kernel refuses for real
    for s in &sockets {
        s.set_nonblocking(false).unwrap();
        s.send(b"x").unwrap();
        let mut buf = [0u8; 16];
        let got = s.recv(&mut buf);
        assert!(
            matches!(&got, Err(e) if e.kind() == ErrorKind::ConnectionRefused),
            "the real error: {got:?}"
        );
    }
    assert_counters_match(&node, &[&a, &b, &c]);
}
