//! Per-pod policy as users write it (the plugin's config, `podmeterctl`):
//! rules, defaults, probes and verdicts, parsed, shown and checked.

use std::{fmt, net::IpAddr, str::FromStr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::abi::{Action, Direction, OWNER_CONFIG, OWNER_OPERATOR, PROTO_ANY};

pub(super) const AF_INET: u8 = libc::AF_INET as u8;
pub(super) const AF_INET6: u8 = libc::AF_INET6 as u8;

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
    pub(super) fn family(self) -> Option<u8> {
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

pub(super) fn family_of(addr: &IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// "deny tcp 10.0.0.0/8 80-90" as a rule (for the encoding's tests too).
    pub(in crate::policy) fn spec(text: &str) -> RuleSpec {
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
