//! Tests only: the upstream e2e model (`test/e2e/network/netpol`):
//! namespaces x, y, z, each with pods a, b, c labelled `pod=<name>`, every
//! pod serving TCP, UDP and SCTP on 80 and 81 under the named ports
//! `serve-80-tcp` etc., spread over two nodes, dual-stack; and the
//! comparison of the compiled tier with the reference evaluator.

use std::{net::IpAddr, sync::Arc};

use k8s_openapi::api::{
    core::v1::{Namespace, Pod},
    networking::v1::NetworkPolicy,
};
use serde_json::{json, Value};

use super::{
    compile::{Compiler, Input},
    model::{Compiled, Direction, KubeProto},
    reference, simulate,
};

pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub const PODS: [&str; 3] = ["a", "b", "c"];
pub const NODES: [&str; 2] = ["node-1", "node-2"];
pub const PROTOS: [KubeProto; 3] = [KubeProto::Tcp, KubeProto::Udp, KubeProto::Sctp];
/// 82 is served by no one: a port rule for 80 must not open it.
pub const PORTS: [u16; 3] = [80, 81, 82];

pub fn proto_name(p: KubeProto) -> &'static str {
    match p {
        KubeProto::Tcp => "TCP",
        KubeProto::Udp => "UDP",
        KubeProto::Sctp => "SCTP",
    }
}

/// Node `n`'s (from 1) own addresses.
pub fn node_addrs(n: usize) -> Vec<IpAddr> {
    vec![
        format!("10.78.0.1{n}").parse().unwrap(),
        format!("fd00:78::1{n}").parse().unwrap(),
    ]
}

/// Addresses of no pod and no node: inside and outside the cluster.
pub fn outside() -> Vec<IpAddr> {
    [
        "10.78.0.1",
        "192.0.2.9",
        "203.0.113.5",
        "fd00:78::1",
        "2001:db8::9",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect()
}

#[derive(Debug, Clone)]
pub struct World {
    pub pods: Vec<Arc<Pod>>,
    pub namespaces: Vec<Arc<Namespace>>,
    pub policies: Vec<Arc<NetworkPolicy>>,
}

fn container_ports() -> Value {
    let mut ports = Vec::new();
    for port in [80, 81] {
        for proto in ["TCP", "UDP", "SCTP"] {
            let name = format!("serve-{port}-{}", proto.to_lowercase());
            ports.push(json!({"name": name, "containerPort": port, "protocol": proto}));
        }
    }
    Value::Array(ports)
}

/// A running pod on `node` with `labels` and one IP per family from `n`.
pub fn pod(ns: &str, name: &str, node: usize, n: usize, labels: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name, "uid": format!("uid-{ns}-{name}"), "labels": labels},
        "spec": {
            "nodeName": NODES[node - 1],
            "containers": [{"name": "agnhost", "ports": container_ports()}],
        },
        "status": {
            "phase": "Running",
            "podIPs": [{"ip": format!("10.244.{node}.{n}")}, {"ip": format!("fd00:10:244:{node}::{n}")}],
        },
    }))
    .unwrap()
}

pub fn namespace(name: &str, labels: Value) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap()
}

pub fn policy(ns: &str, name: &str, spec: Value) -> NetworkPolicy {
    serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
        .unwrap()
}

impl World {
    /// The model, without policies. Namespaces carry `ns=<name>` but not
    /// the automatic name label: the compiler must add it.
    pub fn upstream() -> Self {
        let mut pods = Vec::new();
        for (i, ns) in NAMESPACES.iter().enumerate() {
            for (j, name) in PODS.iter().enumerate() {
                let n = 3 * i + j;
                pods.push(Arc::new(pod(
                    ns,
                    name,
                    1 + n % 2,
                    10 + n,
                    json!({"pod": name}),
                )));
            }
        }
        let namespaces = NAMESPACES
            .iter()
            .map(|ns| Arc::new(namespace(ns, json!({"ns": ns}))))
            .collect();
        Self {
            pods,
            namespaces,
            policies: Vec::new(),
        }
    }

    pub fn add(&mut self, p: NetworkPolicy) -> &mut Self {
        self.policies.push(Arc::new(p));
        self
    }

    pub fn pod(&self, key: &str) -> &Pod {
        self.pods
            .iter()
            .find(|p| pod_key(p) == key)
            .unwrap_or_else(|| panic!("no pod {key}"))
    }

    pub fn pod_mut(&mut self, key: &str) -> &mut Pod {
        let p = self.pods.iter_mut().find(|p| pod_key(p) == key).unwrap();
        Arc::make_mut(p)
    }

    pub fn node_of(&self, key: &str) -> usize {
        let node = self
            .pod(key)
            .spec
            .as_ref()
            .unwrap()
            .node_name
            .clone()
            .unwrap();
        NODES.iter().position(|n| *n == node).unwrap() + 1
    }

    pub fn compile(&self, compiler: &mut Compiler, node: usize) -> Compiled {
        compiler.compile(&Input {
            pods: &self.pods,
            namespaces: &self.namespaces,
            policies: &self.policies,
            node_name: NODES[node - 1],
            node_addrs: &node_addrs(node),
        })
    }

