//! Flows no pod can evict (issue 17, item 6): every pod with policy has a
//! flow table of its own with a budget per opening direction, so a pod
//! that opens flows without end spends its own budget (and, for flows it
//! opens towards another pod, that pod's receive budget), never another
//! pod's established flows; expired flows are swept to make room; a pod's
//! table goes with its policy.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::Child,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use aya::maps::{HashOfMaps, Map, MapData};
use podmeter_ebpf::{
    abi::{Direction, FlowState, FLOW_BUDGET},
    maps::flow_tables::FlowTables,
    pins::FLOW_TABLES_MAP,
    policy::store as policy_store,
};
use podmeter_tests::{leftovers::Leftovers, NetNs, Node, Pod};
use serde_json::{json, Value};

const RECEIVE: usize = Direction::Receive as usize;
const TRANSMIT: usize = Direction::Transmit as usize;

/// A pod ADDed with `policy` from the plugin's config, and that config.
fn pod_with_policy(node: &Node, name: &str, policy: Value) -> (Pod, Value) {
    let mut conf = node.conf("1.1.0");
    conf["policy"] = policy;
    (node.add_pod(name, &conf), conf)
}

fn deny_received() -> Value {
    json!({"receive": {"default": "deny"}})
}

/// The occupancy of the pod's flow table.
fn occupancy(node: &Node, pod: &Pod) -> FlowState {
    let (ifindex, _) = node.registered(pod);
    FlowTables::open(&node.layout())
        .unwrap()
        .occupancy()
        .unwrap()
        .into_iter()
        .find(|(i, _)| *i == ifindex)
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("{} has no flow table", pod.container_id))
}

/// Flows counted in the occupancy equal the entries of the table.
fn assert_counts_match_table(node: &Node, pod: &Pod) {
    let (ifindex, _) = node.registered(pod);
    let tables = FlowTables::open(&node.layout()).unwrap();
    let flows = tables.flows(ifindex).unwrap();
    let state = occupancy(node, pod);
    for direction in Direction::ALL {
        let entries = flows
            .iter()
            .filter(|(_, f)| f.opened_by == direction as u32)
            .count() as u64;
        assert_eq!(
            state.flows[direction as usize], entries,
            "{} {direction:?}: {state:?}",
            pod.container_id
        );
    }
}

/// A Python program run in a pod (no packages beyond the standard library).
fn python(ns: &NetNs, program: &str, args: &[&str]) -> Child {
    ns.command("python3")
        .arg("-c")
        .arg(program)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3")
}

/// UDP from one socket, pinned to one CPU, to ports 1..=PORTS of each
/// target, again and again for SECONDS; ~15k packets/s at most.
const FLOOD: &str = r#"
import os, socket, sys, time
cpu, seconds, ports = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
targets = sys.argv[4:]
os.sched_setaffinity(0, {cpu % os.cpu_count()})
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.monotonic() + seconds
while time.monotonic() < end:
    for port in range(1, ports + 1):
        for t in targets:
            try:
                s.sendto(b"x", (t, port))
            except OSError:
                pass
        if port % 500 == 0:
            time.sleep(0.05)
            if time.monotonic() >= end:
                break
"#;

/// ICMP echo requests with identifiers FIRST..FIRST+COUNT to one address.
const ECHOES: &str = r#"
import socket, struct, sys
to, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
def checksum(b):
    n = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    n = (n >> 16) + (n & 0xffff)
    return ~(n + (n >> 16)) & 0xffff
for ident in range(first, first + count):
    header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
    s.sendto(struct.pack("!BBHHH", 8, 0, checksum(header), ident, 1), (to, 0))
"#;

