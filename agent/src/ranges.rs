//! A Node's pod ranges (`spec.podCIDRs`, or the older single `spec.podCIDR`),
//! checked before they go into a conflist the plugin would refuse.

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RangeError {
    #[error("pod CIDR {cidr:?} is not a CIDR: {reason}")]
    Invalid { cidr: String, reason: String },
    #[error("pod CIDR {cidr} has host bits set (the network is {network})")]
    HostBits { cidr: IpNet, network: IpNet },
    #[error("pod CIDRs {first} and {second} are of the same family (one per family is allowed)")]
    SameFamily { first: IpNet, second: IpNet },
}

/// The node's pod ranges in the node's order (the first is the cluster's
/// primary family, whose address the plugin lists first), or an empty list
/// while the node has none yet.
pub fn pod_ranges(node: &Node) -> Result<Vec<IpNet>, RangeError> {
    let spec = node.spec.as_ref();
    let cidrs: Vec<&str> = match spec.and_then(|s| s.pod_cidrs.as_deref()) {
        Some(list) if !list.is_empty() => list.iter().map(String::as_str).collect(),
        _ => spec
            .and_then(|s| s.pod_cidr.as_deref())
            .filter(|c| !c.is_empty())
            .into_iter()
            .collect(),
    };
    let mut ranges: Vec<IpNet> = Vec::with_capacity(cidrs.len());
    for cidr in cidrs {
        let net: IpNet = cidr
            .parse()
            .map_err(|e: ipnet::AddrParseError| RangeError::Invalid {
                cidr: cidr.to_owned(),
                reason: e.to_string(),
            })?;
        if net != net.trunc() {
            return Err(RangeError::HostBits {
                cidr: net,
                network: net.trunc(),
            });
        }
        // The API server allows at most one range per family; a second one
        // would make two overlapping-or-not range sets of one family, and
        // every pod would get two addresses of it.
        if let Some(first) = ranges
            .iter()
            .find(|r| r.addr().is_ipv4() == net.addr().is_ipv4())
        {
            return Err(RangeError::SameFamily {
                first: *first,
                second: net,
            });
        }
        ranges.push(net);
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::NodeSpec;

    use super::*;

    fn node(pod_cidr: Option<&str>, pod_cidrs: Option<&[&str]>) -> Node {
        Node {
            spec: Some(NodeSpec {
                pod_cidr: pod_cidr.map(str::to_owned),
                pod_cidrs: pod_cidrs.map(|l| l.iter().map(|s| s.to_string()).collect()),
                ..NodeSpec::default()
            }),
            ..Node::default()
        }
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn none_yet_is_empty() {
        assert_eq!(pod_ranges(&Node::default()), Ok(vec![]));
        assert_eq!(pod_ranges(&node(None, None)), Ok(vec![]));
        assert_eq!(pod_ranges(&node(Some(""), Some(&[]))), Ok(vec![]));
    }

    #[test]
    fn pod_cidrs_win_and_keep_their_order() {
        let n = node(
            Some("10.244.1.0/24"),
            Some(&["fd00:10:244:1::/64", "10.244.1.0/24"]),
        );
        assert_eq!(
            pod_ranges(&n),
            Ok(nets(&["fd00:10:244:1::/64", "10.244.1.0/24"]))
        );
    }

    #[test]
    fn the_single_pod_cidr_is_read_when_the_list_is_absent() {
        assert_eq!(
            pod_ranges(&node(Some("10.244.2.0/24"), None)),
            Ok(nets(&["10.244.2.0/24"]))
        );
    }

    #[test]
    fn bad_ranges_are_errors_that_name_them() {
        let err = pod_ranges(&node(None, Some(&["10.244.0.0/33"]))).unwrap_err();
        assert!(err.to_string().contains("\"10.244.0.0/33\""), "{err}");
        assert_eq!(
            pod_ranges(&node(None, Some(&["10.244.0.1/24"]))),
            Err(RangeError::HostBits {
                cidr: "10.244.0.1/24".parse().unwrap(),
                network: "10.244.0.0/24".parse().unwrap(),
            })
        );
        assert!(matches!(
            pod_ranges(&node(None, Some(&["10.1.0.0/24", "10.2.0.0/24"]))),
            Err(RangeError::SameFamily { .. })
        ));
    }
}
