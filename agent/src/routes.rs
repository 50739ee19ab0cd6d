//! Which routes this node should have, and what to change to get there.
//! Pure: the Node objects and the routes found in the kernel go in, routes
//! and operations come out, so all of it is tested without a kernel.
//!
//! The model is flannel's host-gw and kindnet's: every other node's pod
//! range is routed via that node's InternalIP of the same family. The
//! kernel accepts such a route only if the address is on a link of this
//! node (one L2 segment, as kind's Docker network); nothing is encapsulated.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;

use crate::{
    admit::{check_gateway, check_range, Host, Refused},
    ranges::pod_ranges,
};

/// Where a pod range goes, and for which node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub gateway: IpAddr,
    pub node: String,
}

/// A node range that gets no route, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Skipped {
    BadPodCidrs {
        node: String,
        error: String,
    },
    /// Special space, outside `--cluster-cidr`, or this node's own
    /// networks; or an InternalIP that is no usable next hop.
    Refused {
        node: String,
        refused: Refused,
    },
    NoInternalIp {
        node: String,
        range: IpNet,
    },
    /// Overlaps another node's range. Both are left out (each reported),
    /// so no name order lets one node take another's pods' traffic.
    Overlaps {
        node: String,
        range: IpNet,
        with: IpNet,
        owner: String,
    },
}

impl Skipped {
    pub fn node(&self) -> &str {
        match self {
            Self::BadPodCidrs { node, .. }
            | Self::Refused { node, .. }
            | Self::NoInternalIp { node, .. }
            | Self::Overlaps { node, .. } => node,
        }
    }

    /// The `reason` label of `podmeter_agent_node_errors`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadPodCidrs { .. } => "bad_pod_cidrs",
            Self::Refused { refused, .. } => refused.reason(),
            Self::NoInternalIp { .. } => "no_internal_ip",
            Self::Overlaps { .. } => "overlap",
        }
    }

    /// The other node of an overlap.
    pub fn peer(&self) -> Option<&str> {
        match self {
            Self::Overlaps { owner, .. } => Some(owner),
            _ => None,
        }
    }
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadPodCidrs { node, error } => write!(f, "node {node}: {error}"),
            Self::Refused { node, refused } => write!(f, "node {node}: {refused}"),
            Self::NoInternalIp { node, range } => {
                write!(f, "node {node}: no InternalIP of {range}'s family")
            }
            Self::Overlaps {
                node,
                range,
                with,
                owner,
            } => write!(f, "node {node}: {range} overlaps {with} of node {owner}"),
        }
    }
}

/// The routes this node should have, by destination, and what was left out.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub routes: BTreeMap<IpNet, Via>,
    pub skipped: BTreeSet<Skipped>,
}

/// Routes to the pod ranges of every node but `own`, from `nodes` (the
/// reflector's store, in any order). Every node's ranges, `own`'s too, are
/// checked against `host` and against each other; the result does not
/// depend on the nodes' order or names.
pub fn desired(nodes: &[Arc<Node>], own: &str, host: &Host) -> Desired {
    let mut out = Desired::default();
    // (range, node) of every range that passed its own checks.
    let mut claims: Vec<(IpNet, &Node)> = Vec::new();
    for node in nodes.iter().map(Arc::as_ref) {
        let name = node.name_any();
        match pod_ranges(node) {
            Ok(ranges) => {
                for range in ranges {
                    match check_range(range, host) {
                        Ok(()) => claims.push((range, node)),
                        Err(refused) => {
                            out.skipped.insert(Skipped::Refused {
                                node: name.clone(),
                                refused,
                            });
                        }
                    }
                }
            }
            Err(e) => {
                out.skipped.insert(Skipped::BadPodCidrs {
                    node: name,
                    error: e.to_string(),
                });
            }
        }
    }
    let overlapping = overlaps_of(&mut claims);
    for (i, (range, node)) in claims.iter().enumerate() {
        let name = node.name_any();
        if let Some(&j) = overlapping.get(&i) {
            let (with, owner) = claims[j];
            out.skipped.insert(Skipped::Overlaps {
                node: name,
                range: *range,
                with,
                owner: owner.name_any(),
            });
            continue;
        }
        if name == own {
            continue;
        }
        let gateway = internal_ip(node, range.addr().is_ipv4());
        match gateway.map(|ip| check_gateway(ip, host).map(|()| ip)) {
            Some(Ok(gateway)) => {
                out.routes.insert(
                    *range,
                    Via {
                        gateway,
                        node: name,
                    },
                );
            }
            Some(Err(refused)) => {
                out.skipped.insert(Skipped::Refused {
                    node: name,
                    refused,
                });
            }
            None => {
                out.skipped.insert(Skipped::NoInternalIp {
                    node: name,
                    range: *range,
                });
            }
        }
    }
    out
}

