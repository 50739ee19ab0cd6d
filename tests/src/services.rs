//! Kubernetes Services in a simulated node, as kube-proxy's nftables mode
//! makes them: a ClusterIP DNATed to its endpoint at `prerouting` (priority
//! `dstnat`), and traffic from the endpoint to its own Service masqueraded
//! (kube-proxy's hairpin rule), in a table of its own in the node's netns.
//! Plus a UDP echo server and the client checks that fail when a reply is
//! not un-NATed (a TCP SYN-ACK or a UDP answer from the pod's own address
//! instead of the ClusterIP is dropped by the client's socket).

use std::{
    io::ErrorKind,
    net::{SocketAddr, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::NetNs;

/// A Service's ClusterIPs (one per family) and port.
pub struct Service {
    pub v4: &'static str,
    pub v6: &'static str,
    pub port: u16,
}

/// The table kube-proxy's emulation writes.
const TABLE: &str = "pmtest-kube-proxy";

/// Writes `svc` → `endpoint` (its v4 and v6 address, `target_port`, TCP and
/// UDP) into `node`'s netns, replacing an earlier emulation.
pub fn kube_proxy(node: &NetNs, svc: &Service, endpoint: &[String], target_port: u16) {
    let (e4, e6) = (&endpoint[0], &endpoint[1]);
    let (s4, s6, port) = (svc.v4, svc.v6, svc.port);
    let rules = format!(
        "table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
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

/// A UDP server in a pod: sends every datagram back. Stops on drop.
pub struct UdpEcho {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEcho {
    /// Listens on every address (IPv4 and IPv6) of `ns` at `port`.
    pub fn start(ns: &NetNs, port: u16) -> Self {
        let socket = ns.run_in(|| UdpSocket::bind(("::", port)).expect("bind"));
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !stopped.load(Ordering::Relaxed) {
                match socket.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        let _ = socket.send_to(&buf[..n], from);
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(e) => panic!("recv: {e}"),
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends a datagram from `ns` to `addr:port` on a connected socket and
/// waits for its echo: the kernel delivers it only if it comes from
/// `addr:port` (the ClusterIP), i.e. if the reply was un-NATed. Three
/// tries, so a first packet lost to neighbour discovery does not count.
pub fn udp_echoes(ns: &NetNs, addr: &str, port: u16) -> bool {
    let to = SocketAddr::new(addr.parse().unwrap(), port);
    ns.run_in(|| {
        let any: SocketAddr = if to.is_ipv4() {
            "0.0.0.0:0".parse().unwrap()
        } else {
            "[::]:0".parse().unwrap()
        };
        let socket = UdpSocket::bind(any).unwrap();
        socket.connect(to).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        let mut buf = [0u8; 16];
        (0..3).any(|_| {
            socket.send(b"echo?").is_ok()
                && matches!(socket.recv(&mut buf), Ok(5) if &buf[..5] == b"echo?")
        })
    })
}
