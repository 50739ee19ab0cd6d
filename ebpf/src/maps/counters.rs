//! Reading the per-CPU counters, summed over every possible CPU.

use std::collections::BTreeMap;

use aya::maps::PerCpuValues;

use crate::{
    abi::{CounterKey, Direction, PodCounter},
    maps::PinnedMaps,
    pins::{COUNTERS_MAP, DROPS_MAP},
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

    /// Every pod's drops, summed over CPUs, ordered by pod, direction, reason.
    pub fn drops(&self) -> Result<Vec<PodDrops>, Error> {
        let mut out = Vec::new();
        for entry in self.drops.iter() {
            let (key, per_cpu) = entry.map_err(|source| self.error(DROPS_MAP, source))?;
            let Some(direction) = Direction::from_raw(key.direction) else {
                continue;
            };
            let mut dropped = PodCounter::default();
            add_cpus(&mut dropped, &per_cpu);
            out.push(PodDrops {
                ifindex: key.ifindex,
                direction,
                reason: key.reason,
                dropped,
            });
        }
        out.sort_by_key(|d| (d.ifindex, d.direction as u32, d.reason));
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

/// Packets the kernel dropped on a pod's devices, for one direction and
/// drop reason (a value of the running kernel's `enum skb_drop_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodDrops {
    pub ifindex: u32,
    pub direction: Direction,
    pub reason: u32,
    pub dropped: PodCounter,
}

/// Wrapping: one CPU's share of a receive counter can be below zero (the
/// drop tracer takes a packet back on another CPU than counted it); the sum
/// over CPUs is right modulo 2^64.
fn add_cpus(total: &mut PodCounter, per_cpu: &PerCpuValues<PodCounter>) {
    for value in per_cpu.iter() {
        total.packets = total.packets.wrapping_add(value.packets);
        total.bytes = total.bytes.wrapping_add(value.bytes);
    }
}
