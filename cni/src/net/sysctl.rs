//! Writing sysctls under /proc/sys/net.
//!
//! /proc/sys/net resolves against the network namespace of the *thread* that opens the file
//! (the kernel picks the sysctl set from `current->nsproxy`), not of the process: calling
//! these on an [`super::in_netns`] thread configures that namespace. (The test
//! `accept_ra_is_written_in_the_node_netns` relies on this: the veth exists only there.)

use std::io;
use std::path::{Component, Path, PathBuf};

use super::names::validate_ifname;
use super::NetError;

const PROC_SYS_NET: &str = "/proc/sys/net";

/// Writes `value` to /proc/sys/net/`rel_path` (e.g. "ipv6/conf/eth0/accept_ra").
pub fn write_sysctl(rel_path: &str, value: &str) -> Result<(), NetError> {
    let path = sysctl_path(rel_path)?;
    std::fs::write(&path, value).map_err(|source| NetError::Sysctl { path, source })
}

/// Reads /proc/sys/net/`rel_path`, trimmed. Only tests need it so far.
#[cfg(test)]
pub fn read_sysctl(rel_path: &str) -> Result<String, NetError> {
    let path = sysctl_path(rel_path)?;
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(s.trim().to_owned()),
        Err(source) => Err(NetError::Sysctl { path, source }),
    }
}

/// Sets net.ipv6.conf.`ifname`.accept_ra, in the calling thread's namespace.
///
/// The host veth is a bridge port: a router advertisement arriving on it must not give the
/// node an address or a default route.
pub fn set_accept_ra(ifname: &str, value: u8) -> Result<(), NetError> {
    set_ipv6_conf(ifname, "accept_ra", value)
}

/// Sets net.ipv6.conf.`ifname`.accept_dad, in the calling thread's namespace.
///
/// Off on the bridge before its first port comes up: the kernel sends a
/// neighbour solicitation for a forwarded packet only from a link-local
/// address that is no longer tentative, so while the bridge's new
/// link-local waits out DAD (1-2 s) the first IPv6 packets from other
/// nodes to a new pod are lost. The bridge's addresses are the node's own;
/// no other host on this segment can have them.
pub fn set_accept_dad(ifname: &str, value: u8) -> Result<(), NetError> {
    set_ipv6_conf(ifname, "accept_dad", value)
}

/// Without IPv6 in the kernel there is nothing to set, so a missing
/// /proc/sys/net/ipv6 is not an error.
fn set_ipv6_conf(ifname: &str, key: &str, value: u8) -> Result<(), NetError> {
    validate_ifname(ifname)?;
    if !Path::new(PROC_SYS_NET).join("ipv6").exists() {
        return Ok(());
    }
    write_sysctl(&format!("ipv6/conf/{ifname}/{key}"), &value.to_string())
}

fn sysctl_path(rel_path: &str) -> Result<PathBuf, NetError> {
    let rel = Path::new(rel_path);
    // Interface names end up in these paths; never let one climb out of /proc/sys/net.
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(NetError::Sysctl {
            path: rel.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a plain relative path"),
        });
    }
    Ok(Path::new(PROC_SYS_NET).join(rel))
}
