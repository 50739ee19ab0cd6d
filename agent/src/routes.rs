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

use crate::ranges::pod_ranges;

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
    NoInternalIp {
        node: String,
        range: IpNet,
    },
    /// Overlaps this node's own range or a range routed to another node
    /// (first by node name wins): routing it would take others' traffic.
    Overlaps {
        node: String,
        range: IpNet,
        with: IpNet,
        owner: String,
    },
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadPodCidrs { node, error } => write!(f, "node {node}: {error}"),
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
/// reflector's store, in any order).
pub fn desired(nodes: &[Arc<Node>], own: &str) -> Desired {
    let mut nodes: Vec<&Node> = nodes.iter().map(Arc::as_ref).collect();
    // Own node first, so that its ranges are never routed away; then by
    // name, so that a conflict resolves the same way on every node.
    nodes.sort_by_key(|n| (n.name_any() != own, n.name_any()));
    let mut taken: Vec<(IpNet, String)> = Vec::new();
    let mut out = Desired::default();
    for node in nodes {
        let name = node.name_any();
        let ranges = match pod_ranges(node) {
            Ok(ranges) => ranges,
            Err(e) => {
                out.skipped.insert(Skipped::BadPodCidrs {
                    node: name,
                    error: e.to_string(),
                });
                continue;
            }
        };
        for range in ranges {
            if let Some((with, owner)) = taken
                .iter()
                .find(|(t, _)| t.contains(&range) || range.contains(t))
            {
                out.skipped.insert(Skipped::Overlaps {
                    node: name.clone(),
                    range,
                    with: *with,
                    owner: owner.clone(),
                });
                continue;
            }
            taken.push((range, name.clone()));
            if name == own {
                continue;
            }
            match internal_ip(node, range.addr().is_ipv4()) {
                Some(gateway) => {
                    out.routes.insert(
                        range,
                        Via {
                            gateway,
                            node: name.clone(),
                        },
                    );
                }
                None => {
                    out.skipped.insert(Skipped::NoInternalIp {
                        node: name.clone(),
                        range,
                    });
                }
            }
        }
    }
    out
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
        let got = desired(&nodes, "a");
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
            desired(&nodes, "b").routes[&net("10.244.1.0/24")],
            via("172.18.0.2", "a")
        );
    }

    #[test]
    fn nodes_without_ranges_or_own_node_give_no_routes() {
        let nodes = [
            node("a", &["10.244.1.0/24"], &[("InternalIP", "172.18.0.2")]),
            node("b", &[], &[("InternalIP", "172.18.0.3")]),
        ];
        assert_eq!(desired(&nodes, "a"), Desired::default());
        // The own node need not be there (deleted, not registered yet).
        assert_eq!(
            desired(&nodes[..1], "x").routes,
            routes(&[("10.244.1.0/24", "172.18.0.2", "a")])
        );
    }

    #[test]
    fn unusable_nodes_are_skipped_with_the_reason() {
        let nodes = [
            node("a", &["10.244.1.0/24"], &[("InternalIP", "172.18.0.2")]),
            // Only an IPv6 address for an IPv4 range.
            node("b", &["10.244.2.0/24"], &[("InternalIP", "fc00::3")]),
            node("c", &["10.244.3.1/24"], &[("InternalIP", "172.18.0.4")]),
            // Inside a's range: routing it would steal a's pods' traffic.
            node("d", &["10.244.1.128/25"], &[("InternalIP", "172.18.0.5")]),
            // The same range as e, which sorts first.
            node("f", &["10.244.5.0/24"], &[("InternalIP", "172.18.0.7")]),
            node("e", &["10.244.5.0/24"], &[("InternalIP", "172.18.0.6")]),
            node("g", &["10.244.7.0/24"], &[("InternalIP", "not an address")]),
        ];
        let got = desired(&nodes, "a");
        assert_eq!(got.routes, routes(&[("10.244.5.0/24", "172.18.0.6", "e")]));
        let reasons: Vec<String> = got.skipped.iter().map(ToString::to_string).collect();
        assert_eq!(
            reasons,
            [
                "node c: pod CIDR 10.244.3.1/24 has host bits set (the network is 10.244.3.0/24)",
                "node b: no InternalIP of 10.244.2.0/24's family",
                "node g: no InternalIP of 10.244.7.0/24's family",
                "node d: 10.244.1.128/25 overlaps 10.244.1.0/24 of node a",
                "node f: 10.244.5.0/24 overlaps 10.244.5.0/24 of node e",
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
