//! DEL: undo everything ADD did. Forgiving, as the spec asks: a missing
//! netns, link, lease or map entry is success, so DEL can be repeated; and
//! best effort: a step that fails does not keep the others from running.

use std::collections::BTreeSet;

use podmeter_ebpf::{maps::PinnedMaps, programs::attach, PinLayout};

use super::{best_effort::BestEffort, Invocation};
use crate::{
    config::{FromNetconf, PluginConfig},
    error::PluginError,
    masq,
    net::{
        link::{delete_link_by_name, link_by_name},
        netns::with_netlink,
    },
    timing,
};

pub fn del(inv: &Invocation) -> Result<(), PluginError> {
    let mut run = BestEffort::new("DEL");
    let layout = inv.layout();
    let host_name = inv.host_ifname();
    // The pod's host ifindex names its link pins and map entries: take it
    // from the veth while there is one (an ADD may have died before
    // registering), and from the registry (a DEL may have died after
    // deleting the veth).
    let mut ifindexes = BTreeSet::new();
    let name = host_name.clone();
    let veth = run.step(
        "look up the host veth",
        with_netlink(|h| async move { link_by_name(&h, &name).await }),
    );
    ifindexes.extend(veth.flatten().map(|l| l.index));
    // One handle for the whole DEL: the pin directory checked once, each
    // map opened once, when first needed.
    let mut maps = run.pins("check the pin path", PinnedMaps::open_lazy(&layout));
    if let Some(maps) = &maps {
        let registered = maps.find_attachment(inv.network(), inv.container_id, inv.ifname);
        ifindexes.extend(run.pins("read the registry", registered).flatten());
    }
    timing::mark("look up veth, registry");

    // A policy edit finds the pod and writes its rules under the exclusive
    // lock: with this one held, it has written them before this DEL
    // removes them, or finds the pod gone.
    let locked = maps.as_ref().map(PinnedMaps::lock_shared_if_pinned);
    let _editing = locked
        .and_then(|l| run.pins("lock the pin path", l))
        .flatten();
    remove_pod_interface(&mut run, &layout, maps.as_mut(), &ifindexes, &host_name);
    if PluginConfig::ip_masq(inv.conf) {
        run.step(
            "remove masquerade rules",
            masq::del(inv.network(), inv.container_id, inv.ifname),
        );
        timing::mark("masquerade");
    }
    run.step("release addresses", inv.ipam.del(&inv.ipam_context()));
    timing::mark("ipam");
    run.finish()
}

/// Deletes the host veth, which takes the pod end and every tc filter or
/// qdisc on it with it (ours, and what chained plugins such as bandwidth
/// left), then removes the link pins and map entries of `ifindexes` (the
/// entries through `maps`, when the pin path could be checked). A map
/// that is missing holds nothing of the pod's; one of another layout nothing
/// we could remove: that is reported, not a failure.
pub(super) fn remove_pod_interface(
    run: &mut BestEffort,
    layout: &PinLayout,
    mut maps: Option<&mut PinnedMaps>,
    ifindexes: &BTreeSet<u32>,
    host_name: &str,
) {
    let name = host_name.to_owned();
    run.step(
        "delete the host veth",
        with_netlink(|h| async move { delete_link_by_name(&h, &name).await }),
    );
    timing::mark("netlink: delete veth");
    for &ifindex in ifindexes {
        run.step("remove link pins", attach::detach(layout, ifindex));
        if let Some(maps) = maps.as_deref_mut() {
            forget(run, maps, ifindex);
        }
    }
    timing::mark("unpin links, map deletes");
}

/// Removes the map entries of `ifindex` from every map there is.
pub(super) fn forget(run: &mut BestEffort, maps: &mut PinnedMaps, ifindex: u32) {
    for e in maps.forget(ifindex) {
        run.pins("remove map entries", Err::<(), _>(e));
    }
}
