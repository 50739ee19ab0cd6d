//! A simulated multi-node cluster for routing tests: node network namespaces
//! joined by an "underlay" bridge in a namespace of its own (one L2 segment,
//! as kind's Docker network), each node with its own pin path, IPAM dir and
//! its own `podmeter-agent` (the real binary, run inside the node's network
//! namespace and a private mount namespace), all watching one fake API
//! server that listens in the underlay namespace, where every node reaches
//! it.
//!
//! Addresses: the underlay is 10.78.0.0/24 and fd00:78::/64, with .1/::1 for
//! the API server and "outside the cluster"; node `i` (from 1) is .1i/::1i
//! there (its InternalIPs) and has pod ranges 10.244.i.0/24 and
//! fd00:10:244:i::/64 of the cluster's 10.244.0.0/16 and fd00:10:244::/56.

use std::{
    collections::BTreeSet,
    fs::File,
    io,
    net::{SocketAddr, TcpListener},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use nix::sched::{setns, CloneFlags};
use serde_json::{json, Value};

use crate::{
    agent::{Agent, AgentDirs, Flags, Mounts, EVENTUALLY},
    fake_apiserver::{self, FakeApiServer},
    http::{self, Response},
    NetNs, Node,
};

pub const CLUSTER_CIDRS: &str = "10.244.0.0/16,fd00:10:244::/56";
/// The underlay's own addresses: the API server's, and "outside the cluster".
pub const OUTSIDE_V4: &str = "10.78.0.1";
pub const OUTSIDE_V6: &str = "fd00:78::1";
/// The agents' route protocol (agent/src/route_table.rs).
pub const PROTO: &str = "152";

/// A node's InternalIPs: `.1i` at first, `.2i` after a test moves them.
pub fn internal_ips(i: usize, moved: bool) -> (String, String) {
    let host = if moved { 20 + i } else { 10 + i };
    (format!("10.78.0.{host}"), format!("fd00:78::{host}"))
}

/// Gives a node's underlay link (`eth0`) the addresses `ips` (v4, v6).
pub fn add_internal_ips(ns: &NetNs, (v4, v6): &(String, String)) {
    ns.exec(&["ip", "addr", "add", &format!("{v4}/24"), "dev", "eth0"]);
    ns.exec(&[
        "ip",
        "addr",
        "add",
        &format!("{v6}/64"),
        "dev",
        "eth0",
        "nodad",
    ]);
}

pub fn pod_ranges(i: usize) -> [String; 2] {
    [format!("10.244.{i}.0/24"), format!("fd00:10:244:{i}::/64")]
}

pub fn name(i: usize) -> String {
    format!("node-{i}")
}

/// Node `i`'s object: its pod ranges and one InternalIP per family.
pub fn node_object(i: usize, ips: &(String, String)) -> Value {
    let [v4, v6] = pod_ranges(i);
    let mut node = fake_apiserver::node(&name(i), &[&v4, &v6], &ips.0);
    node["status"]["addresses"]
        .as_array_mut()
        .unwrap()
        .insert(1, json!({ "type": "InternalIP", "address": ips.1 }));
    node
}

/// The routes to node `i`'s ranges via `ips`, as `(dst, gateway)`.
pub fn routes_to(i: usize, ips: &(String, String)) -> BTreeSet<(String, String)> {
    let [v4, v6] = pod_ranges(i);
    [(v4, ips.0.clone()), (v6, ips.1.clone())].into()
}

/// Binds a TCP listener inside the network namespace at `ns` (the socket
/// stays there whatever thread uses it later).
pub fn bind_in(ns: &Path, addr: SocketAddr) -> io::Result<TcpListener> {
    let file = File::open(ns)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(&file, CloneFlags::CLONE_NEWNET)?;
            TcpListener::bind(addr)
        })
        .join()
        .expect("the binding thread panicked")
    })
}

/// One node: its namespace, pins and IPAM dir, agent dirs and agent.
/// Fields drop in order: the agent dies before its namespace goes.
pub struct SimNode {
    pub agent: Option<Agent>,
    pub node: Node,
    pub dirs: AgentDirs,
    pub index: usize,
}

pub struct SimCluster {
    pub nodes: Vec<SimNode>,
    pub api: FakeApiServer,
    pub underlay: NetNs,
    kubeconfig: PathBuf,
    _kubeconfig_dir: tempfile::TempDir,
}

impl SimCluster {
    /// `n` nodes wired to the underlay, their Node objects served, every
    /// agent started and its routes and conflist in place.
    pub fn new(n: usize) -> Self {
        let underlay = NetNs::new("pmt-ul");
        for cmd in [
            "ip link add ul0 type bridge mcast_snooping 0",
            "ip link set ul0 up",
            "ip addr add 10.78.0.1/24 dev ul0",
            "ip addr add fd00:78::1/64 dev ul0 nodad",
        ] {
            underlay.exec(&cmd.split(' ').collect::<Vec<_>>());
        }
        let ns_path = underlay.path();
        let api = FakeApiServer::start_with(
            (OUTSIDE_V4.parse::<std::net::IpAddr>().unwrap(), 0).into(),
            Box::new(move |addr| bind_in(&ns_path, addr)),
        );
        let kubeconfig_dir = tempfile::Builder::new()
            .prefix("pmtest-kube")
            .tempdir()
            .unwrap();
        let kubeconfig = api.kubeconfig(kubeconfig_dir.path());
        let mut cluster = Self {
            nodes: Vec::new(),
            api,
            underlay,
            kubeconfig,
            _kubeconfig_dir: kubeconfig_dir,
        };
        for i in 1..=n {
            cluster.add_node(i);
        }
        for i in 1..=n {
            cluster.api.apply(node_object(i, &internal_ips(i, false)));
        }
        for i in 1..=n {
            cluster.start_agent(i);
        }
        for i in 1..=n {
            cluster.wait_ready(i);
        }
        cluster
    }

