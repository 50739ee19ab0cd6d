//! The node's bridge that all pod veths are enslaved to.

use ipnet::IpNet;
use rtnetlink::{Handle, LinkBridge, LinkUnspec};

use super::addr::add_address;
use super::error::netlink_errno;
use super::link::{link_by_name, LinkDetails, LinkSummary};
use super::names::{fill_random, validate_ifname};
use super::sysctl::set_accept_dad;
use super::NetError;

/// Makes sure a bridge `name` exists, is up, has `mtu` (if given) and carries `gateways`.
///
/// Safe to call from many plugin processes at once: each step is idempotent, and losing the
/// creation race (EEXIST) just means using the bridge another ADD made. A link of that name
/// that is not a bridge is an error and is left alone.
pub async fn ensure_bridge(
    h: &Handle,
    name: &str,
    mtu: Option<u32>,
    gateways: &[IpNet],
) -> Result<LinkSummary, NetError> {
    validate_ifname(name)?;
    let br = match link_by_name(h, name).await? {
        Some(link) => link,
        None => create(h, name, mtu).await?,
    };
    if br.kind.as_deref() != Some("bridge") {
        return Err(NetError::NotABridge {
            name: name.to_owned(),
            kind: br.kind.unwrap_or_else(|| "link without a kind".into()),
        });
    }

    // Only touch what differs: a SETLINK per ADD on a busy node is cheap, but not free.
    let wants_mtu = mtu.filter(|m| br.mtu != Some(*m));
    if wants_mtu.is_some() || !br.admin_up {
        let mut msg = LinkUnspec::new_with_index(br.index).up();
        if let Some(m) = wants_mtu {
            msg = msg.mtu(m);
        }
        h.link()
            .set(msg.build())
            .execute()
            .await
            .map_err(NetError::netlink("set mtu/up on bridge", name))?;
    }

    for gw in gateways {
        add_address(h, br.index, *gw, name).await?;
    }
    Ok(br.summary())
}

/// A random unicast, locally administered MAC address.
fn random_mac() -> [u8; 6] {
    let mut mac = [0u8; 6];
    fill_random(&mut mac);
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

async fn create(h: &Handle, name: &str, mtu: Option<u32>) -> Result<LinkDetails, NetError> {
    // LinkBridge::new already asks for IFF_UP. An explicit MAC stops the
    // kernel from giving the bridge the lowest MAC of its ports, which
    // changes as pods come and go and leaves pods with a stale gateway
    // neighbour entry.
    let mut msg = LinkBridge::new(name).address(random_mac().to_vec());
    if let Some(m) = mtu {
        msg = msg.mtu(m);
    }
    match h.link().add(msg.build()).execute().await {
        Ok(()) => {}
        // Another ADD created it first; fall through and use theirs.
        Err(e) if netlink_errno(&e) == Some(libc::EEXIST) => {}
        Err(e) => return Err(NetError::netlink("create bridge", name)(e)),
    }
    // Before any port gives the bridge a carrier (and a link-local).
    set_accept_dad(name, 0)?;
    link_by_name(h, name)
        .await?
        .ok_or_else(|| NetError::LinkNotFound {
            name: name.to_owned(),
        })
}
