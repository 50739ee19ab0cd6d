//! The kubernetes tier of a pod's policy (`bpf/k8s_policy.h`): what the
//! node agent compiles from NetworkPolicy, how it is stored in
//! `pm_k8s_rules` (a port range as the prefixes covering it) and read back
//! (prefixes merged into ranges), and the order the tiers combine in, as
//! pure functions mirroring the programs for `podmeterctl policy check`.

use std::{collections::BTreeMap, fmt, net::IpAddr};

use aya::maps::lpm_trie::Key;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::abi::{
    Action, Direction, K8sRule, K8sRuleKeyData, Peer, PeerKeyData, IDENTITY_HOST,
    K8S_KEY_FIXED_BITS, PEER_KEY_FIXED_BITS, PROTO_ANY,
};

use super::{
    encoding::addr_bytes, rules::family_of, InvalidRule, KubeVerdict, PortRange, Probe, Proto,
    Verdict,
};

/// The protocols a NetworkPolicy port can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KubeProto {
    Tcp,
    Udp,
    Sctp,
}

impl KubeProto {
    pub const ALL: [KubeProto; 3] = [KubeProto::Tcp, KubeProto::Udp, KubeProto::Sctp];

    /// The IPPROTO_* value the programs compare.
    pub fn raw(self) -> u8 {
        match self {
            KubeProto::Tcp => libc::IPPROTO_TCP as u8,
            KubeProto::Udp => libc::IPPROTO_UDP as u8,
            KubeProto::Sctp => libc::IPPROTO_SCTP as u8,
        }
    }

    pub fn from_raw(raw: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.raw() == raw)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KubeProto::Tcp => "tcp",
            KubeProto::Udp => "udp",
            KubeProto::Sctp => "sctp",
        }
    }
}

impl fmt::Display for KubeProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One allow of the kubernetes tier: traffic of `direction` with the peer
/// `peer` (an identity of `pm_peers`; 0: any peer), of `proto` (`None`:
/// every protocol and port) to `ports` (`None`: every port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KubeRule {
    pub direction: Direction,
    pub peer: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<KubeProto>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<PortRange>,
    /// The NetworkPolicy it comes from: a key of `pm_k8s_policies`.
    pub policy: u32,
}

/// A pod's whole kubernetes tier, as the agent compiles it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubePodPolicy {
    /// By `Direction`: NetworkPolicy isolates the pod (only the kubernetes
    /// tier can allow what no admin rule decides).
    pub isolated: [bool; 2],
    pub rules: Vec<KubeRule>,
}

/// A kubernetes rule as `policy list` shows it: with its NetworkPolicy's
/// `namespace/name` (`None` if the agent wrote no name for its index).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamedKubeRule {
    #[serde(flatten)]
    pub rule: KubeRule,
    pub name: Option<String>,
}

impl KubeRule {
    pub fn validate(&self) -> Result<(), InvalidRule> {
        if self.proto.is_none() && self.ports.is_some() {
            return Err(InvalidRule(format!(
                "kubernetes rule for ports {} names no protocol",
                self.ports.map_or(String::new(), |p| p.to_string())
            )));
        }
        Ok(())
    }

    /// Its `pm_k8s_rules` entries for the pod `ifindex`.
    pub(crate) fn entries(&self, ifindex: u32) -> Vec<(Key<K8sRuleKeyData>, K8sRule)> {
        let proto = self.proto.map_or(PROTO_ANY, KubeProto::raw);
        let prefixes = match (self.proto, self.ports) {
            (Some(_), Some(ports)) => port_prefixes(ports),
            _ => vec![(0, 0)],
        };
        prefixes
            .into_iter()
            .map(|(port, len)| {
                (
                    k8s_key(ifindex, self.direction, proto, self.peer, port, len),
                    K8sRule {
                        policy: self.policy,
                    },
                )
            })
            .collect()
    }
}

/// The trie key of a pod's rule: `len` leading bits of `port` count.
pub(crate) fn k8s_key(
    ifindex: u32,
    direction: Direction,
    proto: u8,
    identity: u32,
    port: u16,
    len: u8,
) -> Key<K8sRuleKeyData> {
    Key::new(
        K8S_KEY_FIXED_BITS + u32::from(len),
        K8sRuleKeyData {
            ifindex,
            direction: direction as u8,
            proto,
            pad: 0,
            identity,
            port: port.to_be(),
            pad2: 0,
        },
    )
}

