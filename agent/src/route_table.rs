//! The kernel's main routing table over rtnetlink: the routes found there,
//! and the changes [`crate::routes::plan`] asks for. The agent runs in the
//! node's network namespace, so no namespace switching happens here.

use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::{
    packet_route::{
        route::{
            RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType,
        },
        AddressFamily,
    },
    Handle, RouteMessageBuilder,
};

use crate::routes::{Found, Via};

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
    let (mut dst, mut gateway) = (None, None);
    for attr in &message.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
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
    Some(Listed { found, message })
}

fn address(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}
