//! The devices map (`pm_devices`): which pod each veth end belongs to, by
//! netns cookie and ifindex, so the drop tracer can attribute a drop on
//! either end.

use std::collections::BTreeSet;

use aya::maps::{HashMap, MapData, MapError};

use super::{ignore_missing, per_pod::PerPodMap};
use crate::{
    abi::{Dev, DevKey, Side},
    maps::PinnedMaps,
    pins::DEVICES_MAP,
    Error,
};

/// Where the pod's veth ends live, so drops on either can be attributed to
/// the pod: the netns cookies (`SO_NETNS_COOKIE`) and the pod end's ifindex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodDevices {
    pub node_netns_cookie: u64,
    pub pod_netns_cookie: u64,
    pub pod_ifindex: u32,
}

type DevicesMap<T> = HashMap<T, DevKey, Dev>;

/// In the table of per-pod maps: the pod is in the value, not the key.
pub(crate) const PER_POD: PerPodMap = PerPodMap {
    name: DEVICES_MAP,
    zero: None,
    collect: |map, found| collect(&DevicesMap::try_from(map)?, found),
    remove: |map, ifindex| remove(&mut DevicesMap::try_from(map)?, ifindex),
};

impl PinnedMaps {
    /// Records both ends of the pod behind host veth `ifindex`.
    pub(crate) fn record_devices(
        &mut self,
        ifindex: u32,
        devices: &PodDevices,
    ) -> Result<(), Error> {
        let path = self.layout().map(DEVICES_MAP);
        let mut map: DevicesMap<&mut MapData> = self.typed_mut(DEVICES_MAP)?;
        for (netns_cookie, dev_ifindex, side) in [
            (devices.node_netns_cookie, ifindex, Side::Host),
            (devices.pod_netns_cookie, devices.pod_ifindex, Side::Pod),
            // The netns itself: whose sockets the TCP programs count.
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
            map.insert(key, dev, 0).map_err(|source| Error::Map {
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

fn collect(devices: &DevicesMap<&mut MapData>, found: &mut BTreeSet<u32>) -> Result<(), MapError> {
    for entry in devices.iter() {
        found.insert(entry?.1.host_ifindex);
    }
    Ok(())
}

fn remove(devices: &mut DevicesMap<&mut MapData>, ifindex: u32) -> Result<(), MapError> {
    // A failed read is an error, not fewer entries: DEL must not report a
    // pod gone whose entries it did not see.
    let mut keys = Vec::new();
    for entry in devices.iter() {
        let (key, dev) = entry?;
        if dev.host_ifindex == ifindex {
            keys.push(key);
        }
    }
    for key in keys {
        ignore_missing(devices.remove(&key))?;
    }
    Ok(())
}
