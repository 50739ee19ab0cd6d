//! A runtime-style restart. No podmeter process lives between CNI calls:
//! the node's state is the kernel's (pinned maps, programs and TCX links
//! under the pin path) and the disk's (leases under `dataDir`). Restarting
//! everything in userspace therefore means: every handle is closed, and the
//! next reader or plugin call is a fresh process that knows only the config.
//! The counters must go on from where they were, and old pods must still
//! DEL cleanly.

use std::{collections::BTreeMap, fs, process::Command};

use aya::programs::{tc::TcAttachType, ProgramInfo, SchedClassifier};
use podmeter_ebpf::{maps::counters::PodCounters, programs::object::PROGRAMS, PodIdentity};
use podmeter_tests::{Node, Pod, TwoPods};
use serde_json::Value;

/// What the node keeps across a restart.
#[derive(Debug, PartialEq)]
struct State {
    leases: Vec<String>,
    link_pins: Vec<String>,
    registry: Vec<(u32, PodIdentity)>,
    /// Kernel IDs of the pinned programs and maps.
    pinned_ids: BTreeMap<String, u32>,
    /// Kernel IDs of the programs attached to each host veth, per hook.
    attached: BTreeMap<String, Vec<u32>>,
}

impl State {
    fn read(node: &Node, pods: &[&Pod]) -> Self {
        let layout = node.layout();
        let mut pinned_ids = BTreeMap::new();
        for spec in &PROGRAMS {
            let info = ProgramInfo::from_pin(layout.program(spec.name)).unwrap();
            pinned_ids.insert(spec.name.to_owned(), info.id());
        }
        for map in ["pm_counters", "pm_registry", "pm_devices", "pm_drops"] {
            let info = aya::maps::MapInfo::from_pin(layout.map(map)).unwrap();
            pinned_ids.insert(map.to_owned(), info.id());
        }
        let attached = pods
            .iter()
            .map(|pod| {
                let host = pod.host_ifname();
                let ids = node.ns.run_in(|| {
                    [TcAttachType::Ingress, TcAttachType::Egress]
                        .into_iter()
                        .flat_map(|hook| SchedClassifier::query_tcx(&host, hook).unwrap().1)
                        .map(|p| p.id())
                        .collect()
                });
                (host, ids)
            })
            .collect();
        let mut link_pins = node.link_pins();
        link_pins.sort();
        Self {
            leases: node.leases(),
            link_pins,
            registry: node.maps().pods().unwrap(),
            pinned_ids,
            attached,
        }
    }
}

/// IDs of BPF objects this test process holds a descriptor to
/// (`/proc/self/fdinfo` names them as `map_id`, `prog_id`, `link_id`).
fn bpf_ids_held_by_this_process() -> Vec<u32> {
    fs::read_dir("/proc/self/fdinfo")
        .unwrap()
        .filter_map(|e| fs::read_to_string(e.ok()?.path()).ok())
        .flat_map(|info| {
            info.lines()
                .filter_map(|l| {
                    let (key, value) = l.split_once(':')?;
                    ["map_id", "prog_id", "link_id"]
                        .contains(&key)
                        .then(|| value.trim().parse().ok())?
                })
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// The pods' counters as a fresh process (`podmeterctl`) reads them from the pins.
fn stat(node: &Node) -> BTreeMap<String, PodCounters> {
    let out = Command::new(podmeter_tests::binary("podmeterctl"))
        .arg("--bpf.pin-path")
        .arg(&node.pin_path)
        .args(["pods", "--output", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            let n = |k: &str| v[k].as_u64().unwrap();
            let mut c = PodCounters::default();
            (c.receive.packets, c.receive.bytes) = (n("receive_packets"), n("receive_bytes"));
            (c.transmit.packets, c.transmit.bytes) = (n("transmit_packets"), n("transmit_bytes"));
            (v["pod"].as_str().unwrap().to_owned(), c)
        })
        .collect()
}

/// "Restarts" userspace: asserts that nothing of ours is open any more.
fn restart(state: &State) {
    let held = bpf_ids_held_by_this_process();
    for (name, id) in &state.pinned_ids {
        assert!(!held.contains(id), "{name} (id {id}) is still open");
    }
}

#[test]
fn state_survives_a_userspace_restart_and_old_pods_delete_with_only_the_config() {
    podmeter_testkit::needs_root!();
    let TwoPods { node, conf, a, b } = TwoPods::new();
    a.ns.ping(&b.ips()[0], 20, 500);
    let before = State::read(&node, &[&a, &b]);
    let counted = stat(&node);

    restart(&before);
    // Traffic while no podmeter process exists at all.
    a.ns.ping(&b.ips()[0], 20, 500);

    assert_eq!(
        State::read(&node, &[&a, &b]),
        before,
        "leases, pins, registry or attachments changed"
    );
    let now = stat(&node);
    for pod in ["a", "b"] {
        let (old, new) = (counted[pod], now[pod]);
        assert!(
            new.transmit.packets >= old.transmit.packets + 20
                && new.receive.packets >= old.receive.packets + 20
                && new.transmit.bytes >= old.transmit.bytes + 20 * 500,
            "{pod} did not count on from {old:?}: {new:?}"
        );
    }
    // No reset and no gap: still exactly the veths' own lifetime counters.
    node.assert_counters_match_kernel(&a.host_ifname());
    node.assert_counters_match_kernel(&b.host_ifname());
    // A fresh plugin process CHECKs what an earlier one ADDed.
    node.check(&a, &conf).ok();

    // DEL by fresh processes with nothing but the config (no prevResult, no CNI_ARGS).
    for pod in [&a, &b] {
        node.del(pod, &conf).ok();
    }
    let maps = node.maps();
    assert!(maps.pods().unwrap().is_empty(), "registry entries left");
    assert!(maps.counters().unwrap().is_empty(), "counters left");
    assert!(node.leases().is_empty(), "leases: {:?}", node.leases());
    assert!(node.link_pins().is_empty(), "{:?}", node.link_pins());
    assert_eq!(node.ns.links(), ["lo", "pm0"]);
}

#[test]
fn old_pods_keep_counting_while_a_new_pod_is_added_after_a_restart() {
    podmeter_testkit::needs_root!();
    let TwoPods { node, conf, a, b } = TwoPods::new();
    a.ns.ping(&b.ips()[0], 5, 100);
    let before = State::read(&node, &[&a, &b]);
    restart(&before);

    // a pings b throughout the new pod's ADD.
    let mut pinger =
        a.ns.command("busybox")
            .args(["ping", "-c", "100", "-i", "0.01", "-s", "200", "-W", "2"])
            .arg(&b.ips()[0])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
    let c = node.add_pod("c", &conf);
    let status = pinger.wait().unwrap();
    assert!(status.success(), "pings were lost while c was added");

    // The new pod got the already-loaded programs: no second load.
    let after = State::read(&node, &[&a, &b, &c]);
    assert_eq!(after.pinned_ids, before.pinned_ids);
    let pinned: Vec<u32> = PROGRAMS.iter().map(|p| after.pinned_ids[p.name]).collect();
    assert_eq!(after.attached[&c.host_ifname()], pinned);
    for pod in [&a, &b] {
        assert_eq!(after.attached[&pod.host_ifname()], pinned);
    }

    c.ns.ping(&a.ips()[0], 10, 100);
    let counts = stat(&node);
    assert!(counts["a"].transmit.packets >= 5 + 100, "{counts:?}");
    for pod in [&a, &b, &c] {
        node.assert_counters_match_kernel(&pod.host_ifname());
    }
}
