//! ADD's fast path under TCX: a veth pair from the node agent's warm pool
//! (`podmeter_ebpf::pool`), its programs already attached, so the pod pays
//! no attach and no RCU grace period. Without a usable entry (no agent, an
//! empty pool, only stale entries) ADD creates and attaches its own pair.

use std::{fs::File, os::fd::AsFd};

use podmeter_ebpf::{attach, pool, PinLayout};

use super::{plan::Plan, rollback::Rollback, Invocation};
use crate::{
    error::PluginError,
    net::{
        bridge::ensure_bridge,
        link::{delete_link_by_name, link_by_index, LinkDetails, LinkSummary},
        netns::{with_netlink, Netlink},
        veth::adopt_veth,
    },
};

/// Claims an entry and makes it the pod's veth pair (host end renamed and
/// enslaved, pod end moved into `netns` as `peer_name`, both down): the
/// bridge and the host end, or `None` when the pool has nothing usable.
/// From the claim on, `rollback` deletes the pair and its link pins.
pub(super) fn claim<'a>(
    inv: &'a Invocation,
    layout: &'a PinLayout,
    netlink: &Netlink,
    plan: &Plan,
    (peer_name, netns): (&str, &File),
    rollback: &mut Rollback<'a>,
) -> Result<Option<(LinkSummary, LinkSummary)>, PluginError> {
    let Some((index, pair)) = claim_usable(layout, netlink) else {
        return Ok(None);
    };
    rollback.push("detach", move || {
        attach::detach(layout, index).map_err(|e| e.to_string())
    });
    // Under either name, whichever the adoption got to.
    let (host_name, pool_name) = (inv.host_ifname(), pair.name.clone());
    rollback.push("delete veth", move || {
        with_netlink(|h| async move {
            if !delete_link_by_name(&h, &host_name).await? {
                delete_link_by_name(&h, &pool_name).await?;
            }
            Ok(())
        })
        .map_err(|e| e.to_string())
    });
    let host_name = inv.host_ifname();
    let (name, peer) = (host_name.as_str(), pair.link_index.unwrap_or_default());
    let links = netlink.run(|h| async move {
        let bridge =
            ensure_bridge(&h, &inv.plugin.bridge, inv.plugin.mtu, &plan.bridge_addrs).await?;
        let host = adopt_veth(
            &h,
            (index, peer),
            (name, peer_name),
            inv.plugin.mtu,
            bridge.index,
            inv.plugin.hairpin_mode,
            netns.as_fd(),
        )
        .await?;
        Ok((bridge, host))
    })?;
    Ok(Some(links))
}

/// Claims entries until one is a pool veth as the filler left it; stale
/// ones are detached and left to the filler's sweep. A pool that fails is
/// no reason to fail the pod: it is logged, and ADD attaches itself.
fn claim_usable(layout: &PinLayout, netlink: &Netlink) -> Option<(u32, LinkDetails)> {
    loop {
        let index = match pool::claim(layout) {
            Ok(index) => index?,
            Err(e) => {
                tracing::warn!("veth pool: {e}; attaching instead");
                return None;
            }
        };
        let link = netlink.run(|h| async move { link_by_index(&h, index).await });
        match link {
            Ok(Some(link)) if is_pool_pair(&link) => return Some((index, link)),
            Ok(_) => tracing::warn!(index, "veth pool: the entry's interface is not a pool veth"),
            Err(e) => tracing::warn!(index, "veth pool: {e}"),
        }
        if let Err(e) = attach::detach(layout, index) {
            tracing::warn!(index, "veth pool: {e}; attaching instead");
            return None;
        }
    }
}

/// A pool entry's host end: its name, a veth, down, the peer beside it in
/// the node's namespace.
fn is_pool_pair(link: &LinkDetails) -> bool {
    pool::is_pool_name(&link.name)
        && link.kind.as_deref() == Some("veth")
        && !link.admin_up
        && link.link_netnsid.is_none()
        && link.link_index.is_some()
}