fn run_to_end(mut child: Child) {
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// A TCP stream from a server in one pod to a client in another: the
/// server writes 1 KiB every 3 s, a sparse long-lived connection (its flow
/// is idle between writes, which is what an LRU evicts first); the client
/// counts what it reads.
struct Stream {
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

const WRITE_EVERY: Duration = Duration::from_secs(3);

/// Sleeps for `d`, or less once `stop` is set.
fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Stream {
    /// `client` connects to `server` at `addr:port`.
    fn start(server: &NetNs, client: &NetNs, addr: &str, port: u16) -> Self {
        let listener = server.run_in(|| TcpListener::bind(("0.0.0.0", port)).unwrap());
        let to = SocketAddr::new(addr.parse().unwrap(), port);
        let conn = client.run_in(|| TcpStream::connect_timeout(&to, Duration::from_secs(3)));
        let mut conn = conn.expect("the client connects");
        let (mut sending, _) = listener.accept().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let (stop_w, stop_r, count) = (stop.clone(), stop.clone(), received.clone());
        sending
            .set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        conn.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let writer = std::thread::spawn(move || {
            while !stop_w.load(Ordering::Relaxed) && sending.write_all(&[7u8; 1024]).is_ok() {
                sleep_unless(&stop_w, WRITE_EVERY);
            }
        });
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while !stop_r.load(Ordering::Relaxed) {
                match conn.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        count.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(_) => {}
                }
            }
        });
        Self {
            stop,
            received,
            threads: vec![writer, reader],
        }
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// `Tcp: RetransSegs` of the namespace (its own /proc/net/snmp).
fn tcp_retransmits(ns: &NetNs) -> u64 {
    let snmp = ns.exec(&["cat", "/proc/net/snmp"]);
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().unwrap(), tcp.next().unwrap());
    let at = names
        .split_whitespace()
        .position(|n| n == "RetransSegs")
        .unwrap();
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}

/// Must-show 4: attacker C repeats 80,000 UDP flows towards D (which allows
/// C) and towards B, from both CPUs, for 30 s. B (receive default deny)
/// keeps receiving its own long-lived connection to A, no segment of it is
/// lost (A never retransmits); C's and D's tables stop at their budgets and
/// count the refusals; B's table is untouched. (The same flood against the
/// node-wide LRU this replaced evicts B's flow: B stops receiving, A
/// retransmits.)
#[test]
fn a_flood_of_new_flows_spends_only_the_flooders_budgets() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let a = node.add_pod("a", &node.conf("1.1.0"));
    let (b, _) = pod_with_policy(&node, "b", deny_received());
    let (c, _) = pod_with_policy(&node, "c", deny_received());
    let c_cidr = format!("{}/32", c.ips()[0]);
    let (d, _) = pod_with_policy(
        &node,
        "d",
        json!({"receive": {"default": "deny", "rules": [
            {"action": "allow", "cidr": c_cidr, "proto": "udp"}]}}),
    );
    let (b_ip, d_ip) = (b.ips()[0].clone(), d.ips()[0].clone());

    let stream = Stream::start(&a.ns, &b.ns, &a.ips()[0], 7000);
    std::thread::sleep(Duration::from_millis(500));
    assert!(stream.received() > 0, "B receives before the flood");
    let b_before = occupancy(&node, &b);
    assert_eq!(b_before.flows, [0, 1], "B's connection, opened by B");
    let retransmits = tcp_retransmits(&a.ns);

    // Two senders with a socket each: 2 x 20,000 ports x 2 targets.
    let flooders: Vec<Child> = (0..2)
        .map(|cpu| {
            python(
                &c.ns,
                FLOOD,
                &[&cpu.to_string(), "30", "20000", &d_ip, &b_ip],
            )
        })
        .collect();
    let started = Instant::now();
    let mut last = stream.received();
    while started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_secs(5));
        let now = stream.received();
        assert!(
            now > last,
            "B stopped receiving {:?} into the flood",
            started.elapsed()
        );
        last = now;
    }
    flooders.into_iter().for_each(run_to_end);
    std::thread::sleep(WRITE_EVERY + Duration::from_millis(500));
    assert!(stream.received() > last, "B receives after the flood");
    assert_eq!(
        tcp_retransmits(&a.ns),
        retransmits,
        "a segment from A to B was lost (denied?)"
    );
    drop(stream);

    let (b_state, c_state, d_state) = (
        occupancy(&node, &b),
        occupancy(&node, &c),
        occupancy(&node, &d),
    );
    assert_eq!(c_state.flows[TRANSMIT], FLOW_BUDGET, "C: {c_state:?}");
    assert!(c_state.refused[TRANSMIT] > 0, "C: {c_state:?}");
    assert_eq!(d_state.flows[RECEIVE], FLOW_BUDGET, "D: {d_state:?}");
    assert!(d_state.refused[RECEIVE] > 0, "D: {d_state:?}");
    assert_eq!(
        (b_state.flows, b_state.refused, b_state.reclaimed),
        (b_before.flows, [0, 0], [0, 0]),
        "B: {b_state:?}"
    );
    for pod in [&b, &c, &d] {
        assert_counts_match_table(&node, pod);
    }
}

