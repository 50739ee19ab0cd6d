//! Adding IP addresses, shared by the bridge (gateways) and the pod interface.

use ipnet::IpNet;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
use rtnetlink::Handle;

use super::error::netlink_errno;
use super::NetError;

/// Adds `net` (address/prefix) to link `index`; an address that is already there is not an
/// error, so concurrent ADDs sharing a bridge and retried ADDs both succeed.
///
/// IPv6 addresses get IFA_F_NODAD: pod addresses come from IPAM and are unique by
/// construction, and without it they stay "tentative" (unusable) for about a second.
pub async fn add_address(h: &Handle, index: u32, net: IpNet, link: &str) -> Result<(), NetError> {
    let mut req = h.address().add(index, net.addr(), net.prefix_len());
    if net.addr().is_ipv6() {
        let msg = req.message_mut();
        msg.header.flags |= AddressHeaderFlags::Nodad;
        msg.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    match req.execute().await {
        Err(e) if netlink_errno(&e) != Some(libc::EEXIST) => {
            Err(NetError::netlink(format!("add address {net} to"), link)(e))
        }
        _ => Ok(()),
    }
}
