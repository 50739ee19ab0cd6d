//! The pod end of the veth, configured from inside the pod's network namespace.
//!
//! Everything here must run on an [`super::in_netns`] thread for the pod, with a handle opened
//! on that thread: the sysctl write resolves against the thread's namespace.

use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::address::{AddressAttribute, AddressScope};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteScope, RouteType,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use super::addr::add_address;
use super::error::netlink_errno;
use super::link::{link_by_index, link_by_name, set_up, LinkSummary};
use super::names::validate_ifname;
use super::sysctl::write_sysctl;
use super::NetError;

/// A route in the pod: to `dst`, via `gw` or (without one) directly on the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PodRoute {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
}

/// What CHECK compares against the cached result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIfState {
    pub mac: String,
    /// Global-scope addresses only: the kernel's own fe80:: address is not ours to check.
    pub addrs: Vec<IpNet>,
    /// Unicast routes in the main table leaving through this link, including the prefix
    /// routes the kernel adds for each address.
    pub routes: Vec<PodRoute>,
}

/// Renames `temp_name` to `ifname`, adds `addrs`, brings the link up and adds `routes`.
///
/// Order matters: the kernel refuses to rename a link that is up, and a route via a gateway
/// needs the link up and an address on the gateway's subnet first.
pub async fn configure_pod_interface(
    h: &Handle,
    temp_name: &str,
    ifname: &str,
    addrs: &[IpNet],
    routes: &[PodRoute],
) -> Result<LinkSummary, NetError> {
    validate_ifname(ifname)?;
    let index = link_by_name(h, temp_name)
        .await?
        .ok_or_else(|| NetError::LinkNotFound {
            name: temp_name.to_owned(),
        })?
        .index;
    h.link()
        .set(LinkUnspec::new_with_index(index).name(ifname).build())
        .execute()
        .await
        .map_err(NetError::netlink(format!("rename to {ifname}"), temp_name))?;

    if addrs.iter().any(|a| a.addr().is_ipv6()) {
        // Some runtimes create pod namespaces with IPv6 disabled; the address add would then
        // fail with a confusing EACCES.
        write_sysctl(&format!("ipv6/conf/{ifname}/disable_ipv6"), "0")?;
    }
    refuse_routers(ifname)?;
    for a in addrs {
        add_address(h, index, *a, ifname).await?;
    }
    set_up(h, index).await?;
    for r in routes {
        add_route(h, index, ifname, r).await?;
    }

    link_by_index(h, index)
        .await?
        .map(|l| l.summary())
        .ok_or_else(|| NetError::LinkNotFound {
            name: ifname.to_owned(),
        })
}

/// The pod's gateway is configured statically: router advertisements and redirects (which
/// podmeter's programs drop when a pod sends them) must not change its routes or addresses,
/// and its link-local address is the EUI-64 one of its MAC, which source validation expects.
/// Before the link comes up, so no address or route is ever taken from elsewhere.
fn refuse_routers(ifname: &str) -> Result<(), NetError> {
    write_sysctl(&format!("ipv4/conf/{ifname}/accept_redirects"), "0")?;
    if std::path::Path::new("/proc/sys/net/ipv6").exists() {
        for (name, value) in [
            ("accept_ra", "0"),
            ("accept_redirects", "0"),
            ("addr_gen_mode", "0"),
        ] {
            write_sysctl(&format!("ipv6/conf/{ifname}/{name}"), value)?;
        }
    }
    Ok(())
}

async fn add_route(h: &Handle, index: u32, ifname: &str, r: &PodRoute) -> Result<(), NetError> {
    let op = || match r.gw {
        Some(gw) => format!("add route {} via {gw} on", r.dst),
        None => format!("add route {} on", r.dst),
    };
    // rtnetlink does not export its builder error type, hence the strings.
    let invalid = |reason: String| NetError::InvalidRoute {
        route: op(),
        reason,
    };
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(r.dst.network(), r.dst.prefix_len())
        .map_err(|e| invalid(e.to_string()))?
        .output_interface(index);
    b = match r.gw {
        Some(gw) => b.gateway(gw).map_err(|e| invalid(e.to_string()))?,
        None => b.scope(RouteScope::Link),
    };
    match h.route().add(b.build()).execute().await {
        // Already there (a retried ADD, or the prefix route the kernel made for an address).
        Err(e) if netlink_errno(&e) != Some(libc::EEXIST) => {
            Err(NetError::netlink(op(), ifname)(e))
        }
        _ => Ok(()),
    }
}

/// The MAC, addresses and routes of `ifname`, or `None` if the pod has no such link.
pub async fn pod_interface_state(h: &Handle, ifname: &str) -> Result<Option<PodIfState>, NetError> {
    let Some(link) = link_by_name(h, ifname).await? else {
        return Ok(None);
    };

    let mut addrs = Vec::new();
    let mut stream = h
        .address()
        .get()
        .set_link_index_filter(link.index)
        .execute();
    while let Some(msg) = stream
        .try_next()
        .await
        .map_err(NetError::netlink("list addresses of", ifname))?
    {
        if msg.header.scope != AddressScope::Universe {
            continue;
        }
        // IFA_LOCAL is the interface's own address; IFA_ADDRESS differs only on point-to-point.
        let ip = msg
            .attributes
            .iter()
            .find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            })
            .or_else(|| {
                msg.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            });
        if let Some(net) = ip.and_then(|ip| IpNet::new(ip, msg.header.prefix_len).ok()) {
            addrs.push(net);
        }
    }

    let mut routes = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut query = RouteMessage::default();
        query.header.address_family = family;
        let mut stream = h.route().get(query).execute();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(NetError::netlink("list routes of", ifname))?
        {
            if let Some(r) = pod_route(&msg, link.index) {
                routes.push(r);
            }
        }
    }

    Ok(Some(PodIfState {
        mac: link.mac,
        addrs,
        routes,
    }))
}

/// Converts a dumped route into a `PodRoute` if it is a main-table unicast route out of
/// `index`. The dump is not filtered by the kernel (no strict checking), so filter here.
fn pod_route(msg: &RouteMessage, index: u32) -> Option<PodRoute> {
    let mut table = u32::from(msg.header.table);
    let (mut oif, mut dst, mut gw) = (None, None, None);
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Oif(o) => oif = Some(*o),
            RouteAttribute::Destination(a) => dst = route_ip(a),
            RouteAttribute::Gateway(a) => gw = route_ip(a),
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN)
        || msg.header.kind != RouteType::Unicast
        || oif != Some(index)
    {
        return None;
    }
    let dst = match (dst, msg.header.address_family) {
        (Some(ip), _) => ip,
        // A default route has no RTA_DST.
        (None, AddressFamily::Inet) => IpAddr::from([0u8; 4]),
        (None, _) => IpAddr::from([0u16; 8]),
    };
    let dst = IpNet::new(dst, msg.header.destination_prefix_length).ok()?;
    Some(PodRoute { dst, gw })
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}
