//! The pod registry: who is behind each host veth. Registering also creates
//! the pod's zeroed counters, which the programs only ever update.

use std::{collections::BTreeSet, net::IpAddr};

use aya::maps::{HashMap, Map, MapData, MapError, PerCpuHashMap, PerCpuValues};

use crate::{
    abi::{
        CounterKey, Dev, DevKey, Direction, DropKey, IpEntry, PodCounter, PodInfo, Side, Source,
        MAX_IPS,
    },
    maps::open::{open_typed, PinnedMaps},
    maps::pod_keys::PodKeys,
    pin_dir,
    pins::{PinLayout, COUNTERS_MAP, DEVICES_MAP, DROPS_MAP, REGISTRY_MAP, SOURCES_MAP},
    policy::store as policy_store,
    Error,
};

/// A pod interface's identity, as the plugin knows it at ADD.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodIdentity {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub container_id: String,
    pub network: String,
    pub ifname: String,
    pub host_ifname: String,
    /// Addresses with their prefix length.
    pub ips: Vec<(IpAddr, u8)>,
}

/// Where the pod's veth ends live, so drops on either can be attributed to
/// the pod: the netns cookies (`SO_NETNS_COOKIE`) and the pod end's ifindex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodDevices {
    pub node_netns_cookie: u64,
    pub pod_netns_cookie: u64,
    pub pod_ifindex: u32,
}

impl PodIdentity {
    /// True if this is the attachment `(network, container_id, ifname)`.
    pub fn is_attachment(&self, network: &str, container_id: &str, ifname: &str) -> bool {
        self.network == network && self.container_id == container_id && self.ifname == ifname
    }
}

