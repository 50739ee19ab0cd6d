//! CHECK: is the attachment still as ADD left it (per `prevResult`)?

use std::{fs::File, path::Path};

use podmeter_ebpf::{maps::PinnedMaps, programs::attach};
use rscni_plugin::types::CNIResult;

use super::Invocation;
use crate::{
    error::PluginError,
    net::{
        link::{link_by_name, peer_in},
        netns::{in_netns, with_netlink},
        pod::pod_interface_state,
        NetError,
    },
};

mod prev;

pub fn check(inv: &Invocation) -> Result<(), PluginError> {
    let prev = inv
        .conf
        .prev_result
        .as_ref()
        .ok_or_else(|| PluginError::Config("CHECK needs prevResult".into()))?;
    let (netns, _) = inv.pod_netns()?;
    inv.ipam.check(&inv.ipam_context())?;
    let host_index = check_host_side(inv)?;
    check_pod_side(inv, prev, netns, host_index)?;
    check_metering(inv, host_index)
}

fn fail(msg: String) -> Result<(), PluginError> {
    Err(PluginError::Check(msg))
}

/// The host veth exists, is up and is a port of the bridge; returns its index.
fn check_host_side(inv: &Invocation) -> Result<u32, PluginError> {
    let host_name = inv.host_ifname();
    let bridge_name = inv.plugin.bridge.clone();
    let (host, bridge) = with_netlink(|h| async move {
        Ok((
            link_by_name(&h, &host_name).await?,
            link_by_name(&h, &bridge_name).await?,
        ))
    })?;
    let host_name = inv.host_ifname();
    let host =
        host.ok_or_else(|| PluginError::Check(format!("host veth {host_name} is missing")))?;
    let bridge = bridge
        .ok_or_else(|| PluginError::Check(format!("bridge {} is missing", inv.plugin.bridge)))?;
    if host.controller != Some(bridge.index) {
        fail(format!(
            "host veth {host_name} is not a port of bridge {}",
            bridge.name
        ))?;
    }
    if !host.admin_up {
        fail(format!("host veth {host_name} is down"))?;
    }
    Ok(host.index)
}

/// The pod interface is the peer of the host veth (index `host_index`),
/// and has the MAC, addresses and routes of `prevResult`.
fn check_pod_side(
    inv: &Invocation,
    prev: &CNIResult,
    netns: &std::path::Path,
    host_index: u32,
) -> Result<(), PluginError> {
    let ifname = inv.ifname;
    let index = prev::pod_interface(prev, ifname)?;
    // The plugin's own namespace, as the pod's namespace names it below.
    let own = Path::new("/proc/thread-self/ns/net");
    let own = File::open(own).map_err(|source| NetError::NetNs {
        path: own.to_owned(),
        source,
    })?;
    let own = &own;
    let (state, peer) = in_netns(netns, || {
        with_netlink(|h| async move {
            Ok((
                pod_interface_state(&h, ifname).await?,
                peer_in(&h, ifname, own).await?,
            ))
        })
    })??;
    let state = state.ok_or_else(|| {
        PluginError::Check(format!(
            "interface {ifname} is missing in {}",
            netns.display()
        ))
    })?;
    if peer != Some(host_index) {
        let host_name = inv.host_ifname();
        let its = match peer {
            Some(other) => format!("#{other}"),
            None => "not in the plugin's namespace".into(),
        };
        fail(format!(
            "interface {ifname} in {} is not the peer of host veth {host_name} (#{host_index}): its peer is {its}",
            netns.display()
        ))?;
    }
    prev::compare(prev, index, ifname, &state)
}

/// The pod is registered with counters, and each hook carries exactly one
/// of our programs.
fn check_metering(inv: &Invocation, host_index: u32) -> Result<(), PluginError> {
    let layout = inv.layout();
    if !layout.dir().exists() {
        return fail(format!(
            "nothing is pinned under {}",
            inv.plugin.pin_path.display()
        ));
    }
    let maps = PinnedMaps::open(&layout)?;
    match maps.pod(host_index)? {
        Some(pod) if pod.is_attachment(inv.network(), inv.container_id, inv.ifname) => {}
        _ => fail(format!(
            "the registry has no entry for host interface {host_index}"
        ))?,
    }
    if maps.pod_counters(host_index)?.is_none() {
        fail(format!("no counters for host interface {host_index}"))?;
    }
    let host_name = inv.host_ifname();
    for (hook, names) in attach::attached_programs(&host_name, inv.plugin.tc_attach_mode)? {
        let ours = names.iter().filter(|n| *n == hook.program).count();
        if ours != 1 {
            fail(format!(
                "{ours} podmeter programs at {} of {host_name} (expected 1)",
                hook.name
            ))?;
        }
    }
    Ok(())
}
