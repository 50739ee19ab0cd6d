//! A pod's life in the pinned maps: registered at ADD, found by
//! attachment, forgotten at DEL, and its leftovers found by GC.

use std::collections::BTreeSet;

use aya::maps::{HashMap, MapData, PerCpuHashMap};

use crate::{
    abi::{CounterKey, Dev, DevKey, Direction, DropKey, PodCounter, PodInfo, Side, Source, Tcp},
    maps::{
        counters::{remove_counters, zeroes},
        devices::{remove_devices, PodDevices},
        open::{with_map, PinnedMaps},
        pod_keys::PodKeys,
        policy,
        registry::{decode, encode, remove_identity, PodIdentity},
    },
    pin_dir,
    pins::{PinLayout, COUNTERS_MAP, DEVICES_MAP, DROPS_MAP, REGISTRY_MAP, SOURCES_MAP, TCP_MAP},
    Error,
};

impl PinnedMaps {
    /// Zeroes the pod's counters and records its devices, then its identity:
    /// in that order, so a reader that sees the identity also finds counters.
    /// The TCP statistics are zeroed before the pod's netns entry makes the
    /// TCP programs count its sockets.
    pub fn register(
        &mut self,
        ifindex: u32,
        pod: &PodIdentity,
        devices: &PodDevices,
    ) -> Result<(), Error> {
        let info = encode(pod)?;
        self.zero_tcp(ifindex)?;
        for (netns_cookie, dev_ifindex, side) in [
            (devices.node_netns_cookie, ifindex, Side::Host),
            (devices.pod_netns_cookie, devices.pod_ifindex, Side::Pod),
            (devices.pod_netns_cookie, 0, Side::Netns),
        ] {
            let key = DevKey {
                netns_cookie,
                ifindex: dev_ifindex,
                pad: 0,
            };
            let dev = Dev {
                host_ifindex: ifindex,
                side: side as u32,
            };
            self.devices
                .insert(key, dev, 0)
                .map_err(|source| self.error(DEVICES_MAP, source))?;
        }
        for direction in Direction::ALL {
            self.counters
                .insert(CounterKey::new(ifindex, direction), zeroes()?, 0)
                .map_err(|source| self.error(COUNTERS_MAP, source))?;
        }
        self.registry
            .insert(ifindex, info, 0)
            .map_err(|source| self.error(REGISTRY_MAP, source))
    }

    /// The registered interface of one attachment, if any.
    pub fn find(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<(u32, PodIdentity)>, Error> {
        Ok(self
            .pods()?
            .into_iter()
            .find(|(_, p)| p.is_attachment(network, container_id, ifname)))
    }
}

/// Removes a pod interface's policy, source, devices, counters, drops and TCP statistics, and its
/// identity last: a DEL killed halfway leaves the identity, by which the next DEL or
/// GC finds what is left. Removing the devices first means no drop is
/// attributed to the pod once its counters are going. Each map is opened on
/// its own: DEL must clean what it can when a map is missing (a first ADD
/// killed while loading) or of another layout. Missing entries are not an
/// error. Returns what it could not do; the identity stays while a retry
/// could remove more.
pub fn forget(layout: &PinLayout, ifindex: u32) -> Vec<Error> {
    if let Err(e) = pin_dir::check(layout) {
        return vec![e];
    }
    let mut problems: Vec<Error> = policy::forget(layout, ifindex);
    problems.extend(
        [
            with_map(
                layout,
                SOURCES_MAP,
                |m: &mut HashMap<MapData, u32, Source>| m.remove_pod(ifindex),
            ),
            with_map(layout, DEVICES_MAP, |m| remove_devices(m, ifindex)),
            with_map(layout, COUNTERS_MAP, |m| remove_counters(m, ifindex)),
            with_map(
                layout,
                DROPS_MAP,
                |m: &mut PerCpuHashMap<MapData, DropKey, PodCounter>| m.remove_pod(ifindex),
            ),
            with_map(
                layout,
                TCP_MAP,
                |m: &mut PerCpuHashMap<MapData, u32, Tcp>| m.remove_pod(ifindex),
            ),
        ]
        .into_iter()
        .filter_map(Result::err),
    );
    // A map of another layout stays so, and a retry could not do better.
    let retry_could_help = problems
        .iter()
        .any(|e| !matches!(e, Error::LayoutMismatch { .. }));
    if !retry_could_help {
        problems.extend(with_map(layout, REGISTRY_MAP, |m| remove_identity(m, ifindex)).err());
    }
    problems
}

/// Every registered pod interface, reading the registry alone (none if it
/// is not pinned): for DEL and GC, which must work when another map is not.
pub fn pods(layout: &PinLayout) -> Result<Vec<(u32, PodIdentity)>, Error> {
    pin_dir::check(layout)?;
    let mut pods = Vec::new();
    with_map(
        layout,
        REGISTRY_MAP,
        |m: &mut HashMap<MapData, u32, PodInfo>| {
            for entry in m.iter() {
                let (ifindex, info) = entry?;
                pods.push((ifindex, decode(&info)));
            }
            Ok(())
        },
    )?;
    Ok(pods)
}

/// The registered host ifindex of an attachment, if any.
pub fn find_attachment(
    layout: &PinLayout,
    network: &str,
    container_id: &str,
    ifname: &str,
) -> Result<Option<u32>, Error> {
    Ok(pods(layout)?
        .into_iter()
        .find(|(_, p)| p.is_attachment(network, container_id, ifname))
        .map(|(ifindex, _)| ifindex))
}

/// Host ifindexes with devices, counters, drops, a source or policy but no identity: left by
/// an ADD or DEL that died halfway, or an ADD still in flight.
pub fn unregistered(layout: &PinLayout) -> Result<BTreeSet<u32>, Error> {
    let registered: BTreeSet<u32> = pods(layout)?.into_iter().map(|(i, _)| i).collect();
    let mut found = BTreeSet::new();
    with_map(
        layout,
        DEVICES_MAP,
        |m: &mut HashMap<MapData, DevKey, Dev>| {
            for entry in m.iter() {
                found.insert(entry?.1.host_ifindex);
            }
            Ok(())
        },
    )?;
    with_map(
        layout,
        COUNTERS_MAP,
        |m: &mut PerCpuHashMap<MapData, CounterKey, PodCounter>| m.collect_ifindexes(&mut found),
    )?;
    with_map(
        layout,
        DROPS_MAP,
        |m: &mut PerCpuHashMap<MapData, DropKey, PodCounter>| m.collect_ifindexes(&mut found),
    )?;
    with_map(
        layout,
        SOURCES_MAP,
        |m: &mut HashMap<MapData, u32, Source>| m.collect_ifindexes(&mut found),
    )?;
    with_map(
        layout,
        TCP_MAP,
        |m: &mut PerCpuHashMap<MapData, u32, Tcp>| m.collect_ifindexes(&mut found),
    )?;
    found.extend(policy::ifindexes(layout)?);
    Ok(found.difference(&registered).copied().collect())
}
