//! The TCP statistics (`pm_tcp`): per pod, what the TCP programs
//! (`bpf/tcp.h`) counted for the sockets of its network namespace. Created
//! zeroed at ADD, so a pod starts at zero even on a reused ifindex or netns
//! cookie; removed at DEL.

use std::collections::BTreeMap;

use aya::maps::{IterableMap, PerCpuHashMap, PerCpuValues};

use super::{batch::read_all, pod_keys::pod_keys};
use crate::{abi::Tcp, maps::PinnedMaps, pins::TCP_MAP, Error};

impl PinnedMaps {
    /// Every pod's TCP statistics, summed over CPUs, by host ifindex.
    pub fn tcp(&self) -> Result<BTreeMap<u32, Tcp>, Error> {
        let err = |e| self.error(TCP_MAP, e);
        let cpus = aya::util::nr_cpus().map_err(|(path, e)| Error::io("read", path, e))?;
        let fd = IterableMap::map(&self.tcp).fd();
        let mut out = BTreeMap::new();
        let Some(raw) = read_all(fd, size_of::<u32>(), cpus * size_of::<Tcp>()).map_err(err)?
        else {
            for entry in self.tcp.iter() {
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
    pub(crate) fn zero_tcp(&mut self, ifindex: u32) -> Result<(), Error> {
        let cpus = aya::util::nr_cpus().map_err(|(path, e)| Error::io("read", path, e))?;
        let zeroes = PerCpuValues::try_from(vec![Tcp::default(); cpus])
            .map_err(|e| Error::io("size", "per-CPU values", e))?;
        self.tcp
            .insert(ifindex, zeroes, 0)
            .map_err(|source| self.error(TCP_MAP, source))
    }
}

pod_keys!(PerCpuHashMap, u32, Tcp, |k| *k);
