//! Per-pod policy as users write it (the plugin's config, `podmeterctl`),
//! and the pure logic shared with the programs: how a rule is stored
//! (one entry per address family in the LPM trie), the order rules of one
//! CIDR are tried in, and the longest-prefix walk (`bpf/policy.h` does the
//! same walk per packet; `podmeterctl policy check` does it over the map).

use std::{collections::BTreeMap, fmt, net::IpAddr, str::FromStr};

use aya::maps::lpm_trie::Key;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::abi::{
    Action, Direction, PolicyEntry, RuleEntry, RuleKeyData, RuleSet, OWNER_CONFIG, OWNER_OPERATOR,
    PROTO_ANY, RULES_PER_PREFIX, RULE_KEY_FIXED_BITS, RULE_PORTS,
};

/// Who wrote a rule or default. Each owner replaces only its own; how they
/// combine is `policy_action()` in `bpf/policy.h` (README, "Policy").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Owner {
    /// The CNI config's `policy`, applied by ADD.
    Config,
    /// `podmeterctl policy add/delete/default`.
    Operator,
    /// The node agent, from NetworkPolicy (the kubernetes tier).
    Kubernetes,
}

impl Owner {
    /// `PM_OWNER_*` of an admin owner (`None`: kubernetes, not in `pm_rules`).
    pub fn raw(self) -> Option<u8> {
        match self {
            Owner::Config => Some(OWNER_CONFIG),
            Owner::Operator => Some(OWNER_OPERATOR),
            Owner::Kubernetes => None,
        }
    }

    pub fn from_raw(raw: u8) -> Option<Self> {
        [Owner::Config, Owner::Operator]
            .into_iter()
            .find(|o| o.raw() == Some(raw))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Owner::Config => "config",
            Owner::Operator => "operator",
            Owner::Kubernetes => "kubernetes",
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Mirrors `PM_RULE_ANY_ADDRESS`: userspace's note that a rule was given
/// without a CIDR (stored under both families' /0).
pub const RULE_ANY_ADDRESS: u8 = 2;

const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;

/// A rule that cannot be stored, with what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRule(pub String);

/// The protocols a rule can match.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    #[default]
    Any,
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
}

impl Proto {
    pub const ALL: [Proto; 5] = [
        Proto::Any,
        Proto::Tcp,
        Proto::Udp,
        Proto::Icmp,
        Proto::Icmpv6,
    ];

    /// The IPPROTO_* value the programs compare (`PM_PROTO_ANY` for any).
    pub fn raw(self) -> u8 {
        match self {
            Proto::Any => PROTO_ANY,
            Proto::Tcp => libc::IPPROTO_TCP as u8,
            Proto::Udp => libc::IPPROTO_UDP as u8,
            Proto::Icmp => libc::IPPROTO_ICMP as u8,
            Proto::Icmpv6 => libc::IPPROTO_ICMPV6 as u8,
        }
    }

    pub fn from_raw(raw: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.raw() == raw)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Any => "any",
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
            Proto::Icmpv6 => "icmpv6",
        }
    }

    /// The only address family this protocol exists in, if it is one.
    fn family(self) -> Option<u8> {
        match self {
            Proto::Icmp => Some(AF_INET),
            Proto::Icmpv6 => Some(AF_INET6),
            _ => None,
        }
    }
}

impl FromStr for Proto {
    type Err = InvalidRule;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                InvalidRule(format!(
                    "unknown protocol {s:?} (one of tcp, udp, icmp, icmpv6, any)"
                ))
            })
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An inclusive destination port range, written `N` or `N-M`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "PortsText", into = "String")]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

/// A port range in a config: `80`, `"80"` or `"8000-8080"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum PortsText {
    Number(u64),
    Text(String),
}

impl TryFrom<PortsText> for PortRange {
    type Error = InvalidRule;
    fn try_from(p: PortsText) -> Result<Self, Self::Error> {
        match p {
            PortsText::Number(n) => n.to_string().parse(),
            PortsText::Text(s) => s.parse(),
        }
    }
}

impl From<PortRange> for String {
    fn from(p: PortRange) -> String {
        p.to_string()
    }
}

impl FromStr for PortRange {
    type Err = InvalidRule;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let port = |p: &str| {
            p.trim().parse::<u16>().map_err(|_| {
                InvalidRule(format!("port {p:?} in {s:?} is not a number in 0..=65535"))
            })
        };
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(s)?, port(s)?),
        };
        if first > last {
            return Err(InvalidRule(format!(
                "port range {s:?} ends before it starts"
            )));
        }
        Ok(Self { first, last })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// A rule as a user writes it: for one direction of one pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub action: Action,
    /// The remote addresses; none: every address of both families.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<IpNet>,
    #[serde(default)]
    pub proto: Proto,
    /// Destination ports (the remote's when transmitting, the pod's own
    /// when receiving); the rule then matches only TCP, UDP and SCTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<PortRange>,
}

