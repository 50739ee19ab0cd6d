//! Counters under a broadcast flood that fills the per-CPU backlog: the
//! pod end of a veth drops what its host end transmitted (`veth_xmit` →
//! `enqueue_to_backlog`), after `pm_egress` counted it. A binary of its own:
//! the backlog is the CPU's, shared by everything on the machine, so the
//! flood is kept short (at most [`FLOOD_FOR`]) and runs alone here.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use podmeter_ebpf::{programs::drop_reasons::DropReasons, Direction};
use podmeter_tests::{packet, Node, Pod};
use serde_json::Value;

/// Bare bridge ports that multiply each broadcast: one frame of the pod
/// becomes this many copies queued on the CPU's backlog (1,000 by default,
/// `net.core.netdev_max_backlog`, which is the machine's and left alone).
const BARE_PORTS: usize = 600;
const FLOOD_FOR: Duration = Duration::from_secs(10);
/// The flood needs two CPUs: one sends, the other's backlog overflows.
const SENDING_CPU: usize = 0;
const RECEIVING_CPU: usize = 1;
/// Backlog drops each receiving pod must see: enough to be sure of them.
const MIN_DROPS: u64 = 100;

#[test]
fn backlog_drops_on_the_pod_end_are_receive_drops_taken_back() {
    podmeter_testkit::needs_root!();
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert!(
        cpus > RECEIVING_CPU,
        "the flood needs two CPUs, this machine has {cpus}"
    );
    let node = Node::new();
    let conf = node.conf("1.1.0");
    let pods: Vec<Pod> = ["flooder", "a", "b"]
        .iter()
        .map(|name| node.add_pod(name, &conf))
        .collect();
    add_bare_ports(&node, BARE_PORTS);

    let receivers = &pods[1..];
    flood(&node, &pods[0], |node| {
        receivers
            .iter()
            .all(|p| link_drops(node, &p.host_ifname()).tx >= MIN_DROPS)
    });

    let reasons = DropReasons::of_running_kernel().unwrap();
    let backlog = reasons.value("CPU_BACKLOG").unwrap();
    for pod in &pods {
        let host = pod.host_ifname();
        node.assert_counters_match_kernel(&host);
        let (ifindex, _) = node.registered(pod);
        let drops = node.maps().drops().unwrap();
        let backlog_drops = |direction| {
            drops
                .iter()
                .filter(|d| d.ifindex == ifindex && d.reason == backlog && d.direction == direction)
                .map(|d| d.dropped.packets)
                .sum::<u64>()
        };
        let kernel = link_drops(&node, &host);
        // What veth_xmit of the host end could not hand to the pod's end
        // (tx_dropped) is what the pod did not receive; what the host end
        // could not queue (rx_dropped) is what the pod sent in vain.
        assert_eq!(
            (backlog_drops(Direction::Receive), backlog_drops(Direction::Transmit)),
            (kernel.tx, kernel.rx),
            "{host}: CPU_BACKLOG drops (receive, transmit) vs the veth's dropped (tx, rx) {kernel:?}"
        );
    }
}

/// Adds `n` veth pairs to the node's bridge, both ends up and in the node:
/// every broadcast on the bridge is copied to each.
fn add_bare_ports(node: &Node, n: usize) {
    // Their IPv6 (addresses, DAD, MLD) is noise: off for links made from now.
    node.ns
        .exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
    let batch: String = (0..n)
        .map(|i| {
            format!(
                "link add bp{i} type veth peer name bq{i}\n\
                 link set bp{i} master pm0 up\n\
                 link set bq{i} up\n"
            )
        })
        .collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), batch).unwrap();
    node.ns
        .exec(&["ip", "-batch", file.path().to_str().unwrap()]);
}

/// Sends IPv4 broadcasts from `pod` (its own MAC and address, as a pod may)
/// until `done` says so or [`FLOOD_FOR`] is over; panics in the latter case.
fn flood(node: &Node, pod: &Pod, done: impl Fn(&Node) -> bool) {
    let mac = pod_mac(pod);
    let ip: std::net::Ipv4Addr = pod.ips()[0].parse().unwrap();
    let frame = broadcast_frame(mac, ip);
    let socket = Arc::new(pod.ns.run_in(|| packet::bind("eth0", packet::NONE)));
    let stop = Arc::new(AtomicBool::new(false));
    // The pod sends on one CPU; its host end hands what it receives to the
    // other CPU's backlog (RPS), where each frame becomes a copy per port.
    // The sender's own softirq work then never paces it: frames pile up
    // there faster than their copies are done, as with a busy node.
    steer_to_cpu(node, &pod.host_ifname(), RECEIVING_CPU);
    let sender = {
        let (socket, stop) = (socket.clone(), stop.clone());
        std::thread::spawn(move || {
            pin_to_cpu(SENDING_CPU);
            while !stop.load(Ordering::Relaxed) {
                packet::send(&socket, &frame);
            }
        })
    };
    let start = Instant::now();
    let mut flooded = false;
    while start.elapsed() < FLOOD_FOR {
        std::thread::sleep(Duration::from_millis(200));
        if done(node) {
            flooded = true;
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    assert!(
        flooded,
        "no backlog drops on the pod ends after {FLOOD_FOR:?}"
    );
}

/// Sets the RPS CPUs of `ifname`'s receive queue in the node (sysfs shows
/// a netns' devices only under `ip netns exec`, which mounts its own /sys).
fn steer_to_cpu(node: &Node, ifname: &str, cpu: usize) {
    let status = std::process::Command::new("ip")
        .args(["netns", "exec", node.ns.name(), "sh", "-c"])
        .arg(format!(
            "echo {:x} > /sys/class/net/{ifname}/queues/rx-0/rps_cpus",
            1u64 << cpu
        ))
        .status()
        .unwrap();
    assert!(status.success(), "setting rps_cpus of {ifname}");
}

/// Runs the calling thread on `cpu` only.
fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; 0 is this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let pinned = libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
        assert_eq!(
            pinned,
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// A 60-byte Ethernet broadcast: IPv4 UDP from `ip` to 255.255.255.255:9.
fn broadcast_frame(mac: [u8; 6], ip: std::net::Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend(mac);
    f.extend([0x08, 0x00]);
    let mut ipv4 = vec![0x45, 0, 0, 46, 0, 0, 0, 0, 64, 17, 0, 0];
    ipv4.extend(ip.octets());
    ipv4.extend([255; 4]);
    let sum = ipv4
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    ipv4[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend(ipv4);
    f.extend([0x27, 0x0f, 0, 9, 0, 26, 0, 0]);
    f.resize(60, 0);
    f
}

fn pod_mac(pod: &Pod) -> [u8; 6] {
    let link: Value =
        serde_json::from_str(&pod.ns.exec(&["ip", "-j", "link", "show", "eth0"])).unwrap();
    let text = link[0]["address"].as_str().unwrap();
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    bytes.try_into().unwrap()
}

/// A link's dropped counters (`ip -s link`: the veth's own and the core's).
#[derive(Debug, Clone, Copy)]
struct Dropped {
    rx: u64,
    tx: u64,
}

fn link_drops(node: &Node, ifname: &str) -> Dropped {
    let out = node.ns.exec(&["ip", "-j", "-s", "link", "show", ifname]);
    let json: Value = serde_json::from_str(&out).unwrap();
    let stats = &json[0]["stats64"];
    Dropped {
        rx: stats["rx"]["dropped"].as_u64().unwrap(),
        tx: stats["tx"]["dropped"].as_u64().unwrap(),
    }
}
