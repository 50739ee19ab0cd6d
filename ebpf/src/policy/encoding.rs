//! How a rule is stored in the kernel's maps, and the pure logic shared with
//! the programs: one entry per address family in the LPM trie, the order
//! rules of one CIDR are tried in, and the longest-prefix walk
//! (`bpf/policy.h` does the same walk per packet; `podmeterctl policy
//! check` does it over the map).

use std::net::IpAddr;

use aya::maps::lpm_trie::Key;
use ipnet::IpNet;

use super::rules::{family_of, PortRange, Probe, Proto, Rule, RuleSpec, AF_INET, AF_INET6};
use crate::abi::{
    Action, Direction, RuleEntry, RuleKeyData, RuleSet, PROTO_ANY, RULES_PER_PREFIX,
    RULE_KEY_FIXED_BITS, RULE_PORTS,
};

/// Mirrors `PM_RULE_ANY_ADDRESS`: userspace's note that a rule was given
/// without a CIDR (stored under both families' /0).
pub const RULE_ANY_ADDRESS: u8 = 2;

impl RuleSpec {
    /// Where the rule is stored: one trie entry per address family.
    pub(crate) fn prefixes(&self) -> Vec<(u8, [u8; 16], u8)> {
        match self.cidr {
            Some(net) => vec![(
                family_of(&net.addr()),
                addr_bytes(&net.addr()),
                net.prefix_len(),
            )],
            None => [AF_INET, AF_INET6]
                .into_iter()
                .filter(|f| self.proto.family().is_none_or(|only| only == *f))
                .map(|f| (f, [0; 16], 0))
                .collect(),
        }
    }

    pub(crate) fn entry(&self, id: u32) -> RuleEntry {
        let mut flags = 0;
        if self.ports.is_some() {
            flags |= RULE_PORTS;
        }
        if self.cidr.is_none() {
            flags |= RULE_ANY_ADDRESS;
        }
        let ports = self.ports.unwrap_or(PortRange {
            first: 0,
            last: u16::MAX,
        });
        RuleEntry {
            id,
            proto: self.proto.raw(),
            action: self.action as u8,
            flags,
            pad: 0,
            port_lo: ports.first,
            port_hi: ports.last,
        }
    }
}

pub(super) fn addr_bytes(addr: &IpAddr) -> [u8; 16] {
    let mut out = [0; 16];
    match addr {
        IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => out = a.octets(),
    }
    out
}

fn full_len(family: u8) -> u8 {
    if family == AF_INET {
        32
    } else {
        128
    }
}

/// The trie key of a pod's direction, family and CIDR.
pub(super) fn rule_key(
    ifindex: u32,
    direction: Direction,
    family: u8,
    addr: [u8; 16],
    prefix_len: u8,
) -> Key<RuleKeyData> {
    Key::new(
        RULE_KEY_FIXED_BITS + u32::from(prefix_len),
        RuleKeyData {
            ifindex,
            direction: direction as u8,
            family,
            pad: [0; 2],
            addr,
        },
    )
}

/// The CIDR length of a trie key.
pub(super) fn key_prefix(key: &Key<RuleKeyData>) -> u32 {
    key.prefix_len().saturating_sub(RULE_KEY_FIXED_BITS)
}

/// The key a probe's remote address is looked up with (its full length).
pub(super) fn probe_key(ifindex: u32, probe: &Probe) -> Key<RuleKeyData> {
    let family = family_of(&probe.remote);
    rule_key(
        ifindex,
        probe.direction,
        family,
        addr_bytes(&probe.remote),
        full_len(family),
    )
}

/// Whether a rule matches a probe, as `rule_matches` in `bpf/policy.h`.
fn matches(rule: &RuleEntry, probe: &Probe) -> bool {
    if rule.proto != PROTO_ANY && rule.proto != probe.proto.raw() {
        return false;
    }
    if rule.flags & RULE_PORTS != 0 {
        let has_ports = matches!(probe.proto, Proto::Tcp | Proto::Udp);
        return has_ports
            && probe
                .port
                .is_some_and(|p| (rule.port_lo..=rule.port_hi).contains(&p));
    }
    true
}

