//! Reading the per-CPU counters, summed over every possible CPU.

use std::collections::BTreeMap;

use aya::maps::PerCpuValues;

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
            let Some(direction) = direction_of(&key) else {
                continue;
            };
            add_cpus(
                out.entry(key.ifindex).or_default().get_mut(direction),
                &per_cpu,
            );
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

fn direction_of(key: &CounterKey) -> Option<Direction> {
    Direction::ALL
        .into_iter()
        .find(|d| *d as u32 == key.direction)
}

fn add_cpus(total: &mut PodCounter, per_cpu: &PerCpuValues<PodCounter>) {
    for value in per_cpu.iter() {
        total.packets += value.packets;
        total.bytes += value.bytes;
    }
}