    /// Every address a pod could talk to: pods', nodes', outside ones.
    fn remotes(&self) -> Vec<IpAddr> {
        let mut all: Vec<IpAddr> = self.pods.iter().flat_map(|p| pod_ips(p)).collect();
        all.extend(node_addrs(1));
        all.extend(node_addrs(2));
        all.extend(outside());
        all
    }

    /// Compiles for every node and checks the simulated kernel against the
    /// reference for every local pod, remote, direction, protocol and port;
    /// returns how many answers were compared.
    pub fn compare(&self) -> usize {
        let mut compared = 0;
        for node in 1..=NODES.len() {
            let compiled = self.compile(&mut Compiler::default(), node);
            compared += self.compare_node(&compiled, node);
        }
        compared
    }

    pub fn compare_node(&self, compiled: &Compiled, node: usize) -> usize {
        let addrs = node_addrs(node);
        let reference = reference::World {
            pods: &self.pods,
            namespaces: &self.namespaces,
            policies: &self.policies,
            node_addrs: &addrs,
        };
        let mut compared = 0;
        for key in compiled.pods.keys() {
            let pod = self.pod(key);
            for remote in self.remotes() {
                for proto in PROTOS {
                    for port in PORTS {
                        let name = proto_name(proto);
                        let want_in = reference.ingress_allowed(pod, remote, name, port);
                        let want_out = reference.egress_allowed(pod, remote, name, port);
                        let got_in = simulate::allowed(
                            compiled,
                            key,
                            Direction::Receive,
                            remote,
                            proto,
                            port,
                        );
                        let got_out = simulate::allowed(
                            compiled,
                            key,
                            Direction::Transmit,
                            remote,
                            proto,
                            port,
                        );
                        assert_eq!(
                            got_in, want_in,
                            "ingress {remote} → {key} {name}/{port}\n{compiled:#?}"
                        );
                        assert_eq!(
                            got_out, want_out,
                            "egress {key} → {remote} {name}/{port}\n{compiled:#?}"
                        );
                        compared += 2;
                    }
                }
            }
        }
        compared
    }

    /// Every node's compiled tier, node 1 first.
    pub fn compile_all(&self) -> Vec<Compiled> {
        (1..=NODES.len())
            .map(|n| self.compile(&mut Compiler::default(), n))
            .collect()
    }

    /// A probe's verdict through the compiled tiers of both ends' nodes:
    /// the source's egress and the destination's ingress (IPv4 when `v6`
    /// is false).
    pub fn probe(
        &self,
        compiled: &[Compiled],
        (from, to): (&str, &str),
        proto: KubeProto,
        port: u16,
        v6: bool,
    ) -> bool {
        let ip = |key: &str| {
            pod_ips(self.pod(key))
                .into_iter()
                .find(|ip| ip.is_ipv6() == v6)
                .unwrap()
        };
        let out = &compiled[self.node_of(from) - 1];
        let into = &compiled[self.node_of(to) - 1];
        simulate::allowed(out, from, Direction::Transmit, ip(to), proto, port)
            && simulate::allowed(into, to, Direction::Receive, ip(from), proto, port)
    }
}

pub fn pod_key(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or_default(),
        p.metadata.name.as_deref().unwrap_or_default()
    )
}

pub fn pod_ips(p: &Pod) -> Vec<IpAddr> {
    p.status
        .iter()
        .flat_map(|s| s.pod_ips.iter().flatten())
        .map(|ip| ip.ip.parse().unwrap())
        .collect()
}

/// The expected verdicts of every pod pair for one protocol and port, as
/// upstream's `Reachability`: all allowed unless a test says otherwise;
/// a pod to itself is not probed (it never leaves the pod).
pub struct Truth {
    allowed: Vec<Vec<bool>>,
    keys: Vec<String>,
}

impl Truth {
    pub fn all(allowed: bool) -> Self {
        let keys: Vec<String> = NAMESPACES
            .iter()
            .flat_map(|ns| PODS.iter().map(move |p| format!("{ns}/{p}")))
            .collect();
        Self {
            allowed: vec![vec![allowed; keys.len()]; keys.len()],
            keys,
        }
    }

    /// Sets every pair whose source and destination keys match the
    /// predicates.
    pub fn set(
        mut self,
        from: impl Fn(&str) -> bool,
        to: impl Fn(&str) -> bool,
        allowed: bool,
    ) -> Self {
        for (i, f) in self.keys.iter().enumerate() {
            for (j, t) in self.keys.iter().enumerate() {
                if from(f) && to(t) {
                    self.allowed[i][j] = allowed;
                }
            }
        }
        self
    }

    /// Checks every pair, both families, against the compiled tiers.
    pub fn check(&self, world: &World, proto: KubeProto, port: u16) {
        let compiled = world.compile_all();
        let mut wrong = Vec::new();
        for (i, f) in self.keys.iter().enumerate() {
            for (j, t) in self.keys.iter().enumerate() {
                if i == j {
                    continue;
                }
                for v6 in [false, true] {
                    let got = world.probe(&compiled, (f, t), proto, port, v6);
                    if got != self.allowed[i][j] {
                        wrong.push(format!("{f} → {t} v6={v6}: got {got}"));
                    }
                }
            }
        }
        assert!(wrong.is_empty(), "{proto:?}/{port}: {wrong:#?}");
    }
}

/// Matches every key.
pub fn any(_: &str) -> bool {
    true
}
