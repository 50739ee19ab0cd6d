//! The devices map (`pm_devices`): which pod each veth end belongs to, by
//! netns cookie and ifindex, so the drop tracer can attribute a drop on
//! either end.

use aya::maps::{HashMap, MapData, MapError};

use crate::{
    abi::{Dev, DevKey},
    maps::ignore_missing,
};

/// Where the pod's veth ends live, so drops on either can be attributed to
/// the pod: the netns cookies (`SO_NETNS_COOKIE`) and the pod end's ifindex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodDevices {
    pub node_netns_cookie: u64,
    pub pod_netns_cookie: u64,
    pub pod_ifindex: u32,
}

pub(crate) fn remove_devices(
    devices: &mut HashMap<MapData, DevKey, Dev>,
    ifindex: u32,
) -> Result<(), MapError> {
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