/// For each claim that overlaps another, the index of one it overlaps.
/// Sorts `claims` by network: CIDRs nest or are disjoint, so a claim
/// overlaps an earlier one exactly when the earlier claim reaching furthest
/// contains it (one pass, not every pair: a pass runs on every Node event).
fn overlaps_of(claims: &mut [(IpNet, &Node)]) -> BTreeMap<usize, usize> {
    claims.sort_by_key(|(range, node)| (range.network(), range.prefix_len(), node.name_any()));
    let mut found = BTreeMap::new();
    let mut widest: Option<usize> = None;
    for i in 0..claims.len() {
        let range = claims[i].0;
        match widest {
            Some(w) if claims[w].0.contains(&range) => {
                found.insert(i, w);
                found.entry(w).or_insert(i);
            }
            _ => widest = Some(i),
        }
    }
    found
}

/// The node's first InternalIP of the family (dual-stack nodes list one of
/// each); other address types are not reachable on the node network.
fn internal_ip(node: &Node, v4: bool) -> Option<IpAddr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse::<IpAddr>().ok())
        .find(|ip| ip.is_ipv4() == v4)
}

/// A main-table route found in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub dst: IpNet,
    pub gateway: Option<IpAddr>,
    /// Made by a podmeter agent (our route protocol).
    pub ours: bool,
}

/// One change to the kernel's routes. Indexes are into the `found` list
/// given to [`plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Add the route, or move ours to this gateway in one step
    /// (NLM_F_REPLACE): never delete-then-add, which would drop traffic.
    Replace { dst: IpNet, via: Via },
    /// Remove a route of ours that no node wants (or a duplicate).
    Delete { found: usize },
    /// A route we did not make has this destination: left alone, and ours
    /// not added (replace would overwrite it).
    Conflict { dst: IpNet, via: Via },
}