impl RuleSpec {
    /// Refuses what the programs could never match, or would match otherwise
    /// than written.
    pub fn validate(&self) -> Result<(), InvalidRule> {
        if let Some(cidr) = self.cidr {
            if cidr.trunc() != cidr {
                return Err(InvalidRule(format!(
                    "CIDR {cidr} has host bits set (did you mean {}?)",
                    cidr.trunc()
                )));
            }
            // ::ffff:a.b.c.d is how a dual-stack socket shows an IPv4 peer;
            // on the wire that peer is IPv4, so such a CIDR never matches.
            if let IpNet::V6(v6) = cidr {
                if let Some(v4) = v6.addr().to_ipv4_mapped().filter(|_| v6.prefix_len() >= 96) {
                    return Err(InvalidRule(format!(
                        "CIDR {cidr} is IPv4-mapped IPv6, which no packet carries: \
                         write it as IPv4 ({v4}/{})",
                        v6.prefix_len() - 96
                    )));
                }
            }
        }
        if self.ports.is_some() && matches!(self.proto, Proto::Icmp | Proto::Icmpv6) {
            return Err(InvalidRule(format!(
                "ports apply to tcp, udp or any, not {}",
                self.proto
            )));
        }
        if let (Some(family), Some(cidr)) = (self.proto.family(), self.cidr) {
            if family_of(&cidr.addr()) != family {
                return Err(InvalidRule(format!(
                    "{} never matches addresses of {cidr}",
                    self.proto
                )));
            }
        }
        Ok(())
    }

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

impl fmt::Display for RuleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.action.as_str(), self.proto)?;
        match self.cidr {
            Some(cidr) => write!(f, " from/to {cidr}")?,
            None => write!(f, " from/to any address")?,
        }
        if let Some(ports) = self.ports {
            write!(f, " port {ports}")?;
        }
        Ok(())
    }
}

/// A stored rule of a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub id: u32,
    pub direction: Direction,
    pub owner: Owner,
    #[serde(flatten)]
    pub spec: RuleSpec,
}

/// The rules of one direction, as the plugin's config gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectionPolicy {
    #[serde(default, rename = "default", skip_serializing_if = "Option::is_none")]
    pub default_action: Option<Action>,
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
}

/// A pod's policy in the plugin's config (`"policy": {"receive": {...},
/// "transmit": {...}}`), applied at ADD and removed with the pod at DEL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodPolicy {
    #[serde(default)]
    pub receive: DirectionPolicy,
    #[serde(default)]
    pub transmit: DirectionPolicy,
}

impl PodPolicy {
    pub fn direction(&self, direction: Direction) -> &DirectionPolicy {
        match direction {
            Direction::Receive => &self.receive,
            Direction::Transmit => &self.transmit,
        }
    }

    pub fn validate(&self) -> Result<(), InvalidRule> {
        for direction in Direction::ALL {
            for (i, rule) in self.direction(direction).rules.iter().enumerate() {
                rule.validate().map_err(|e| {
                    InvalidRule(format!("policy.{}.rules[{i}]: {e}", direction.as_str()))
                })?;
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        Direction::ALL.iter().all(|d| {
            let p = self.direction(*d);
            p.default_action.is_none() && p.rules.is_empty()
        })
    }
}

/// A packet `policy check` asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub direction: Direction,
    pub remote: IpAddr,
    /// `Proto::Any` is not a packet: use a concrete protocol.
    pub proto: Proto,
    /// The destination port, for TCP and UDP.
    pub port: Option<u16>,
}

/// What decided a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The pod has no policy: everything passes.
    NoPolicy,
    /// No rule matched: the direction's default.
    Default(Action),
    Rule {
        id: u32,
        action: Action,
    },
    /// No admin rule matched and NetworkPolicy isolates the pod.
    Kubernetes(KubeVerdict),
}

/// What the kubernetes tier says of a probe (`bpf/k8s_policy.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeVerdict {
    /// The remote is the node (a gateway of the pod, or identity HOST).
    Node,
    /// A rule of this NetworkPolicy index allows it.
    Allowed { policy: u32 },
    /// No rule allows it.
    Denied,
}

