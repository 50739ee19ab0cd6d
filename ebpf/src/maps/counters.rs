//! The pod counters (`pm_counters`): packets and bytes per pod and
//! direction, per CPU. ADD zeroes a pod's two entries (the programs only
//! ever update existing ones); reads sum them over every possible CPU.

use std::collections::BTreeMap;

use aya::maps::{IterableMap, MapData, MapError, PerCpuHashMap, PerCpuValues};

use super::per_pod::PodKeys;

use super::{
    batch::{read_per_cpu, sum_cpus},
    ignore_missing,
    per_pod::{pod_keys, PerPodMap},
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

type CountersMap<T> = PerCpuHashMap<T, CounterKey, PodCounter>;

/// In the table of per-pod maps: ADD zeroes the pod's entries.
pub(crate) const PER_POD: PerPodMap = PerPodMap {
    name: COUNTERS_MAP,
    zero: Some(PinnedMaps::zero_counters),
    collect: |map, found| CountersMap::try_from(map)?.collect_ifindexes(found),
    remove: |map, ifindex| remove(&mut CountersMap::try_from(map)?, ifindex),
};

impl PinnedMaps {
    fn counters_map(&self) -> Result<CountersMap<&MapData>, Error> {
        self.typed(COUNTERS_MAP)
    }

    /// Creates the pod's counters, zero on every CPU.
    fn zero_counters(&mut self, ifindex: u32) -> Result<(), Error> {
        let path = self.layout().map(COUNTERS_MAP);
        let mut counters: CountersMap<&mut MapData> = self.typed_mut(COUNTERS_MAP)?;
        for direction in Direction::ALL {
            counters
                .insert(CounterKey::new(ifindex, direction), zeroes()?, 0)
                .map_err(|source| Error::Map {
                    path: path.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Every pod interface's counters, keyed by host veth ifindex.
    pub fn counters(&self) -> Result<BTreeMap<u32, PodCounters>, Error> {
        let mut out: BTreeMap<u32, PodCounters> = BTreeMap::new();
        for entry in self.counters_map()?.iter() {
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
        let counters = self.counters_map()?;
        let fd = IterableMap::map(&counters).fd();
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
        let counters = self.counters_map()?;
        let mut out = PodCounters::default();
        for direction in Direction::ALL {
            match counters.get(&CounterKey::new(ifindex, direction), 0) {
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

/// Removes the pod's two entries, by key: no walk of the map.
fn remove(counters: &mut CountersMap<&mut MapData>, ifindex: u32) -> Result<(), MapError> {
    for direction in Direction::ALL {
        ignore_missing(counters.remove(&CounterKey::new(ifindex, direction)))?;
    }
    Ok(())
}

/// One zero per possible CPU, the shape the kernel expects.
fn zeroes() -> Result<PerCpuValues<PodCounter>, Error> {
    let cpus = aya::util::nr_cpus().map_err(|(path, e)| Error::io("read", path, e))?;
    PerCpuValues::try_from(vec![PodCounter::default(); cpus])
        .map_err(|e| Error::io("size", "per-CPU values", e))
}

pod_keys!(PerCpuHashMap, CounterKey, PodCounter, |k| k.ifindex);
