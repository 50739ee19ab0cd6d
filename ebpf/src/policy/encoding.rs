//! How a rule is stored in the kernel's maps, and the pure logic shared with
//! the programs: one entry per address family in the LPM trie, the order
//! rules of one CIDR are tried in, and the longest-prefix walk
//! (`bpf/policy.h` does the same walk per packet; `podmeterctl policy
//! check` does it over the map).

use std::{collections::BTreeMap, net::IpAddr};

use aya::maps::lpm_trie::Key;
use ipnet::IpNet;

use super::rules::{
    family_of, InvalidRule, Owner, PortRange, Probe, Proto, Rule, RuleSpec, AF_INET, AF_INET6,
};
use crate::abi::{
    Action, Direction, PolicyEntry, RuleEntry, RuleKeyData, RuleSet, PROTO_ANY, RULES_PER_PREFIX,
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

    pub(crate) fn entry(&self, id: u32, owner: u8) -> RuleEntry {
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
            owner,
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
        owner: Owner::from_raw(entry.owner)?,
        spec: RuleSpec {
            action: Action::from_raw(entry.action)?,
            cidr,
            proto: Proto::from_raw(entry.proto)?,
            ports,
        },
    })
}

/// Entries of a trie by (prefix length, key data): a pod's, read into
/// memory to be changed there and written back as a diff.
pub(crate) type Entries<K, V> = BTreeMap<(u32, K), V>;

/// A pod's admin rule sets.
pub(crate) type Sets = Entries<RuleKeyData, RuleSet>;

/// The rules of a rule set, in their order.
pub(crate) fn set_rules(set: &RuleSet) -> &[RuleEntry] {
    &set.rules[..(set.n_rules as usize).min(RULES_PER_PREFIX)]
}

/// Removes the rules `remove` picks; a set left empty goes.
pub(crate) fn remove_rules(sets: &mut Sets, remove: impl Fn(&RuleEntry) -> bool) {
    sets.retain(|_, set| {
        let kept: Vec<RuleEntry> = set_rules(set)
            .iter()
            .filter(|r| !remove(r))
            .copied()
            .collect();
        set.rules = Default::default();
        set.rules[..kept.len()].copy_from_slice(&kept);
        set.n_rules = kept.len() as u32;
        !kept.is_empty()
    });
}

/// The id of a pod's next rule: one more than its highest, whoever owns it.
pub(crate) fn next_id(sets: &Sets) -> u32 {
    sets.values()
        .flat_map(set_rules)
        .map(|r| r.id)
        .max()
        .unwrap_or(0)
        + 1
}

/// Adds rule `id` of `owner` to its CIDRs' sets; refused if one is full.
pub(crate) fn insert_rule(
    sets: &mut Sets,
    ifindex: u32,
    direction: Direction,
    spec: &RuleSpec,
    id: u32,
    owner: u8,
) -> Result<(), InvalidRule> {
    let entry = spec.entry(id, owner);
    // Every family's set is checked for room before any is changed.
    let keys: Vec<_> = spec
        .prefixes()
        .into_iter()
        .map(|(family, addr, len)| {
            let key = rule_key(ifindex, direction, family, addr, len);
            ((key.prefix_len(), key.data()), len)
        })
        .collect();
    let full = |k| {
        sets.get(k)
            .is_some_and(|s: &RuleSet| s.n_rules as usize >= RULES_PER_PREFIX)
    };
    if keys.iter().any(|(k, _)| full(k)) {
        return Err(InvalidRule(format!(
            "{} has {RULES_PER_PREFIX} {} rules already, the limit: \
             {RULES_PER_PREFIX} rules per CIDR and direction",
            spec.cidr
                .map_or("any address".to_owned(), |c| c.to_string()),
            direction.as_str(),
        )));
    }
    for (key, len) in keys {
        let set = sets.entry(key).or_insert_with(|| RuleSet {
            prefix_len: len.into(),
            ..Default::default()
        });
        let n = set.n_rules as usize;
        set.rules[n] = entry;
        set.n_rules += 1;
        sort_rules(&mut set.rules[..=n]);
    }
    Ok(())
}

/// The defaults the programs read: the operator's if set, else the
/// config's, else allow.
pub(crate) fn effective_defaults(entry: &PolicyEntry) -> [Action; 2] {
    let [config, operator] = entry.owner_default;
    Direction::ALL.map(|d| {
        let d = d as usize;
        [operator[d], config[d]]
            .into_iter()
            .find(|raw| *raw != 0)
            .and_then(|raw| Action::from_raw(raw - 1))
            .unwrap_or(Action::Allow)
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{abi::OWNER_CONFIG, abi::OWNER_OPERATOR, policy::rules::tests::spec};

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
                    set.rules[set.n_rules as usize] = s.entry(id as u32 + 1, OWNER_OPERATOR);
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
        .map(|(i, t)| spec(t).entry(i as u32 + 1, OWNER_OPERATOR))
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
                let rule = decode(
                    &s.entry(7, OWNER_OPERATOR),
                    Direction::Receive,
                    family,
                    addr,
                    len.into(),
                );
                assert_eq!(rule.map(|r| r.spec), Some(s), "{text}");
            }
        }
    }

    fn rules_of(sets: &Sets) -> Vec<(u32, u8)> {
        let mut found: Vec<_> = sets
            .values()
            .flat_map(set_rules)
            .map(|r| (r.id, r.owner))
            .collect();
        found.sort_unstable();
        found.dedup();
        found
    }

    #[test]
    fn an_owner_replaces_only_its_own_rules() {
        let mut sets = Sets::new();
        let add = |sets: &mut Sets, text, owner| {
            let id = next_id(sets);
            insert_rule(sets, 1, Direction::Receive, &spec(text), id, owner).unwrap();
        };
        add(&mut sets, "deny tcp 10.0.0.0/8 80", OWNER_CONFIG);
        add(&mut sets, "allow udp 10.0.0.0/8 -", OWNER_OPERATOR);
        add(&mut sets, "deny any - -", OWNER_OPERATOR);
        assert_eq!(
            rules_of(&sets),
            [(1, OWNER_CONFIG), (2, OWNER_OPERATOR), (3, OWNER_OPERATOR)]
        );
        // The operator's replace: the config's rule stays, ids go on.
        remove_rules(&mut sets, |r| r.owner == OWNER_OPERATOR);
        add(&mut sets, "allow tcp 10.0.0.0/8 443", OWNER_OPERATOR);
        assert_eq!(rules_of(&sets), [(1, OWNER_CONFIG), (2, OWNER_OPERATOR)]);
        // The config's replace with nothing leaves the operator's.
        remove_rules(&mut sets, |r| r.owner == OWNER_CONFIG);
        assert_eq!(rules_of(&sets), [(2, OWNER_OPERATOR)]);
        remove_rules(&mut sets, |_| true);
        assert!(sets.is_empty(), "empty sets go");
    }

    #[test]
    fn the_operators_default_wins_over_the_configs_then_allow() {
        let allow = Action::Allow as u8 + 1;
        let deny = Action::Deny as u8 + 1;
        let entry = |config: [u8; 2], operator: [u8; 2]| PolicyEntry {
            owner_default: [config, operator],
            ..Default::default()
        };
        assert_eq!(
            effective_defaults(&entry([0, 0], [0, 0])),
            [Action::Allow; 2]
        );
        assert_eq!(
            effective_defaults(&entry([deny, deny], [0, allow])),
            [Action::Deny, Action::Allow]
        );
        assert_eq!(
            effective_defaults(&entry([0, allow], [deny, 0])),
            [Action::Deny, Action::Allow]
        );
    }
}
