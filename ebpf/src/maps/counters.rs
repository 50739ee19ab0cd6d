//! Reading the per-CPU counters, summed over every possible CPU.

use std::collections::BTreeMap;

use aya::maps::{IterableMap, MapData, MapError, PerCpuHashMap, PerCpuValues};

use super::{
    batch::{read_per_cpu, sum_cpus},
    ignore_missing,
    pod_keys::pod_keys,
};

use crate::{
    abi::{CounterKey, Direction, PodCounter},
    maps::PinnedMaps,
    pins::COUNTERS_MAP,
    Error,
};

/// One pod interface's totals, by direction as seen by the pod.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodCounters {
    pub receive: PodCounter,
    pub transmit: PodCounter,
}

impl PodCounters {
    pub fn get(&self, direction: Direction) -> PodCounter {
        match direction {
            Direction::Receive => self.receive,
            Direction::Transmit => self.transmit,
        }
    }

    fn get_mut(&mut self, direction: Direction) -> &mut PodCounter {
        match direction {
            Direction::Receive => &mut self.receive,
            Direction::Transmit => &mut self.transmit,
        }
    }
}

impl PinnedMaps {
    /// Every pod interface's counters, keyed by host veth ifindex.
    pub fn counters(&self) -> Result<BTreeMap<u32, PodCounters>, Error> {
        let mut out: BTreeMap<u32, PodCounters> = BTreeMap::new();
        for entry in self.counters.iter() {
            let (key, per_cpu) = entry.map_err(|source| self.error(COUNTERS_MAP, source))?;
            let Some(direction) = Direction::from_raw(key.direction) else {
                continue;
            };
            add_cpus(
                out.entry(key.ifindex).or_default().get_mut(direction),
                &per_cpu,
            );
        }
        Ok(out)
    }

    /// [`PinnedMaps::counters`], read in batches when the kernel can.
    pub fn counters_batched(&self) -> Result<BTreeMap<u32, PodCounters>, Error> {
        let fd = IterableMap::map(&self.counters).fd();
        let Some(raw) =
            read_per_cpu(fd, size_of::<CounterKey>()).map_err(|e| self.error(COUNTERS_MAP, e))?
        else {
            return self.counters();
        };
        let mut out: BTreeMap<u32, PodCounters> = BTreeMap::new();
        for (key, value) in raw.entries::<CounterKey>() {
            let Some(direction) = Direction::from_raw(key.direction) else {
                continue;
            };
            let counters = out.entry(key.ifindex).or_default();
            let total = sum_cpus(value);
            match direction {
                Direction::Receive => counters.receive = total,
                Direction::Transmit => counters.transmit = total,
            }
        }
        Ok(out)
    }

    /// One pod interface's counters; `None` if it is not registered.
    pub fn pod_counters(&self, ifindex: u32) -> Result<Option<PodCounters>, Error> {
        let mut out = PodCounters::default();
        for direction in Direction::ALL {
            match self.counters.get(&CounterKey::new(ifindex, direction), 0) {
                Ok(per_cpu) => add_cpus(out.get_mut(direction), &per_cpu),
                Err(aya::maps::MapError::KeyNotFound) => return Ok(None),
                Err(source) => return Err(self.error(COUNTERS_MAP, source)),
            }
        }
        Ok(Some(out))
    }
}

/// Wrapping: one CPU's share of a receive counter can be below zero (the
/// drop tracer takes a packet back on another CPU than counted it); the sum
/// over CPUs is right modulo 2^64.
pub(super) fn add_cpus(total: &mut PodCounter, per_cpu: &PerCpuValues<PodCounter>) {
    for value in per_cpu.iter() {
        total.packets = total.packets.wrapping_add(value.packets);
        total.bytes = total.bytes.wrapping_add(value.bytes);
    }
}

pub(crate) fn remove_counters(
    counters: &mut PerCpuHashMap<MapData, CounterKey, PodCounter>,
    ifindex: u32,
) -> Result<(), MapError> {
    for direction in Direction::ALL {
        ignore_missing(counters.remove(&CounterKey::new(ifindex, direction)))?;
    }
    Ok(())
}

/// One zero per possible CPU, the shape the kernel expects.
pub(crate) fn zeroes() -> Result<PerCpuValues<PodCounter>, Error> {
    let cpus = aya::util::nr_cpus().map_err(|(path, e)| Error::io("read", path, e))?;
    PerCpuValues::try_from(vec![PodCounter::default(); cpus])
        .map_err(|e| Error::io("size", "per-CPU values", e))
}

pod_keys!(PerCpuHashMap, CounterKey, PodCounter, |k| k.ifindex);