impl PinnedMaps {
    /// Zeroes the pod's counters and records its devices, then its identity:
    /// in that order, so a reader that sees the identity also finds counters.
    pub fn register(
        &mut self,
        ifindex: u32,
        pod: &PodIdentity,
        devices: &PodDevices,
    ) -> Result<(), Error> {
        let info = encode(pod)?;
        for (netns_cookie, dev_ifindex, side) in [
            (devices.node_netns_cookie, ifindex, Side::Host),
            (devices.pod_netns_cookie, devices.pod_ifindex, Side::Pod),
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

    /// Every registered pod interface, keyed by host veth ifindex.
    pub fn pods(&self) -> Result<Vec<(u32, PodIdentity)>, Error> {
        self.registry
            .iter()
            .map(|entry| {
                entry
                    .map(|(ifindex, info)| (ifindex, decode(&info)))
                    .map_err(|source| self.error(REGISTRY_MAP, source))
            })
            .collect()
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

    pub fn pod(&self, ifindex: u32) -> Result<Option<PodIdentity>, Error> {
        match self.registry.get(&ifindex, 0) {
            Ok(info) => Ok(Some(decode(&info))),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(self.error(REGISTRY_MAP, source)),
        }
    }
}

/// Removes a pod interface's policy, source, devices, counters and drops, and its
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
    let mut problems: Vec<Error> = policy_store::forget(layout, ifindex);
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
    found.extend(policy_store::ifindexes(layout)?);
    Ok(found.difference(&registered).copied().collect())
}

/// Runs `f` on the pinned map `name` if it is pinned.
pub(crate) fn with_map<T: TryFrom<Map, Error = MapError>>(
    layout: &PinLayout,
    name: &str,
    f: impl FnOnce(&mut T) -> Result<(), MapError>,
) -> Result<(), Error> {
    // `try_exists`: an error looking (EIO, say) is not "not pinned".
    let path = layout.map(name);
    if !path.try_exists().map_err(|e| Error::io("stat", &path, e))? {
        return Ok(());
    }
    let mut map: T = open_typed(layout, name)?;
    f(&mut map).map_err(|source| Error::Map {
        path: layout.map(name),
        source,
    })
}

fn remove_identity(
    registry: &mut HashMap<MapData, u32, PodInfo>,
    ifindex: u32,
) -> Result<(), MapError> {
    ignore_missing(registry.remove(&ifindex))
}

fn remove_devices(
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

fn remove_counters(
    counters: &mut PerCpuHashMap<MapData, CounterKey, PodCounter>,
    ifindex: u32,
) -> Result<(), MapError> {
    for direction in Direction::ALL {
        ignore_missing(counters.remove(&CounterKey::new(ifindex, direction)))?;
    }
    Ok(())
}

/// A delete of a key that is not there is done. aya 0.14 reports that as
/// the syscall's ENOENT, not as `KeyNotFound`; concurrent DELs meet it when
/// they collect the same key while another one deletes it.
pub(crate) fn ignore_missing(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

/// One zero per possible CPU, the shape the kernel expects.
fn zeroes() -> Result<PerCpuValues<PodCounter>, Error> {
    let cpus = aya::util::nr_cpus().map_err(|(path, e)| Error::io("read", path, e))?;
    PerCpuValues::try_from(vec![PodCounter::default(); cpus])
        .map_err(|e| Error::io("size", "per-CPU values", e))
}

fn encode(pod: &PodIdentity) -> Result<PodInfo, Error> {
    if pod.ips.len() > MAX_IPS {
        return Err(Error::FieldTooLong {
            field: "ips",
            len: pod.ips.len(),
            max: MAX_IPS,
        });
    }
    let mut ips = [IpEntry::default(); MAX_IPS];
    for (slot, (addr, prefix_len)) in ips.iter_mut().zip(&pod.ips) {
        *slot = IpEntry {
            prefix_len: *prefix_len,
            ..IpEntry::host(*addr)
        };
    }
    Ok(PodInfo {
        k8s_namespace: text("namespace", &pod.namespace)?,
        k8s_pod: text("pod", &pod.pod)?,
        k8s_uid: text("uid", &pod.uid)?,
        container_id: text("container_id", &pod.container_id)?,
        network: text("network", &pod.network)?,
        ifname: text("ifname", &pod.ifname)?,
        host_ifname: text("host_ifname", &pod.host_ifname)?,
        ips,
        n_ips: pod.ips.len() as u32,
        flags: 0,
    })
}

/// NUL-padded, with at least one NUL so C readers see a terminated string.
fn text<const N: usize>(field: &'static str, s: &str) -> Result<[u8; N], Error> {
    if s.len() >= N {
        return Err(Error::FieldTooLong {
            field,
            len: s.len(),
            max: N - 1,
        });
    }
    let mut out = [0u8; N];
    out[..s.len()].copy_from_slice(s.as_bytes());
    Ok(out)
}

fn untext(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

pub(crate) fn decode(info: &PodInfo) -> PodIdentity {
    let n = (info.n_ips as usize).min(MAX_IPS);
    let ips = info.ips[..n]
        .iter()
        .filter_map(|e| {
            let addr = match i32::from(e.family) {
                libc::AF_INET => IpAddr::from(<[u8; 4]>::try_from(&e.addr[..4]).ok()?),
                libc::AF_INET6 => IpAddr::from(e.addr),
                _ => return None,
            };
            Some((addr, e.prefix_len))
        })
        .collect();
    PodIdentity {
        namespace: untext(&info.k8s_namespace),
        pod: untext(&info.k8s_pod),
        uid: untext(&info.k8s_uid),
        container_id: untext(&info.container_id),
        network: untext(&info.network),
        ifname: untext(&info.ifname),
        host_ifname: untext(&info.host_ifname),
        ips,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips_through_the_abi() {
        let pod = PodIdentity {
            namespace: "default".into(),
            pod: "web-0".into(),
            uid: "0b0c6d3e-1f2a-4d5e-9f00-123456789abc".into(),
            container_id: "c0ffee".into(),
            network: "podmeter".into(),
            ifname: "eth0".into(),
            host_ifname: "pm0123456789abc".into(),
            ips: vec![
                ("10.22.0.5".parse().unwrap(), 24),
                ("fd00:22::5".parse().unwrap(), 64),
            ],
        };
        assert_eq!(decode(&encode(&pod).unwrap()), pod);
    }

    #[test]
    fn deleting_a_missing_key_is_done() {
        let enoent = || {
            Err(MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_delete_elem",
                io_error: std::io::Error::from_raw_os_error(libc::ENOENT),
            }))
        };
        assert!(ignore_missing(enoent()).is_ok());
        assert!(ignore_missing(Err(MapError::KeyNotFound)).is_ok());
        let eperm = Err(MapError::SyscallError(aya::sys::SyscallError {
            call: "bpf_map_delete_elem",
            io_error: std::io::Error::from_raw_os_error(libc::EPERM),
        }));
        assert!(ignore_missing(eperm).is_err());
    }

    #[test]
    fn too_long_fields_are_refused_not_truncated() {
        let pod = PodIdentity {
            ifname: "x".repeat(16),
            ..Default::default()
        };
        assert!(matches!(
            encode(&pod),
            Err(Error::FieldTooLong {
                field: "ifname",
                len: 16,
                max: 15
            })
        ));
    }
}
