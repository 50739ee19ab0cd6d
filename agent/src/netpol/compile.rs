//! From Pods, Namespaces and NetworkPolicies to the node's kubernetes tier
//! ([`Compiled`]), pure. Pods are grouped into classes (namespace, its
//! labels, the pod's labels and named ports: everything a policy can tell
//! pods apart by), so a rule names a class once rather than each of its
//! pods' addresses; ipBlocks become regions ([`super::cidr`]). Identities
//! and policy indices persist across compiles through [`Compiler`].

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
};

use ipnet::IpNet;
use k8s_openapi::api::{
    core::v1::{Namespace, Pod},
    networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort},
};
use kube::ResourceExt;

use super::{
    cidr::{Block, Regions, Signature},
    identity::Allocator,
    model::{
        Compiled, Direction, KubePodPolicy, KubeProto, KubeRule, LocalPod, Peer, PortRange,
        IDENTITY_HOST, IDENTITY_NONE,
    },
    ports::{resolve, specs, NamedPort, PortSpec},
    selector::{matches, Labels},
    view::{namespace_labels, unknown_namespace, PodView},
};

/// What a compile reads: the reflectors' stores and this node.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub pods: &'a [Arc<Pod>],
    pub namespaces: &'a [Arc<Namespace>],
    pub policies: &'a [Arc<NetworkPolicy>],
    pub node_name: &'a str,
    /// This node's own addresses (its Node's InternalIPs and ExternalIPs).
    pub node_addrs: &'a [IpAddr],
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ClassKey {
    namespace: String,
    namespace_labels: Labels,
    labels: Labels,
    named_ports: Vec<NamedPort>,
}

/// A [`ClassKey`] borrowed from the pods, while grouping them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct ClassRef<'a> {
    namespace: &'a str,
    namespace_labels: &'a Labels,
    labels: &'a Labels,
    named_ports: &'a [NamedPort],
}

