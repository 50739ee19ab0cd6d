//! Which pod ranges and gateways a Node object may have this node route.
//! A Node is written by whoever holds that node's kubelet credentials: it
//! must not be able to make this node route its own networks, its gateway,
//! special-purpose space or another node's pods somewhere else. Pure: this
//! node's addresses and routes come in as [`Host`], so every case is
//! table-tested without a kernel.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::special::{overlaps, special_overlap};

/// What of this node no Node object may claim. The pod bridge's own
/// address and route are left out by the caller: they are this node's pod
/// range, which is checked like every other.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Host {
    /// `--cluster-cidr`: when given, pod ranges must lie inside one of them.
    pub cluster_cidrs: Vec<IpNet>,
    /// This node's own addresses.
    pub addresses: Vec<IpAddr>,
    /// Main-table routes without a gateway (the networks this node is on).
    pub connected: Vec<IpNet>,
    /// Gateways of main-table routes that are not ours (the default route's).
    pub gateways: Vec<IpAddr>,
}

/// Why a range or an InternalIP is not used.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, thiserror::Error)]
pub enum Refused {
    #[error("{range} overlaps {special} ({what})")]
    Special {
        range: IpNet,
        special: IpNet,
        what: &'static str,
    },
    #[error("{range} is not inside --cluster-cidr ({cluster})")]
    OutsideCluster { range: IpNet, cluster: String },
    #[error("{range} overlaps this node's {what} {with}")]
    Host {
        range: IpNet,
        what: &'static str,
        with: IpNet,
    },
    #[error("InternalIP {ip} is {what}")]
    Gateway { ip: IpAddr, what: &'static str },
}

impl Refused {
    /// The `reason` label of `podmeter_agent_node_errors`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Special { .. } => "special_range",
            Self::OutsideCluster { .. } => "outside_cluster_cidr",
            Self::Host { .. } => "host_range",
            Self::Gateway { .. } => "bad_internal_ip",
        }
    }
}

/// Whether `range` may be a node's pod range here: no special space, inside
/// `--cluster-cidr` if given, and nothing of this node's in it.
pub fn check_range(range: IpNet, host: &Host) -> Result<(), Refused> {
    if let Some((special, what)) = special_overlap(&range) {
        return Err(Refused::Special {
            range,
            special,
            what,
        });
    }
    if !host.cluster_cidrs.is_empty() && !host.cluster_cidrs.iter().any(|c| c.contains(&range)) {
        let cluster: Vec<String> = host.cluster_cidrs.iter().map(ToString::to_string).collect();
        return Err(Refused::OutsideCluster {
            range,
            cluster: cluster.join(", "),
        });
    }
    // Checked with --cluster-cidr too: a cluster range that overlaps the
    // node network is a mistake whose pod ranges would cut nodes off.
    let host_nets = (host.addresses.iter().map(|a| ("address", IpNet::from(*a))))
        .chain(host.gateways.iter().map(|g| ("gateway", IpNet::from(*g))))
        .chain(host.connected.iter().map(|c| ("connected network", *c)));
    for (what, with) in host_nets {
        if overlaps(&with, &range) {
            return Err(Refused::Host { range, what, with });
        }
    }
    Ok(())
}

