//! The TCP statistics (`pm_tcp`): per pod, what the TCP programs
//! (`bpf/tcp.h`) counted for the sockets of its network namespace. Created
//! zeroed at ADD (before the pod's netns entry in `pm_devices` lets the
//! programs count), so a pod starts at zero even on a reused ifindex or
//! netns cookie; removed at DEL with the pod's other entries.

use std::collections::BTreeMap;

use aya::maps::{IterableMap, MapData, PerCpuHashMap, PerCpuValues};

use super::{
    batch::read_all,
    per_pod::{by_key, pod_keys, PerPodMap},
};
use crate::{abi::Tcp, maps::PinnedMaps, pins::TCP_MAP, Error};

type TcpMap<T> = PerCpuHashMap<T, u32, Tcp>;

/// In the table of per-pod maps: ADD zeroes the pod's entry.
pub(crate) const PER_POD: PerPodMap = PerPodMap {
    zero: Some(PinnedMaps::zero_tcp),
    ..by_key!(TCP_MAP, PerCpuHashMap<u32, Tcp>)
};

impl PinnedMaps {
    /// Every pod's TCP statistics, summed over CPUs, by host ifindex.
    pub fn tcp(&self) -> Result<BTreeMap<u32, Tcp>, Error> {
        let map: TcpMap<&MapData> = self.typed(TCP_MAP)?;
        let err = |e| self.error(TCP_MAP, e);
        let cpus = aya::util::nr_cpus().map_err(|(path, e)| Error::io("read", path, e))?;
        let fd = IterableMap::map(&map).fd();
        let mut out = BTreeMap::new();
        let Some(raw) = read_all(fd, size_of::<u32>(), cpus * size_of::<Tcp>()).map_err(err)?
        else {
            for entry in map.iter() {
                let (ifindex, per_cpu) = entry.map_err(err)?;
                let total: &mut Tcp = out.entry(ifindex).or_default();
                per_cpu.iter().for_each(|v| total.add(v));
            }
            return Ok(out);
        };
        for (ifindex, value) in raw.entries::<u32>() {
            let total: &mut Tcp = out.entry(ifindex).or_default();
            for cpu in value.chunks_exact(size_of::<Tcp>()) {
                // SAFETY: `Tcp` is plain data (`aya::Pod`) and the chunk
                // holds exactly one, read unaligned.
                let v: Tcp = unsafe { std::ptr::read_unaligned(cpu.as_ptr().cast()) };
                total.add(&v);
            }
        }
        Ok(out)
    }

    /// Creates (or resets) the pod's entry, zeroed on every CPU.
    fn zero_tcp(&mut self, ifindex: u32) -> Result<(), Error> {
        let cpus = aya::util::nr_cpus().map_err(|(path, e)| Error::io("read", path, e))?;
        let zeroes = PerCpuValues::try_from(vec![Tcp::default(); cpus])
            .map_err(|e| Error::io("size", "per-CPU values", e))?;
        let path = self.layout().map(TCP_MAP);
        let mut map: TcpMap<&mut MapData> = self.typed_mut(TCP_MAP)?;
        map.insert(ifindex, zeroes, 0)
            .map_err(|source| Error::Map { path, source })
    }
}

pod_keys!(PerCpuHashMap, u32, Tcp, |k| *k);
