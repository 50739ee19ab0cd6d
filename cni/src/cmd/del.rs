//! DEL: undo everything ADD did. Forgiving, as the spec asks: a missing
//! netns, link, lease or map entry is success, so DEL can be repeated.

use podmeter_ebpf::{attach, maps::PinnedMaps, PinLayout};

use super::Invocation;
use crate::{
    config::PluginConfig,
    error::PluginError,
    masq,
    net::{link::delete_link_by_name, netns::with_netlink},
};

pub fn del(inv: &Invocation) -> Result<(), PluginError> {
    let host_name = inv.host_ifname();
    let ifindex = match inv.pinned_maps()? {
        Some(maps) => maps
            .find(inv.network(), inv.container_id, inv.ifname)?
            .map(|(ifindex, _)| ifindex),
        None => None,
    };
    remove_pod_interface(&inv.layout(), ifindex, &host_name)?;
    if PluginConfig::ip_masq(inv.conf) {
        masq::del(inv.network(), inv.container_id, inv.ifname)?;
    }
    inv.ipam.del(&inv.ipam_context())?;
    Ok(())
}

/// Deletes the host veth, which takes the pod end and every tc filter or
/// qdisc on it with it (ours, and what chained plugins such as bandwidth
/// left), then removes the link pins and unregisters the pod interface (if
/// registered as `ifindex`).
pub(super) fn remove_pod_interface(
    layout: &PinLayout,
    ifindex: Option<u32>,
    host_name: &str,
) -> Result<(), PluginError> {
    let name = host_name.to_owned();
    with_netlink(|h| async move { delete_link_by_name(&h, &name).await })?;
    if let Some(ifindex) = ifindex {
        attach::detach(layout, ifindex)?;
        PinnedMaps::open(layout)?.unregister(ifindex)?;
    }
    Ok(())
}
