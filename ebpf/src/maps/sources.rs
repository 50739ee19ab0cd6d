//! Who each pod may send as (`pm_sources`): its MAC and addresses as ADD
//! configured them, and its gateways. The programs drop whatever a pod
//! sends as anyone else (`bpf/validate.h`), and a pod without an entry
//! sends nothing: ADD writes it before the pod's links come up, DEL and GC
//! remove it with the pod's other entries (`crate::pod::forget`).

use std::net::{IpAddr, Ipv6Addr};

use aya::maps::{HashMap, MapData};

use crate::{
    abi::{IpEntry, Source, MAX_GATEWAYS, MAX_IPS},
    maps::{
        per_pod::{by_key, pod_keys, PerPodMap},
        PinnedMaps,
    },
    pins::SOURCES_MAP,
    Error,
};

/// A pod interface as the network sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSource {
    pub mac: [u8; 6],
    pub ips: Vec<IpAddr>,
    /// The routers the pod's routes go via (the bridge's addresses).
    pub gateways: Vec<IpAddr>,
}

impl PodSource {
    /// The link-local address the kernel derives from the MAC when the
    /// interface's `addr_gen_mode` is 0 (EUI-64, RFC 4291 appendix A).
    pub fn link_local(&self) -> Ipv6Addr {
        let m = self.mac;
        Ipv6Addr::from([
            0xfe,
            0x80,
            0,
            0,
            0,
            0,
            0,
            0,
            m[0] ^ 0x02,
            m[1],
            m[2],
            0xff,
            0xfe,
            m[3],
            m[4],
            m[5],
        ])
    }

    fn encode(&self) -> Result<Source, Error> {
        Ok(Source {
            mac: self.mac,
            pad: [0; 2],
            link_local: self.link_local().octets(),
            ips: entries::<MAX_IPS>("ips", &self.ips)?,
            gateways: entries::<MAX_GATEWAYS>("gateways", &self.gateways)?,
        })
    }
}

fn entries<const N: usize>(field: &'static str, addrs: &[IpAddr]) -> Result<[IpEntry; N], Error> {
    if addrs.len() > N {
        return Err(Error::FieldTooLong {
            field,
            len: addrs.len(),
            max: N,
        });
    }
    let mut out = [IpEntry::default(); N];
    for (slot, addr) in out.iter_mut().zip(addrs) {
        *slot = IpEntry::host(*addr);
    }
    Ok(out)
}

impl PinnedMaps {
    /// Records who the pod behind host veth `ifindex` may send as.
    pub fn set_source(&mut self, ifindex: u32, source: &PodSource) -> Result<(), Error> {
        let entry = source.encode()?;
        let path = self.layout().map(SOURCES_MAP);
        let mut map: HashMap<&mut MapData, u32, Source> = self.typed_mut(SOURCES_MAP)?;
        map.insert(ifindex, entry, 0)
            .map_err(|source| Error::Map { path, source })
    }
}

pod_keys!(HashMap, u32, Source, |k| *k);

pub(crate) const PER_POD: PerPodMap = by_key!(SOURCES_MAP, HashMap<u32, Source>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_local_address_is_the_macs_eui64() {
        let pod = PodSource {
            mac: [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
            ips: vec![],
            gateways: vec![],
        };
        assert_eq!(
            pod.link_local(),
            "fe80::5054:ff:fe12:3456".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn addresses_are_stored_by_family() {
        let pod = PodSource {
            mac: [2, 0, 0, 0, 0, 1],
            ips: vec!["10.1.0.5".parse().unwrap(), "fd00::5".parse().unwrap()],
            gateways: vec!["10.1.0.1".parse().unwrap()],
        };
        let e = pod.encode().unwrap();
        assert_eq!(e.ips[0].family, libc::AF_INET as u8);
        assert_eq!(e.ips[0].addr[..4], [10, 1, 0, 5]);
        assert_eq!(e.ips[1].family, libc::AF_INET6 as u8);
        assert_eq!(e.ips[2].family, 0);
        assert_eq!(e.gateways[0].addr[..4], [10, 1, 0, 1]);
        let too_many = PodSource {
            gateways: vec!["10.1.0.1".parse().unwrap(); 3],
            ..pod
        };
        assert!(matches!(
            too_many.encode(),
            Err(Error::FieldTooLong {
                field: "gateways",
                ..
            })
        ));
    }
}