/// Whether `ip` may be the next hop to a node's pods: an ordinary unicast
/// address of another host on a network this node is on.
pub fn check_gateway(ip: IpAddr, host: &Host) -> Result<(), Refused> {
    let refuse = |what| Err(Refused::Gateway { ip, what });
    if let Some((_, what)) = special_overlap(&IpNet::from(ip)) {
        return refuse(what);
    }
    if host.addresses.contains(&ip) {
        return refuse("this node's own address");
    }
    if !host.connected.iter().any(|c| c.contains(&ip)) {
        return refuse("not on a network this node is connected to");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node on 172.30.0.0/24 and fc00:30::/64, its default gateways .1.
    fn host(cluster: &[&str]) -> Host {
        Host {
            cluster_cidrs: cluster.iter().map(|c| c.parse().unwrap()).collect(),
            addresses: vec!["172.30.0.2".parse().unwrap(), "fc00:30::2".parse().unwrap()],
            connected: vec![
                "172.30.0.0/24".parse().unwrap(),
                "fc00:30::/64".parse().unwrap(),
            ],
            gateways: vec!["172.30.0.1".parse().unwrap(), "fc00:30::1".parse().unwrap()],
        }
    }

    /// Each hostile pod range of issue 18, with and without --cluster-cidr,
    /// and the reason it is refused.
    #[test]
    fn hostile_ranges_are_refused_with_the_reason() {
        let cluster = ["10.244.0.0/16", "fd00:10:244::/56"];
        let cases: &[(&str, Option<&str>, Option<&str>)] = &[
            // range, reason without --cluster-cidr, reason with it
            ("10.244.2.0/24", None, None),
            ("fd00:10:244:2::/64", None, None),
            (
                "172.30.0.0/25",
                Some("host_range"),
                Some("outside_cluster_cidr"),
            ),
            (
                "172.30.0.1/32",
                Some("host_range"),
                Some("outside_cluster_cidr"),
            ),
            (
                "172.30.0.2/32",
                Some("host_range"),
                Some("outside_cluster_cidr"),
            ),
            (
                "172.0.0.0/8",
                Some("host_range"),
                Some("outside_cluster_cidr"),
            ),
            (
                "169.254.169.254/32",
                Some("special_range"),
                Some("special_range"),
            ),
            ("128.0.0.0/1", Some("special_range"), Some("special_range")),
            ("0.0.0.0/0", Some("special_range"), Some("special_range")),
            ("127.0.0.0/8", Some("special_range"), Some("special_range")),
            ("224.0.0.0/24", Some("special_range"), Some("special_range")),
            (
                "255.255.255.255/32",
                Some("special_range"),
                Some("special_range"),
            ),
            ("fe80::/65", Some("special_range"), Some("special_range")),
            ("ff02::/16", Some("special_range"), Some("special_range")),
            ("::/0", Some("special_range"), Some("special_range")),
            ("::1/128", Some("special_range"), Some("special_range")),
            (
                "fc00:30::/80",
                Some("host_range"),
                Some("outside_cluster_cidr"),
            ),
            // The Service range: only --cluster-cidr tells it from pods'.
            ("10.96.0.0/16", None, Some("outside_cluster_cidr")),
            // Wider than the cluster range: not inside it.
            ("10.0.0.0/8", None, Some("outside_cluster_cidr")),
        ];
        for (range, without, with) in cases {
            let range: IpNet = range.parse().unwrap();
            for (h, want) in [(host(&[]), without), (host(&cluster), with)] {
                let got = check_range(range, &h).err();
                assert_eq!(
                    got.as_ref().map(Refused::reason),
                    *want,
                    "{range} (cluster {:?}): {got:?}",
                    h.cluster_cidrs
                );
            }
        }
    }

    #[test]
    fn refusals_say_what_was_hit() {
        let got = check_range("172.30.0.0/25".parse().unwrap(), &host(&[])).unwrap_err();
        assert_eq!(
            got.to_string(),
            "172.30.0.0/25 overlaps this node's address 172.30.0.2/32"
        );
        let got = check_range("128.0.0.0/1".parse().unwrap(), &host(&[])).unwrap_err();
        assert_eq!(
            got.to_string(),
            "128.0.0.0/1 overlaps 169.254.0.0/16 (link-local)"
        );
    }

    #[test]
    fn hostile_internal_ips_are_refused() {
        let cases: &[(&str, Option<&str>)] = &[
            ("172.30.0.3", None),
            ("fc00:30::3", None),
            ("127.0.0.1", Some("loopback")),
            ("::1", Some("loopback")),
            ("0.0.0.0", Some("unspecified")),
            ("::", Some("unspecified")),
            ("224.0.0.1", Some("multicast")),
            ("ff02::1", Some("multicast")),
            ("169.254.1.1", Some("link-local")),
            ("fe80::1", Some("link-local")),
            ("255.255.255.255", Some("broadcast")),
            ("172.30.0.2", Some("this node's own address")),
            ("fc00:30::2", Some("this node's own address")),
            (
                "192.0.2.1",
                Some("not on a network this node is connected to"),
            ),
        ];
        for (ip, want) in cases {
            let ip: IpAddr = ip.parse().unwrap();
            let got = check_gateway(ip, &host(&[])).err();
            let what = got.as_ref().map(|r| match r {
                Refused::Gateway { what, .. } => *what,
                other => panic!("{other:?}"),
            });
            assert_eq!(what, *want, "{ip}");
        }
    }
}
