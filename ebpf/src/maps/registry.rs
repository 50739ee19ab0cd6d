//! The pod registry (`pm_registry`): who is behind each host veth, as the
//! plugin knew it at ADD, encoded for the kernel's fixed-size entry.

use std::net::IpAddr;

use aya::maps::{HashMap, IterableMap, MapData, MapError};

use super::{
    batch::read_all,
    ignore_missing,
    per_pod::{pod_keys, PerPodMap, PodKeys},
};
use crate::{
    abi::{IpEntry, PodInfo, MAX_IPS},
    maps::open::PinnedMaps,
    pins::REGISTRY_MAP,
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

impl PodIdentity {
    /// True if this is the attachment `(network, container_id, ifname)`.
    pub fn is_attachment(&self, network: &str, container_id: &str, ifname: &str) -> bool {
        self.network == network && self.container_id == container_id && self.ifname == ifname
    }
}

type RegistryMap<T> = HashMap<T, u32, PodInfo>;

pod_keys!(HashMap, u32, PodInfo, |k| *k);

/// In the table of per-pod maps: the identity, written last by ADD and
/// removed last by DEL.
pub(crate) const PER_POD: PerPodMap = PerPodMap {
    name: REGISTRY_MAP,
    zero: None,
    collect: |map, found| RegistryMap::try_from(map)?.collect_ifindexes(found),
    remove: |map, ifindex| ignore_missing(RegistryMap::try_from(map)?.remove(&ifindex)),
};

impl PinnedMaps {
    fn registry_map(&self) -> Result<RegistryMap<&MapData>, Error> {
        self.typed(REGISTRY_MAP)
    }

    /// Records who is behind host veth `ifindex`.
    pub(crate) fn record_identity(&mut self, ifindex: u32, info: &PodInfo) -> Result<(), Error> {
        let path = self.layout().map(REGISTRY_MAP);
        let mut map: RegistryMap<&mut MapData> = self.typed_mut(REGISTRY_MAP)?;
        map.insert(ifindex, *info, 0)
            .map_err(|source| Error::Map { path, source })
    }

    /// Every registered pod interface, keyed by host veth ifindex.
    pub fn pods(&self) -> Result<Vec<(u32, PodIdentity)>, Error> {
        self.registry_map()?
            .iter()
            .map(|entry| {
                entry
                    .map(|(ifindex, info)| (ifindex, decode(&info)))
                    .map_err(|source| self.error(REGISTRY_MAP, source))
            })
            .collect()
    }

    /// [`PinnedMaps::pods`], read in batches when the kernel can.
    pub fn pods_batched(&self) -> Result<Vec<(u32, PodIdentity)>, Error> {
        let registry = self.registry_map()?;
        let fd = IterableMap::map(&registry).fd();
        let Some(raw) = read_all(fd, size_of::<u32>(), size_of::<PodInfo>())
            .map_err(|e| self.error(REGISTRY_MAP, e))?
        else {
            return self.pods();
        };
        Ok(raw
            .entries::<u32>()
            .map(|(ifindex, value)| {
                // SAFETY: `PodInfo` is `Pod`; `value` holds one.
                let info: PodInfo = unsafe { std::ptr::read_unaligned(value.as_ptr().cast()) };
                (ifindex, decode(&info))
            })
            .collect())
    }

    pub fn pod(&self, ifindex: u32) -> Result<Option<PodIdentity>, Error> {
        match self.registry_map()?.get(&ifindex, 0) {
            Ok(info) => Ok(Some(decode(&info))),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(self.error(REGISTRY_MAP, source)),
        }
    }
}

pub(crate) fn encode(pod: &PodIdentity) -> Result<PodInfo, Error> {
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
