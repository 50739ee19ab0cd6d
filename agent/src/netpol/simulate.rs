//! Tests only: the kernel's lookup of the kubernetes tier, over a
//! [`Compiled`]: the peer's longest matching prefix gives (pod, region)
//! identities; this node is always allowed; a pod not isolated in the
//! direction is allowed; else the first rule for identity ∈ {pod, region,
//! any} × protocol ∈ {the packet's with its port, every protocol} allows.

use std::net::IpAddr;

use super::model::{Compiled, Direction, KubeProto, Peer, IDENTITY_HOST, IDENTITY_NONE};

fn peer_of(c: &Compiled, addr: IpAddr) -> Peer {
    c.peers
        .iter()
        .filter(|(net, _)| net.contains(&addr))
        .max_by_key(|(net, _)| net.prefix_len())
        .map_or(
            Peer {
                pod_identity: IDENTITY_NONE,
                cidr_identity: IDENTITY_NONE,
            },
            |(_, p)| *p,
        )
}

/// Whether the local pod `pod` ("namespace/name") may exchange `proto`
/// traffic on `port` (the destination port) with `remote` in `direction`.
pub fn allowed(
    c: &Compiled,
    pod: &str,
    direction: Direction,
    remote: IpAddr,
    proto: KubeProto,
    port: u16,
) -> bool {
    let peer = peer_of(c, remote);
    if peer.pod_identity == IDENTITY_HOST {
        return true;
    }
    let tier = &c
        .pods
        .get(pod)
        .unwrap_or_else(|| panic!("{pod} is not local"))
        .policy;
    if !tier.isolated[direction as usize] {
        return true;
    }
    let mut ids = vec![peer.pod_identity];
    for id in [peer.cidr_identity, IDENTITY_NONE] {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids.iter().any(|id| {
        [Some(proto), None].iter().any(|want| {
            tier.rules.iter().any(|r| {
                r.direction == direction
                    && r.peer == *id
                    && r.proto == *want
                    && (want.is_none() || r.ports.is_none_or(|p| p.first <= port && port <= p.last))
            })
        })
    })
}