/// What turns `found` into `desired`, touching only our own routes, and
/// nothing for a route of ours that is already right.
pub fn plan(found: &[Found], desired: &BTreeMap<IpNet, Via>) -> Vec<Op> {
    let mut ops = Vec::new();
    for (dst, via) in desired {
        let same_dst = || found.iter().enumerate().filter(|(_, f)| f.dst == *dst);
        if same_dst().any(|(_, f)| !f.ours) {
            ops.push(Op::Conflict {
                dst: *dst,
                via: via.clone(),
            });
            continue;
        }
        let right = same_dst().find(|(_, f)| f.gateway == Some(via.gateway));
        match right {
            // Keep the right one, drop any other of ours to the same place.
            Some((keep, _)) => ops.extend(
                same_dst()
                    .filter(|(i, _)| *i != keep)
                    .map(|(i, _)| Op::Delete { found: i }),
            ),
            // Replace rewrites one of ours in place; any further ones go.
            None => {
                ops.extend(same_dst().skip(1).map(|(i, _)| Op::Delete { found: i }));
                ops.push(Op::Replace {
                    dst: *dst,
                    via: via.clone(),
                });
            }
        }
    }
    ops.extend(
        found
            .iter()
            .enumerate()
            .filter(|(_, f)| f.ours && !desired.contains_key(&f.dst))
            .map(|(i, _)| Op::Delete { found: i }),
    );
    ops
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
    use kube::api::ObjectMeta;

    use super::*;

    fn node(name: &str, cidrs: &[&str], addrs: &[(&str, &str)]) -> Arc<Node> {
        Arc::new(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                pod_cidrs: Some(cidrs.iter().map(|s| s.to_string()).collect()),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(
                    addrs
                        .iter()
                        .map(|(t, a)| NodeAddress {
                            type_: t.to_string(),
                            address: a.to_string(),
                        })
                        .collect(),
                ),
                ..NodeStatus::default()
            }),
        })
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn via(gateway: &str, node: &str) -> Via {
        Via {
            gateway: gateway.parse().unwrap(),
            node: node.into(),
        }
    }

    fn routes(list: &[(&str, &str, &str)]) -> BTreeMap<IpNet, Via> {
        list.iter().map(|(d, g, n)| (net(d), via(g, n))).collect()
    }

    #[test]
    fn every_other_nodes_ranges_via_its_internal_ip_of_the_family() {
        let nodes = [
            node(
                "a",
                &["10.244.1.0/24", "fd00:10:244:1::/64"],
                &[("InternalIP", "172.18.0.2"), ("InternalIP", "fc00::2")],
            ),
            node(
                "b",
                &["10.244.2.0/24", "fd00:10:244:2::/64"],
                &[
                    ("Hostname", "b"),
                    ("ExternalIP", "203.0.113.3"),
                    ("InternalIP", "fc00::3"),
                    ("InternalIP", "172.18.0.3"),
                ],
            ),
            node("c", &["fd00:10:244:3::/64"], &[("InternalIP", "fc00::4")]),
        ];
        let got = desired(&nodes, "a", &host());
        assert_eq!(
            got.routes,
            routes(&[
                ("10.244.2.0/24", "172.18.0.3", "b"),
                ("fd00:10:244:2::/64", "fc00::3", "b"),
                ("fd00:10:244:3::/64", "fc00::4", "c"),
            ])
        );
        assert!(got.skipped.is_empty(), "{:?}", got.skipped);
        // Seen from b, a's ranges go via a's addresses.
        assert_eq!(
            desired(&nodes, "b", &host_of("172.18.0.3", "fc00::3")).routes[&net("10.244.1.0/24")],
            via("172.18.0.2", "a")
        );
    }

    #[test]
    fn nodes_without_ranges_or_own_node_give_no_routes() {
        let nodes = [
            node("a", &["10.244.1.0/24"], &[("InternalIP", "172.18.0.2")]),
            node("b", &[], &[("InternalIP", "172.18.0.3")]),
        ];
        assert_eq!(desired(&nodes, "a", &host()), Desired::default());
        // The own node need not be there (deleted, not registered yet).
        assert_eq!(
            desired(&nodes[..1], "x", &host_of("172.18.0.9", "fc00::9")).routes,
            routes(&[("10.244.1.0/24", "172.18.0.2", "a")])
        );
    }

    /// Node "a" as this node: 172.18.0.2 on 172.18.0.0/16 and fc00::/64.
    fn host() -> Host {
        host_of("172.18.0.2", "fc00::2")
    }

    fn host_of(v4: &str, v6: &str) -> Host {
        Host {
            cluster_cidrs: Vec::new(),
            addresses: vec![v4.parse().unwrap(), v6.parse().unwrap()],
            connected: vec![net("172.18.0.0/16"), net("fc00::/64")],
            gateways: vec!["172.18.0.1".parse().unwrap()],
        }
    }

    fn reasons(got: &Desired) -> Vec<String> {
        got.skipped.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn unusable_nodes_are_skipped_with_the_reason() {
        let nodes = [
            node("a", &["10.244.1.0/24"], &[("InternalIP", "172.18.0.2")]),
            // Only an IPv6 address for an IPv4 range.
            node("b", &["10.244.2.0/24"], &[("InternalIP", "fc00::3")]),
            node("c", &["10.244.3.1/24"], &[("InternalIP", "172.18.0.4")]),
            node("e", &["10.244.5.0/24"], &[("InternalIP", "172.18.0.6")]),
            node("g", &["10.244.7.0/24"], &[("InternalIP", "not an address")]),
        ];
        let got = desired(&nodes, "a", &host());
        assert_eq!(got.routes, routes(&[("10.244.5.0/24", "172.18.0.6", "e")]));
        assert_eq!(
            reasons(&got),
            [
                "node c: pod CIDR 10.244.3.1/24 has host bits set (the network is 10.244.3.0/24)",
                "node b: no InternalIP of 10.244.2.0/24's family",
                "node g: no InternalIP of 10.244.7.0/24's family",
            ]
        );
    }

    /// Issue 18's hostile Nodes, each beside healthy ones: none gets a
    /// route, each is reported, the healthy ones keep theirs.
    #[test]
    fn hostile_nodes_get_no_route_and_are_reported() {
        let healthy = || {
            vec![
                node("a", &["10.244.1.0/24"], &[("InternalIP", "172.18.0.2")]),
                node("b", &["10.244.2.0/24"], &[("InternalIP", "172.18.0.3")]),
            ]
        };
        let want = routes(&[("10.244.2.0/24", "172.18.0.3", "b")]);
        let cases: &[(&[&str], &str, &str)] = &[
            (&["172.18.0.0/25"], "172.18.0.9", "host_range"),
            (&["172.18.0.1/32"], "172.18.0.9", "host_range"),
            (&["169.254.169.254/32"], "172.18.0.9", "special_range"),
            (&["128.0.0.0/1"], "172.18.0.9", "special_range"),
            (&["fe80::/65"], "fc00::9", "special_range"),
            (&["255.255.255.255/32"], "172.18.0.9", "special_range"),
            (&["10.244.9.0/24"], "127.0.0.1", "bad_internal_ip"),
            (&["10.244.9.0/24"], "172.18.0.2", "bad_internal_ip"),
            (&["10.244.9.0/24"], "224.0.0.1", "bad_internal_ip"),
            (&["10.244.9.0/24"], "0.0.0.0", "bad_internal_ip"),
            (&["10.244.9.0/24"], "192.0.2.9", "bad_internal_ip"),
        ];
        for (cidrs, ip, reason) in cases {
            let mut nodes = healthy();
            nodes.push(node("x", cidrs, &[("InternalIP", ip)]));
            let got = desired(&nodes, "a", &host());
            assert_eq!(got.routes, want, "{cidrs:?} via {ip}");
            let skipped: Vec<_> = got.skipped.iter().map(|s| (s.node(), s.reason())).collect();
            assert_eq!(
                skipped,
                [("x", *reason)],
                "{cidrs:?} via {ip}: {:?}",
                reasons(&got)
            );
        }
        // The Service range: refused only where --cluster-cidr says so.
        let mut nodes = healthy();
        nodes.push(node(
            "x",
            &["10.96.0.0/16"],
            &[("InternalIP", "172.18.0.9")],
        ));
        let mut h = host();
        h.cluster_cidrs = vec![net("10.244.0.0/16")];
        let got = desired(&nodes, "a", &h);
        assert_eq!(got.routes, want);
        assert_eq!(
            reasons(&got),
            ["node x: 10.96.0.0/16 is not inside --cluster-cidr (10.244.0.0/16)"]
        );
    }

    /// Overlapping claims: neither is routed, both are reported, and the
    /// nodes' names and order change nothing.
    #[test]
    fn overlapping_nodes_are_both_left_out_whatever_their_names() {
        for hijacker in ["aaa-hijack", "zzz-hijack"] {
            let mut nodes = vec![
                node("a", &["10.244.1.0/24"], &[("InternalIP", "172.18.0.2")]),
                node("b", &["10.244.2.0/24"], &[("InternalIP", "172.18.0.3")]),
                node("c", &["10.244.4.0/24"], &[("InternalIP", "172.18.0.4")]),
                node(
                    hijacker,
                    &["10.244.2.0/23"],
                    &[("InternalIP", "172.18.0.9")],
                ),
            ];
            for _ in 0..2 {
                let got = desired(&nodes, "a", &host());
                assert_eq!(got.routes, routes(&[("10.244.4.0/24", "172.18.0.4", "c")]));
                let mut reported: Vec<_> = got
                    .skipped
                    .iter()
                    .map(|s| (s.node(), s.reason(), s.peer()))
                    .collect();
                reported.sort();
                let mut want = vec![
                    ("b", "overlap", Some(hijacker)),
                    (hijacker, "overlap", Some("b")),
                ];
                want.sort();
                assert_eq!(reported, want);
                nodes.reverse();
            }
        }
        // A node claiming this node's range: neither routed (ours never
        // is), both reported.
        let nodes = [
            node("a", &["10.244.1.0/24"], &[("InternalIP", "172.18.0.2")]),
            node("d", &["10.244.1.128/25"], &[("InternalIP", "172.18.0.5")]),
        ];
        let got = desired(&nodes, "a", &host());
        assert!(got.routes.is_empty());
        assert_eq!(
            reasons(&got),
            [
                "node a: 10.244.1.0/24 overlaps 10.244.1.128/25 of node d",
                "node d: 10.244.1.128/25 overlaps 10.244.1.0/24 of node a",
            ]
        );
    }

    fn route(dst: &str, gateway: &str, ours: bool) -> Found {
        Found {
            dst: net(dst),
            gateway: Some(gateway.parse().unwrap()),
            ours,
        }
    }

    #[test]
    fn plan_touches_only_what_differs_and_only_ours() {
        let want = routes(&[
            ("10.244.2.0/24", "172.18.0.3", "b"),
            ("10.244.3.0/24", "172.18.0.4", "c"),
            ("10.244.4.0/24", "172.18.0.5", "d"),
            ("10.244.6.0/24", "172.18.0.7", "f"),
        ]);
        let found = [
            // Right: nothing to do.
            route("10.244.2.0/24", "172.18.0.3", true),
            // c moved to a new address: replaced in place.
            route("10.244.3.0/24", "172.18.0.99", true),
            // Ours, for a node that is gone.
            route("10.244.9.0/24", "172.18.0.10", true),
            // Someone else's: never touched, and f's range not taken over.
            route("192.0.2.0/24", "172.18.0.1", false),
            route("10.244.6.0/24", "172.18.0.1", false),
        ];
        assert_eq!(
            plan(&found, &want),
            [
                Op::Replace {
                    dst: net("10.244.3.0/24"),
                    via: via("172.18.0.4", "c")
                },
                Op::Replace {
                    dst: net("10.244.4.0/24"),
                    via: via("172.18.0.5", "d")
                },
                Op::Conflict {
                    dst: net("10.244.6.0/24"),
                    via: via("172.18.0.7", "f")
                },
                Op::Delete { found: 2 },
            ]
        );
        // Applied, the plan is empty: a second pass changes nothing.
        let settled = [
            found[0].clone(),
            route("10.244.3.0/24", "172.18.0.4", true),
            route("10.244.4.0/24", "172.18.0.5", true),
            found[3].clone(),
            found[4].clone(),
        ];
        assert_eq!(
            plan(&settled, &want),
            [Op::Conflict {
                dst: net("10.244.6.0/24"),
                via: via("172.18.0.7", "f")
            }]
        );
    }

    #[test]
    fn duplicates_of_ours_are_removed_keeping_the_right_one() {
        let want = routes(&[
            ("10.244.2.0/24", "172.18.0.3", "b"),
            ("10.244.3.0/24", "172.18.0.4", "c"),
        ]);
        let found = [
            route("10.244.2.0/24", "172.18.0.9", true),
            route("10.244.2.0/24", "172.18.0.3", true),
            route("10.244.3.0/24", "172.18.0.8", true),
            route("10.244.3.0/24", "172.18.0.9", true),
        ];
        assert_eq!(
            plan(&found, &want),
            [
                Op::Delete { found: 0 },
                Op::Delete { found: 3 },
                Op::Replace {
                    dst: net("10.244.3.0/24"),
                    via: via("172.18.0.4", "c")
                },
            ]
        );
    }
}