/// The longest-prefix walk of `rule_walk_step` in `bpf/policy.h`: `lookup`
/// answers as the trie does (the longest stored CIDR at or below the key's
/// length that holds the address).
pub(super) fn walk(
    mut key: Key<RuleKeyData>,
    probe: &Probe,
    lookup: impl Fn(&Key<RuleKeyData>) -> Option<RuleSet>,
) -> Option<RuleEntry> {
    while let Some(set) = lookup(&key) {
        let n = (set.n_rules as usize).min(RULES_PER_PREFIX);
        if let Some(rule) = set.rules[..n].iter().find(|r| matches(r, probe)) {
            return Some(*rule);
        }
        if set.prefix_len == 0 {
            break;
        }
        key = Key::new(RULE_KEY_FIXED_BITS + set.prefix_len - 1, key.data());
    }
    None
}

/// The order rules of one CIDR are tried in: a specific protocol before
/// any, a port range before none and narrower before wider, deny before
/// allow on a tie, then by id (the older first).
pub(super) fn sort_rules(rules: &mut [RuleEntry]) {
    rules.sort_by_key(|r| {
        let ports = r.flags & RULE_PORTS != 0;
        (
            r.proto == PROTO_ANY,
            !ports,
            if ports {
                u32::from(r.port_hi) - u32::from(r.port_lo)
            } else {
                0
            },
            r.action != Action::Deny as u8,
            r.id,
        )
    });
}

