//! Tests only: a naive evaluator of NetworkPolicy read straight from the
//! API's text (kubernetes.io "Network Policies"): no classes, no regions,
//! no identities, its own label matching. The compiled tier, looked up as
//! the kernel does ([`super::simulate`]), must answer as this does.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use ipnet::IpNet;
use k8s_openapi::{
    api::{
        core::v1::{Namespace, Pod},
        networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort},
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};

/// A rule's peers (`from` or `to`) and ports.
type Rule = (
    Option<Vec<NetworkPolicyPeer>>,
    Option<Vec<NetworkPolicyPort>>,
);

pub struct World<'a> {
    pub pods: &'a [Arc<Pod>],
    pub namespaces: &'a [Arc<Namespace>],
    pub policies: &'a [Arc<NetworkPolicy>],
    /// The node the evaluated pod runs on: its addresses are always allowed.
    pub node_addrs: &'a [IpAddr],
}

fn labels_of(
    m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> BTreeMap<String, String> {
    m.labels.clone().unwrap_or_default()
}

fn selects(s: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    for (k, v) in s.match_labels.iter().flatten() {
        if labels.get(k) != Some(v) {
            return false;
        }
    }
    for e in s.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default();
        let ok = match (e.operator.as_str(), labels.get(&e.key)) {
            ("In", Some(v)) => values.contains(v),
            ("In", None) => false,
            ("NotIn", Some(v)) => !values.contains(v),
            ("NotIn", None) => true,
            ("Exists", v) => v.is_some(),
            ("DoesNotExist", v) => v.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

impl World<'_> {
    /// The pod an address belongs to, for selectors: running (not being
    /// deleted, not finished), not hostNetwork, with that IP in podIPs.
    fn pod_at(&self, addr: IpAddr) -> Option<&Pod> {
        self.pods.iter().map(AsRef::as_ref).find(|p| {
            let status = p.status.as_ref();
            let phase = status.and_then(|s| s.phase.clone()).unwrap_or_default();
            p.metadata.deletion_timestamp.is_none()
                && phase != "Succeeded"
                && phase != "Failed"
                && !p
                    .spec
                    .as_ref()
                    .and_then(|s| s.host_network)
                    .unwrap_or(false)
                && status
                    .and_then(|s| s.pod_ips.as_ref())
                    .into_iter()
                    .flatten()
                    .any(|ip| ip.ip.parse::<IpAddr>().ok() == Some(addr))
        })
    }

    fn namespace_labels(&self, name: &str) -> BTreeMap<String, String> {
        let mut labels = self
            .namespaces
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name))
            .map(|n| labels_of(&n.metadata))
            .unwrap_or_default();
        labels.insert("kubernetes.io/metadata.name".into(), name.into());
        labels
    }

    /// The policies of `pod`'s namespace that select it and have `kind` among their types.
    fn applying(&self, pod: &Pod, kind: &str) -> Vec<&NetworkPolicy> {
        self.policies
            .iter()
            .map(AsRef::as_ref)
            .filter(|p| p.metadata.namespace == pod.metadata.namespace)
            .filter(|p| {
                let spec = p.spec.clone().unwrap_or_default();
                let types = spec
                    .policy_types
                    .filter(|t| !t.is_empty())
                    .unwrap_or_else(|| {
                        if spec.egress.unwrap_or_default().is_empty() {
                            vec!["Ingress".into()]
                        } else {
                            vec!["Ingress".into(), "Egress".into()]
                        }
                    });
                types.iter().any(|t| t == kind)
                    && selects(
                        &spec.pod_selector.unwrap_or_default(),
                        &labels_of(&pod.metadata),
                    )
            })
            .collect()
    }

    fn peer_matches(&self, peer: &NetworkPolicyPeer, policy_ns: &str, addr: IpAddr) -> bool {
        if let Some(b) = &peer.ip_block {
            let inside = |c: &String| c.parse::<IpNet>().is_ok_and(|n| n.contains(&addr));
            return inside(&b.cidr) && !b.except.iter().flatten().any(inside);
        }
        if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
            return false;
        }
        let Some(pod) = self.pod_at(addr) else {
            return false;
        };
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let ns_ok = match &peer.namespace_selector {
            None => ns == policy_ns,
            Some(s) => selects(s, &self.namespace_labels(&ns)),
        };
        ns_ok
            && peer
                .pod_selector
                .as_ref()
                .is_none_or(|s| selects(s, &labels_of(&pod.metadata)))
    }

    /// Whether `ports` allow `proto`/`port` served by `server` (for names).
    fn ports_match(
        ports: &Option<Vec<NetworkPolicyPort>>,
        proto: &str,
        port: u16,
        server: Option<&Pod>,
    ) -> bool {
        let Some(ports) = ports.as_ref().filter(|p| !p.is_empty()) else {
            return true;
        };
        ports.iter().any(|p| {
            if p.protocol.as_deref().unwrap_or("TCP") != proto {
                return false;
            }
            match &p.port {
                None => true,
                Some(IntOrString::Int(n)) => {
                    i32::from(port) >= *n && i32::from(port) <= p.end_port.unwrap_or(*n)
                }
                Some(IntOrString::String(name)) => server.is_some_and(|s| {
                    let spec = s.spec.clone().unwrap_or_default();
                    let sidecars = spec
                        .init_containers
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
                    spec.containers.into_iter().chain(sidecars).any(|c| {
                        c.ports.unwrap_or_default().iter().any(|cp| {
                            cp.name.as_deref() == Some(name)
                                && cp.protocol.as_deref().unwrap_or("TCP") == proto
                                && cp.container_port == i32::from(port)
                        })
                    })
                }),
            }
        })
    }

    /// Traffic between `pod` and `remote`: into the pod (`ingress`, the
    /// pod serves) or out of it (the remote serves, if a pod).
    fn allowed(&self, pod: &Pod, remote: IpAddr, proto: &str, port: u16, ingress: bool) -> bool {
        if self.node_addrs.contains(&remote) {
            return true;
        }
        let policies = self.applying(pod, if ingress { "Ingress" } else { "Egress" });
        let server = if ingress {
            Some(pod)
        } else {
            self.pod_at(remote)
        };
        policies.is_empty()
            || policies.iter().any(|p| {
                let ns = p.metadata.namespace.clone().unwrap_or_default();
                let spec = p.spec.clone().unwrap_or_default();
                let rules: Vec<Rule> = if ingress {
                    spec.ingress
                        .unwrap_or_default()
                        .into_iter()
                        .map(|r| (r.from, r.ports))
                        .collect()
                } else {
                    spec.egress
                        .unwrap_or_default()
                        .into_iter()
                        .map(|r| (r.to, r.ports))
                        .collect()
                };
                rules.iter().any(|(peers, ports)| {
                    let peers = peers.clone().unwrap_or_default();
                    (peers.is_empty() || peers.iter().any(|f| self.peer_matches(f, &ns, remote)))
                        && Self::ports_match(ports, proto, port, server)
                })
            })
    }

    /// Traffic from `src` into `pod`.
    pub fn ingress_allowed(&self, pod: &Pod, src: IpAddr, proto: &str, port: u16) -> bool {
        self.allowed(pod, src, proto, port, true)
    }

    /// Traffic from `pod` to `dst`.
    pub fn egress_allowed(&self, pod: &Pod, dst: IpAddr, proto: &str, port: u16) -> bool {
        self.allowed(pod, dst, proto, port, false)
    }
}