impl ClassRef<'_> {
    fn owned(&self) -> ClassKey {
        ClassKey {
            namespace: self.namespace.to_owned(),
            namespace_labels: self.namespace_labels.clone(),
            labels: self.labels.clone(),
            named_ports: self.named_ports.to_vec(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum IdentityKey {
    Class(ClassKey),
    Region(Signature),
}

/// Keeps identities and policy indices stable from one compile to the next.
#[derive(Debug, Clone)]
pub struct Compiler {
    identities: Allocator<IdentityKey>,
    policies: Allocator<String>,
}

impl Default for Compiler {
    fn default() -> Self {
        Self {
            identities: Allocator::new(IDENTITY_HOST + 1),
            // From 1: a zeroed value names no policy.
            policies: Allocator::new(1),
        }
    }
}

/// Whom one rule's peers name: anyone, or these pod classes and regions.
#[derive(Debug, Default)]
struct Targets {
    any: bool,
    classes: BTreeSet<u32>,
    regions: BTreeSet<u32>,
}

/// What rule emission needs of the whole compile.
struct Context<'a> {
    /// Every class with an identity, and its named ports.
    classes: Vec<(u32, &'a ClassKey)>,
    /// For every block, the regions whose addresses it covers.
    block_regions: BTreeMap<&'a Block, BTreeSet<u32>>,
}

impl Compiler {
    pub fn compile(&mut self, input: &Input<'_>) -> Compiled {
        let views: Vec<PodView<'_>> = input.pods.iter().map(|p| PodView::new(p)).collect();
        let mut ns_labels = namespace_labels(input.namespaces);
        for v in &views {
            if !ns_labels.contains_key(v.namespace) {
                let labels = unknown_namespace(v.namespace);
                ns_labels.insert(v.namespace.to_owned(), labels);
            }
        }
        let mut members: BTreeMap<ClassRef<'_>, Vec<&PodView<'_>>> = BTreeMap::new();
        for v in views.iter().filter(|v| !v.peer_ips.is_empty()) {
            let key = ClassRef {
                namespace: v.namespace,
                namespace_labels: &ns_labels[v.namespace],
                labels: v.labels,
                named_ports: &v.named_ports,
            };
            members.entry(key).or_default().push(v);
        }
        let local: Vec<&PodView<'_>> = views
            .iter()
            .filter(|v| v.is_local(input.node_name))
            .collect();

        // Only policies selecting a local pod matter here.
        let mut active: Vec<(&NetworkPolicy, Vec<usize>)> = input
            .policies
            .iter()
            .filter_map(|p| {
                let ns = p.namespace().unwrap_or_default();
                let selector = p.spec.as_ref().and_then(|s| s.pod_selector.clone());
                let selected: Vec<usize> = (0..local.len())
                    .filter(|i| {
                        local[*i].namespace == ns
                            && selector
                                .as_ref()
                                .is_none_or(|s| matches(s, local[*i].labels))
                    })
                    .collect();
                (!selected.is_empty()).then_some((p.as_ref(), selected))
            })
            .collect();
        active.sort_by_key(|(p, _)| policy_name(p));

        let blocks: BTreeSet<Block> = active
            .iter()
            .flat_map(|(p, _)| all_peers(p))
            .filter_map(|peer| peer.ip_block.as_ref())
            .filter_map(|b| Block::parse(&b.cidr, b.except.as_deref().unwrap_or_default()))
            .collect();
        let regions = Regions::new(&blocks);
        let prefixes = regions.prefixes();
        let signatures: BTreeSet<&Signature> = prefixes
            .values()
            .copied()
            .filter(|s| !s.is_empty())
            .collect();
        let keys: Vec<IdentityKey> = members
            .keys()
            .map(|c| IdentityKey::Class(c.owned()))
            .chain(signatures.iter().map(|s| IdentityKey::Region((*s).clone())))
            .collect();
        let ids = self.identities.assign(&keys);
        let region_ids: BTreeMap<&Signature, u32> = signatures
            .iter()
            .zip(&keys[members.len()..])
            .map(|(s, k)| (*s, ids[k]))
            .collect();
        let region_id = |s: Option<&Signature>| {
            s.and_then(|s| region_ids.get(s).copied())
                .unwrap_or(IDENTITY_NONE)
        };

        let mut peers: BTreeMap<IpNet, Peer> = prefixes
            .iter()
            .map(|(p, s)| (*p, peer(IDENTITY_NONE, region_id(Some(s)))))
            .collect();
        let mut classes = Vec::with_capacity(members.len());
        for (pods, key) in members.values().zip(&keys) {
            let IdentityKey::Class(class) = key else {
                unreachable!("classes come first")
            };
            let id = ids[key];
            classes.push((id, class));
            for ip in pods.iter().flat_map(|v| &v.peer_ips) {
                peers.insert(
                    IpNet::from(*ip),
                    peer(id, region_id(regions.signature(*ip))),
                );
            }
        }
        for ip in input.node_addrs {
            peers.insert(IpNet::from(*ip), peer(IDENTITY_HOST, IDENTITY_HOST));
        }
        let mut block_regions: BTreeMap<&Block, BTreeSet<u32>> = BTreeMap::new();
        for s in &signatures {
            for b in *s {
                block_regions
                    .entry(b)
                    .or_default()
                    .insert(region_id(Some(s)));
            }
        }
        let cx = Context {
            classes,
            block_regions,
        };

        let names: Vec<String> = active.iter().map(|(p, _)| policy_name(p)).collect();
        let indices = self.policies.assign(&names);
        let mut tiers = vec![KubePodPolicy::default(); local.len()];
        for (p, selected) in &active {
            let index = indices[&policy_name(p)];
            for (direction, rules) in policy_rules(p) {
                let ns = p.namespace().unwrap_or_default();
                let rules: Vec<_> = rules
                    .iter()
                    .map(|(peers, ports)| (cx.targets(*peers, &ns), specs(*ports)))
                    .collect();
                for i in selected {
                    let tier = &mut tiers[*i];
                    tier.isolated[direction as usize] = true;
                    for (targets, specs) in &rules {
                        for spec in specs {
                            cx.emit(
                                &mut tier.rules,
                                direction,
                                targets,
                                spec,
                                &local[*i].named_ports,
                                index,
                            );
                        }
                    }
                }
            }
        }
        let pods = local
            .iter()
            .zip(tiers)
            .map(|(v, mut policy)| {
                policy.rules.sort_by_key(rule_order);
                policy.rules.dedup_by(|b, a| same_traffic(a, b));
                let pod = LocalPod {
                    uid: v.uid.to_owned(),
                    ips: v.ips.clone(),
                    policy,
                };
                (v.key(), pod)
            })
            .collect();
        Compiled {
            peers: peers.into_iter().collect(),
            pods,
            policy_names: names.into_iter().map(|n| (indices[&n], n)).collect(),
        }
    }
}

fn peer(pod_identity: u32, cidr_identity: u32) -> Peer {
    Peer {
        pod_identity,
        cidr_identity,
    }
}

/// What a rule allows, then its policy: the order of
/// [`KubePodPolicy::rules`].
fn rule_order(r: &KubeRule) -> (u32, u32, Option<KubeProto>, Option<(u16, u16)>, u32) {
    let ports = r.ports.map(|p| (p.first, p.last));
    (r.direction as u32, r.peer, r.proto, ports, r.policy)
}

/// Rules sorted by everything but the policy first: equal neighbours allow
/// the same traffic, and the first has the lowest policy index.
fn same_traffic(a: &KubeRule, b: &KubeRule) -> bool {
    (a.direction, a.peer, a.proto, a.ports) == (b.direction, b.peer, b.proto, b.ports)
}

pub fn policy_name(p: &NetworkPolicy) -> String {
    format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any())
}

type RulePeers<'a> = Option<&'a Vec<NetworkPolicyPeer>>;
type RulePorts<'a> = Option<&'a Vec<NetworkPolicyPort>>;

/// The directions a policy isolates (its `policyTypes`, or when none
/// Ingress plus Egress if it has egress rules), each with its rules' peers and ports.
fn policy_rules(p: &NetworkPolicy) -> Vec<(Direction, Vec<(RulePeers<'_>, RulePorts<'_>)>)> {
    let Some(spec) = &p.spec else {
        return vec![(Direction::Receive, Vec::new())];
    };
    let egress_rules = spec.egress.as_ref().is_some_and(|e| !e.is_empty());
    // An empty list is defaulted by the API server as an absent one.
    let types: Vec<&str> = match spec.policy_types.as_ref().filter(|t| !t.is_empty()) {
        Some(t) => t.iter().map(String::as_str).collect(),
        None if egress_rules => vec!["Ingress", "Egress"],
        None => vec!["Ingress"],
    };
    let mut out = Vec::new();
    if types.contains(&"Ingress") {
        let rules = spec.ingress.iter().flatten();
        out.push((
            Direction::Receive,
            rules.map(|r| (r.from.as_ref(), r.ports.as_ref())).collect(),
        ));
    }
    if types.contains(&"Egress") {
        let rules = spec.egress.iter().flatten();
        out.push((
            Direction::Transmit,
            rules.map(|r| (r.to.as_ref(), r.ports.as_ref())).collect(),
        ));
    }
    out
}

/// Every peer of every rule of a policy.
fn all_peers(p: &NetworkPolicy) -> impl Iterator<Item = &NetworkPolicyPeer> {
    let spec = p.spec.as_ref();
    let ingress = spec.and_then(|s| s.ingress.as_ref()).into_iter().flatten();
    let egress = spec.and_then(|s| s.egress.as_ref()).into_iter().flatten();
    ingress
        .flat_map(|r| r.from.iter().flatten())
        .chain(egress.flat_map(|r| r.to.iter().flatten()))
}

impl Context<'_> {
    /// Whom `peers` name, for a policy in namespace `ns`; absent or empty
    /// peers name anyone.
    fn targets(&self, peers: RulePeers<'_>, ns: &str) -> Targets {
        let mut t = Targets::default();
        let Some(peers) = peers.filter(|p| !p.is_empty()) else {
            t.any = true;
            return t;
        };
        for peer in peers {
            if let Some(b) = &peer.ip_block {
                let block = Block::parse(&b.cidr, b.except.as_deref().unwrap_or_default());
                if let Some(ids) = block.and_then(|b| self.block_regions.get(&b)) {
                    t.regions.extend(ids);
                }
                continue;
            }
            if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
                continue;
            }
            for (id, class) in &self.classes {
                let in_ns = match &peer.namespace_selector {
                    None => class.namespace == ns,
                    Some(s) => matches(s, &class.namespace_labels),
                };
                if in_ns
                    && peer
                        .pod_selector
                        .as_ref()
                        .is_none_or(|s| matches(s, &class.labels))
                {
                    t.classes.insert(*id);
                }
            }
        }
        t
    }

    /// The allows of one port spec to `targets`. A named port resolves on
    /// the local pod for ingress (`own`), on each destination class for
    /// egress (regions and "anyone" are no pods: only classes with the name).
    fn emit(
        &self,
        out: &mut Vec<KubeRule>,
        direction: Direction,
        targets: &Targets,
        spec: &PortSpec,
        own: &[NamedPort],
        policy: u32,
    ) {
        let rule = |peer, proto, ports| KubeRule {
            direction,
            peer,
            proto,
            ports,
            policy,
        };
        let ids = || -> Vec<u32> {
            if targets.any {
                return vec![IDENTITY_NONE];
            }
            targets
                .classes
                .iter()
                .chain(&targets.regions)
                .copied()
                .collect()
        };
        match spec {
            PortSpec::All => out.extend(ids().into_iter().map(|id| rule(id, None, None))),
            PortSpec::Numbers(proto, ports) => {
                out.extend(ids().into_iter().map(|id| rule(id, Some(*proto), *ports)));
            }
            PortSpec::Named(proto, name) if direction == Direction::Receive => {
                if let Some(port) = resolve(own, *proto, name) {
                    let ports = Some(PortRange {
                        first: port,
                        last: port,
                    });
                    out.extend(ids().into_iter().map(|id| rule(id, Some(*proto), ports)));
                }
            }
            PortSpec::Named(proto, name) => {
                for (id, class) in &self.classes {
                    if !targets.any && !targets.classes.contains(id) {
                        continue;
                    }
                    if let Some(port) = resolve(&class.named_ports, *proto, name) {
                        let ports = Some(PortRange {
                            first: port,
                            last: port,
                        });
                        out.push(rule(*id, Some(*proto), ports));
                    }
                }
            }
        }
    }
}