/// The fewest `(first port, prefix length)` covering exactly `range`: at
/// most 30 (a 16-bit range splits into ≤ 2 × 15 aligned blocks).
pub fn port_prefixes(range: PortRange) -> Vec<(u16, u8)> {
    let (mut lo, hi) = (u32::from(range.first), u32::from(range.last));
    let mut out = Vec::new();
    while lo <= hi {
        // The largest aligned block at lo that ends at or before hi.
        let mut bits = lo.trailing_zeros().min(16);
        while lo + (1 << bits) - 1 > hi {
            bits -= 1;
        }
        out.push((lo as u16, (16 - bits) as u8));
        lo += 1 << bits;
    }
    out
}

/// Port prefixes back into the fewest ranges (adjacent ones joined).
pub fn merge_ports(prefixes: &[(u16, u8)]) -> Vec<PortRange> {
    let mut spans: Vec<(u32, u32)> = prefixes
        .iter()
        .map(|&(port, len)| {
            let lo = u32::from(port);
            (lo, lo + (1 << (16 - u32::from(len).min(16))) - 1)
        })
        .collect();
    spans.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::new();
    for (lo, hi) in spans {
        match merged.last_mut() {
            Some(last) if lo <= last.1 + 1 => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    merged
        .into_iter()
        .map(|(lo, hi)| PortRange {
            first: lo as u16,
            last: hi as u16,
        })
        .collect()
}

/// A pod's stored entries back into rules, port prefixes merged into ranges
/// per (direction, peer, protocol, policy).
pub(crate) fn decode(entries: &[(Key<K8sRuleKeyData>, K8sRule)]) -> Vec<KubeRule> {
    type Group = (u8, u32, u8, u32);
    let mut groups: BTreeMap<Group, Vec<(u16, u8)>> = BTreeMap::new();
    for (key, value) in entries {
        let d = key.data();
        let len = key.prefix_len().saturating_sub(K8S_KEY_FIXED_BITS) as u8;
        groups
            .entry((d.direction, d.identity, d.proto, value.policy))
            .or_default()
            .push((u16::from_be(d.port), len));
    }
    let mut rules = Vec::new();
    for ((direction, peer, proto, policy), prefixes) in groups {
        let Some(direction) = Direction::from_raw(direction.into()) else {
            continue;
        };
        let proto = KubeProto::from_raw(proto);
        let ranges = match proto {
            Some(_) if !prefixes.contains(&(0, 0)) => {
                merge_ports(&prefixes).into_iter().map(Some).collect()
            }
            _ => vec![None],
        };
        rules.extend(ranges.into_iter().map(|ports| KubeRule {
            direction,
            peer,
            proto,
            ports,
            policy,
        }));
    }
    rules
}

/// The `pm_peers` key of a CIDR (an address: its full length).
pub(crate) fn peer_key(net: &IpNet) -> Key<PeerKeyData> {
    Key::new(
        PEER_KEY_FIXED_BITS + u32::from(net.prefix_len()),
        PeerKeyData {
            family: family_of(&net.addr()),
            pad: [0; 3],
            addr: addr_bytes(&net.addr()),
        },
    )
}

/// The CIDR of a `pm_peers` key.
pub(crate) fn peer_net(key: &Key<PeerKeyData>) -> Option<IpNet> {
    let d = key.data();
    let addr = if d.family == libc::AF_INET as u8 {
        IpAddr::from(<[u8; 4]>::try_from(&d.addr[..4]).ok()?)
    } else {
        IpAddr::from(d.addr)
    };
    IpNet::new(addr, (key.prefix_len() - PEER_KEY_FIXED_BITS) as u8).ok()
}

/// `k8s_allows()` of `bpf/k8s_policy.h` over `lookup`, which answers as
/// the trie does (the longest stored prefix holding the key).
pub(crate) fn k8s_allows(
    ifindex: u32,
    probe: &Probe,
    peer: Option<Peer>,
    gateway: bool,
    lookup: impl Fn(&Key<K8sRuleKeyData>) -> Option<K8sRule>,
) -> KubeVerdict {
    let Peer {
        pod_identity: pod,
        cidr_identity: cidr,
    } = peer.unwrap_or_default();
    if pod == IDENTITY_HOST || cidr == IDENTITY_HOST || gateway {
        return KubeVerdict::Node;
    }
    let has_ports = matches!(probe.proto, Proto::Tcp | Proto::Udp) && probe.port.is_some();
    let port = probe.port.unwrap_or(0);
    let identities = [(pod, pod != 0), (cidr, cidr != 0 && cidr != pod), (0, true)];
    for (id, tried) in identities {
        if !tried {
            continue;
        }
        let specific = k8s_key(
            ifindex,
            probe.direction,
            probe.proto.raw(),
            id,
            port,
            if has_ports { 16 } else { 0 },
        );
        let any = k8s_key(ifindex, probe.direction, PROTO_ANY, id, 0, 0);
        if let Some(hit) = lookup(&specific).or_else(|| lookup(&any)) {
            return KubeVerdict::Allowed { policy: hit.policy };
        }
    }
    KubeVerdict::Denied
}

/// The owners' order of `policy_action()` in `bpf/policy.h`: an admin rule
/// (`admin`: the one that matched, with its action) decides; else an
/// isolated pod gets the kubernetes tier's answer; else the default.
pub(crate) fn decide(
    admin: Option<(u32, Action)>,
    isolated: bool,
    kubernetes: impl FnOnce() -> KubeVerdict,
    default: Action,
) -> Verdict {
    match admin {
        Some((id, action)) => Verdict::Rule { id, action },
        None if isolated => Verdict::Kubernetes(kubernetes()),
        None => Verdict::Default(default),
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::Cell, collections::BTreeMap};

    use super::*;

    fn range(first: u16, last: u16) -> PortRange {
        PortRange { first, last }
    }

    #[test]
    fn a_port_range_is_stored_as_its_covering_prefixes() {
        assert_eq!(port_prefixes(range(80, 80)), vec![(80, 16)]);
        assert_eq!(port_prefixes(range(0, 65535)), vec![(0, 0)]);
        assert_eq!(
            port_prefixes(range(8000, 8080)),
            vec![(8000, 10), (8064, 12), (8080, 16)]
        );
        assert_eq!(port_prefixes(range(1, 65534)).len(), 30, "the worst case");
        // Every range, every port: covered exactly, and back whole.
        for (lo, hi) in [(1, 1), (80, 90), (1024, 65535), (3, 60000), (65535, 65535)] {
            let prefixes = port_prefixes(range(lo, hi));
            assert!(prefixes.len() <= 30);
            let covered = |p: u32| {
                prefixes.iter().any(|&(start, len)| {
                    let size = 1u32 << (16 - len);
                    (u32::from(start)..u32::from(start) + size).contains(&p)
                })
            };
            for p in 0..=65535u32 {
                assert_eq!(
                    covered(p),
                    (lo..=hi).contains(&(p as u16)),
                    "{lo}-{hi}: {p}"
                );
            }
            assert_eq!(merge_ports(&prefixes), vec![range(lo, hi)]);
        }
    }

    #[test]
    fn prefixes_of_several_ranges_merge_back_where_they_touch() {
        let mut prefixes = port_prefixes(range(80, 81));
        prefixes.extend(port_prefixes(range(82, 90)));
        prefixes.extend(port_prefixes(range(443, 443)));
        assert_eq!(merge_ports(&prefixes), vec![range(80, 90), range(443, 443)]);
    }

    fn rule(proto: Option<KubeProto>, ports: Option<PortRange>, peer: u32) -> KubeRule {
        KubeRule {
            direction: Direction::Receive,
            peer,
            proto,
            ports,
            policy: 7,
        }
    }

    /// A pod's kubernetes rules in a fake trie answering as the kernel's.
    struct FakeTrie(Vec<(Key<K8sRuleKeyData>, K8sRule)>);

    impl FakeTrie {
        fn new(rules: &[KubeRule]) -> Self {
            Self(rules.iter().flat_map(|r| r.entries(1)).collect())
        }

        fn lookup(&self, key: &Key<K8sRuleKeyData>) -> Option<K8sRule> {
            let bits = |k: &Key<K8sRuleKeyData>| {
                let d = k.data();
                let mut b = Vec::new();
                b.extend(d.ifindex.to_ne_bytes());
                b.extend([d.direction, d.proto]);
                b.extend(d.pad.to_ne_bytes());
                b.extend(d.identity.to_ne_bytes());
                b.extend(d.port.to_ne_bytes());
                b
            };
            let bit = |b: &[u8], i: u32| (b[i as usize / 8] >> (7 - i % 8)) & 1;
            let want = bits(key);
            self.0
                .iter()
                .filter(|(k, _)| {
                    let have = bits(k);
                    k.prefix_len() <= key.prefix_len()
                        && (0..k.prefix_len()).all(|i| bit(&have, i) == bit(&want, i))
                })
                .max_by_key(|(k, _)| k.prefix_len())
                .map(|(_, v)| *v)
        }

        fn allows(&self, peer: Peer, proto: Proto, port: Option<u16>) -> bool {
            let probe = Probe {
                direction: Direction::Receive,
                remote: "10.0.0.9".parse().unwrap(),
                proto,
                port,
            };
            matches!(
                k8s_allows(1, &probe, Some(peer), false, |k| self.lookup(k)),
                KubeVerdict::Allowed { .. }
            )
        }
    }

    fn peer(pod_identity: u32, cidr_identity: u32) -> Peer {
        Peer {
            pod_identity,
            cidr_identity,
        }
    }

    #[test]
    fn the_kubernetes_tier_matches_protocol_port_and_peer() {
        let trie = FakeTrie::new(&[
            rule(Some(KubeProto::Tcp), Some(range(8000, 8080)), 10),
            rule(Some(KubeProto::Sctp), Some(range(90, 90)), 0),
            rule(Some(KubeProto::Udp), None, 20),
            rule(None, None, 30),
        ]);
        let tcp = |p, port| trie.allows(p, Proto::Tcp, Some(port));
        assert!(tcp(peer(10, 0), 8000) && tcp(peer(10, 0), 8080));
        assert!(!tcp(peer(10, 0), 7999) && !tcp(peer(10, 0), 8081));
        assert!(!tcp(peer(11, 0), 8000), "another pod identity");
        assert!(tcp(peer(11, 10), 8050), "by the CIDR region's identity");
        assert!(!tcp(peer(0, 0), 90), "an SCTP rule does not allow TCP");
        assert!(trie.allows(peer(20, 0), Proto::Udp, Some(53)));
        assert!(
            trie.allows(peer(20, 0), Proto::Udp, None),
            "a fragment: every port"
        );
        assert!(!trie.allows(peer(20, 0), Proto::Tcp, Some(53)));
        assert!(
            trie.allows(peer(30, 0), Proto::Icmp, None),
            "every protocol"
        );
        assert!(!trie.allows(peer(0, 0), Proto::Icmp, None));
    }

    #[test]
    fn the_node_is_always_allowed() {
        let probe = Probe {
            direction: Direction::Transmit,
            remote: "10.0.0.1".parse().unwrap(),
            proto: Proto::Tcp,
            port: Some(10250),
        };
        let none = |_: &Key<K8sRuleKeyData>| None;
        assert_eq!(
            k8s_allows(1, &probe, Some(peer(IDENTITY_HOST, 0)), false, none),
            KubeVerdict::Node
        );
        assert_eq!(k8s_allows(1, &probe, None, true, none), KubeVerdict::Node);
        assert_eq!(
            k8s_allows(1, &probe, None, false, none),
            KubeVerdict::Denied
        );
    }

    #[test]
    fn stored_rules_read_back_as_written() {
        let written = vec![
            rule(Some(KubeProto::Tcp), Some(range(1, 1000)), 10),
            rule(Some(KubeProto::Udp), Some(range(53, 53)), 10),
            rule(Some(KubeProto::Sctp), None, 0),
            rule(None, None, 30),
        ];
        let entries: Vec<_> = written.iter().flat_map(|r| r.entries(1)).collect();
        let mut read = decode(&entries);
        read.sort();
        let mut expected = written;
        expected.sort();
        assert_eq!(read, expected);
        let by_key: BTreeMap<_, _> = entries.iter().map(|(k, _)| (k.data(), 0)).collect();
        assert_eq!(by_key.len(), entries.len(), "no two entries share a key");
    }

    #[test]
    fn owners_combine_admin_first_then_kubernetes_if_isolated_then_default() {
        use Action::{Allow, Deny};
        let asked = Cell::new(false);
        let k8s = |answer: KubeVerdict| {
            let asked = &asked;
            move || {
                asked.set(true);
                answer
            }
        };
        let allowed = KubeVerdict::Allowed { policy: 1 };
        let act = |v: Verdict| v.action();
        // An operator deny beats a kubernetes allow, which is not asked.
        assert_eq!(
            act(decide(Some((1, Deny)), true, k8s(allowed), Allow)),
            Deny
        );
        assert!(!asked.get());
        assert_eq!(
            act(decide(
                Some((1, Allow)),
                true,
                k8s(KubeVerdict::Denied),
                Deny
            )),
            Allow
        );
        // Isolated: only the kubernetes tier allows, whatever the default.
        assert_eq!(act(decide(None, true, k8s(allowed), Deny)), Allow);
        assert_eq!(act(decide(None, true, k8s(KubeVerdict::Node), Deny)), Allow);
        assert_eq!(
            act(decide(None, true, k8s(KubeVerdict::Denied), Allow)),
            Deny
        );
        // Not isolated: the default, kubernetes not asked.
        asked.set(false);
        assert_eq!(act(decide(None, false, k8s(allowed), Deny)), Deny);
        assert_eq!(
            act(decide(None, false, k8s(KubeVerdict::Denied), Allow)),
            Allow
        );
        assert!(!asked.get());
    }

    #[test]
    fn ports_without_a_protocol_are_refused() {
        assert!(rule(None, Some(range(80, 80)), 0).validate().is_err());
        assert!(rule(Some(KubeProto::Tcp), Some(range(80, 80)), 0)
            .validate()
            .is_ok());
    }
}
