//! Looking up, bringing up and deleting links by name, shared by the bridge, veth and pod code.

use std::fs::File;

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{
    InfoBridge, InfoBridgePort, InfoData, InfoPortData, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use rtnetlink::{Handle, LinkUnspec};

use super::error::netlink_errno;
use super::names::hex;
use super::netns::netns_id;
use super::NetError;

const ENODEV: i32 = libc::ENODEV;

/// What callers need to report a link in a CNI result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSummary {
    pub name: String,
    pub index: u32,
    /// Lowercase, colon separated ("aa:bb:cc:dd:ee:ff").
    pub mac: String,
    /// `IFLA_LINK`: a veth's peer, by its index in its own namespace.
    pub peer_index: Option<u32>,
}

/// A link as the kernel reports it, for CHECK and for deciding whether to create it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkDetails {
    pub name: String,
    pub index: u32,
    pub mac: String,
    pub mtu: Option<u32>,
    /// `IFLA_INFO_KIND`, e.g. "bridge", "veth"; `None` for links without one (loopback).
    pub kind: Option<String>,
    /// Index of the bridge (or other controller) this link is enslaved to.
    pub controller: Option<u32>,
    /// IFF_UP: what we asked for.
    pub admin_up: bool,
    /// Hairpin mode of the bridge port, when the link is a bridge port.
    pub hairpin: Option<bool>,
    /// A bridge's `nf_call_iptables` and `nf_call_ip6tables`, both on.
    pub bridge_netfilter: Option<bool>,
    /// `IFLA_LINK`: a veth's peer, by its index in its own namespace.
    pub link_index: Option<u32>,
    /// `IFLA_LINK_NETNSID`: the peer's namespace, by the id this namespace
    /// gives it; `None` when the peer is in this namespace.
    pub link_netnsid: Option<i32>,
}

impl LinkDetails {
    pub fn summary(&self) -> LinkSummary {
        LinkSummary {
            name: self.name.clone(),
            index: self.index,
            mac: self.mac.clone(),
            peer_index: self.link_index,
        }
    }

    fn from_message(msg: &LinkMessage) -> Self {
        let mut d = LinkDetails {
            name: String::new(),
            index: msg.header.index,
            mac: String::new(),
            mtu: None,
            kind: None,
            controller: None,
            admin_up: msg.header.flags.contains(LinkFlags::Up),
            hairpin: None,
            bridge_netfilter: None,
            link_index: None,
            link_netnsid: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => d.name = n.clone(),
                LinkAttribute::Address(a) => d.mac = hex(a, ":"),
                LinkAttribute::Mtu(m) => d.mtu = Some(*m),
                LinkAttribute::Controller(c) => d.controller = Some(*c),
                LinkAttribute::Link(l) => d.link_index = Some(*l),
                LinkAttribute::LinkNetNsId(n) => d.link_netnsid = Some(*n),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(k) => d.kind = Some(k.to_string()),
                            LinkInfo::PortData(InfoPortData::BridgePort(port)) => {
                                d.hairpin = port.iter().find_map(|p| match p {
                                    InfoBridgePort::HairpinMode(h) => Some(*h),
                                    _ => None,
                                });
                            }
                            LinkInfo::Data(InfoData::Bridge(opts)) => {
                                d.bridge_netfilter = Some(bridge_netfilter(opts));
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        d
    }
}

/// Whether a bridge hands its IPv4 and IPv6 traffic to netfilter.
fn bridge_netfilter(opts: &[InfoBridge]) -> bool {
    let on = |want: fn(&InfoBridge) -> Option<bool>| opts.iter().find_map(want) == Some(true);
    on(|o| match o {
        InfoBridge::NfCallIpTables(v) => Some(*v),
        _ => None,
    }) && on(|o| match o {
        InfoBridge::NfCallIp6Tables(v) => Some(*v),
        _ => None,
    })
}

/// Looks a link up by name in the handle's namespace; `Ok(None)` if there is none.
/// The kernel answers a get with the link or an error: a stream that ends
/// with neither means the request was lost (a failed send), not "no link".
pub async fn link_by_name(h: &Handle, name: &str) -> Result<Option<LinkDetails>, NetError> {
    // A get by name answers a missing link with ENODEV, not with an empty stream.
    match h.link().get().match_name(name).execute().try_next().await {
        Ok(Some(msg)) => Ok(Some(LinkDetails::from_message(&msg))),
        Ok(None) => Err(NetError::NoAnswer {
            op: "get link",
            link: name.to_owned(),
        }),
        Err(e) if netlink_errno(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(NetError::netlink("get link", name)(e)),
    }
}

/// Looks a link up by index; `Ok(None)` if there is none.
pub async fn link_by_index(h: &Handle, index: u32) -> Result<Option<LinkDetails>, NetError> {
    match h.link().get().match_index(index).execute().try_next().await {
        Ok(Some(msg)) => Ok(Some(LinkDetails::from_message(&msg))),
        Ok(None) => Err(NetError::NoAnswer {
            op: "get link",
            link: format!("#{index}"),
        }),
        Err(e) if netlink_errno(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(NetError::netlink("get link", format!("#{index}"))(e)),
    }
}

/// The index of `name`'s peer (a veth's other end) if that peer is in the
/// namespace `ns`; `None` if it has no peer there, or no link is `name`.
pub async fn peer_in(h: &Handle, name: &str, ns: &File) -> Result<Option<u32>, NetError> {
    let Some(link) = link_by_name(h, name).await? else {
        return Ok(None);
    };
    let (Some(index), Some(nsid)) = (link.link_index, link.link_netnsid) else {
        return Ok(None);
    };
    Ok((netns_id(h, ns).await? == Some(nsid)).then_some(index))
}

/// Every link enslaved to the bridge `bridge_index`.
pub async fn bridge_ports(h: &Handle, bridge_index: u32) -> Result<Vec<LinkDetails>, NetError> {
    let mut links = h.link().get().execute();
    let mut ports = Vec::new();
    while let Some(msg) = links.try_next().await.map_err(NetError::netlink(
        "list links on",
        format!("#{bridge_index}"),
    ))? {
        let link = LinkDetails::from_message(&msg);
        if link.controller == Some(bridge_index) {
            ports.push(link);
        }
    }
    Ok(ports)
}

/// Sets IFF_UP on a link.
pub async fn set_up(h: &Handle, index: u32) -> Result<(), NetError> {
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(NetError::netlink("set up", format!("#{index}")))
}

/// Deletes a link by name. `Ok(false)` if it was not there, so DEL can be repeated.
///
/// Deleting either end of a veth removes both, wherever the other end is.
pub async fn delete_link_by_name(h: &Handle, name: &str) -> Result<bool, NetError> {
    // RTM_DELLINK by name: one request, no window in which the index could be reused.
    let msg = LinkUnspec::new_with_name(name).build();
    match h.link().del_with_message(msg).execute().await {
        Ok(()) => {}
        Err(e) if netlink_errno(&e) == Some(ENODEV) => return Ok(false),
        Err(e) => return Err(NetError::netlink("delete link", name)(e)),
    }
    // rtnetlink reports success when no answer came at all (the request
    // was never sent): only a link that is really gone is deleted.
    match link_by_name(h, name).await? {
        None => Ok(true),
        Some(_) => Err(NetError::NoAnswer {
            op: "delete link",
            link: name.to_owned(),
        }),
    }
}
