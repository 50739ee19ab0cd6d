//! The kernel's main routing table over rtnetlink: the routes found there,
//! and the changes [`crate::routes::plan`] asks for. The agent runs in the
//! node's network namespace, so no namespace switching happens here.

use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::{
    packet_route::{
        address::{AddressAttribute, AddressMessage},
        link::{LinkAttribute, LinkMessage},
        route::{
            RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType,
        },
        AddressFamily,
    },
    Handle, RouteMessageBuilder,
};

use crate::{
    admit::Host,
    routes::{Found, Via},
};

/// The route protocol (`proto` in `ip route`) that marks the agent's own
/// routes, as routing daemons mark theirs (bird 12, zebra 11, Calico 80).
/// 152 is in neither the kernel's `RTPROT_*` list nor iproute2's
/// `rt_protos`, nor used by any CNI we know of. Routes of any other
/// protocol are never changed or removed.
pub const PROTOCOL: u8 = 152;

/// rtnetlink's errors are boxed: they carry a whole netlink message.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("opening a netlink socket: {0}")]
    Connect(std::io::Error),
    #[error("listing the {family} routes: {source}")]
    List {
        family: &'static str,
        source: Box<rtnetlink::Error>,
    },
    #[error("{op} route {dst} via {gateway} (node {node}): {source}")]
    Change {
        op: &'static str,
        dst: IpNet,
        gateway: IpAddr,
        node: String,
        source: Box<rtnetlink::Error>,
    },
    #[error("listing this node's {what}: {source}")]
    Host {
        what: &'static str,
        source: Box<rtnetlink::Error>,
    },
    #[error("deleting route {dst}: {source}")]
    Delete {
        dst: IpNet,
        source: Box<rtnetlink::Error>,
    },
}

/// A main-table route as found, with the message that deletes exactly it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub found: Found,
    /// The output link's index.
    oif: Option<u32>,
    message: RouteMessage,
}

/// A netlink connection, driven by a task on the agent's runtime.
pub struct RouteTable {
    handle: Handle,
}

impl RouteTable {
    pub fn connect() -> Result<Self, RouteError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(RouteError::Connect)?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// Every unicast route of the main table, IPv4 and IPv6.
    pub async fn list(&self) -> Result<Vec<Listed>, RouteError> {
        let mut listed = Vec::new();
        for (family, query) in [
            (
                "IPv4",
                RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
            ),
            (
                "IPv6",
                RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
            ),
        ] {
            let messages: Vec<RouteMessage> = self
                .handle
                .route()
                .get(query)
                .execute()
                .try_collect()
                .await
                .map_err(|source| RouteError::List {
                    family,
                    source: Box::new(source),
                })?;
            listed.extend(messages.into_iter().filter_map(listed_route));
        }
        Ok(listed)
    }

    /// Points `dst` at `via` with our protocol: adds the route, or rewrites
    /// ours in place (one `RTM_NEWROUTE` with `NLM_F_REPLACE`).
    pub async fn replace(&self, dst: IpNet, via: &Via, op: &'static str) -> Result<(), RouteError> {
        let error = |source| RouteError::Change {
            op,
            dst,
            gateway: via.gateway,
            node: via.node.clone(),
            source: Box::new(source),
        };
        let message = match (dst, via.gateway) {
            (IpNet::V4(d), IpAddr::V4(g)) => RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                .destination_prefix(d.addr(), d.prefix_len())
                .gateway(g)
                .protocol(RouteProtocol::Other(PROTOCOL))
                .build(),
            (IpNet::V6(d), IpAddr::V6(g)) => RouteMessageBuilder::<std::net::Ipv6Addr>::new()
                .destination_prefix(d.addr(), d.prefix_len())
                .gateway(g)
                .protocol(RouteProtocol::Other(PROTOCOL))
                .build(),
            // routes::desired pairs each range with an address of its family.
            _ => unreachable!("{dst} via {} mixes families", via.gateway),
        };
        self.handle
            .route()
            .add(message)
            .replace()
            .execute()
            .await
            .map_err(error)
    }

    /// What of this node a Node may not claim ([`Host`]), leaving out the
    /// pod bridge `bridge` (its address and route are this node's pod
    /// range, checked like every node's).
    pub async fn host(&self, bridge: &str, cluster_cidrs: &[IpNet]) -> Result<Host, RouteError> {
        let error = |what| {
            move |source| RouteError::Host {
                what,
                source: Box::new(source),
            }
        };
        // Listed rather than got by name: a missing bridge (no pod added
        // yet) is no error, just nothing to leave out.
        let links: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(error("links"))?;
        let bridge = links
            .iter()
            .find(|l| {
                l.attributes
                    .iter()
                    .any(|a| matches!(a, LinkAttribute::IfName(n) if n == bridge))
            })
            .map(|l| l.header.index);
        let addresses: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(error("addresses"))?;
        let routes = self.list().await?;
        let not_bridge = |index: Option<u32>| bridge.is_none() || index != bridge;
        Ok(Host {
            cluster_cidrs: cluster_cidrs.to_vec(),
            addresses: addresses
                .iter()
                .filter(|a| not_bridge(Some(a.header.index)))
                .filter_map(own_address)
                .collect(),
            connected: routes
                .iter()
                .filter(|r| r.found.gateway.is_none() && !r.found.ours && not_bridge(r.oif))
                .map(|r| r.found.dst)
                .collect(),
            gateways: routes
                .iter()
                .filter(|r| !r.found.ours)
                .filter_map(|r| r.found.gateway)
                .collect(),
        })
    }

    pub async fn delete(&self, route: &Listed) -> Result<(), RouteError> {
        self.handle
            .route()
            .del(route.message.clone())
            .execute()
            .await
            .map_err(|source| RouteError::Delete {
                dst: route.found.dst,
                source: Box::new(source),
            })
    }
}

/// A unicast route of the main table; `None` for everything else (local,
/// broadcast and multicast routes, other tables).
fn listed_route(message: RouteMessage) -> Option<Listed> {
    let mut table = u32::from(message.header.table);
    let (mut dst, mut gateway, mut oif) = (None, None, None);
    for attr in &message.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Destination(a) => dst = address(a),
            RouteAttribute::Gateway(a) => gateway = address(a),
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) || message.header.kind != RouteType::Unicast {
        return None;
    }
    let dst = match (dst, message.header.address_family) {
        (Some(ip), _) => ip,
        // A default route has no RTA_DST.
        (None, AddressFamily::Inet) => IpAddr::from([0u8; 4]),
        (None, _) => IpAddr::from([0u16; 8]),
    };
    let found = Found {
        dst: IpNet::new(dst, message.header.destination_prefix_length).ok()?,
        gateway,
        ours: u8::from(message.header.protocol) == PROTOCOL,
    };
    Some(Listed {
        found,
        oif,
        message,
    })
}

fn address(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

/// An interface's own address (IFA_LOCAL; IFA_ADDRESS is the peer's on a
/// point-to-point link, and the only one elsewhere).
fn own_address(message: &AddressMessage) -> Option<IpAddr> {
    let find = |local: bool| {
        message.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) if local => Some(*ip),
            AddressAttribute::Address(ip) if !local => Some(*ip),
            _ => None,
        })
    };
    find(true).or_else(|| find(false))
}
