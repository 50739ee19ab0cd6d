//! Kubernetes Services in a simulated node, as kube-proxy's nftables mode
//! makes them: a ClusterIP DNATed to its endpoint at `prerouting` (priority
//! `dstnat`), and traffic from the endpoint to its own Service masqueraded
//! (kube-proxy's hairpin rule), in a table of its own in the node's netns.
//! Plus a UDP echo server and the client checks that fail when a reply is
//! not un-NATed (a TCP SYN-ACK or a UDP answer from the pod's own address
//! instead of the ClusterIP is dropped by the client's socket).

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, UdpSocket},
    process::{Command, Output},
    time::Duration,
};

use crate::{
    daemonset::workspace,
    traffic::{connected_udp, tcp_server, Background},
    NetNs,
};

/// A Service's ClusterIPs (one per family) and port.
pub struct Service {
    pub v4: &'static str,
    pub v6: &'static str,
    pub port: u16,
}

/// The tables kube-proxy's emulation writes, one per Service port.
const TABLE: &str = "pmtest-kube-proxy";

/// Writes `svc` → `endpoint` (its v4 and v6 address, `target_port`, TCP and
/// UDP) into `node`'s netns, replacing an earlier emulation of that port.
pub fn kube_proxy(node: &NetNs, svc: &Service, endpoint: &[String], target_port: u16) {
    let (e4, e6) = (&endpoint[0], &endpoint[1]);
    let (s4, s6, port) = (svc.v4, svc.v6, svc.port);
    let table = format!("{TABLE}-{port}");
    let rules = format!(
        "table inet {table}
delete table inet {table}
table inet {table} {{
  chain services {{
    type nat hook prerouting priority dstnat;
    ip daddr {s4} meta l4proto {{ tcp, udp }} th dport {port} dnat ip to {e4}:{target_port}
    ip6 daddr {s6} meta l4proto {{ tcp, udp }} th dport {port} dnat ip6 to [{e6}]:{target_port}
  }}
  chain hairpin {{
    type nat hook postrouting priority srcnat;
    ip saddr {e4} ip daddr {e4} masquerade
    ip6 saddr {e6} ip6 daddr {e6} masquerade
  }}
}}
"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kube-proxy.nft");
    std::fs::write(&file, rules).unwrap();
    node.exec(&["nft", "-f", file.to_str().unwrap()]);
}

/// Sets `net.bridge.bridge-nf-call-iptables` and `…-ip6tables` in `node`'s
/// netns (never the test's own): 0 behaves like a host without
/// `br_netfilter` loaded.
pub fn bridge_nf_sysctls(node: &NetNs, value: u8) {
    for family in ["iptables", "ip6tables"] {
        node.exec(&[
            "sysctl",
            "-qw",
            &format!("net.bridge.bridge-nf-call-{family}={value}"),
        ]);
    }
}

/// A UDP server on every address (IPv4 and IPv6) of `ns` at `port`: sends
/// every datagram back.
pub fn udp_echo(ns: &NetNs, port: u16) -> Background {
    let socket = ns.run_in(|| UdpSocket::bind(("::", port)).expect("bind"));
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut buf = [0u8; 64];
    Background::run(move || match socket.recv_from(&mut buf) {
        Ok((n, from)) => {
            let _ = socket.send_to(&buf[..n], from);
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        Err(e) => panic!("recv: {e}"),
    })
}

/// An HTTP server on every address of `ns` at `port`: reads a request head
/// and answers `200 ok` to anything (what kind-config/checks.sh fetches).
pub fn http_server(ns: &NetNs, port: u16) -> Background {
    tcp_server(ns, port, |mut stream| {
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 512];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
    })
}

/// Sends a datagram from `ns` to `addr:port` on a connected socket and
/// waits for its echo: the kernel delivers it only if it comes from
/// `addr:port` (the ClusterIP), i.e. if the reply was un-NATed. Three
/// tries, so a first packet lost to neighbour discovery does not count.
pub fn udp_echoes(ns: &NetNs, addr: &str, port: u16) -> bool {
    let to = SocketAddr::new(addr.parse().unwrap(), port);
    ns.run_in(|| {
        let socket = connected_udp(to, Duration::from_millis(700));
        let mut buf = [0u8; 16];
        (0..3).any(|_| {
            socket.send(b"echo?").is_ok()
                && matches!(socket.recv(&mut buf), Ok(5) if &buf[..5] == b"echo?")
        })
    })
}

/// Runs `service_checks` of kind-config/checks.sh (the checks that end
/// kind-config/up.sh) against `svc` here: `server`, `same` and `other` are
/// pod namespaces (the endpoint, a pod on its node, one on another node).
/// The endpoint must answer HTTP at the Service's port ([`http_server`]).
/// Its output has one line per check.
pub fn run_kind_checks(svc: &Service, server: &NetNs, same: &NetNs, other: &NetNs) -> Output {
    let script = r#"
        . kind-config/checks.sh
        pod_fetch() { nsenter --net="/run/netns/$1" curl -sS -m 2 "$2"; }
        service_checks "$@"
        exit "$CHECKS_FAILED"
    "#;
    let port = svc.port.to_string();
    Command::new("bash")
        .current_dir(workspace())
        .args(["-c", script, "checks"])
        .args([
            server.name(),
            same.name(),
            other.name(),
            &port,
            "/",
            svc.v4,
            svc.v6,
        ])
        .output()
        .expect("running bash")
}