/// A rule back from its stored entry.
pub(super) fn decode(
    entry: &RuleEntry,
    direction: Direction,
    family: u8,
    addr: [u8; 16],
    prefix_len: u32,
) -> Option<Rule> {
    let cidr = if entry.flags & RULE_ANY_ADDRESS != 0 {
        None
    } else {
        let ip = if family == AF_INET {
            IpAddr::from(<[u8; 4]>::try_from(&addr[..4]).ok()?)
        } else {
            IpAddr::from(addr)
        };
        Some(IpNet::new(ip, prefix_len as u8).ok()?)
    };
    let ports = (entry.flags & RULE_PORTS != 0).then_some(PortRange {
        first: entry.port_lo,
        last: entry.port_hi,
    });
    Some(Rule {
        id: entry.id,
        direction,
        spec: RuleSpec {
            action: Action::from_raw(entry.action)?,
            cidr,
            proto: Proto::from_raw(entry.proto)?,
            ports,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::policy::rules::tests::spec;

    /// A pod's rules in a map keyed as the trie is, with the trie's answer.
    struct FakeTrie(BTreeMap<(u8, u8, u8, [u8; 16]), RuleSet>);

    impl FakeTrie {
        fn new(rules: &[(&str, Direction)]) -> Self {
            let mut sets: BTreeMap<(u8, u8, u8, [u8; 16]), RuleSet> = BTreeMap::new();
            for (id, (text, direction)) in rules.iter().enumerate() {
                let s = spec(text);
                for (family, addr, len) in s.prefixes() {
                    let set = sets
                        .entry((*direction as u8, family, len, addr))
                        .or_default();
                    set.prefix_len = len.into();
                    set.rules[set.n_rules as usize] = s.entry(id as u32 + 1);
                    set.n_rules += 1;
                    sort_rules(&mut set.rules[..set.n_rules as usize]);
                }
            }
            Self(sets)
        }

        fn lookup(&self, key: &Key<RuleKeyData>) -> Option<RuleSet> {
            let d = key.data();
            let max = key.prefix_len() - RULE_KEY_FIXED_BITS;
            (0..=max).rev().find_map(|len| {
                let net = IpNet::new(
                    if d.family == AF_INET {
                        IpAddr::from(<[u8; 4]>::try_from(&d.addr[..4]).unwrap())
                    } else {
                        IpAddr::from(d.addr)
                    },
                    len as u8,
                )
                .unwrap()
                .trunc();
                self.0
                    .get(&(d.direction, d.family, len as u8, addr_bytes(&net.addr())))
                    .copied()
            })
        }

        fn decide(&self, direction: Direction, remote: &str, proto: Proto, port: u16) -> String {
            let probe = Probe {
                direction,
                remote: remote.parse().unwrap(),
                proto,
                port: Some(port),
            };
            match walk(probe_key(1, &probe), &probe, |k| self.lookup(k)) {
                Some(r) => format!("{} #{}", if r.action == 0 { "allow" } else { "deny" }, r.id),
                None => "default".into(),
            }
        }
    }

    #[test]
    fn the_longest_matching_prefix_decides() {
        use Direction::{Receive as R, Transmit as T};
        use Proto::*;
        let trie = FakeTrie::new(&[
            ("deny any 10.0.0.0/8 -", T),          // 1
            ("allow any 10.1.2.3/32 -", T),        // 2
            ("deny tcp 10.1.2.3/32 8080", T),      // 3
            ("deny any fd00::/8 -", T),            // 4
            ("allow udp fd00::5/128 53", T),       // 5
            ("allow tcp - 80", R),                 // 6
            ("deny tcp 192.168.0.0/16 1-1024", R), // 7
        ]);
        let cases = [
            (T, "10.9.9.9", Tcp, 80, "deny #1"),
            (T, "10.1.2.3", Tcp, 80, "allow #2"),
            (T, "10.1.2.3", Tcp, 8080, "deny #3"),
            (T, "10.1.2.3", Icmp, 0, "allow #2"),
            (T, "11.0.0.1", Tcp, 80, "default"),
            (T, "fd00::5", Udp, 53, "allow #5"),
            // No rule of fd00::5/128 matches tcp: the /8 decides.
            (T, "fd00::5", Tcp, 53, "deny #4"),
            (T, "fe80::1", Udp, 53, "default"),
            (R, "10.9.9.9", Tcp, 80, "allow #6"),
            (R, "fd00::9", Tcp, 80, "allow #6"),
            (R, "10.9.9.9", Tcp, 81, "default"),
            (R, "192.168.1.1", Tcp, 80, "deny #7"),
            (R, "192.168.1.1", Tcp, 2000, "default"),
            // Ports match tcp and udp only, whatever the rule's protocol.
            (R, "10.9.9.9", Icmp, 80, "default"),
        ];
        for (direction, remote, proto, port, expected) in cases {
            assert_eq!(
                trie.decide(direction, remote, proto, port),
                expected,
                "{direction:?} {remote} {proto} {port}"
            );
        }
    }

    #[test]
    fn rules_of_one_cidr_are_tried_specific_first() {
        let mut rules: Vec<RuleEntry> = [
            "allow any 10.0.0.0/8 -",
            "allow tcp 10.0.0.0/8 -",
            "allow tcp 10.0.0.0/8 1-100",
            "deny tcp 10.0.0.0/8 80",
            "allow tcp 10.0.0.0/8 80",
            "deny any 10.0.0.0/8 -",
        ]
        .iter()
        .enumerate()
        .map(|(i, t)| spec(t).entry(i as u32 + 1))
        .collect();
        sort_rules(&mut rules);
        let order: Vec<u32> = rules.iter().map(|r| r.id).collect();
        assert_eq!(order, [4, 5, 3, 2, 6, 1]);
    }

    #[test]
    fn a_rule_without_cidr_is_stored_per_family_and_read_back_whole() {
        for (text, families) in [
            ("deny any - -", vec![AF_INET, AF_INET6]),
            ("deny icmp - -", vec![AF_INET]),
            ("deny icmpv6 - -", vec![AF_INET6]),
            ("allow tcp 10.0.0.0/8 80-90", vec![AF_INET]),
        ] {
            let s = spec(text);
            let prefixes = s.prefixes();
            let found: Vec<u8> = prefixes.iter().map(|p| p.0).collect();
            assert_eq!(found, families, "{text}");
            for (family, addr, len) in prefixes {
                let rule = decode(&s.entry(7), Direction::Receive, family, addr, len.into());
                assert_eq!(rule.map(|r| r.spec), Some(s), "{text}");
            }
        }
    }
}