    fn add_node(&mut self, i: usize) {
        let node = Node::new();
        let port = format!("ul{i}");
        self.underlay.exec(&[
            "ip",
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            node.ns.name(),
        ]);
        self.underlay
            .exec(&["ip", "link", "set", &port, "master", "ul0", "up"]);
        add_internal_ips(&node.ns, &internal_ips(i, false));
        node.ns.exec(&["ip", "link", "set", "eth0", "up"]);
        self.nodes.push(SimNode {
            agent: None,
            node,
            dirs: AgentDirs::new(),
            index: i,
        });
    }

    pub fn node(&self, i: usize) -> &SimNode {
        &self.nodes[i - 1]
    }

    /// Starts node `i`'s agent inside its network namespace.
    pub fn start_agent(&mut self, i: usize) {
        let sim = &self.nodes[i - 1];
        let mut flags = Flags::new(&self.kubeconfig, &name(i), &sim.dirs);
        flags.pin_path = sim.node.pin_path.clone();
        flags.data_dir = sim.node.data_dir.path().into();
        flags.routes = true;
        flags.extra.push(format!("--cluster-cidr={CLUSTER_CIDRS}"));
        let mut cmd = flags.command();
        in_net_ns(&mut cmd, &sim.node.ns);
        self.nodes[i - 1].agent = Some(Agent::start(cmd, Mounts::Private));
    }

    /// SIGKILLs node `i`'s agent and waits for it to be gone.
    pub fn kill_agent(&mut self, i: usize) {
        let agent = self.nodes[i - 1].agent.take().expect("no agent running");
        crate::signal(agent.pid(), nix::sys::signal::Signal::SIGKILL);
        drop(agent); // reaps it
    }

    pub fn agent(&self, i: usize) -> &Agent {
        self.node(i).agent.as_ref().expect("no agent running")
    }

    /// GET on node `i`'s agent, from inside the node (it listens on the
    /// node's loopback).
    pub fn get(&self, i: usize, path: &str) -> Response {
        let addr = self.agent(i).addr;
        self.node(i).node.ns.run_in(|| http::get(addr, path, None))
    }

    /// Waits until node `i`'s agent is ready (conflist written, routes
    /// synced).
    pub fn wait_ready(&self, i: usize) {
        self.agent(i).eventually("readiness", || {
            (self.get(i, "/readyz").status == 200).then_some(())
        });
    }

    /// The routes with the agents' protocol in node `i`'s main table, as
    /// `(dst, gateway)`, IPv4 and IPv6. A list, not a set: duplicates show.
    pub fn owned_routes(&self, i: usize) -> Vec<(String, String)> {
        self.routes(i, &["proto", PROTO])
            .iter()
            .map(|r| (r["dst"].as_str().unwrap().to_owned(), gateway(r)))
            .collect()
    }

    /// `ip -j route show` of both families in node `i`, with `filter`.
    pub fn routes(&self, i: usize, filter: &[&str]) -> Vec<Value> {
        let mut all = Vec::new();
        for family in ["-4", "-6"] {
            let mut argv = vec!["ip", family, "-j", "route", "show", "table", "main"];
            argv.extend(filter);
            let out = self.node(i).node.ns.exec(&argv);
            let routes: Value = serde_json::from_str(&out).unwrap();
            all.extend(routes.as_array().unwrap().iter().cloned());
        }
        all
    }

    /// Waits until node `i`'s own routes are exactly `want`; returns how long
    /// that took from `since`.
    pub fn wait_routes(
        &self,
        i: usize,
        want: &BTreeSet<(String, String)>,
        since: Instant,
    ) -> Duration {
        loop {
            let last = self.owned_routes(i);
            let set: BTreeSet<_> = last.iter().cloned().collect();
            if set == *want && set.len() == last.len() {
                return since.elapsed();
            }
            assert!(
                since.elapsed() < EVENTUALLY,
                "node {i}: routes {last:?}, want {want:?}; agent log:\n{}",
                self.node(i)
                    .agent
                    .as_ref()
                    .map(Agent::log)
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The podmeter entry of node `i`'s conflist (as libcni hands it over)
    /// once the agent has written it.
    pub fn conf(&self, i: usize) -> Value {
        let path = self.node(i).dirs.conflist();
        let text = self
            .agent(i)
            .eventually("the conflist", || std::fs::read_to_string(&path).ok());
        let list: Value = serde_json::from_str(&text).unwrap();
        let mut conf = list["plugins"][0].clone();
        conf["cniVersion"] = list["cniVersion"].clone();
        conf["name"] = list["name"].clone();
        conf
    }
}

/// `ip -j route` shows a gateway as `gateway` (or `via.host`, cross-family).
fn gateway(route: &Value) -> String {
    route["gateway"]
        .as_str()
        .or_else(|| route["via"]["host"].as_str())
        .unwrap_or("")
        .to_owned()
}

/// Makes `cmd` run in `ns`'s network namespace (entered between fork and
/// exec, as `nsenter --net` would).
fn in_net_ns(cmd: &mut Command, ns: &NetNs) {
    let file = File::open(ns.path()).unwrap();
    // SAFETY: only a system call between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            setns(&file, CloneFlags::CLONE_NEWNET)?;
            Ok(())
        });
    }
}