impl Verdict {
    pub fn action(self) -> Action {
        match self {
            Verdict::NoPolicy => Action::Allow,
            Verdict::Default(a) | Verdict::Rule { action: a, .. } => a,
            Verdict::Kubernetes(KubeVerdict::Denied) => Action::Deny,
            Verdict::Kubernetes(_) => Action::Allow,
        }
    }
}

pub(crate) fn family_of(addr: &IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    }
}

pub(crate) fn addr_bytes(addr: &IpAddr) -> [u8; 16] {
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
pub(crate) fn rule_key(
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
pub(crate) fn key_prefix(key: &Key<RuleKeyData>) -> u32 {
    key.prefix_len().saturating_sub(RULE_KEY_FIXED_BITS)
}

/// The key a probe's remote address is looked up with (its full length).
pub(crate) fn probe_key(ifindex: u32, probe: &Probe) -> Key<RuleKeyData> {
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
pub(crate) fn walk(
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
pub(crate) fn sort_rules(rules: &mut [RuleEntry]) {
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
pub(crate) fn decode(
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
    if keys.iter().any(|(k, _)| {
        sets.get(k)
            .is_some_and(|s| s.n_rules as usize >= RULES_PER_PREFIX)
    }) {
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

    fn spec(text: &str) -> RuleSpec {
        // "deny tcp 10.0.0.0/8 80-90": action, proto, cidr or "-", ports or "-".
        let w: Vec<&str> = text.split_whitespace().collect();
        RuleSpec {
            action: if w[0] == "deny" {
                Action::Deny
            } else {
                Action::Allow
            },
            proto: w[1].parse().unwrap(),
            cidr: (w[2] != "-").then(|| w[2].parse().unwrap()),
            ports: (w[3] != "-").then(|| w[3].parse().unwrap()),
        }
    }

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
    fn bad_rules_are_refused_with_the_reason() {
        let cases = [
            ("allow icmp - 7", "ports apply to tcp, udp or any"),
            (
                "allow icmp fd00::/8 -",
                "icmp never matches addresses of fd00::/8",
            ),
            ("allow icmpv6 10.0.0.0/8 -", "icmpv6 never matches"),
            (
                "deny tcp 10.1.2.3/8 -",
                "has host bits set (did you mean 10.0.0.0/8?)",
            ),
            (
                "deny any ::ffff:10.1.2.3/128 -",
                "IPv4-mapped IPv6, which no packet carries: write it as IPv4 (10.1.2.3/32)",
            ),
            ("deny any ::ffff:10.0.0.0/104 -", "(10.0.0.0/8)"),
        ];
        for (text, reason) in cases {
            let err = spec(text).validate().unwrap_err().0;
            assert!(err.contains(reason), "{text}: {err}");
        }
        assert!(spec("deny any - 1-65535").validate().is_ok());
        // Shorter prefixes hold more than mapped addresses.
        assert!(spec("deny any ::/64 -").validate().is_ok());
        for (bad, reason) in [
            ("70000", "not a number in 0..=65535"),
            ("9-8", "ends before it starts"),
            ("x", "not a number"),
        ] {
            let err = bad.parse::<PortRange>().unwrap_err().0;
            assert!(err.contains(reason), "{bad}: {err}");
        }
        assert!("sctp"
            .parse::<Proto>()
            .unwrap_err()
            .0
            .contains("unknown protocol"));
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
                let rule = decode(&s.entry(7, OWNER_OPERATOR), Direction::Receive, family, addr, len.into());
                assert_eq!(rule.map(|r| r.spec), Some(s), "{text}");
            }
        }
    }

    #[test]
    fn config_policy_parses_ports_as_numbers_or_text() {
        let p: PodPolicy = serde_json::from_str(
            r#"{"receive": {"default": "deny", "rules": [
                {"action": "allow", "cidr": "10.0.0.5/32", "proto": "tcp", "ports": 80},
                {"action": "allow", "proto": "udp", "ports": "5000-5010"}]}}"#,
        )
        .unwrap();
        assert_eq!(p.receive.default_action, Some(Action::Deny));
        assert_eq!(p.receive.rules[0].ports.unwrap().to_string(), "80");
        assert_eq!(p.receive.rules[1].ports.unwrap().to_string(), "5000-5010");
        assert!(p.transmit.rules.is_empty());
        let bad: Result<PodPolicy, _> = serde_json::from_str(
            r#"{"receive": {"rules": [{"action": "allow", "ports": 70000}]}}"#,
        );
        assert!(bad.unwrap_err().to_string().contains("0..=65535"));
    }
}
