//! A test "node": its own network namespace, pin path and IPAM data dir,
//! with the plugin running inside it as a runtime on that node would.

use std::{fs, path::PathBuf};

use podmeter_ebpf::{maps::counters::PodCounters, maps::PinnedMaps, PinLayout, PodCounter};
use serde_json::{json, Value};

use crate::{
    cni::{invoke, CniOutput},
    leftovers::Site,
    netns::NetNs,
};

pub const NETWORK: &str = "pmtest";

/// How long the kernel's counters must not move around a comparison.
const QUIET: std::time::Duration = std::time::Duration::from_millis(50);
pub const SUBNET_V4: &str = "10.77.0.0/24";
pub const SUBNET_V6: &str = "fd00:77::/64";
pub const GATEWAY_V4: &str = "10.77.0.1";
pub const GATEWAY_V6: &str = "fd00:77::1";

pub struct Node {
    pub ns: NetNs,
    pub pin_path: PathBuf,
    pub data_dir: tempfile::TempDir,
}

/// A pod attached by ADD; its namespace goes away with it.
pub struct Pod {
    pub ns: NetNs,
    pub container_id: String,
    pub ifname: String,
    pub result: Value,
}

impl Pod {
    /// The pod's addresses from the ADD result, without prefix (v4 first).
    pub fn ips(&self) -> Vec<String> {
        self.result["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|ip| {
                ip["address"]
                    .as_str()
                    .unwrap()
                    .split('/')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    /// The host end of its veth, as the result names it.
    pub fn host_ifname(&self) -> String {
        self.result["interfaces"][1]["name"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

/// Where most data-path tests start: a node with pods `a` and `b` ADDed
/// with one config. Tests take it apart (`let TwoPods { node, conf, a, b } =
/// TwoPods::new();`); kept whole, it drops the pods first as well.
pub struct TwoPods {
    pub a: Pod,
    pub b: Pod,
    pub conf: Value,
    pub node: Node,
}

impl Default for TwoPods {
    fn default() -> Self {
        Self::new()
    }
}

impl TwoPods {
    /// With the node's config for spec 1.1.0.
    pub fn new() -> Self {
        Self::with_conf(|_| {})
    }

    /// With the node's config for spec 1.1.0 as `edit` leaves it.
    pub fn with_conf(edit: impl FnOnce(&mut Value)) -> Self {
        let node = Node::new();
        let mut conf = node.conf("1.1.0");
        edit(&mut conf);
        let a = node.add_pod("a", &conf);
        let b = node.add_pod("b", &conf);
        Self { a, b, conf, node }
    }
}

/// A link's counters as the kernel keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

impl Default for Node {
    fn default() -> Self {
        Self::new()
    }
}

impl Node {
    pub fn new() -> Self {
        let ns = NetNs::new("pmt-node");
        let pin_path = PathBuf::from("/sys/fs/bpf").join(crate::unique("pmtest"));
        let data_dir = tempfile::Builder::new()
            .prefix("pmtest-ipam")
            .tempdir()
            .unwrap();
        Self {
            ns,
            pin_path,
            data_dir,
        }
    }

    /// A dual-stack gateway network with the built-in IPAM.
    pub fn conf(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": NETWORK,
            "type": "podmeter",
            "bridge": "pm0",
            "isGateway": true,
            "pinPath": self.pin_path,
            "ipam": {
                "type": "builtin",
                "dataDir": self.data_dir.path(),
                "ranges": [[{"subnet": SUBNET_V4}], [{"subnet": SUBNET_V6}]],
            },
        })
    }

    /// Runs the plugin inside the node with `CNI_COMMAND=command`.
    pub fn cni(
        &self,
        command: &str,
        conf: &Value,
        container_id: &str,
        netns: Option<&NetNs>,
        ifname: &str,
        cni_args: &str,
    ) -> CniOutput {
        let env = Self::cni_vars(command, container_id, netns, ifname, cni_args);
        self.cni_env(&env, conf.to_string().as_bytes())
    }

    /// The environment a runtime passes for `CNI_COMMAND=command` (unset
    /// variables left out).
    pub fn cni_vars(
        command: &str,
        container_id: &str,
        netns: Option<&NetNs>,
        ifname: &str,
        cni_args: &str,
    ) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("CNI_COMMAND", command.to_owned()),
            ("CNI_PATH", "/usr/lib/cni".to_owned()),
        ];
        for (key, value) in [
            ("CNI_CONTAINERID", container_id.to_owned()),
            ("CNI_IFNAME", ifname.to_owned()),
            ("CNI_ARGS", cni_args.to_owned()),
            (
                "CNI_NETNS",
                netns
                    .map(|n| n.path().display().to_string())
                    .unwrap_or_default(),
            ),
        ] {
            if !value.is_empty() {
                env.push((key, value));
            }
        }
        env
    }

    /// Runs the plugin inside the node with exactly `env` and `stdin`.
    pub fn cni_env(&self, env: &[(&str, String)], stdin: &[u8]) -> CniOutput {
        invoke(
            self.ns.command(crate::binary("podmeter").to_str().unwrap()),
            env,
            stdin,
        )
    }

    /// Makes a pod namespace and ADDs it with Kubernetes `CNI_ARGS`.
    pub fn add_pod(&self, name: &str, conf: &Value) -> Pod {
        self.add_k8s_pod("test", name, &format!("uid-{name}"), conf)
    }

    /// [`add_pod`](Self::add_pod) as the pod `namespace/name` of `uid`.
    pub fn add_k8s_pod(&self, namespace: &str, name: &str, uid: &str, conf: &Value) -> Pod {
        let ns = NetNs::new("pmt-pod");
        let container_id = crate::unique(name);
        // As kubelet passes them: IgnoreUnknown keeps strict delegates (host-local) happy.
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};K8S_POD_UID={uid}"
        );
        let result = self
            .cni("ADD", conf, &container_id, Some(&ns), "eth0", &args)
            .ok()
            .json;
        Pod {
            ns,
            container_id,
            ifname: "eth0".into(),
            result,
        }
    }

    pub fn del(&self, pod: &Pod, conf: &Value) -> CniOutput {
        self.cni(
            "DEL",
            conf,
            &pod.container_id,
            Some(&pod.ns),
            &pod.ifname,
            "",
        )
    }

    /// CHECK with the ADD result as `prevResult`.
    pub fn check(&self, pod: &Pod, conf: &Value) -> CniOutput {
        let mut conf = conf.clone();
        conf["prevResult"] = pod.result.clone();
        self.cni(
            "CHECK",
            &conf,
            &pod.container_id,
            Some(&pod.ns),
            &pod.ifname,
            "",
        )
    }

    pub fn link_stats(&self, ifname: &str) -> LinkStats {
        let out = self.ns.exec(&["ip", "-j", "-s", "link", "show", ifname]);
        let json: Value = serde_json::from_str(&out).unwrap();
        let stats = &json[0]["stats64"];
        let n = |v: &Value| v.as_u64().unwrap();
        LinkStats {
            rx_packets: n(&stats["rx"]["packets"]),
            rx_bytes: n(&stats["rx"]["bytes"]),
            tx_packets: n(&stats["tx"]["packets"]),
            tx_bytes: n(&stats["tx"]["bytes"]),
        }
    }

    /// Asserts that podmeter's counters of the pod behind `host_ifname`
    /// equal the kernel's counters of that veth (pod receive = veth
    /// transmit), and returns them. Pods still send the odd IPv6 neighbour
    /// or MLD packet, so the comparison uses a snapshot during which the
    /// kernel's counters did not move.
    pub fn assert_counters_match_kernel(&self, host_ifname: &str) -> PodCounters {
        let maps = self.maps();
        let (ifindex, _) = maps
            .pods()
            .unwrap()
            .into_iter()
            .find(|(_, p)| p.host_ifname == host_ifname)
            .unwrap_or_else(|| panic!("{host_ifname} is not registered"));
        let (ours, kernel) = self.quiet_snapshot(host_ifname, || {
            maps.pod_counters(ifindex)
                .unwrap()
                .expect("pod has counters")
        });
        let as_kernel = |packets, bytes| PodCounter { packets, bytes };
        let drops: Vec<_> = maps
            .drops()
            .unwrap()
            .into_iter()
            .filter(|d| d.ifindex == ifindex)
            .collect();
        assert_eq!(
            (ours.receive, ours.transmit),
            (
                as_kernel(kernel.tx_packets, kernel.tx_bytes),
                as_kernel(kernel.rx_packets, kernel.rx_bytes)
            ),
            "podmeter (receive, transmit) vs kernel {kernel:?} of {host_ifname} (drops {drops:?})"
        );
        ours
    }

    /// The host ifindex and identity under which `pod` is registered;
    /// panics if it is not.
    pub fn registered(&self, pod: &Pod) -> (u32, podmeter_ebpf::PodIdentity) {
        self.maps()
            .find(NETWORK, &pod.container_id, &pod.ifname)
            .unwrap()
            .unwrap_or_else(|| panic!("{} is not registered", pod.container_id))
    }

    /// `podmeterctl policy add POD --direction D --action A REST...`: the
    /// new rule's id.
    pub fn policy_add(&self, pod: &str, direction: &str, action: &str, rest: &[&str]) -> u32 {
        let mut args = vec![
            "policy",
            "add",
            pod,
            "--direction",
            direction,
            "--action",
            action,
        ];
        args.extend_from_slice(rest);
        self.ctl_ok(&args).trim().parse().unwrap()
    }

    /// The pod's POLICY_DENIED drops in `direction`.
    pub fn policy_denied(&self, pod: &Pod, direction: podmeter_ebpf::Direction) -> PodCounter {
        let (ifindex, _) = self.registered(pod);
        self.maps()
            .drops()
            .unwrap()
            .into_iter()
            .filter(|d| d.ifindex == ifindex && d.direction == direction)
            .filter(|d| d.reason == podmeter_ebpf::abi::DROP_POLICY_DENIED)
            .map(|d| d.dropped)
            .next()
            .unwrap_or_default()
    }

    /// Runs `read` while the kernel's counters of `host_ifname` stand
    /// still, and returns its result with those counters. A qdisc on the
    /// veth (the bandwidth plugin's tbf) may hold a counted packet before
    /// the veth counts it, for longer than any fixed window on a loaded
    /// machine: its queue must be empty too.
    pub fn quiet_snapshot<T>(&self, host_ifname: &str, read: impl Fn() -> T) -> (T, LinkStats) {
        (0..50)
            .find_map(|_| {
                let before = self.link_stats(host_ifname);
                std::thread::sleep(QUIET);
                let value = read();
                std::thread::sleep(QUIET);
                let quiet =
                    before == self.link_stats(host_ifname) && self.qdisc_backlog(host_ifname) == 0;
                quiet.then_some((value, before))
            })
            .expect("the kernel's counters never stood still")
    }

    /// Packets queued in the qdiscs of `ifname` (`tc -s qdisc`).
    fn qdisc_backlog(&self, ifname: &str) -> u64 {
        let out = self
            .ns
            .exec(&["tc", "-s", "-j", "qdisc", "show", "dev", ifname]);
        let qdiscs: Value = serde_json::from_str(&out).unwrap();
        qdiscs
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["qlen"].as_u64().unwrap_or(0))
            .sum()
    }

    /// Runs `podmeterctl` on this node's pins (from the host: the pins are
    /// node-wide, whatever the netns).
    pub fn ctl(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(crate::binary("podmeterctl"))
            .arg("--bpf.pin-path")
            .arg(&self.pin_path)
            .args(args)
            .output()
            .unwrap()
    }

    /// `podmeterctl args`, which must succeed: its stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(out.status.success(), "podmeterctl {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// `podmeterctl args`, which must fail with exit status 2 and nothing
    /// on stdout: its stderr.
    pub fn ctl_err(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert_eq!(out.status.code(), Some(2), "podmeterctl {args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn layout(&self) -> PinLayout {
        PinLayout::new(&self.pin_path)
    }

    pub fn maps(&self) -> PinnedMaps {
        PinnedMaps::open(&self.layout()).expect("pinned maps")
    }

    /// Leased addresses in the built-in IPAM's store.
    pub fn leases(&self) -> Vec<String> {
        crate::leftovers::leases(&self.data_dir.path().join(NETWORK))
    }

    /// Names of the pinned per-pod TCX links (not the node-wide drop tracer's).
    pub fn link_pins(&self) -> Vec<String> {
        crate::leftovers::link_pins(&self.layout())
    }

    /// Where this node keeps its state, for counting what is left there.
    pub fn site(&self, pods: &[&NetNs]) -> Site {
        Site {
            netns: self.ns.name().to_owned(),
            pod_netns: pods.iter().map(|p| p.name().to_owned()).collect(),
            pin_path: self.pin_path.clone(),
            data_dir: self.data_dir.path().to_owned(),
            network: NETWORK.to_owned(),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // The namespace (and with it bridge, veths and TCX attachments) goes
        // when the `ns` field drops; pins are ours to remove.
        let _ = fs::remove_dir_all(&self.pin_path);
    }
}