/// A pod whose transmit budget is spent on ICMP echo flows (30 s without
/// packets ends one) gets room again: the first new flow after they expire
/// sweeps them away; before, new flows are refused.
#[test]
fn a_sweep_reclaims_expired_flows() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let (c, _) = pod_with_policy(&node, "c", deny_received());
    let d = node.add_pod("d", &node.conf("1.1.0"));
    let d_ip = d.ips()[0].clone();
    let budget = FLOW_BUDGET.to_string();
    run_to_end(python(&c.ns, ECHOES, &[&d_ip, "1", &budget]));
    let full = occupancy(&node, &c);
    assert_eq!(full.flows[TRANSMIT], FLOW_BUDGET, "{full:?}");
    assert_counts_match_table(&node, &c);

    run_to_end(python(&c.ns, ECHOES, &[&d_ip, "60000", "1"]));
    let refused = occupancy(&node, &c);
    assert_eq!(refused.refused[TRANSMIT], 1, "{refused:?}");
    assert_eq!(refused.reclaimed, [0, 0], "nothing expired yet");

    std::thread::sleep(Duration::from_secs(32));
    run_to_end(python(&c.ns, ECHOES, &[&d_ip, "60001", "1"]));
    let swept = occupancy(&node, &c);
    assert_eq!(swept.flows[TRANSMIT], 1, "{swept:?}");
    assert_eq!(swept.reclaimed[TRANSMIT], FLOW_BUDGET, "{swept:?}");
    assert_eq!(swept.refused[TRANSMIT], 1, "{swept:?}");
    assert_counts_match_table(&node, &c);
}

/// The kernel id of the pod's flow table (its fd closed again).
fn table_id(node: &Node, ifindex: u32) -> u32 {
    let data = MapData::from_pin(node.layout().map(FLOW_TABLES_MAP)).unwrap();
    let tables: HashOfMaps<_, u32, MapData> =
        HashOfMaps::try_from(Map::from_map_data(data).unwrap()).unwrap();
    tables.get(&ifindex, 0).unwrap().info().unwrap().id()
}

/// A table whose last reference went is freed after an RCU grace period.
fn assert_freed(id: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while MapData::from_id(id).is_ok() {
        assert!(Instant::now() < deadline, "flow table {id} still exists");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A pod's table comes with its policy and goes with it: on DEL, on GC, and
/// when `podmeterctl` removes its last rule. Nothing is left behind.
#[test]
fn a_flow_table_goes_with_its_pod_or_policy() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let (a, conf) = pod_with_policy(&node, "a", deny_received());
    let (ifindex, _) = node.registered(&a);
    let id = table_id(&node, ifindex);
    assert!(node.del(&a, &conf).success);
    assert_freed(id);
    // The node as DEL leaves it: the bridge and its addresses stay.
    let baseline = Leftovers::read(&node.site(&[]));
    assert!(
        baseline.clone().beyond(&baseline).is_clean(),
        "after DEL: {:?}",
        baseline.to_json()
    );

    let (b, conf) = pod_with_policy(&node, "b", deny_received());
    let (ifindex, _) = node.registered(&b);
    let id = table_id(&node, ifindex);
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    node.cni("GC", &gc, "", None, "", "").ok();
    assert_freed(id);

    let c = node.add_pod("c", &node.conf("1.1.0"));
    let (ifindex, _) = node.registered(&c);
    let out = node.ctl(&[
        "policy",
        "add",
        "test/c",
        "--direction",
        "transmit",
        "--action",
        "deny",
        "--proto",
        "udp",
    ]);
    assert!(out.status.success(), "{out:?}");
    let id = table_id(&node, ifindex);
    let out = node.ctl(&["policy", "delete", "test/c", "1"]);
    assert!(out.status.success(), "{out:?}");
    assert_freed(id);
    assert!(policy_store::ifindexes(&node.layout()).unwrap().is_empty());
    assert!(node.del(&c, &node.conf("1.1.0")).success);

    let left = Leftovers::read(&node.site(&[])).beyond(&baseline);
    assert!(left.is_clean(), "{:?}", left.to_json());
}
