//! The veth pair between the node's bridge and a pod.

use std::os::fd::{AsRawFd, BorrowedFd};

use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::{Handle, LinkBridgePort, LinkUnspec, LinkVeth};

use super::error::netlink_errno;
use super::link::{link_by_name, LinkSummary};
use super::names::validate_ifname;
use super::NetError;

/// Creates a veth pair: `host_name` in the calling namespace, enslaved to `bridge_index`;
/// `peer_temp_name` directly inside the pod namespace `pod_netns`. Both ends stay DOWN.
///
/// One RTM_NEWLINK does create + enslave + place the peer, so the kernel either makes all of
/// it or nothing, and the pod end never shows up in the node namespace. Links stay down so
/// eBPF counters can be attached before the first packet. If a later step (hairpin, lookup)
/// fails, the pair exists: the caller deletes it, over a connection of its own, as this one
/// may be what failed.
pub async fn create_veth(
    h: &Handle,
    host_name: &str,
    peer_temp_name: &str,
    mtu: Option<u32>,
    bridge_index: u32,
    hairpin: bool,
    pod_netns: BorrowedFd<'_>,
) -> Result<LinkSummary, NetError> {
    validate_ifname(host_name)?;
    validate_ifname(peer_temp_name)?;

    let mut peer = LinkUnspec::new_with_name(peer_temp_name).setns_by_fd(pod_netns.as_raw_fd());
    let mut host = LinkVeth::new(host_name, peer_temp_name).controller(bridge_index);
    if let Some(m) = mtu {
        // The MTU in the outer message applies to the host end only.
        peer = peer.mtu(m);
        host = host.mtu(m);
    }
    let msg = host
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
        .build();
    h.link()
        .add(msg)
        .execute()
        .await
        .map_err(|e| create_error(e, host_name, bridge_index))?;

    finish(h, host_name, hairpin).await
}

/// A full bridge is named as such: EXFULL alone ("exchange full") says
/// nothing to an operator.
fn create_error(e: rtnetlink::Error, host_name: &str, bridge: u32) -> NetError {
    match netlink_errno(&e) {
        Some(libc::EXFULL) => NetError::BridgeFull { bridge },
        _ => NetError::netlink("create veth", host_name)(e),
    }
}

async fn finish(h: &Handle, host_name: &str, hairpin: bool) -> Result<LinkSummary, NetError> {
    let link = link_by_name(h, host_name)
        .await?
        .ok_or_else(|| NetError::LinkNotFound {
            name: host_name.to_owned(),
        })?;
    if hairpin {
        // IFLA_BRPORT_MODE through netlink: sysfs would show the namespace it was mounted in,
        // not necessarily ours.
        h.link()
            .set_port(LinkBridgePort::new(link.index).hairpin(true).build())
            .execute()
            .await
            .map_err(NetError::netlink("set hairpin on", host_name))?;
    }
    Ok(link.summary())
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroI32;

    use rscni_plugin::error::Error as CniError;
    use rtnetlink::packet_core::ErrorMessage;

    use super::*;
    use crate::error::PluginError;

    fn nack(errno: i32) -> rtnetlink::Error {
        let mut msg = ErrorMessage::default();
        msg.code = NonZeroI32::new(-errno);
        rtnetlink::Error::NetlinkError(msg)
    }

    /// The 1,024th veth on one bridge (too slow to make in the suite: a
    /// thousand ADDs) is answered as what it is.
    #[test]
    fn a_full_bridge_is_named_in_the_error() {
        let err = CniError::from(PluginError::from(create_error(
            nack(libc::EXFULL),
            "veth1",
            7,
        )));
        assert_eq!(u32::from(&err), 5);
        assert!(
            err.to_string()
                .contains("bridge #7 already has 1,023 ports"),
            "{err}"
        );
        let other = create_error(nack(libc::EEXIST), "veth1", 7);
        assert!(matches!(other, NetError::Netlink { .. }), "{other:?}");
    }
}
